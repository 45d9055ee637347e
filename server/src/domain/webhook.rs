//! Webhooks: what a registration must look like, how a delivery is signed, and when a failed
//! delivery is tried again or given up.

use std::time::Duration;

use base64::Engine as _;
use chrono::{DateTime, Utc};
use rand::RngCore as _;
use serde::{Deserialize, Serialize};

use super::alert::AlertKind;
use super::validate;
use crate::error::{Error, Result};

/// Longest accepted URL, in characters.
pub const MAX_URL_CHARS: usize = 2000;
/// Shortest accepted caller-chosen secret, in characters.
pub const MIN_SECRET_CHARS: usize = 32;
/// Longest accepted caller-chosen secret, in characters.
pub const MAX_SECRET_CHARS: usize = 128;
/// The reason of a missing webhook.
pub const WEBHOOK_NOT_FOUND: &str = "WEBHOOK_NOT_FOUND";

/// A registered endpoint (never with its secret).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Webhook {
    /// Id.
    pub id: String,
    /// Scope facility; `None` = the whole tree.
    pub scope_facility_id: Option<String>,
    /// Where events are POSTed.
    pub url: String,
    /// Only these kinds (numbers); empty = every kind.
    pub kinds: Vec<i32>,
    /// Only alerts of at least this severity (0 = any).
    pub min_severity: i32,
    /// Description.
    pub description: String,
    /// Token that created it.
    pub created_by: String,
    /// Creation time.
    pub created_at: DateTime<Utc>,
    /// Last successful delivery.
    pub last_success_at: Option<DateTime<Utc>>,
    /// Last failed attempt.
    pub last_failure_at: Option<DateTime<Utc>>,
    /// What the last failure was ("HTTP 502", "timeout").
    pub last_error: String,
    /// Failed attempts since the last success.
    pub consecutive_failures: i32,
}

/// The writable fields of a webhook as a caller sent them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WebhookInput {
    /// Scope facility id; "" = the whole tree.
    pub scope_facility_id: String,
    /// URL.
    pub url: String,
    /// Kinds (numbers).
    pub kinds: Vec<i32>,
    /// Minimum severity (number).
    pub min_severity: i32,
    /// Description.
    pub description: String,
}

/// A shared HMAC secret; its Debug form never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Validates a caller-chosen secret: 32..=128 printable ASCII characters.
    pub fn parse(value: &str) -> Result<Self> {
        let n = value.chars().count();
        if !(MIN_SECRET_CHARS..=MAX_SECRET_CHARS).contains(&n) {
            return Err(Error::invalid(
                "secret",
                format!("must be {MIN_SECRET_CHARS}..{MAX_SECRET_CHARS} characters (or empty to have one generated)"),
            ));
        }
        // Receivers paste it into configuration files and environment variables.
        if !value.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(Error::invalid("secret", "must be printable ASCII without spaces"));
        }
        Ok(Secret(value.to_owned()))
    }

    /// A new random secret: 32 bytes, base64url (43 characters).
    pub fn generate() -> Self {
        let mut bytes = [0u8; 32];
        rand::rng().fill_bytes(&mut bytes);
        Secret(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes))
    }

    /// Wraps a secret read back from storage.
    pub fn stored(value: String) -> Self {
        Secret(value)
    }

    /// The secret itself, for signing and for the one creation response.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    // Secrets never reach logs, even through a stray `{:?}`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// A validated request for a webhook.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewWebhook {
    /// Scope facility; `None` = the caller's scope (the whole tree for unscoped callers).
    pub scope_facility_id: Option<String>,
    /// URL.
    pub url: String,
    /// Kinds, sorted and without repeats.
    pub kinds: Vec<i32>,
    /// Minimum severity.
    pub min_severity: i32,
    /// Description.
    pub description: String,
    /// The caller's secret; `None` = generate one.
    pub secret: Option<Secret>,
}

impl NewWebhook {
    /// Validates a request; plain http URLs only when the server allows them (tests, local bridges).
    pub fn parse(input: WebhookInput, secret: &str, allow_http: bool) -> Result<Self> {
        let scope_facility_id = validate::optional_id("webhook.scope_facility_id", &input.scope_facility_id)?;
        let url = url("webhook.url", &input.url, allow_http)?;
        let mut kinds = input.kinds;
        if kinds.iter().any(|k| AlertKind::from_i32(*k).is_none()) {
            return Err(Error::invalid("webhook.kinds", "unknown alert kind"));
        }
        kinds.sort_unstable();
        kinds.dedup();
        if !(0..=4).contains(&input.min_severity) {
            return Err(Error::invalid("webhook.min_severity", "unknown severity"));
        }
        let description = validate::optional_text("webhook.description", &input.description, 200)?;
        let secret = if secret.is_empty() { None } else { Some(Secret::parse(secret)?) };
        Ok(NewWebhook { scope_facility_id, url, kinds, min_severity: input.min_severity, description, secret })
    }

    /// A stable rendering for idempotency keys: the secret enters only as a hash.
    pub fn fingerprint(&self) -> String {
        let secret = self.secret.as_ref().map(|s| super::token::sha256_hex(s.expose().as_bytes()));
        format!("{self:?}|{secret:?}")
    }
}

/// Checks a webhook URL: absolute, http(s) with a host, no credentials, at most 2000 characters.
pub fn url(field: &str, value: &str, allow_http: bool) -> Result<String> {
    let v = value.trim();
    if v.is_empty() {
        return Err(Error::invalid(field, "is required"));
    }
    if v.chars().count() > MAX_URL_CHARS {
        return Err(Error::invalid(field, format!("must be at most {MAX_URL_CHARS} characters")));
    }
    let uri: http::Uri = v.parse().map_err(|_| Error::invalid(field, "is not a valid URL"))?;
    match uri.scheme_str() {
        Some("https") => {}
        Some("http") if allow_http => {}
        Some("http") => return Err(Error::invalid(field, "must be https (plain http is not allowed on this server)")),
        _ => return Err(Error::invalid(field, "must be an https URL")),
    }
    let authority = uri.authority().ok_or_else(|| Error::invalid(field, "must name a host"))?;
    // The client would silently drop user:password@, so refuse it rather than send unauthenticated.
    if authority.as_str().contains('@') {
        return Err(Error::invalid(field, "must not carry credentials; verify the signature instead"));
    }
    if authority.host().is_empty() {
        return Err(Error::invalid(field, "must name a host"));
    }
    Ok(v.to_owned())
}

/// The `X-Vaxtrace-Signature` value: `sha256=` and the lowercase hex HMAC-SHA256 under the secret
/// of `timestamp + "." + body`, so a receiver can reject replays of old bodies by their timestamp.
pub fn signature(secret: &Secret, timestamp: i64, body: &[u8]) -> Result<String> {
    let mut signed = Vec::with_capacity(body.len() + 21);
    signed.extend_from_slice(timestamp.to_string().as_bytes());
    signed.push(b'.');
    signed.extend_from_slice(body);
    let tag = vaxtrace_proto::signing::hmac_sha256(secret.expose().as_bytes(), &signed)
        .map_err(|e| Error::Internal(format!("cannot sign a webhook delivery: {e:?}")))?;
    Ok(format!("sha256={}", vaxtrace_proto::signing::to_hex(&tag)))
}

/// When failed deliveries are tried again: exponential back-off from `base`, capped, with ±20 %
/// jitter, until `give_up_after` has passed since the first failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Delay after the first failure.
    pub base: Duration,
    /// Longest delay.
    pub cap: Duration,
    /// How long after its first failure a delivery is dropped.
    pub give_up_after: Duration,
}

impl Default for RetryPolicy {
    /// As the API promises: 30 s, 1 min, 2 min … 1 h, for 24 h.
    fn default() -> Self {
        RetryPolicy {
            base: Duration::from_secs(30),
            cap: Duration::from_secs(3600),
            give_up_after: Duration::from_secs(24 * 3600),
        }
    }
}

impl RetryPolicy {
    /// The delay after `failures` consecutive failures (1 = the first), before jitter.
    pub fn backoff(&self, failures: u32) -> Duration {
        let doublings = failures.saturating_sub(1).min(30);
        self.base.saturating_mul(1u32 << doublings).min(self.cap)
    }

    /// When to try again after the `failures`-th failure at `now`, or `None` to drop the delivery
    /// (the next attempt would fall after `give_up_after` from the first failure). `jitter` in
    /// -1..=1 moves the delay by up to ±20 %, so receivers that come back are not hit in lockstep.
    pub fn next_attempt(
        &self,
        failures: u32,
        first_failure: DateTime<Utc>,
        now: DateTime<Utc>,
        jitter: f64,
    ) -> Option<DateTime<Utc>> {
        let delay = self.backoff(failures).mul_f64(1.0 + 0.2 * jitter.clamp(-1.0, 1.0));
        let next = now + chrono::Duration::from_std(delay).ok()?;
        let deadline = first_failure + chrono::Duration::from_std(self.give_up_after).ok()?;
        (next <= deadline).then_some(next)
    }
}

/// A delivery claimed for sending: the event, where to, and its retry state.
#[derive(Debug, Clone, PartialEq)]
pub struct Delivery {
    /// The webhook.
    pub webhook_id: String,
    /// The event id.
    pub event_id: i64,
    /// The webhook's URL.
    pub url: String,
    /// The webhook's secret.
    pub secret: Secret,
    /// The event; `None` when retention already removed it (the delivery is then dropped).
    pub event: Option<super::alert::AlertEvent>,
    /// Failed attempts so far.
    pub attempts: i32,
    /// When the first attempt failed.
    pub first_failure_at: Option<DateTime<Utc>>,
}

/// What became of one attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Delivered (2xx): the delivery is done.
    Delivered,
    /// Failed; try again at this time.
    Retry {
        /// The next attempt.
        at: DateTime<Utc>,
        /// What went wrong.
        error: String,
    },
    /// Failed for the last time (or the event is gone): the delivery is dropped.
    Dropped {
        /// What went wrong.
        error: String,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        assert!(url("u", "https://hooks.example.org/x?y=1", false).is_ok());
        assert!(url("u", "http://127.0.0.1:8080/x", false).is_err());
        assert!(url("u", "http://127.0.0.1:8080/x", true).is_ok());
        assert!(url("u", "ftp://example.org/", true).is_err());
        assert!(url("u", "https://user:pw@example.org/", false).is_err());
        assert!(url("u", "/relative", true).is_err());
        assert!(url("u", "", true).is_err());
        let long = format!("https://example.org/{}", "a".repeat(MAX_URL_CHARS));
        assert!(url("u", &long, false).is_err());
    }

    #[test]
    fn secrets() {
        assert!(Secret::parse(&"s".repeat(31)).is_err());
        assert!(Secret::parse(&"s".repeat(32)).is_ok());
        assert!(Secret::parse(&"s".repeat(129)).is_err());
        assert!(Secret::parse(&format!("{} x", "s".repeat(40))).is_err());
        let g = Secret::generate();
        assert!(Secret::parse(g.expose()).is_ok());
        assert!(!format!("{g:?}").contains(g.expose()));
    }

    #[test]
    fn signature_is_hmac_of_timestamp_dot_body() {
        // Computed independently: Python's hmac.new(b"Jefe", b'1700000000.{"a":1}', sha256).
        let sig = signature(&Secret::stored("Jefe".into()), 1_700_000_000, br#"{"a":1}"#).ok();
        assert_eq!(sig.as_deref(), Some("sha256=fa5f6481efc59da48b19c9dc10196c9953e5651f8304b3a318b6b87d70272e0a"));
    }

    #[test]
    fn backoff_doubles_to_the_cap_and_gives_up() {
        let p = RetryPolicy::default();
        let secs = |n| p.backoff(n).as_secs();
        assert_eq!([secs(1), secs(2), secs(3), secs(7), secs(8), secs(40)], [30, 60, 120, 1920, 3600, 3600]);
        let t0 = DateTime::from_timestamp(1_800_000_000, 0).unwrap_or_default();
        let next = p.next_attempt(1, t0, t0, 1.0).map(|t| (t - t0).num_seconds());
        assert_eq!(next, Some(36), "+20 %");
        let next = p.next_attempt(1, t0, t0, -1.0).map(|t| (t - t0).num_seconds());
        assert_eq!(next, Some(24), "-20 %");
        let late = t0 + chrono::Duration::hours(23) + chrono::Duration::minutes(30);
        assert_eq!(p.next_attempt(30, t0, late, 0.0), None, "past 24 h: dropped");
        let earlier = t0 + chrono::Duration::hours(22);
        assert!(p.next_attempt(30, t0, earlier, 0.0).is_some());
    }
}
