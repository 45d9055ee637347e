//! The pages people use in a browser: the district dashboard (`/dash`) and the depot manager's
//! stock desk (`/desk`). Server-rendered HTML with one small script of our own; every asset is
//! compiled into the binary, so the pages work in an office with a slow link and no internet.
//!
//! Handlers stay thin: they parse a form or a query, call the same `App` use cases as gRPC, and
//! render. Sign-in turns a token into a session cookie (`HttpOnly`, `SameSite=Strict`, `Secure`
//! over TLS); every form carries the session's anti-forgery value and a request_id, so a
//! resubmitted form is answered from the idempotency store instead of acting twice.

mod assets;
mod chart;
mod dash;
mod desk;
pub(crate) mod i18n;
mod listing;
pub(crate) mod page;
mod session;

use axum::Router;
use axum::routing::{get, post};

use super::WebState;

pub(crate) use dash::kind_label as dash_kind_label;
pub(crate) use page::{Ui, esc};
pub(crate) use session::safe_next as session_back;

/// The routes of the pages and their assets.
pub(crate) fn routes() -> Router<WebState> {
    Router::new()
        .route("/", get(session::home))
        .route("/signin", get(session::sign_in_page).post(session::sign_in))
        .route("/signout", post(session::sign_out))
        .route("/lang/{code}", get(session::set_language))
        .route("/assets/{name}", get(assets::asset))
        .merge(dash::routes())
        .merge(desk::routes())
}
