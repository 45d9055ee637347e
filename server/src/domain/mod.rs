//! The rules of the business: the facility tree, the catalogue, tokens and who may do what.
//! Nothing here knows about gRPC or SQL.

pub mod alert;
pub mod authz;
pub mod catalog;
pub mod epcis;
pub mod facility;
pub mod paging;
pub mod report;
pub mod scan;
pub mod stock;
pub mod telemetry;
pub mod thresholds;
pub mod token;
pub mod validate;
pub mod webhook;

pub use authz::{Action, Caller, Role};
pub use catalog::{Lot, NewLot, NewProduct, Presentation, Product, ProductPatch, VvmType};
pub use facility::{
    Facility, FacilityFilter, FacilityKind, FacilityPatch, NewFacility, NewStorageUnit, StorageUnit, StorageUnitFilter,
    StorageUnitKind, StorageUnitPatch, TemperatureProfile,
};
pub use paging::{Page, PageRequest};
pub use thresholds::{AlarmOverrides, AlarmOverridesInput};
pub use token::{NewToken, Token};

/// Identifies one mutation for idempotent retries: a request_id repeated by the same token for the
/// same method returns the first result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Idempotency {
    /// The caller's token id (keys are per caller so nobody can read another's results).
    pub token_id: String,
    /// The RPC name.
    pub method: &'static str,
    /// The client's request_id.
    pub request_id: String,
    /// A hash of the request body, to reject a reused request_id with a different request.
    pub fingerprint: String,
}

impl Idempotency {
    /// Builds a key when the request carries a request_id; `body` is any stable rendering of the request.
    pub fn from_request(
        caller: &Caller,
        method: &'static str,
        request_id: &str,
        body: &impl std::fmt::Debug,
    ) -> crate::error::Result<Option<Self>> {
        if request_id.is_empty() {
            return Ok(None);
        }
        validate::request_id(request_id)?;
        Ok(Some(Idempotency {
            token_id: caller.token_id.clone(),
            method,
            request_id: request_id.to_owned(),
            fingerprint: token::sha256_hex(format!("{body:?}").as_bytes()),
        }))
    }
}

/// Creates a new, time-ordered object id.
pub fn new_id() -> String {
    uuid::Uuid::now_v7().to_string()
}

/// The current instant at the precision every engine stores (microseconds), so an object returned
/// on creation equals the same object read back.
pub fn now() -> chrono::DateTime<chrono::Utc> {
    use chrono::DurationRound as _;
    let t = chrono::Utc::now();
    t.duration_trunc(chrono::TimeDelta::microseconds(1)).unwrap_or(t)
}
