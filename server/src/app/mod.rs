//! The use cases every transport (gRPC, the web pages, the CLI) calls: authorize, validate, store.
//! Transports only convert their wire types to the domain's inputs and back.

use std::sync::Arc;

use crate::domain::catalog::{LotInput, ProductInput};
use crate::domain::facility::{FacilityInput, FacilityQuery, StorageUnitInput};
use crate::domain::{
    Action, Caller, Facility, FacilityFilter, FacilityKind, FacilityPatch, Idempotency, Lot, NewFacility, NewLot,
    NewProduct, NewStorageUnit, NewToken, Page, PageRequest, Product, ProductPatch, Role, StorageUnit,
    StorageUnitFilter, StorageUnitPatch, Token, new_id, token, validate,
};
use crate::error::{Error, Result, reason};
use crate::store::Store;

pub mod alert;
pub mod coldchain;
pub mod onboard;
pub mod report;
pub mod stock;
pub mod telemetry;
pub mod web;
pub mod webhook;

pub use webhook::{CreatedWebhook, WebhookSettings};

/// The application: a store and the rules around it.
#[derive(Debug, Clone)]
pub struct App {
    store: Arc<dyn Store>,
    /// The latest alert event id this process wrote; watchers wait on it.
    events: Arc<tokio::sync::watch::Sender<i64>>,
    /// Set when the server shuts down, so long-lived streams end and graceful shutdown finishes.
    closing: Arc<tokio::sync::watch::Sender<bool>>,
    /// Process counters for /metrics.
    metrics: crate::Metrics,
    /// Serializes alarm evaluation per device in this process.
    probe_locks: Arc<coldchain::ProbeLocks>,
    /// Recently read tokens, so a burst of requests costs one token look-up, not one each.
    tokens: Arc<TokenCache>,
    /// How webhooks are accepted and delivered.
    webhooks: Arc<WebhookSettings>,
    /// Devices with their keys, for ingest (see [`telemetry::DEVICE_CACHE_TTL`]).
    devices: Arc<telemetry::DeviceCache>,
    /// Bounds on concurrent calls and streams.
    limits: Arc<crate::limits::Limits>,
    /// Open WatchAlerts streams, per token and in total.
    streams: Arc<crate::limits::StreamCounter>,
    /// What the ledger needs of each lot, read once (see [`LotCache`]).
    lots: Arc<LotCache>,
}

/// Lots as the ledger sees them (product, doses per vial, expiry), by id. Nothing of that ever
/// changes once a lot exists (lots are never updated or deleted, and a product's doses per
/// vial is fixed at creation), so an entry is never stale: a stock write saves its look-up.
#[derive(Debug, Default)]
struct LotCache(std::sync::Mutex<std::collections::HashMap<String, crate::domain::stock::LotInfo>>);

impl LotCache {
    /// Bounds memory: a national catalogue holds a few thousand live lots.
    const MAX_ENTRIES: usize = 50_000;

    fn get(&self, id: &str) -> Option<crate::domain::stock::LotInfo> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).get(id).cloned()
    }

    fn put(&self, info: &crate::domain::stock::LotInfo) {
        let mut m = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if m.len() >= Self::MAX_ENTRIES {
            m.clear();
        }
        m.insert(info.lot_id.clone(), info.clone());
    }
}

/// How long a token read from the database is trusted without reading it again: the bound on
/// how late a revocation made by another replica (or `token` CLI) takes effect here. A
/// revocation through this process takes effect at once.
pub const TOKEN_CACHE_TTL: std::time::Duration = std::time::Duration::from_secs(5);

/// Tokens by id with the instant they were read; revoked ids are remembered for one TTL so a
/// read that raced the revocation is not cached after it.
#[derive(Debug, Default)]
struct TokenCache(std::sync::Mutex<TokenMaps>);

#[derive(Debug, Default)]
struct TokenMaps {
    tokens: std::collections::HashMap<String, (crate::store::StoredToken, std::time::Instant)>,
    revoked: std::collections::HashMap<String, std::time::Instant>,
}

impl TokenCache {
    /// Bounds memory under a flood of distinct (mostly invalid) token ids.
    const MAX_ENTRIES: usize = 10_000;

    fn get(&self, id: &str) -> Option<crate::store::StoredToken> {
        let m = self.0.lock().unwrap_or_else(|p| p.into_inner());
        m.tokens.get(id).filter(|(_, at)| at.elapsed() < TOKEN_CACHE_TTL).map(|(t, _)| t.clone())
    }

    /// Caches a token read at `read_at`, unless it was revoked here since.
    fn put(&self, t: crate::store::StoredToken, read_at: std::time::Instant) {
        let mut m = self.0.lock().unwrap_or_else(|p| p.into_inner());
        m.revoked.retain(|_, at| at.elapsed() < TOKEN_CACHE_TTL);
        if m.revoked.get(&t.token.id).is_some_and(|at| *at >= read_at) {
            return;
        }
        if m.tokens.len() >= Self::MAX_ENTRIES {
            m.tokens.retain(|_, (_, at)| at.elapsed() < TOKEN_CACHE_TTL);
            if m.tokens.len() >= Self::MAX_ENTRIES {
                m.tokens.clear();
            }
        }
        m.tokens.insert(t.token.id.clone(), (t, read_at));
    }

    fn forget(&self, id: &str) {
        let mut m = self.0.lock().unwrap_or_else(|p| p.into_inner());
        m.tokens.remove(id);
        m.revoked.insert(id.to_owned(), std::time::Instant::now());
    }
}

/// A token just created: its description and the bearer secret, shown once.
#[derive(Debug, Clone)]
pub struct IssuedToken {
    /// The description.
    pub token: Token,
    /// The bearer string; a retry with the same request_id by the same token shows it again
    /// (empty only for a creation recorded before bearer strings were kept, sealed, for retries).
    pub secret: String,
}

impl App {
    /// Wraps a store.
    pub fn new(store: Arc<dyn Store>) -> Self {
        App {
            store,
            events: Arc::new(tokio::sync::watch::Sender::new(0)),
            closing: Arc::new(tokio::sync::watch::Sender::new(false)),
            metrics: crate::Metrics::default(),
            probe_locks: Arc::default(),
            tokens: Arc::default(),
            webhooks: Arc::default(),
            devices: Arc::default(),
            limits: Arc::default(),
            streams: Arc::default(),
            lots: Arc::default(),
        }
    }

    /// Sets the bounds on concurrent calls and streams (before the server starts).
    pub fn with_limits(mut self, limits: crate::limits::Limits) -> Self {
        self.limits = Arc::new(limits);
        self
    }

    /// The bounds on concurrent calls and streams.
    pub fn limits(&self) -> &crate::limits::Limits {
        &self.limits
    }

    /// Ends every open stream (WatchAlerts): called when shutdown begins, since graceful
    /// shutdown waits for in-flight requests and a stream would otherwise never finish.
    pub fn close_streams(&self) {
        self.closing.send_replace(true);
    }

    /// Wakes up on every alert event this process writes (the value is the latest event id).
    pub(crate) fn event_wakeups(&self) -> tokio::sync::watch::Receiver<i64> {
        self.events.subscribe()
    }

    /// Turns true when the server shuts down; background work ends then.
    pub(crate) fn closing_signal(&self) -> tokio::sync::watch::Receiver<bool> {
        self.closing.subscribe()
    }

    /// Runs a mutation under its request's key, the one way every mutating use case is made
    /// idempotent. The key is looked up first: what it holds (the first call's answer or refusal)
    /// is returned before any check of the current state, so a retry answers as the first call
    /// did even when, say, a lot has expired since. Otherwise `work` runs: its store write claims
    /// the key in its transaction and ends with `idem_settle` (store/common.rs), which keeps a
    /// refusal met there under the key; a refusal met before the write goes through
    /// [`App::remember`].
    pub(crate) async fn idempotent<T: serde::de::DeserializeOwned>(
        &self,
        idem: Option<&Idempotency>,
        work: impl std::future::Future<Output = Result<T>>,
    ) -> Result<T> {
        if let Some(k) = idem
            && let Some(held) = self.store.idem_held(k).await?
        {
            return Self::replay(held);
        }
        let r = work.await;
        self.remember(idem, r).await
    }

    /// [`App::idempotent`] for work whose only write is one store transaction that records the
    /// key itself (and, finding it taken, answers with what it holds): the key is looked up only
    /// when the work fails, which saves a query on every first attempt of the busiest writes.
    pub(crate) async fn idempotent_write<T: serde::de::DeserializeOwned>(
        &self,
        idem: Option<&Idempotency>,
        work: impl std::future::Future<Output = Result<T>>,
    ) -> Result<T> {
        let r = work.await;
        self.remember(idem, r).await
    }

    /// Passes a result through, remembering a final refusal under the request's key: a retried
    /// request_id then gets the same refusal instead of running against changed state. When the
    /// key already holds an answer (a twin of this request, in flight when it was looked up,
    /// answered first), that answer is returned instead, so both calls answer alike.
    async fn remember<T: serde::de::DeserializeOwned>(&self, idem: Option<&Idempotency>, r: Result<T>) -> Result<T> {
        let (Err(e), Some(k)) = (&r, idem) else { return r };
        match self.store.record_refusal(k, e).await {
            Ok(Some(held)) => Self::replay(held),
            Ok(None) => r,
            Err(rec) => {
                tracing::warn!(error = %rec, "could not record a refused request");
                r
            }
        }
    }

    fn replay<T: serde::de::DeserializeOwned>(held: crate::store::Held) -> Result<T> {
        match held {
            crate::store::Held::Answer(json) => Ok(serde_json::from_str(&json)?),
            crate::store::Held::Refusal(e) => Err(e),
        }
    }

    /// Seals a secret shown once for the answer recorded under `idem`, with the caller's
    /// [`token::AnswerKey`]: a retry by the same token is shown the same secret again (see
    /// [`App::secret_of`]); `None` without a request_id, since nothing is recorded then.
    fn seal_for(caller: &Caller, idem: Option<&Idempotency>, secret: &[u8]) -> Result<Option<String>> {
        let Some(k) = idem else { return Ok(None) };
        let key = caller.answer_key.as_ref().ok_or_else(|| {
            Error::invalid("request_id", "a request_id on a call that creates a secret needs a bearer token")
        })?;
        key.seal(&k.request_id, secret).map(Some)
    }

    /// The secret an answer shows: `made` when no request_id was given (the answer is fresh),
    /// else the recorded one, whether this call made it or a first call did; empty for an
    /// answer recorded before secrets were kept under request_ids.
    fn secret_of(caller: &Caller, idem: Option<&Idempotency>, made: Vec<u8>, sealed: Option<&str>) -> Result<Vec<u8>> {
        let Some(k) = idem else { return Ok(made) };
        let Some(sealed) = sealed else { return Ok(Vec::new()) };
        caller
            .answer_key
            .as_ref()
            .and_then(|key| key.open(&k.request_id, sealed))
            .ok_or_else(|| Error::Internal("a secret recorded under a request_id could not be opened".into()))
    }

    /// The process counters.
    pub fn metrics(&self) -> &crate::Metrics {
        &self.metrics
    }

    /// The store, for health checks.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// Resolves a bearer string to a caller; any failure is UNAUTHENTICATED without detail.
    pub async fn authenticate(&self, bearer: &str) -> Result<Caller> {
        let (id, secret) = token::split(bearer).ok_or(Error::Unauthenticated)?;
        let stored = self.stored_token(id).await?;
        if !token::verify(secret, &stored.secret_hash) {
            return Err(Error::Unauthenticated);
        }
        Ok(Caller { answer_key: Some(token::AnswerKey::of_secret(secret)), ..Self::caller_of(stored) })
    }

    /// A live (not revoked) token by id, through the cache.
    async fn stored_token(&self, id: &str) -> Result<crate::store::StoredToken> {
        let stored = match self.tokens.get(id) {
            Some(t) => t,
            None => {
                let read_at = std::time::Instant::now();
                let t = self.store.find_token(id).await?.ok_or(Error::Unauthenticated)?;
                self.tokens.put(t.clone(), read_at);
                t
            }
        };
        if stored.token.revoked_at.is_some() {
            return Err(Error::Unauthenticated);
        }
        Ok(stored)
    }

    fn caller_of(stored: crate::store::StoredToken) -> Caller {
        Caller {
            token_id: stored.token.id,
            role: stored.token.role,
            scope_path: stored.scope_path,
            device_id: stored.token.device_id,
            answer_key: None,
        }
    }

    /// On an empty database, issues the first admin token (for `serve` and `demo` to print once).
    pub async fn bootstrap_admin(&self) -> Result<Option<IssuedToken>> {
        if self.store.count_tokens().await? > 0 {
            return Ok(None);
        }
        let new = NewToken::parse(Role::Admin.as_i32(), "", "", "bootstrap admin")?;
        self.issue_token(&new).await.map(Some)
    }

    /// Issues a token outside any request (no request_id, nothing recorded).
    async fn issue_token(&self, new: &NewToken) -> Result<IssuedToken> {
        let g = token::generate();
        let stored = self.store.insert_token(None, new, &g.id, &g.hash, None).await?;
        Ok(IssuedToken { token: stored.value, secret: g.bearer })
    }

    /// Issues a token (admin only), for the API and the `token create` command alike. A retry
    /// with the same request_id by the same token shows the same bearer string again.
    pub async fn create_token(
        &self,
        caller: &Caller,
        request_id: &str,
        role: i32,
        scope: &str,
        device_id: &str,
        description: &str,
    ) -> Result<IssuedToken> {
        caller.require(Action::ManageTokens)?;
        let new = NewToken::parse(role, scope, device_id, description)?;
        let idem = Idempotency::from_request(caller, "CreateToken", request_id, &new)?;
        let g = token::generate();
        let issued = self
            .idempotent(idem.as_ref(), async {
                if let Some(scope) = &new.scope_facility_id {
                    self.visible_facility(caller, scope, reason::NOT_FOUND).await?;
                }
                let sealed = Self::seal_for(caller, idem.as_ref(), g.bearer.as_bytes())?;
                self.store.insert_token(idem.as_ref(), &new, &g.id, &g.hash, sealed.as_deref()).await
            })
            .await?;
        let secret = Self::secret_of(caller, idem.as_ref(), g.bearer.into_bytes(), issued.sealed_secret.as_deref())?;
        let secret = String::from_utf8(secret).map_err(|_| Error::Internal("a recorded token is not text".into()))?;
        Ok(IssuedToken { token: issued.value, secret })
    }

    /// Issues a token without a caller: for the operator's CLI, which has the database itself.
    pub async fn create_token_local(&self, new: &NewToken) -> Result<IssuedToken> {
        if let Some(scope) = &new.scope_facility_id
            && self.store.get_facility(scope).await?.is_none()
        {
            return Err(Error::not_found(reason::NOT_FOUND, format!("scope facility {scope} not found")));
        }
        self.issue_token(new).await
    }

    /// Lists tokens (admin only).
    pub async fn list_tokens(&self, caller: &Caller, include_revoked: bool, page: PageRequest) -> Result<Page<Token>> {
        caller.require(Action::ManageTokens)?;
        self.store.list_tokens(include_revoked, &page).await
    }

    /// Revokes a token (admin only).
    pub async fn revoke_token(&self, caller: &Caller, request_id: &str, id: &str) -> Result<Token> {
        caller.require(Action::ManageTokens)?;
        let idem = Idempotency::from_request(caller, "RevokeToken", request_id, &id)?;
        let revoked = self.idempotent(idem.as_ref(), self.store.revoke_token(idem.as_ref(), id)).await;
        self.tokens.forget(id);
        revoked?.ok_or_else(|| caller.not_found(reason::NOT_FOUND, "token"))
    }

    /// Describes the caller's own token.
    pub async fn who_am_i(&self, caller: &Caller) -> Result<Token> {
        caller.require(Action::WhoAmI)?;
        let stored = self.store.find_token(&caller.token_id).await?.ok_or(Error::Unauthenticated)?;
        Ok(stored.token)
    }

    /// Reads a facility the caller may see; a hidden or missing one is indistinguishable for scoped callers.
    async fn visible_facility(&self, caller: &Caller, id: &str, not_found: &'static str) -> Result<Facility> {
        match self.store.get_facility(id).await? {
            Some(f) if caller.covers(&f.path) => Ok(f),
            Some(_) => Err(Error::PermissionDenied),
            None => Err(caller.not_found(not_found, "facility")),
        }
    }

    /// Creates a facility under a parent in the caller's scope.
    pub async fn create_facility(&self, caller: &Caller, request_id: &str, input: FacilityInput) -> Result<Facility> {
        caller.require(Action::WriteFacilities)?;
        let new = NewFacility::parse(input)?;
        let idem = Idempotency::from_request(caller, "CreateFacility", request_id, &new)?;
        self.idempotent(idem.as_ref(), async {
            let id = new_id();
            let path = match &new.parent_id {
                Some(pid) => {
                    let parent = self.visible_facility(caller, pid, reason::PARENT_NOT_FOUND).await?;
                    caller.require_at(Action::WriteFacilities, &parent.path)?;
                    new.check_parent(&parent)?;
                    format!("{}{id}/", parent.path)
                }
                None => {
                    // Only a whole-tree caller may plant the root.
                    if !caller.sees_everything() {
                        return Err(Error::PermissionDenied);
                    }
                    debug_assert_eq!(new.kind, FacilityKind::NationalStore);
                    format!("/{id}/")
                }
            };
            self.store.insert_facility(idem.as_ref(), &id, &path, &new).await
        })
        .await
    }

    /// Reads a facility.
    pub async fn get_facility(&self, caller: &Caller, id: &str) -> Result<Facility> {
        caller.require(Action::ReadFacilities)?;
        let id = validate::id("id", id)?;
        self.visible_facility(caller, &id, reason::NOT_FOUND).await
    }

    /// Lists facilities in the caller's scope.
    pub async fn list_facilities(
        &self,
        caller: &Caller,
        query: FacilityQuery,
        page_size: i32,
        page_token: &str,
    ) -> Result<Page<Facility>> {
        caller.require(Action::ReadFacilities)?;
        let ancestor_id = validate::optional_id("ancestor_id", &query.ancestor_id)?;
        let parent_id = validate::optional_id("parent_id", &query.parent_id)?;
        let kind = match query.kind {
            0 => None,
            k => Some(FacilityKind::from_i32(k).ok_or_else(|| Error::invalid("kind", "unknown facility kind"))?),
        };
        let name_contains = validate::optional_text("name_contains", &query.name_contains, 200)?;
        let include_inactive = query.include_inactive;
        let ancestor_path = match &ancestor_id {
            Some(a) => Some(self.visible_facility(caller, a, reason::NOT_FOUND).await?.path),
            None => None,
        };
        let filter = FacilityFilter {
            ancestor_path,
            parent_id,
            kind,
            name_contains: (!name_contains.is_empty()).then_some(name_contains),
            include_inactive,
        };
        let page = PageRequest::parse(page_size, page_token, &filter)?;
        self.store.list_facilities(&caller.scope_path, &filter, &page).await
    }

    /// Updates a facility in scope.
    pub async fn update_facility(
        &self,
        caller: &Caller,
        request_id: &str,
        id: &str,
        input: &FacilityInput,
        mask: &[String],
    ) -> Result<Facility> {
        caller.require(Action::WriteFacilities)?;
        let id = validate::id("facility.id", id)?;
        let patch = FacilityPatch::parse(input, mask)?;
        let idem = Idempotency::from_request(caller, "UpdateFacility", request_id, &(&id, &patch))?;
        self.idempotent(idem.as_ref(), async {
            let current = self.visible_facility(caller, &id, reason::NOT_FOUND).await?;
            caller.require_at(Action::WriteFacilities, &current.path)?;
            self.store.update_facility(idem.as_ref(), &id, &patch).await
        })
        .await?
        .ok_or_else(|| caller.not_found(reason::NOT_FOUND, "facility"))
    }

    /// Creates a storage unit at a facility in scope.
    pub async fn create_storage_unit(
        &self,
        caller: &Caller,
        request_id: &str,
        input: StorageUnitInput,
    ) -> Result<StorageUnit> {
        caller.require(Action::WriteStorageUnits)?;
        let new = NewStorageUnit::parse(input)?;
        let idem = Idempotency::from_request(caller, "CreateStorageUnit", request_id, &new)?;
        self.idempotent(idem.as_ref(), async {
            let facility = self.visible_facility(caller, &new.facility_id, reason::NOT_FOUND).await?;
            caller.require_at(Action::WriteStorageUnits, &facility.path)?;
            self.store.insert_storage_unit(idem.as_ref(), &new_id(), &new).await
        })
        .await
    }

    async fn visible_unit(&self, caller: &Caller, id: &str) -> Result<(StorageUnit, String)> {
        match self.store.get_storage_unit(id).await? {
            Some((u, path)) if caller.covers(&path) => Ok((u, path)),
            Some(_) => Err(Error::PermissionDenied),
            None => Err(caller.not_found(reason::NOT_FOUND, "storage unit")),
        }
    }

    /// Reads a storage unit.
    pub async fn get_storage_unit(&self, caller: &Caller, id: &str) -> Result<StorageUnit> {
        caller.require(Action::ReadFacilities)?;
        let id = validate::id("id", id)?;
        Ok(self.visible_unit(caller, &id).await?.0)
    }

    /// Lists storage units in scope.
    pub async fn list_storage_units(
        &self,
        caller: &Caller,
        facility_id: &str,
        ancestor_id: &str,
        include_inactive: bool,
        page_size: i32,
        page_token: &str,
    ) -> Result<Page<StorageUnit>> {
        caller.require(Action::ReadFacilities)?;
        let facility_id = validate::optional_id("facility_id", facility_id)?;
        let ancestor_id = validate::optional_id("ancestor_id", ancestor_id)?;
        if let Some(f) = &facility_id {
            self.visible_facility(caller, f, reason::NOT_FOUND).await?;
        }
        let ancestor_path = match &ancestor_id {
            Some(a) => Some(self.visible_facility(caller, a, reason::NOT_FOUND).await?.path),
            None => None,
        };
        let filter = StorageUnitFilter { facility_id, ancestor_path, include_inactive };
        let page = PageRequest::parse(page_size, page_token, &filter)?;
        self.store.list_storage_units(&caller.scope_path, &filter, &page).await
    }

    /// Updates a storage unit in scope.
    pub async fn update_storage_unit(
        &self,
        caller: &Caller,
        request_id: &str,
        id: &str,
        input: &StorageUnitInput,
        mask: &[String],
    ) -> Result<StorageUnit> {
        caller.require(Action::WriteStorageUnits)?;
        let id = validate::id("storage_unit.id", id)?;
        let patch = StorageUnitPatch::parse(input, mask)?;
        let idem = Idempotency::from_request(caller, "UpdateStorageUnit", request_id, &(&id, &patch))?;
        self.idempotent(idem.as_ref(), async {
            let (_, path) = self.visible_unit(caller, &id).await?;
            caller.require_at(Action::WriteStorageUnits, &path)?;
            self.store.update_storage_unit(idem.as_ref(), &id, &patch).await
        })
        .await?
        .ok_or_else(|| caller.not_found(reason::NOT_FOUND, "storage unit"))
    }

    /// Creates a product.
    pub async fn create_product(&self, caller: &Caller, request_id: &str, input: ProductInput) -> Result<Product> {
        caller.require(Action::WriteCatalog)?;
        let new = NewProduct::parse(input)?;
        let idem = Idempotency::from_request(caller, "CreateProduct", request_id, &new)?;
        self.idempotent(idem.as_ref(), self.store.insert_product(idem.as_ref(), &new_id(), &new)).await
    }

    /// Reads a product. The catalogue is national, so any reader sees it and NOT_FOUND is honest.
    pub async fn get_product(&self, caller: &Caller, id: &str) -> Result<Product> {
        caller.require(Action::ReadCatalog)?;
        let id = validate::id("id", id)?;
        self.store.get_product(&id).await?.ok_or_else(|| Error::not_found(reason::NOT_FOUND, "product not found"))
    }

    /// Lists products.
    pub async fn list_products(
        &self,
        caller: &Caller,
        include_inactive: bool,
        page_size: i32,
        page_token: &str,
    ) -> Result<Page<Product>> {
        caller.require(Action::ReadCatalog)?;
        let page = PageRequest::parse(page_size, page_token, &include_inactive)?;
        self.store.list_products(include_inactive, &page).await
    }

    /// Updates a product.
    pub async fn update_product(
        &self,
        caller: &Caller,
        request_id: &str,
        id: &str,
        input: &ProductInput,
        mask: &[String],
    ) -> Result<Product> {
        caller.require(Action::WriteCatalog)?;
        let id = validate::id("product.id", id)?;
        let patch = ProductPatch::parse(input, mask)?;
        let idem = Idempotency::from_request(caller, "UpdateProduct", request_id, &(&id, &patch))?;
        self.idempotent(idem.as_ref(), self.store.update_product(idem.as_ref(), &id, &patch))
            .await?
            .ok_or_else(|| Error::not_found(reason::NOT_FOUND, "product not found"))
    }

    /// Creates a lot of an existing product.
    pub async fn create_lot(&self, caller: &Caller, request_id: &str, input: LotInput) -> Result<Lot> {
        caller.require(Action::WriteCatalog)?;
        let new = NewLot::parse(input)?;
        let idem = Idempotency::from_request(caller, "CreateLot", request_id, &new)?;
        self.idempotent(idem.as_ref(), async {
            let product = self.store.get_product(&new.product_id).await?.ok_or_else(|| {
                Error::not_found("PRODUCT_NOT_FOUND", format!("product {} not found", new.product_id))
            })?;
            new.check_product(&product)?;
            self.store.insert_lot(idem.as_ref(), &new_id(), &new).await
        })
        .await
    }

    /// Reads a lot.
    pub async fn get_lot(&self, caller: &Caller, id: &str) -> Result<Lot> {
        caller.require(Action::ReadCatalog)?;
        let id = validate::id("id", id)?;
        self.store.get_lot(&id).await?.ok_or_else(|| Error::not_found(reason::NOT_FOUND, "lot not found"))
    }

    /// Lists lots.
    pub async fn list_lots(
        &self,
        caller: &Caller,
        product_id: &str,
        expires_before: Option<(i32, i32, i32)>,
        page_size: i32,
        page_token: &str,
    ) -> Result<Page<Lot>> {
        caller.require(Action::ReadCatalog)?;
        let product_id = validate::optional_id("product_id", product_id)?;
        let expires_before = match expires_before {
            Some(d) => Some(crate::domain::catalog::date("expires_before", Some(d))?),
            None => None,
        };
        let page = PageRequest::parse(page_size, page_token, &(&product_id, &expires_before))?;
        self.store.list_lots(product_id.as_deref(), expires_before, &page).await
    }
}
