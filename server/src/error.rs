//! The one error type the domain and the store return; `grpc::status` maps it to `tonic::Status`.

use std::fmt;

/// Stable machine-readable reasons, sent as `google.rpc.ErrorInfo.reason`.
pub mod reason {
    /// A request field is missing or malformed; ErrorInfo metadata `field` names it.
    pub const INVALID_FIELD: &str = "INVALID_FIELD";
    /// The page token is malformed or was issued for different filters.
    pub const INVALID_PAGE_TOKEN: &str = "INVALID_PAGE_TOKEN";
    /// A request_id was reused with a different request body.
    pub const REQUEST_ID_REUSED: &str = "REQUEST_ID_REUSED";
    /// The named object does not exist.
    pub const NOT_FOUND: &str = "NOT_FOUND";
    /// The parent facility does not exist.
    pub const PARENT_NOT_FOUND: &str = "PARENT_NOT_FOUND";
    /// The parent's kind cannot hold a child of this kind.
    pub const INVALID_PARENT_KIND: &str = "INVALID_PARENT_KIND";
    /// A code (facility, product) is already taken.
    pub const DUPLICATE_CODE: &str = "DUPLICATE_CODE";
    /// A GTIN already belongs to a product.
    pub const DUPLICATE_GTIN: &str = "DUPLICATE_GTIN";
    /// The product already has a lot with this number.
    pub const DUPLICATE_LOT: &str = "DUPLICATE_LOT";
    /// A name is already taken within its parent (storage unit names per facility).
    pub const DUPLICATE_NAME: &str = "DUPLICATE_NAME";
    /// A national store already exists.
    pub const NATIONAL_STORE_EXISTS: &str = "NATIONAL_STORE_EXISTS";
    /// The role needs a scope facility.
    pub const SCOPE_REQUIRED: &str = "SCOPE_REQUIRED";
    /// No or an unknown/revoked bearer token.
    pub const UNAUTHENTICATED: &str = "UNAUTHENTICATED";
    /// The caller's role or scope does not allow this.
    pub const PERMISSION_DENIED: &str = "PERMISSION_DENIED";
    /// A server-side failure; details are in the server log only.
    pub const INTERNAL: &str = "INTERNAL";
    /// The database is unreachable or overloaded; retry later.
    pub const UNAVAILABLE: &str = "UNAVAILABLE";
}

/// What went wrong, in terms a caller can act on.
#[derive(Debug, Clone, PartialEq)]
pub enum Error {
    /// The request is malformed; `field` names the offending field.
    InvalidArgument {
        /// Request field path, for example `facility.code`.
        field: String,
        /// Reason code from [`reason`] (usually INVALID_FIELD).
        reason: &'static str,
        /// Human-readable explanation.
        message: String,
    },
    /// A page token could not be used.
    InvalidPageToken,
    /// The object does not exist (only ever reported to callers who may see the whole tree).
    NotFound {
        /// Reason code from [`reason`].
        reason: &'static str,
        /// Human-readable explanation.
        message: String,
    },
    /// The object conflicts with an existing one.
    AlreadyExists {
        /// Reason code from [`reason`].
        reason: &'static str,
        /// Human-readable explanation.
        message: String,
    },
    /// The system is not in a state that allows the operation.
    FailedPrecondition {
        /// Reason code from [`reason`].
        reason: &'static str,
        /// Human-readable explanation.
        message: String,
    },
    /// A bound on what requests may take was reached (see `crate::limits`); retry later.
    ResourceExhausted {
        /// Reason code, for example `TOO_MANY_STREAMS`.
        reason: &'static str,
        /// Human-readable explanation.
        message: String,
    },
    /// No valid credentials.
    Unauthenticated,
    /// The caller's role or scope forbids this; never says whether the object exists.
    PermissionDenied,
    /// The storage backend is unreachable or timed out.
    Unavailable(String),
    /// The capability exists in the API but not in this release.
    Unimplemented(String),
    /// A bug or an unexpected backend failure; the text is logged, never sent.
    Internal(String),
}

/// Result alias used across the domain and store layers.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// A malformed field.
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        Error::InvalidArgument { field: field.into(), reason: reason::INVALID_FIELD, message: message.into() }
    }

    /// A malformed field with a specific reason.
    pub fn invalid_because(field: impl Into<String>, reason: &'static str, message: impl Into<String>) -> Self {
        Error::InvalidArgument { field: field.into(), reason, message: message.into() }
    }

    /// A missing object.
    pub fn not_found(reason: &'static str, message: impl Into<String>) -> Self {
        Error::NotFound { reason, message: message.into() }
    }

    /// A conflicting object.
    pub fn exists(reason: &'static str, message: impl Into<String>) -> Self {
        Error::AlreadyExists { reason, message: message.into() }
    }

    /// A bound reached.
    pub fn exhausted(reason: &'static str, message: impl Into<String>) -> Self {
        Error::ResourceExhausted { reason, message: message.into() }
    }

    /// A violated precondition.
    pub fn precondition(reason: &'static str, message: impl Into<String>) -> Self {
        Error::FailedPrecondition { reason, message: message.into() }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::InvalidArgument { field, message, .. } => write!(f, "invalid {field}: {message}"),
            Error::InvalidPageToken => f.write_str("invalid page token"),
            Error::NotFound { message, .. }
            | Error::AlreadyExists { message, .. }
            | Error::FailedPrecondition { message, .. }
            | Error::ResourceExhausted { message, .. } => f.write_str(message),
            Error::Unauthenticated => f.write_str("unauthenticated"),
            Error::PermissionDenied => f.write_str("permission denied"),
            Error::Unavailable(m) => write!(f, "unavailable: {m}"),
            Error::Unimplemented(m) => write!(f, "not implemented: {m}"),
            Error::Internal(m) => write!(f, "internal: {m}"),
        }
    }
}

impl std::error::Error for Error {}

/// A refusal as kept under an idempotency key, so a retried request gets the same answer even
/// if the stock has changed since.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ErrorRecord {
    kind: String,
    reason: String,
    field: String,
    message: String,
}

/// Reasons as `'static` strings: records come back from the database, and the set of reasons our
/// code ever writes is small and fixed, so each distinct one is leaked at most once.
fn intern(s: &str) -> &'static str {
    use std::collections::HashSet;
    use std::sync::{Mutex, OnceLock};
    static SEEN: OnceLock<Mutex<HashSet<&'static str>>> = OnceLock::new();
    let mut seen = SEEN.get_or_init(|| Mutex::new(HashSet::new())).lock().unwrap_or_else(|p| p.into_inner());
    if let Some(r) = seen.get(s) {
        return r;
    }
    let r: &'static str = Box::leak(s.to_owned().into_boxed_str());
    seen.insert(r);
    r
}

impl Error {
    /// The record of a final refusal; `None` for transient failures, which a retry may overcome.
    pub fn to_record(&self) -> Option<ErrorRecord> {
        let (kind, reason, field, message) = match self {
            Error::InvalidArgument { field, reason, message } => ("invalid", *reason, field.clone(), message.clone()),
            Error::NotFound { reason, message } => ("not_found", *reason, String::new(), message.clone()),
            Error::AlreadyExists { reason, message } => ("exists", *reason, String::new(), message.clone()),
            Error::FailedPrecondition { reason, message } => ("precondition", *reason, String::new(), message.clone()),
            Error::PermissionDenied => ("permission", reason::PERMISSION_DENIED, String::new(), String::new()),
            _ => return None,
        };
        Some(ErrorRecord { kind: kind.into(), reason: reason.into(), field, message })
    }

    /// The refusal a record describes.
    pub fn from_record(r: &ErrorRecord) -> Error {
        let reason = intern(&r.reason);
        match r.kind.as_str() {
            "invalid" => Error::InvalidArgument { field: r.field.clone(), reason, message: r.message.clone() },
            "not_found" => Error::NotFound { reason, message: r.message.clone() },
            "exists" => Error::AlreadyExists { reason, message: r.message.clone() },
            "precondition" => Error::FailedPrecondition { reason, message: r.message.clone() },
            _ => Error::PermissionDenied,
        }
    }
}
