//! Storage: one [`Store`] trait, one implementation per engine, chosen at run time by the URL
//! scheme. All SQL of the server lives under this module.

use std::sync::Arc;

use async_trait::async_trait;
use chrono::NaiveDate;

use crate::domain::stock::{
    EntryFilter, LedgerEntry, LotInfo, Operation, SessionReport, Shipment, ShipmentState, StockFilter, StockItem,
    StockPolicy,
};
use crate::domain::{
    Facility, FacilityFilter, FacilityPatch, Idempotency, Lot, NewFacility, NewLot, NewProduct, NewStorageUnit,
    NewToken, Page, PageRequest, Product, ProductPatch, StorageUnit, StorageUnitFilter, StorageUnitPatch, Token,
};
use crate::error::{Error, Result, reason};

#[macro_use]
mod alert_sql;
#[macro_use]
mod common;
#[macro_use]
mod stock_sql;
#[macro_use]
mod telemetry_sql;
#[macro_use]
mod webhook_sql;
#[macro_use]
mod onboard_sql;
#[macro_use]
mod web_sql;
pub mod postgres;
pub mod sqlite;

/// The database engine behind a store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Engine {
    /// SQLite (embedded default).
    Sqlite,
    /// PostgreSQL (production).
    Postgres,
}

/// A token as stored: its description, its secret's hash and its scope's facility path.
#[derive(Debug, Clone)]
pub struct StoredToken {
    /// The description.
    pub token: Token,
    /// SHA-256 of the secret.
    pub secret_hash: Vec<u8>,
    /// Materialized path of the scope facility, `/` for the whole tree.
    pub scope_path: String,
}

/// One device's share of a grouped ingest transaction ([`TelemetryStore::store_reading_groups`]).
#[derive(Debug, Clone)]
pub struct DeviceReadings {
    /// The device.
    pub device_id: String,
    /// The key version the batches were verified with.
    pub key_version: i32,
    /// The device's `updated_at` as it was when the batches were checked: any change since (probes
    /// moved, deactivated, key rotated) makes the share [`GroupOutcome::Stale`].
    pub updated_at: chrono::DateTime<chrono::Utc>,
    /// Valid readings, seqs already shifted by the device's seq offset.
    pub readings: Vec<crate::domain::telemetry::StoredReading>,
    /// Seqs refused for their content.
    pub rejects: Vec<(i64, &'static str)>,
}

/// What a grouped ingest transaction did with one device's share.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GroupOutcome {
    /// Committed: the device's new ack (in stored seqs) and the seqs that were new.
    Stored {
        /// Every reading of the device with a stored seq up to this is committed.
        acked: i64,
        /// Seqs inserted by this transaction.
        inserted: std::collections::HashSet<i64>,
    },
    /// The device changed since the batches were checked: nothing of this share was written and
    /// the batches must be checked again against the device as it is now.
    Stale,
}

/// Readings of one probe for alarm evaluation: which probe, in which unit, after which instant.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ProbeKey {
    /// The device.
    pub device_id: String,
    /// The probe index.
    pub probe: u32,
    /// The probe's present storage unit.
    pub storage_unit_id: String,
}

/// What a request_id already holds.
#[derive(Debug)]
pub enum Held {
    /// The JSON of the first call's result.
    Answer(String),
    /// The first call's refusal, or REQUEST_ID_REUSED when the key was used for another request.
    Refusal(Error),
}

/// Everything the server persists. Mutations take an optional [`Idempotency`] key: a repeated key
/// returns the first result and changes nothing.
#[async_trait]
pub trait Store:
    StockStore
    + AlertStore
    + TelemetryStore
    + WebhookStore
    + OnboardStore
    + WebSessionStore
    + Send
    + Sync
    + std::fmt::Debug
    + 'static
{
    /// The engine.
    fn engine(&self) -> Engine;
    /// Checks that the database answers.
    async fn ping(&self) -> Result<()>;

    /// What the key holds, read without waiting for a twin in flight; `None` when nothing yet.
    async fn idem_held(&self, idem: &Idempotency) -> Result<Option<Held>>;
    /// Remembers a final refusal met outside a store write under an idempotency key, so a retry
    /// gets the same answer; when the key already holds an answer (the same request answered
    /// first, or a twin still in flight did: the write waits for it), returns that instead.
    async fn record_refusal(&self, idem: &Idempotency, e: &Error) -> Result<Option<Held>>;
    /// Number of tokens ever issued (0 on a fresh database).
    async fn count_tokens(&self) -> Result<i64>;
    /// Looks a token up by id.
    async fn find_token(&self, id: &str) -> Result<Option<StoredToken>>;
    /// Stores a new token.
    async fn insert_token(
        &self,
        idem: Option<&Idempotency>,
        new: &NewToken,
        id: &str,
        secret_hash: &[u8],
        sealed_secret: Option<&str>,
    ) -> Result<crate::domain::token::WithSecret<Token>>;
    /// Lists tokens by id.
    async fn list_tokens(&self, include_revoked: bool, page: &PageRequest) -> Result<Page<Token>>;
    /// Revokes a token; `None` when it does not exist.
    async fn revoke_token(&self, idem: Option<&Idempotency>, id: &str) -> Result<Option<Token>>;

    /// Reads a facility.
    async fn get_facility(&self, id: &str) -> Result<Option<Facility>>;
    /// Stores a new facility at `path` (its parent's path plus its own id).
    async fn insert_facility(
        &self,
        idem: Option<&Idempotency>,
        id: &str,
        path: &str,
        new: &NewFacility,
    ) -> Result<Facility>;
    /// Applies a patch; `None` when the facility does not exist.
    async fn update_facility(
        &self,
        idem: Option<&Idempotency>,
        id: &str,
        patch: &FacilityPatch,
    ) -> Result<Option<Facility>>;
    /// Lists facilities under `scope_path` matching the filter, by id.
    async fn list_facilities(
        &self,
        scope_path: &str,
        filter: &FacilityFilter,
        page: &PageRequest,
    ) -> Result<Page<Facility>>;

    /// Reads a storage unit with its facility's path.
    async fn get_storage_unit(&self, id: &str) -> Result<Option<(StorageUnit, String)>>;
    /// Reads storage units (at most 1,000) with their facilities, in one query; unknown ids are absent.
    async fn units_with_facility(&self, ids: &[String]) -> Result<Vec<(StorageUnit, Facility)>>;
    /// Stores a new storage unit.
    async fn insert_storage_unit(
        &self,
        idem: Option<&Idempotency>,
        id: &str,
        new: &NewStorageUnit,
    ) -> Result<StorageUnit>;
    /// Applies a patch; `None` when the unit does not exist.
    async fn update_storage_unit(
        &self,
        idem: Option<&Idempotency>,
        id: &str,
        patch: &StorageUnitPatch,
    ) -> Result<Option<StorageUnit>>;
    /// Lists storage units at facilities under `scope_path`.
    async fn list_storage_units(
        &self,
        scope_path: &str,
        filter: &StorageUnitFilter,
        page: &PageRequest,
    ) -> Result<Page<StorageUnit>>;

    /// Reads a product.
    async fn get_product(&self, id: &str) -> Result<Option<Product>>;
    /// The product whose packs carry `gtin` (GTIN-14).
    async fn find_product_by_gtin(&self, gtin: &str) -> Result<Option<Product>>;
    /// Stores a new product.
    async fn insert_product(&self, idem: Option<&Idempotency>, id: &str, new: &NewProduct) -> Result<Product>;
    /// Applies a patch; `None` when the product does not exist.
    async fn update_product(
        &self,
        idem: Option<&Idempotency>,
        id: &str,
        patch: &ProductPatch,
    ) -> Result<Option<Product>>;
    /// Lists products by id.
    async fn list_products(&self, include_inactive: bool, page: &PageRequest) -> Result<Page<Product>>;

    /// Reads a lot.
    async fn get_lot(&self, id: &str) -> Result<Option<Lot>>;
    /// Stores a new lot.
    async fn insert_lot(&self, idem: Option<&Idempotency>, id: &str, new: &NewLot) -> Result<Lot>;
    /// Lists lots by id, optionally of one product and expiring on or before a date.
    async fn list_lots(
        &self,
        product_id: Option<&str>,
        expires_before: Option<NaiveDate>,
        page: &PageRequest,
    ) -> Result<Page<Lot>>;
}

/// The stock ledger's storage.
#[async_trait]
pub trait StockStore: Send + Sync {
    /// A product's lot by number.
    async fn find_lot(&self, product_id: &str, lot_number: &str) -> Result<Option<Lot>>;
    /// A lot with its product's doses per vial.
    async fn lot_info(&self, lot_id: &str) -> Result<Option<LotInfo>>;
    /// Writes an operation's entries atomically; balances change in the same transaction.
    async fn post(&self, idem: Option<&Idempotency>, op: &Operation) -> Result<Vec<LedgerEntry>>;
    /// As [`StockStore::post`], for an RPC whose answer is more than the entries (what it says
    /// about balances that did not change): `answer` makes it from the written entries in the
    /// transaction, and it is what the key records, so a retry returns the same answer.
    async fn post_answering(
        &self,
        idem: Option<&Idempotency>,
        op: &Operation,
        answer: &(dyn for<'e> Fn(&'e [LedgerEntry]) -> Result<serde_json::Value> + Send + Sync),
    ) -> Result<serde_json::Value>;
    /// One entry with its facility's path.
    async fn get_entry(&self, id: &str) -> Result<Option<(LedgerEntry, String)>>;
    /// The entries one operation wrote, in order.
    async fn operation_entries(&self, operation_id: &str) -> Result<Vec<LedgerEntry>>;
    /// Balances under `scope_path`, by (unit, lot).
    async fn list_stock(&self, scope_path: &str, f: &StockFilter, page: &PageRequest) -> Result<Page<StockItem>>;
    /// Every balance of a facility (optionally one product), for allocation.
    async fn facility_stock(&self, facility_id: &str, product_id: Option<&str>) -> Result<Vec<StockItem>>;
    /// Ledger entries under `scope_path`.
    async fn list_entries(&self, scope_path: &str, f: &EntryFilter, page: &PageRequest) -> Result<Page<LedgerEntry>>;
    /// Stores a new shipment.
    async fn insert_shipment(&self, idem: Option<&Idempotency>, s: &Shipment) -> Result<Shipment>;
    /// Reads a shipment.
    async fn get_shipment(&self, id: &str) -> Result<Option<Shipment>>;
    /// Moves a shipment on from state `from` (checked under a lock) and writes its entries.
    async fn advance_shipment(
        &self,
        idem: Option<&Idempotency>,
        from: ShipmentState,
        s: &Shipment,
        op: &Operation,
    ) -> Result<Shipment>;
    /// Shipments from or to facilities under `scope_path`, newest first.
    async fn list_shipments(
        &self,
        scope_path: &str,
        facility_id: Option<&str>,
        direction: i32,
        states: &[i32],
        page: &PageRequest,
    ) -> Result<Page<Shipment>>;
    /// Stores a session report with its entries; consumes kept vials opened on or after `reuse_from`.
    async fn insert_session_report(
        &self,
        idem: Option<&Idempotency>,
        r: &SessionReport,
        op: &Operation,
        reuse_from: NaiveDate,
    ) -> Result<SessionReport>;
    /// Opens exposures (one per alarm, lot and unit; repeats are ignored) and quarantines the
    /// available vials of each new one, counted under the balance lock. Returns entries written.
    async fn open_exposures(
        &self,
        exposures: &[crate::domain::stock::Exposure],
        drafts: &[crate::domain::stock::EntryDraft],
        actor: &str,
    ) -> Result<usize>;
    /// Records the end of an alarm on its exposures.
    async fn close_exposures(
        &self,
        alert_id: &str,
        end: chrono::DateTime<chrono::Utc>,
        details: &crate::domain::alert::Details,
    ) -> Result<()>;
    /// One exposure with its facility's path.
    async fn get_exposure(&self, id: &str) -> Result<Option<(crate::domain::stock::Exposure, String)>>;
    /// Exposures under `scope_path` that pass the filter, newest first.
    async fn list_exposures(
        &self,
        scope_path: &str,
        filter: &crate::domain::stock::ExposureFilter,
        page: &PageRequest,
    ) -> Result<Page<crate::domain::stock::Exposure>>;
    /// Writes an assessment and its ledger entries if the exposure is still pending.
    async fn assess_exposure(
        &self,
        idem: Option<&Idempotency>,
        x: &crate::domain::stock::Exposure,
        op: &Operation,
    ) -> Result<crate::domain::stock::Exposure>;
    /// Every facility under `path` (inclusive).
    async fn subtree_facilities(&self, path: &str) -> Result<Vec<Facility>>;
    /// Non-zero balances under `path` with each facility's path; as of an instant when given
    /// (summed from the ledger up to it).
    async fn subtree_stock(
        &self,
        path: &str,
        product_id: Option<&str>,
        as_of: Option<chrono::DateTime<chrono::Utc>>,
    ) -> Result<Vec<(StockItem, String)>>;
    /// Dispatched shipments from or to facilities under `path`, with (from path, to path).
    async fn in_transit(&self, path: &str) -> Result<Vec<(Shipment, String, String)>>;
    /// Session figures per facility and product in a date range (reversed reports excluded).
    async fn session_usage(
        &self,
        path: &str,
        product_id: Option<&str>,
        start: NaiveDate,
        end: NaiveDate,
    ) -> Result<Vec<crate::domain::report::UsageRow>>;
    /// Doses lost in storage and transport per (facility path, product), net of reversals.
    async fn store_losses(
        &self,
        path: &str,
        product_id: Option<&str>,
        start: chrono::DateTime<chrono::Utc>,
        end: chrono::DateTime<chrono::Utc>,
    ) -> Result<Vec<(String, String, i64)>>;
    /// Doses issued to sessions or shipped out per (facility, product) since an instant.
    async fn outflow_since(
        &self,
        path: &str,
        since: chrono::DateTime<chrono::Utc>,
    ) -> Result<Vec<(String, String, i64)>>;
    /// Sets (or, with min = max = 0, deletes) a policy.
    async fn set_policy(&self, idem: Option<&Idempotency>, p: &StockPolicy) -> Result<StockPolicy>;
    /// Policies under `scope_path`.
    async fn list_policies(
        &self,
        scope_path: &str,
        facility_id: Option<&str>,
        product_id: Option<&str>,
        page: &PageRequest,
    ) -> Result<Page<StockPolicy>>;
}

/// Alerts and their event log.
#[async_trait]
pub trait AlertStore: Send + Sync {
    /// Applies a present condition: opens, updates or escalates the alert of its key (or, when it
    /// was resolved while still active, does nothing). Returns the event written, if any.
    async fn raise(&self, c: &crate::domain::alert::Condition) -> Result<Option<crate::domain::alert::AlertEvent>>;
    /// Marks the condition of a key over.
    async fn clear(
        &self,
        kind: crate::domain::alert::AlertKind,
        subject: &crate::domain::alert::Subject,
        end: chrono::DateTime<chrono::Utc>,
    ) -> Result<Option<crate::domain::alert::AlertEvent>>;
    /// Alerts of one probe in one unit whose episode starts at or after `since_ms`.
    async fn probe_alerts(
        &self,
        device_id: &str,
        probe: u32,
        storage_unit_id: &str,
        since_ms: i64,
    ) -> Result<Vec<crate::domain::alert::Alert>>;
    /// Withdraws an alert late data disproved (resolved as SUPERSEDED); `None` if it already was.
    async fn supersede(
        &self,
        id: &str,
        handling: &crate::domain::alert::Handling,
    ) -> Result<Option<crate::domain::alert::AlertEvent>>;
    /// Alerts of these kinds whose condition is active (resolved ones included).
    async fn active_conditions(&self, kinds: &[i32]) -> Result<Vec<crate::domain::alert::Alert>>;
    /// One alert with its facility's path.
    async fn get_alert(&self, id: &str) -> Result<Option<(crate::domain::alert::Alert, String)>>;
    /// Writes an acknowledgement or resolution if the alert is still in one of `from_states`.
    async fn handle_alert(
        &self,
        idem: Option<&Idempotency>,
        updated: &crate::domain::alert::Alert,
        from_states: &[crate::domain::alert::AlertState],
        kind: crate::domain::alert::EventType,
    ) -> Result<crate::domain::alert::Alert>;
    /// Alerts under `scope_path`, newest first.
    async fn list_alerts(
        &self,
        scope_path: &str,
        f: &crate::domain::alert::AlertFilter,
        page: &PageRequest,
    ) -> Result<Page<crate::domain::alert::Alert>>;
    /// (oldest, latest) event id kept; (0, 0) when there are none.
    async fn event_bounds(&self) -> Result<(i64, i64)>;
    /// Events after a cursor, in order.
    async fn events_after(
        &self,
        scope_path: &str,
        f: &crate::domain::alert::AlertFilter,
        after: i64,
        limit: i64,
    ) -> Result<Vec<crate::domain::alert::AlertEvent>>;
    /// Deletes events older than an instant (retention).
    async fn prune_events(&self, before: chrono::DateTime<chrono::Utc>) -> Result<u64>;
}

/// A web sign-in: the session acts as its token until it expires or is signed out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebSession {
    /// The token signed in with.
    pub token_id: String,
    /// The anti-forgery value every form of this session must carry.
    pub csrf: String,
    /// Sign-in time.
    pub created_at: chrono::DateTime<chrono::Utc>,
    /// When the session ends by itself.
    pub expires_at: chrono::DateTime<chrono::Utc>,
}

/// Web sign-in sessions, stored by the hash of their cookie secret.
#[async_trait]
pub trait WebSessionStore: Send + Sync {
    /// Stores a new session (and drops expired ones).
    async fn insert_web_session(&self, s: &WebSession, secret_hash: &[u8]) -> Result<()>;
    /// The session whose secret hashes to `secret_hash`, expired or not.
    async fn find_web_session(&self, secret_hash: &[u8]) -> Result<Option<WebSession>>;
    /// Ends a session; nothing happens when it does not exist.
    async fn delete_web_session(&self, secret_hash: &[u8]) -> Result<()>;
}

/// Webhooks and their delivery queue.
#[async_trait]
pub trait WebhookStore: Send + Sync {
    /// Stores a new webhook scoped to the facility path `scope_path`; it receives the events the
    /// fan-out has not routed yet (those written from about one worker round before). Records the
    /// webhook with `sealed_secret` under the key.
    async fn insert_webhook(
        &self,
        idem: Option<&Idempotency>,
        w: &crate::domain::webhook::Webhook,
        scope_path: &str,
        secret: &crate::domain::webhook::Secret,
        sealed_secret: Option<&str>,
    ) -> Result<crate::domain::token::WithSecret<crate::domain::webhook::Webhook>>;
    /// One webhook with its scope's facility path.
    async fn get_webhook(&self, id: &str) -> Result<Option<(crate::domain::webhook::Webhook, String)>>;
    /// Webhooks whose scope lies under `scope_path`, by id.
    async fn list_webhooks(
        &self,
        scope_path: &str,
        page: &PageRequest,
    ) -> Result<Page<crate::domain::webhook::Webhook>>;
    /// Deletes a webhook and its pending deliveries; false when it does not exist.
    async fn delete_webhook(&self, idem: Option<&Idempotency>, id: &str) -> Result<bool>;
    /// Routes up to `limit` events after the fan-out cursor to the webhooks they match, as
    /// deliveries due at `now`; returns how many events it went through.
    async fn fan_out_events(&self, limit: i64, now: chrono::DateTime<chrono::Utc>) -> Result<usize>;
    /// Leases, until `lease_until`, the oldest pending delivery of up to `limit` webhooks whose
    /// turn has come and that no one else is sending.
    async fn claim_deliveries(
        &self,
        now: chrono::DateTime<chrono::Utc>,
        lease_until: chrono::DateTime<chrono::Utc>,
        limit: i64,
    ) -> Result<Vec<crate::domain::webhook::Delivery>>;
    /// Records what became of an attempt: removes a delivered or dropped delivery, reschedules a
    /// failed one, and updates the webhook's success and failure fields.
    async fn finish_delivery(
        &self,
        webhook_id: &str,
        event_id: i64,
        outcome: &crate::domain::webhook::Outcome,
        now: chrono::DateTime<chrono::Utc>,
    ) -> Result<()>;
}

/// Devices and their readings.
#[async_trait]
pub trait TelemetryStore: Send + Sync {
    /// Registers a device with its first HMAC key.
    async fn insert_device(
        &self,
        idem: Option<&Idempotency>,
        d: &crate::domain::telemetry::Device,
        key: &[u8],
        sealed_key: Option<&str>,
    ) -> Result<crate::domain::token::WithSecret<crate::domain::telemetry::Device>>;
    /// A device with its HMAC key and its facility's path.
    async fn get_device(&self, id: &str) -> Result<Option<(crate::domain::telemetry::Device, Vec<u8>, String)>>;
    /// Devices at facilities under `scope_path` matching the filter, by id.
    async fn list_devices(
        &self,
        scope_path: &str,
        filter: &crate::domain::telemetry::DeviceFilter,
        page: &PageRequest,
    ) -> Result<Page<crate::domain::telemetry::Device>>;
    /// Replaces a device's HMAC key (version + 1); with `reset_sequence` its seqs restart, stored
    /// past every seq it used before. `None` when there is no such device.
    async fn rotate_device_key(
        &self,
        idem: Option<&Idempotency>,
        id: &str,
        key: &[u8],
        reset_sequence: bool,
        sealed_key: Option<&str>,
    ) -> Result<Option<crate::domain::token::WithSecret<crate::domain::telemetry::Device>>>;
    /// Applies a patch under the device's row lock, re-checking that every probe's unit is at the
    /// final facility, and starts the alarm state of re-bound probes afresh; `None` when the
    /// device does not exist.
    async fn update_device(
        &self,
        idem: Option<&Idempotency>,
        id: &str,
        patch: &crate::domain::telemetry::DevicePatch,
    ) -> Result<Option<crate::domain::telemetry::Device>>;
    /// Up to `limit` readings of a device or unit in a range, taken in storage units at
    /// facilities under `scope_path`, ordered by (time, device id, seq) and after `after`.
    async fn list_readings(
        &self,
        scope_path: &str,
        source: &crate::domain::telemetry::ReadingSource,
        range: &crate::domain::telemetry::TimeRange,
        after: Option<&crate::domain::telemetry::ReadingCursor>,
        limit: i64,
    ) -> Result<Vec<crate::domain::telemetry::RecordedReading>>;
    /// A unit's readings (sensor faults excluded) aggregated per epoch-aligned bucket, in time
    /// order, empty buckets omitted.
    async fn bucket_readings(
        &self,
        storage_unit_id: &str,
        b: &crate::domain::telemetry::Bucketing,
    ) -> Result<Vec<crate::domain::telemetry::ReadingBucket>>;
    /// Storage units at facilities under `path` with a probe of an active device, by id after
    /// `after`, each with its latest reading and the expected interval of the device that sent it.
    async fn latest_readings(
        &self,
        path: &str,
        after: Option<&str>,
        limit: i64,
    ) -> Result<Vec<(String, String, Option<(crate::domain::telemetry::RecordedReading, i64)>)>>;
    /// Stores a batch in one transaction (a repeated seq is ignored), records rejected seqs, and
    /// returns the new ack (the highest seq up to which every reading is committed) with the seqs
    /// that were new.
    /// `key_version` is the device's key version the batch was checked against: if a rotation
    /// committed since, nothing is stored and the answer is `None` (the batch must be checked
    /// again). Seqs at or below the device's acked seq are committed already and are skipped.
    async fn store_readings(
        &self,
        device_id: &str,
        key_version: i32,
        readings: &[crate::domain::telemetry::StoredReading],
        rejects: &[(i64, &'static str)],
        now: chrono::DateTime<chrono::Utc>,
    ) -> Result<Option<(i64, std::collections::HashSet<i64>)>>;
    /// Holds the device's evaluation lock until the returned guard is dropped: replicas evaluating
    /// the same device's alarms take turns (PostgreSQL: a transaction-scoped advisory lock, so it
    /// is released even if the holder fails; SQLite: an exclusive lock on a file beside the database).
    async fn lock_device_evaluation(&self, device_id: &str) -> Result<Box<dyn std::any::Any + Send>>;
    /// A probe's alarm state bytes and the reading time they have reached.
    async fn alarm_state(
        &self,
        device_id: &str,
        probe: u32,
    ) -> Result<Option<(Vec<u8>, Option<chrono::DateTime<chrono::Utc>>)>>;
    /// Readings housekeeping: creates the coming months' partitions (PostgreSQL) and, with
    /// `keep_after`, deletes readings taken before it (whole partitions first); hourly rollups
    /// are kept. Returns the rows deleted one by one.
    async fn maintain_readings(
        &self,
        now: chrono::DateTime<chrono::Utc>,
        keep_after: Option<chrono::DateTime<chrono::Utc>>,
    ) -> Result<u64>;
    /// Every probe's alarm state: (device, probe, state bytes, reading time reached).
    async fn alarm_states(&self) -> Result<Vec<(String, u32, Vec<u8>, Option<chrono::DateTime<chrono::Utc>>)>>;
    /// Saves a probe's alarm state.
    async fn save_alarm_state(
        &self,
        device_id: &str,
        probe: u32,
        state: &[u8],
        evaluated_to: Option<chrono::DateTime<chrono::Utc>>,
    ) -> Result<()>;
    /// A probe's readings taken in one storage unit after an instant (all when `None`), in
    /// reading-time order.
    async fn probe_readings(
        &self,
        device_id: &str,
        probe: u32,
        storage_unit_id: &str,
        after: Option<chrono::DateTime<chrono::Utc>>,
    ) -> Result<Vec<crate::domain::telemetry::StoredReading>>;
    /// Stores the batches of many devices in ONE transaction (one WAL flush, a few statements for
    /// the whole group): each device's row is locked (in id order, so concurrent groups cannot
    /// deadlock), its share checked against `key_version`/`updated_at` ([`GroupOutcome::Stale`]
    /// if it changed), its readings inserted once per (device, seq) and its ack advanced as
    /// [`TelemetryStore::store_readings`] does. Device ids must be unique within `groups`. An
    /// `Err` rolls everything back: nothing of any share is committed.
    async fn store_reading_groups(
        &self,
        groups: &[DeviceReadings],
        now: chrono::DateTime<chrono::Utc>,
    ) -> Result<Vec<GroupOutcome>>;
    /// Holds the evaluation locks of several devices until the guard is dropped (taken in a fixed
    /// order, so two holders of overlapping sets cannot deadlock).
    async fn lock_devices_evaluation(&self, device_ids: &[String]) -> Result<Box<dyn std::any::Any + Send>>;
    /// The alarm states of several probes, by (device, probe).
    async fn alarm_states_of(
        &self,
        keys: &[(String, u32)],
    ) -> Result<std::collections::HashMap<(String, u32), (Vec<u8>, Option<chrono::DateTime<chrono::Utc>>)>>;
    /// Drops several probes' saved alarm states, so their next evaluation replays them from the
    /// first reading.
    async fn forget_alarm_states(&self, keys: &[(String, u32)]) -> Result<()>;
    /// Saves several probes' alarm states in one statement.
    async fn save_alarm_states(
        &self,
        states: &[(String, u32, Vec<u8>, Option<chrono::DateTime<chrono::Utc>>)],
    ) -> Result<()>;
    /// [`TelemetryStore::probe_readings`] for several probes in one query, by probe, each in
    /// reading-time order.
    async fn probes_readings(
        &self,
        probes: &[(ProbeKey, Option<chrono::DateTime<chrono::Utc>>)],
    ) -> Result<std::collections::HashMap<ProbeKey, Vec<crate::domain::telemetry::StoredReading>>>;
    /// The unevaluated marks of these devices (migration 0015): the earliest reading committed
    /// but maybe not yet evaluated, and the mark's generation; devices without one are absent.
    async fn unevaluated_marks(
        &self,
        device_ids: &[String],
    ) -> Result<std::collections::HashMap<String, (chrono::DateTime<chrono::Utc>, i64)>>;
    /// Clears each (device, generation) mark unless a commit has moved its generation since.
    async fn clear_unevaluated_marks(&self, marks: &[(String, i64)]) -> Result<()>;
    /// Devices whose mark was last moved before `before` (an evaluation that never ran), oldest
    /// first.
    async fn stale_unevaluated(&self, before: chrono::DateTime<chrono::Utc>, limit: i64) -> Result<Vec<String>>;
    /// (count, lowest seq, highest seq) of a device's stored readings.
    async fn count_readings(&self, device_id: &str) -> Result<(i64, i64, i64)>;
}

/// Bulk onboarding: a snapshot to validate against and to export, one-transaction imports, and
/// backups.
#[async_trait]
pub trait OnboardStore: Send + Sync {
    /// Everything an import compares against and an export writes; HMAC keys only when asked.
    async fn onboard_snapshot(&self, with_device_keys: bool) -> Result<crate::onboard::Snapshot>;
    /// Writes a validated plan in one transaction: all of it, or nothing.
    async fn import_batch(
        &self,
        plan: &crate::onboard::ImportPlan,
        progress: &dyn crate::onboard::Progress,
    ) -> Result<()>;
    /// Writes a consistent copy of the database to `path` while it stays in use (SQLite's
    /// `VACUUM INTO`); PostgreSQL answers UNIMPLEMENTED (use pg_dump).
    async fn backup_to(&self, path: &str) -> Result<()>;
}

/// Opens the store named by `url` (`sqlite://…`, `sqlite::memory:`, `postgres://…`) and migrates it.
pub async fn connect(url: &str) -> Result<Arc<dyn Store>> {
    if url.starts_with("sqlite:") {
        Ok(Arc::new(sqlite::SqliteStore::connect(url).await?))
    } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        Ok(Arc::new(postgres::PgStore::connect(url).await?))
    } else {
        Err(Error::invalid("database_url", "must start with sqlite: or postgres://"))
    }
}

/// The exclusive upper bound of a path-prefix range: every path starting with `prefix` (which
/// ends in '/') sorts in `[prefix, upper)` byte-wise, because '0' is the byte after '/'.
pub(crate) fn path_upper(prefix: &str) -> String {
    let mut s = prefix.strip_suffix('/').unwrap_or(prefix).to_owned();
    s.push('0');
    s
}

/// Escapes LIKE wildcards in user text and wraps it for a substring match.
pub(crate) fn like_contains(text: &str) -> String {
    let mut s = String::with_capacity(text.len() + 2);
    s.push('%');
    for c in text.to_lowercase().chars() {
        if matches!(c, '%' | '_' | '\\') {
            s.push('\\');
        }
        s.push(c);
    }
    s.push('%');
    s
}

/// Maps a unique-constraint violation to the domain's ALREADY_EXISTS, naming what clashed.
pub(crate) fn map_unique(e: sqlx::Error) -> Error {
    let Some(db) = e.as_database_error() else { return e.into() };
    if !db.is_unique_violation() {
        return e.into();
    }
    // SQLite names "table.column", PostgreSQL the constraint; match either.
    let msg = format!("{} {}", db.message(), db.constraint().unwrap_or_default());
    let has = |needle: &str| msg.contains(needle);
    if has("one_national") || has("facilities.kind") {
        Error::exists(reason::NATIONAL_STORE_EXISTS, "a national store already exists")
    } else if has("facilities_code") || has("facilities.code") {
        Error::exists(reason::DUPLICATE_CODE, "a facility with this code already exists")
    } else if has("storage_units_name") || has("storage_units.") {
        Error::exists(reason::DUPLICATE_NAME, "the facility already has a storage unit with this name")
    } else if has("products_code") || has("products.code") {
        Error::exists(reason::DUPLICATE_CODE, "a product with this code already exists")
    } else if has("product_gtins") {
        Error::exists(reason::DUPLICATE_GTIN, "a GTIN already belongs to another product")
    } else if has("reversal") || has("reverses_entry_id") {
        Error::precondition(crate::domain::stock::ALREADY_REVERSED, "the entry has already been reversed")
    } else if has("lots_number") || has("lots.") {
        Error::exists(reason::DUPLICATE_LOT, "the product already has a lot with this number")
    } else {
        Error::exists(reason::DUPLICATE_CODE, "the object already exists")
    }
}

impl From<sqlx::Error> for Error {
    fn from(e: sqlx::Error) -> Self {
        match e {
            sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::Io(_) => {
                Error::Unavailable(e.to_string())
            }
            other => Error::Internal(other.to_string()),
        }
    }
}

impl From<serde_json::Error> for Error {
    fn from(e: serde_json::Error) -> Self {
        Error::Internal(format!("stored idempotent response: {e}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_ranges() {
        assert_eq!(path_upper("/"), "0");
        assert_eq!(path_upper("/a/b/"), "/a/b0");
        assert!("/a/b/c/".as_bytes() < path_upper("/a/b/").as_bytes());
        assert!("/a/bc/".as_bytes() > path_upper("/a/b/").as_bytes());
        assert_eq!(like_contains("5%_x"), "%5\\%\\_x%");
    }
}
