//! The one mapping from domain errors to `tonic::Status` (AIP-193: a code, a message a person can
//! act on, and an ErrorInfo whose reason a program can switch on). Internal details are logged,
//! never sent.

use std::collections::HashMap;

use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt as _};

use crate::error::{Error, reason};

/// The ErrorInfo domain of every vaxtrace error.
pub const ERROR_DOMAIN: &str = "vaxtrace.org";

fn with_info(code: Code, message: String, reason: &str, meta: HashMap<String, String>) -> Status {
    let mut details = ErrorDetails::with_error_info(reason, ERROR_DOMAIN, meta.clone());
    if let Some(field) = meta.get("field") {
        details.add_bad_request_violation(field.clone(), message.clone());
    }
    Status::with_error_details(code, message, details)
}

impl From<Error> for Status {
    fn from(e: Error) -> Self {
        let none = HashMap::new;
        match e {
            Error::InvalidArgument { field, reason, message } => {
                let text = format!("{field}: {message}");
                with_info(Code::InvalidArgument, text, reason, HashMap::from([("field".to_owned(), field)]))
            }
            Error::InvalidPageToken => with_info(
                Code::InvalidArgument,
                "page_token is malformed or was issued for different filters".into(),
                reason::INVALID_PAGE_TOKEN,
                HashMap::from([("field".to_owned(), "page_token".to_owned())]),
            ),
            Error::NotFound { reason, message } => with_info(Code::NotFound, message, reason, none()),
            Error::AlreadyExists { reason, message } => with_info(Code::AlreadyExists, message, reason, none()),
            Error::FailedPrecondition { reason, message } => {
                with_info(Code::FailedPrecondition, message, reason, none())
            }
            Error::ResourceExhausted { reason, message } => with_info(Code::ResourceExhausted, message, reason, none()),
            Error::Unauthenticated => with_info(
                Code::Unauthenticated,
                "a valid bearer token is required (authorization: Bearer vxt_…)".into(),
                reason::UNAUTHENTICATED,
                none(),
            ),
            Error::PermissionDenied => with_info(
                Code::PermissionDenied,
                "the caller's role or scope does not allow this".into(),
                reason::PERMISSION_DENIED,
                none(),
            ),
            Error::Unavailable(detail) => {
                tracing::warn!(%detail, "storage unavailable");
                with_info(Code::Unavailable, "storage is unavailable; retry later".into(), reason::UNAVAILABLE, none())
            }
            Error::Unimplemented(what) => with_info(Code::Unimplemented, what, "UNIMPLEMENTED", none()),
            Error::Internal(detail) => {
                tracing::error!(%detail, "internal error");
                with_info(Code::Internal, "internal error; see the server log".into(), reason::INTERNAL, none())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn internal_details_are_not_sent() {
        let s = Status::from(Error::Internal("password=hunter2 at db.rs:12".into()));
        assert_eq!(s.code(), Code::Internal);
        assert!(!s.message().contains("hunter2"));
        assert_eq!(s.get_error_details().error_info().map(|i| i.reason.as_str()), Some(reason::INTERNAL));
    }

    #[test]
    fn invalid_argument_names_the_field() {
        let s = Status::from(Error::invalid("facility.code", "is required"));
        assert_eq!(s.code(), Code::InvalidArgument);
        let d = s.get_error_details();
        assert_eq!(d.error_info().and_then(|i| i.metadata.get("field")).map(String::as_str), Some("facility.code"));
        assert!(d.bad_request().is_some());
    }
}
