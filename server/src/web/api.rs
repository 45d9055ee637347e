//! Downloads over plain HTTP for tools that do not speak gRPC (curl, a regulator's importer):
//! the same use cases and the same bearer tokens as the gRPC API.

use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use serde::Deserialize;

use super::WebState;
use crate::domain::Caller;
use crate::error::Error;

/// An API error as HTTP: the gRPC code's HTTP counterpart and a JSON body with the same reason.
pub(crate) fn error_response(e: Error) -> Response {
    use tonic_types::StatusExt as _;
    let status = tonic::Status::from(e);
    let http = http_status(status.code());
    let reason = status.get_error_details().error_info().map(|i| i.reason.clone()).unwrap_or_default();
    let body = serde_json::json!({
        "code": format!("{:?}", status.code()),
        "reason": reason,
        "message": status.message(),
    });
    let mut r = (http, [(header::CONTENT_TYPE, "application/json")], body.to_string()).into_response();
    if http == StatusCode::UNAUTHORIZED
        && let Ok(v) = header::HeaderValue::from_str("Bearer")
    {
        r.headers_mut().insert(header::WWW_AUTHENTICATE, v);
    }
    r
}

/// The HTTP counterpart of a gRPC code.
pub(crate) fn http_status(code: tonic::Code) -> StatusCode {
    match code {
        tonic::Code::InvalidArgument | tonic::Code::FailedPrecondition | tonic::Code::OutOfRange => {
            StatusCode::BAD_REQUEST
        }
        tonic::Code::NotFound => StatusCode::NOT_FOUND,
        tonic::Code::AlreadyExists | tonic::Code::Aborted => StatusCode::CONFLICT,
        tonic::Code::Unauthenticated => StatusCode::UNAUTHORIZED,
        tonic::Code::PermissionDenied => StatusCode::FORBIDDEN,
        tonic::Code::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        tonic::Code::Unimplemented => StatusCode::NOT_IMPLEMENTED,
        tonic::Code::ResourceExhausted => StatusCode::TOO_MANY_REQUESTS,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// The caller of a request carrying `Authorization: Bearer vxt_…`.
pub(crate) async fn bearer_caller(s: &WebState, headers: &HeaderMap) -> Result<Caller, Error> {
    let value = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).ok_or(Error::Unauthenticated)?;
    let token = value.strip_prefix("Bearer ").or_else(|| value.strip_prefix("bearer ")).unwrap_or("");
    s.app.authenticate(token.trim()).await
}

fn instant(field: &str, v: Option<&str>) -> Result<Option<DateTime<Utc>>, Error> {
    match v.map(str::trim).filter(|v| !v.is_empty()) {
        None => Ok(None),
        Some(v) => DateTime::parse_from_rfc3339(v)
            .map(|t| Some(t.with_timezone(&Utc)))
            .map_err(|e| Error::invalid(field, format!("must be an RFC 3339 time such as 2026-11-01T00:00:00Z ({e})"))),
    }
}

/// Query of `GET /api/v1/epcis`.
#[derive(Debug, Deserialize)]
pub(crate) struct EpcisQuery {
    facility_id: Option<String>,
    start_time: Option<String>,
    end_time: Option<String>,
}

/// `GET /api/v1/epcis?facility_id=…&start_time=…&end_time=…`: the EPCIS 2.0 document.
pub(crate) async fn epcis(State(s): State<WebState>, headers: HeaderMap, Query(q): Query<EpcisQuery>) -> Response {
    let run = async {
        let caller = bearer_caller(&s, &headers).await?;
        let start = instant("start_time", q.start_time.as_deref())?;
        let end = instant("end_time", q.end_time.as_deref())?;
        s.app.export_epcis(&caller, q.facility_id.as_deref().unwrap_or(""), start, end).await
    };
    match run.await {
        Ok(doc) => {
            let name = format!("attachment; filename=\"epcis_{}.jsonld\"", Utc::now().format("%Y-%m-%d"));
            ([(header::CONTENT_TYPE, "application/ld+json".to_owned()), (header::CONTENT_DISPOSITION, name)], doc)
                .into_response()
        }
        Err(e) => error_response(e),
    }
}
