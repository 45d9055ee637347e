//! The stylesheet and the script, compiled into the binary: no CDN, no external fonts.

use axum::extract::Path;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};

const CSS: &str = include_str!("assets/app.css");
const JS: &str = include_str!("assets/app.js");

/// FNV-1a of an asset, at compile time: the address changes exactly when the content does, so
/// browsers may cache assets for a day and still never run an old script against new pages.
const fn fnv(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut i = 0;
    while i < bytes.len() {
        h ^= bytes[i] as u64;
        h = h.wrapping_mul(0x0100_0000_01b3);
        i += 1;
    }
    h
}

/// The stylesheet's address, versioned by its content.
pub(crate) static CSS_NAME: std::sync::LazyLock<String> =
    std::sync::LazyLock::new(|| format!("app.css?v={:016x}", fnv(CSS.as_bytes())));
/// The script's address, versioned by its content.
pub(crate) static JS_NAME: std::sync::LazyLock<String> =
    std::sync::LazyLock::new(|| format!("app.js?v={:016x}", fnv(JS.as_bytes())));

/// `GET /assets/{name}`.
pub(super) async fn asset(Path(name): Path<String>) -> Response {
    let (body, kind) = match name.as_str() {
        "app.css" => (CSS, "text/css; charset=utf-8"),
        "app.js" => (JS, "text/javascript; charset=utf-8"),
        _ => return StatusCode::NOT_FOUND.into_response(),
    };
    ([(header::CONTENT_TYPE, kind), (header::CACHE_CONTROL, "public, max-age=86400")], body).into_response()
}
