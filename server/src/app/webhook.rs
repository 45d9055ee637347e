//! Webhook use cases: register, list and delete endpoints that receive alert events. Delivery
//! itself runs in the background (`crate::notify`).

use std::time::Duration;

use super::App;
use crate::domain::webhook::{NewWebhook, RetryPolicy, Secret, WEBHOOK_NOT_FOUND, Webhook, WebhookInput};
use crate::domain::{Action, Caller, Idempotency, Page, PageRequest, new_id, now, validate};
use crate::error::{Error, Result};

/// How this server delivers webhooks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookSettings {
    /// Accept and call plain http URLs (tests, bridges on the same host); https only otherwise.
    pub allow_http: bool,
    /// Back-off of failed deliveries.
    pub retry: RetryPolicy,
    /// How often to look for work another replica routed or a retry that fell due.
    pub poll: Duration,
    /// How long one attempt may take before it counts as failed.
    pub timeout: Duration,
    /// How long a claimed delivery stays reserved for its sender; longer than `timeout`, so only a
    /// sender that died lets another replica send it again.
    pub lease: Duration,
}

impl Default for WebhookSettings {
    fn default() -> Self {
        WebhookSettings {
            allow_http: false,
            retry: RetryPolicy::default(),
            poll: Duration::from_secs(1),
            timeout: Duration::from_secs(10),
            lease: Duration::from_secs(60),
        }
    }
}

/// A webhook just created, with its secret (shown in this answer only).
#[derive(Debug, Clone)]
pub struct CreatedWebhook {
    /// The webhook.
    pub webhook: Webhook,
    /// The HMAC secret, shown to this call and again to a retry with the same request_id by the
    /// same token (empty only for a creation recorded before secrets were kept for retries).
    pub secret: Secret,
}

impl App {
    /// Sets how webhooks are accepted and delivered (before the server starts).
    pub fn with_webhook_settings(mut self, settings: WebhookSettings) -> Self {
        self.webhooks = std::sync::Arc::new(settings);
        self
    }

    /// How webhooks are accepted and delivered.
    pub fn webhook_settings(&self) -> &WebhookSettings {
        &self.webhooks
    }

    /// Registers a webhook for a scope inside the caller's; the secret is the caller's or a
    /// generated one. An empty scope means the caller's own scope (the whole tree if unscoped).
    pub async fn create_webhook(
        &self,
        caller: &Caller,
        request_id: &str,
        input: WebhookInput,
        secret: &str,
    ) -> Result<CreatedWebhook> {
        caller.require(Action::ManageWebhooks)?;
        let new = NewWebhook::parse(input, secret, self.webhooks.allow_http)?;
        let idem = Idempotency::from_request(caller, "CreateWebhook", request_id, &new.fingerprint())?;
        let secret = new.secret.clone().unwrap_or_else(Secret::generate);
        let created = self
            .idempotent(idem.as_ref(), async {
                let (scope_facility_id, scope_path) = match &new.scope_facility_id {
                    Some(id) => {
                        let f = self.visible_facility(caller, id, "FACILITY_NOT_FOUND").await?;
                        (Some(f.id), f.path)
                    }
                    None if caller.sees_everything() => (None, "/".to_owned()),
                    None => {
                        let own = caller.scope_path.trim_end_matches('/').rsplit('/').next().unwrap_or_default();
                        (Some(own.to_owned()), caller.scope_path.clone())
                    }
                };
                let w = Webhook {
                    id: new_id(),
                    scope_facility_id,
                    url: new.url.clone(),
                    kinds: new.kinds.clone(),
                    min_severity: new.min_severity,
                    description: new.description.clone(),
                    created_by: caller.token_id.clone(),
                    created_at: now(),
                    last_success_at: None,
                    last_failure_at: None,
                    last_error: String::new(),
                    consecutive_failures: 0,
                };
                let sealed = Self::seal_for(caller, idem.as_ref(), secret.expose().as_bytes())?;
                self.store.insert_webhook(idem.as_ref(), &w, &scope_path, &secret, sealed.as_deref()).await
            })
            .await?;
        let shown = Self::secret_of(
            caller,
            idem.as_ref(),
            secret.expose().as_bytes().to_vec(),
            created.sealed_secret.as_deref(),
        )?;
        let shown = String::from_utf8(shown).map_err(|_| Error::Internal("a recorded secret is not text".into()))?;
        Ok(CreatedWebhook { webhook: created.value, secret: Secret::stored(shown) })
    }

    /// Lists the webhooks whose scope lies in the caller's, by id.
    pub async fn list_webhooks(&self, caller: &Caller, page_size: i32, page_token: &str) -> Result<Page<Webhook>> {
        caller.require(Action::ManageWebhooks)?;
        let page = PageRequest::parse(page_size, page_token, &"webhooks")?;
        self.store.list_webhooks(&caller.scope_path, &page).await
    }

    /// Deletes a webhook in the caller's scope; its pending deliveries are dropped.
    pub async fn delete_webhook(&self, caller: &Caller, request_id: &str, id: &str) -> Result<()> {
        caller.require(Action::ManageWebhooks)?;
        let id = validate::id("id", id)?;
        let idem = Idempotency::from_request(caller, "DeleteWebhook", request_id, &id)?;
        let deleted = self
            .idempotent(idem.as_ref(), async {
                if let Some((_, path)) = self.store.get_webhook(&id).await?
                    && !caller.covers(&path)
                {
                    return Err(Error::PermissionDenied);
                }
                // A missing webhook still goes to the store, which records that it was not there.
                self.store.delete_webhook(idem.as_ref(), &id).await
            })
            .await?;
        if deleted { Ok(()) } else { Err(caller.not_found(WEBHOOK_NOT_FOUND, "webhook")) }
    }
}
