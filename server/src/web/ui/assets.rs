//! The stylesheet and the script, compiled into the binary: no CDN, no external fonts.

use axum::extract::Path;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};

/// The stylesheet's address; the version makes browsers fetch it anew after an upgrade.
pub(crate) const CSS_NAME: &str = concat!("app.css?v=", env!("CARGO_PKG_VERSION"));
/// The script's address.
pub(crate) const JS_NAME: &str = concat!("app.js?v=", env!("CARGO_PKG_VERSION"));

const CSS: &str = include_str!("assets/app.css");
const JS: &str = include_str!("assets/app.js");

/// `GET /assets/{name}`.
pub(super) async fn asset(Path(name): Path<String>) -> Response {
    let (body, kind) = match name.as_str() {
        "app.css" => (CSS, "text/css; charset=utf-8"),
        "app.js" => (JS, "text/javascript; charset=utf-8"),
        _ => return StatusCode::NOT_FOUND.into_response(),
    };
    ([(header::CONTENT_TYPE, kind), (header::CACHE_CONTROL, "public, max-age=86400")], body).into_response()
}
