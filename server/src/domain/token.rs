//! Bearer tokens: `vxt_<id>_<secret>`. Only a SHA-256 of the secret is stored; a presented token is
//! looked up by its id and its secret compared in constant time.

use base64::Engine as _;
use chrono::{DateTime, Utc};
use rand::RngCore as _;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq as _;

use super::authz::Role;
use super::validate;
use crate::error::{Error, Result, reason};

/// A token's stored description (never its secret).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Token {
    /// Id, also the public part of the bearer string.
    pub id: String,
    /// Role.
    pub role: Role,
    /// Scope facility, `None` = whole tree.
    pub scope_facility_id: Option<String>,
    /// For device tokens, the device.
    pub device_id: Option<String>,
    /// Whose token it is.
    pub description: String,
    /// Creation time.
    pub created_at: DateTime<Utc>,
    /// Revocation time.
    pub revoked_at: Option<DateTime<Utc>>,
}

/// A validated request for a token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewToken {
    /// Role.
    pub role: Role,
    /// Scope facility.
    pub scope_facility_id: Option<String>,
    /// Device id for device tokens.
    pub device_id: Option<String>,
    /// Description.
    pub description: String,
}

impl NewToken {
    /// Validates a request: every role but admin and national_officer needs a scope; devices need a device id.
    pub fn parse(role: i32, scope: &str, device_id: &str, description: &str) -> Result<Self> {
        let role = Role::from_i32(role).ok_or_else(|| Error::invalid("role", "must be a known role"))?;
        let scope_facility_id = validate::optional_id("scope_facility_id", scope)?;
        if scope_facility_id.is_none() && !role.may_be_unscoped() {
            return Err(Error::invalid_because(
                "scope_facility_id",
                reason::SCOPE_REQUIRED,
                format!("role {} needs a scope facility", role.name()),
            ));
        }
        let device_id = match (role, device_id.trim()) {
            (Role::Device, "") => return Err(Error::invalid("device_id", "is required for device tokens")),
            (Role::Device, d) => Some(validate::code("device_id", d)?),
            (_, "") => None,
            _ => return Err(Error::invalid("device_id", "only device tokens carry a device id")),
        };
        Ok(NewToken {
            role,
            scope_facility_id,
            device_id,
            description: validate::text("description", description, 200)?,
        })
    }
}

/// A freshly generated token: its id, the bearer string shown once, and the hash to store.
#[derive(Clone, PartialEq, Eq)]
pub struct GeneratedSecret {
    /// Token id.
    pub id: String,
    /// The full bearer string.
    pub bearer: String,
    /// SHA-256 of the secret part.
    pub hash: Vec<u8>,
}

impl std::fmt::Debug for GeneratedSecret {
    // Secrets never reach logs, even through a stray `{:?}`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GeneratedSecret").field("id", &self.id).field("bearer", &"<redacted>").finish()
    }
}

/// Generates a new random token.
pub fn generate() -> GeneratedSecret {
    let secret = random_secret();
    // The id is plain hex so the bearer string splits unambiguously on '_'.
    let id = uuid::Uuid::now_v7().simple().to_string();
    GeneratedSecret { bearer: format!("vxt_{id}_{secret}"), hash: hash(&secret), id }
}

/// 256 random bits, URL-safe base64 (for token secrets, session cookies and form keys).
pub fn random_secret() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// Splits a bearer string into (id, secret); `None` when it is not shaped like a vaxtrace token.
pub fn split(bearer: &str) -> Option<(&str, &str)> {
    let rest = bearer.strip_prefix("vxt_")?;
    let (id, secret) = rest.split_once('_')?;
    (id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit()) && !secret.is_empty() && secret.len() <= 128)
        .then_some((id, secret))
}

/// The stored hash of a secret.
pub fn hash(secret: &str) -> Vec<u8> {
    Sha256::digest(secret.as_bytes()).to_vec()
}

/// Compares a presented secret with a stored hash in constant time.
pub fn verify(secret: &str, stored_hash: &[u8]) -> bool {
    hash(secret).ct_eq(stored_hash).into()
}

/// Hex SHA-256, used for request fingerprints.
pub fn sha256_hex(data: &[u8]) -> String {
    Sha256::digest(data).iter().map(|b| format!("{b:02x}")).collect()
}

/// A key only the holder of one bearer token can produce (HMAC of its secret, which the server
/// never stores): secrets inside an answer recorded under a request_id are sealed with it, so a
/// retry by the same token can be shown them again while the database alone reveals nothing.
#[derive(Clone, PartialEq, Eq)]
pub struct AnswerKey([u8; 32]);

impl std::fmt::Debug for AnswerKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AnswerKey(<redacted>)")
    }
}

impl AnswerKey {
    /// The answer key of a bearer token's secret part.
    pub fn of_secret(secret: &str) -> Self {
        let k = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret.as_bytes());
        let tag = ring::hmac::sign(&k, b"vaxtrace/v1 answer seal");
        let mut out = [0u8; 32];
        out.copy_from_slice(tag.as_ref());
        AnswerKey(out)
    }

    fn aead(&self) -> ring::aead::LessSafeKey {
        // 32 bytes is ChaCha20-Poly1305's key length, so this cannot fail.
        let unbound = ring::aead::UnboundKey::new(&ring::aead::CHACHA20_POLY1305, &self.0)
            .unwrap_or_else(|_| unreachable!("a 32-byte ChaCha20-Poly1305 key"));
        ring::aead::LessSafeKey::new(unbound)
    }

    /// Seals `secret` bound to `context` (the request_id): base64 of nonce, ciphertext and tag.
    pub fn seal(&self, context: &str, secret: &[u8]) -> Result<String> {
        let mut nonce = [0u8; ring::aead::NONCE_LEN];
        rand::rng().fill_bytes(&mut nonce);
        let mut buf = secret.to_vec();
        self.aead()
            .seal_in_place_append_tag(
                ring::aead::Nonce::assume_unique_for_key(nonce),
                ring::aead::Aad::from(context.as_bytes()),
                &mut buf,
            )
            .map_err(|_| Error::Internal("could not seal a secret".into()))?;
        let mut out = nonce.to_vec();
        out.extend_from_slice(&buf);
        Ok(base64::engine::general_purpose::STANDARD_NO_PAD.encode(out))
    }

    /// Opens what [`AnswerKey::seal`] sealed with this key and `context`; `None` otherwise.
    pub fn open(&self, context: &str, sealed: &str) -> Option<Vec<u8>> {
        let raw = base64::engine::general_purpose::STANDARD_NO_PAD.decode(sealed).ok()?;
        if raw.len() < ring::aead::NONCE_LEN {
            return None;
        }
        let (nonce, body) = raw.split_at(ring::aead::NONCE_LEN);
        let nonce = ring::aead::Nonce::try_assume_unique_for_key(nonce).ok()?;
        let mut buf = body.to_vec();
        let plain = self.aead().open_in_place(nonce, ring::aead::Aad::from(context.as_bytes()), &mut buf).ok()?;
        Some(plain.to_vec())
    }
}

/// An answer that shows a secret once (a token's bearer string, a device key, a webhook secret),
/// as recorded under a request_id: the object, and the secret sealed with the caller's
/// [`AnswerKey`]. Answers recorded before secrets were kept have none.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct WithSecret<T> {
    /// The object the answer describes.
    #[serde(flatten)]
    pub value: T,
    /// The sealed secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sealed_secret: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_tokens_verify_and_split() {
        let g = generate();
        let (id, secret) = split(&g.bearer).expect("well-formed");
        assert_eq!(id, g.id);
        assert!(verify(secret, &g.hash));
        assert!(!verify("wrong", &g.hash));
        assert!(!format!("{g:?}").contains(secret));
    }

    #[test]
    fn malformed_bearers_are_rejected() {
        assert!(split("").is_none());
        assert!(split("vxt_").is_none());
        assert!(split("vxt_abc_def").is_none());
        assert!(split("Bearer vxt_x").is_none());
    }

    #[test]
    fn scope_rules() {
        assert!(NewToken::parse(Role::Admin.as_i32(), "", "", "root").is_ok());
        assert!(NewToken::parse(Role::DepotManager.as_i32(), "", "", "dm").is_err());
        assert!(NewToken::parse(Role::Device.as_i32(), "0190f3e2-7c1a-7abc-8def-0123456789ab", "", "d").is_err());
        assert!(NewToken::parse(0, "", "", "x").is_err());
    }

    #[test]
    fn sealed_secrets_open_only_with_the_same_key_and_context() {
        let k = AnswerKey::of_secret("first");
        let sealed = k.seal("req-1", b"the secret").expect("seals");
        assert_eq!(k.open("req-1", &sealed).as_deref(), Some(&b"the secret"[..]));
        assert_eq!(AnswerKey::of_secret("other").open("req-1", &sealed), None);
        assert_eq!(k.open("req-2", &sealed), None);
        assert_ne!(k.0.to_vec(), hash("first"), "the key is not the stored hash of the secret");
        assert!(!format!("{k:?}").contains(&format!("{:?}", k.0)));
    }
}
