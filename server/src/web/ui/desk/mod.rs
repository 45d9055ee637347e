//! The depot manager's stock desk (`/desk`): what a store holds and the forms that move stock.
//!
//! Every page works on one facility: a depot manager's own (the token's scope), or the one an
//! officer or admin picks with `?facility=`; forms carry it back as a hidden field. Handlers parse
//! the form, call the same `App` use cases as gRPC and render. A successful form answers with its
//! result page, so sending the same form again (same request_id) shows the same result and
//! changes nothing; a refused form comes back filled in, with the reason beside the field.

mod forms;
mod home;
mod issue;
mod ledger;
mod receive;
mod session;

use std::collections::HashMap;
use std::fmt::Write as _;

use axum::Router;
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::{get, post};
use serde::Deserialize;

use super::Ui;
use super::i18n::Strings;
use super::page::{Nav, error_page, esc, layout};
use crate::app::App;
use crate::domain::facility::FacilityQuery;
use crate::domain::stock::{StockFilter, StockItem};
use crate::domain::{Caller, Facility, FacilityKind, Product, StorageUnit};
use crate::error::{Error, Result};
use crate::web::WebState;

/// The desk's routes.
pub(super) fn routes() -> Router<WebState> {
    Router::new()
        .route("/desk", get(home::home))
        .route("/desk/receive", get(receive::incoming))
        .route("/desk/shipments/{id}", get(receive::shipment))
        .route("/desk/shipments/{id}/receive", post(receive::receive))
        .route("/desk/shipments/{id}/dispatch", post(issue::dispatch))
        .route("/desk/shipments/{id}/cancel", post(issue::cancel))
        .route("/desk/supplier", get(receive::supplier_page).post(receive::supplier))
        .route("/desk/issue", get(issue::issue_page).post(issue::ship))
        .route("/desk/session", get(session::session_page).post(session::submit))
        .route("/desk/count", get(ledger::count_page).post(ledger::count))
        .route("/desk/adjust", get(ledger::adjust_page).post(ledger::adjust))
        .route("/desk/transfer", get(ledger::transfer_page).post(ledger::transfer))
}

/// Up to this many rows come from a listing a desk page shows whole; a store holds far fewer
/// (unit, lot) balances, and the cap keeps every page small on a slow link.
const LIST_CAP: usize = 2000;

/// The `?facility=` of a desk page, and where a long list continues (`?from=`, `?unit=`).
#[derive(Debug, Default, Deserialize)]
pub(super) struct At {
    facility: Option<String>,
    from: Option<usize>,
    unit: Option<String>,
}

/// The facility a desk page works on, with what most pages need to know of it.
#[derive(Debug)]
pub(super) struct Desk {
    /// The facility.
    pub f: Facility,
    /// Its storage units in service.
    pub units: Vec<StorageUnit>,
    /// The catalogue by id.
    pub products: HashMap<String, Product>,
}

impl Desk {
    /// The facility named in the request, else the caller's own; `None` when the caller (an
    /// admin or officer above one store) must pick one first.
    pub async fn load(app: &App, c: &Caller, requested: Option<&str>) -> Result<Option<Desk>> {
        let id = match requested.map(str::trim).filter(|s| !s.is_empty()) {
            Some(id) => id.to_owned(),
            None => match own_facility(c) {
                Some(id) => id.to_owned(),
                None => return Ok(None),
            },
        };
        let f = app.get_facility(c, &id).await?;
        let units = all_units(app, c, &f.id).await?;
        let products = products(app, c).await?;
        Ok(Some(Desk { f, units, products }))
    }

    /// A desk address for this facility.
    pub fn href(&self, path: &str) -> String {
        let sep = if path.contains('?') { '&' } else { '?' };
        format!("{path}{sep}facility={}", url_encode(&self.f.id))
    }

    /// The hidden field that carries the facility through a form.
    pub fn hidden(&self) -> String {
        format!(r#"<input type="hidden" name="facility" value="{}">"#, esc(&self.f.id))
    }

    /// A unit's name (its id when unknown).
    pub fn unit_name<'a>(&'a self, id: &'a str) -> &'a str {
        self.units.iter().find(|u| u.id == id).map_or(id, |u| u.name.as_str())
    }

    /// A product's name (its id when unknown).
    pub fn product_name<'a>(&'a self, id: &'a str) -> &'a str {
        self.products.get(id).map_or(id, |p| p.name.as_str())
    }

    /// Whether stock lives here (session sites draw from their parent's units).
    pub fn holds_stock(&self) -> bool {
        self.f.kind != FacilityKind::SessionSite
    }

    /// The balances at the facility (non-zero), by the store's order.
    pub async fn stock(&self, app: &App, c: &Caller) -> Result<Vec<StockItem>> {
        super::listing::collect(LIST_CAP, |t| {
            let filter = StockFilter { facility_id: Some(self.f.id.clone()), ..Default::default() };
            async move { app.list_balances(c, filter, "", 1000, &t).await }
        })
        .await
    }

    /// The facility's session sites (where its sessions are held).
    pub async fn session_sites(&self, app: &App, c: &Caller) -> Result<Vec<Facility>> {
        self.children(app, c, FacilityKind::SessionSite.as_i32()).await
    }

    /// The facilities directly below this one (of one kind, 0 = any), every page of them: a
    /// store sends stock to these, never past them to its children's sites.
    pub async fn children(&self, app: &App, c: &Caller, kind: i32) -> Result<Vec<Facility>> {
        let mut out = Vec::new();
        let mut token = String::new();
        loop {
            let q = FacilityQuery { parent_id: self.f.id.clone(), kind, ..Default::default() };
            let page = app.list_facilities(c, q, 1000, &token).await?;
            out.extend(page.items);
            if page.next_page_token.is_empty() {
                return Ok(out);
            }
            token = page.next_page_token;
        }
    }
}

/// The facility id a scoped caller's token names (the last element of its scope path).
fn own_facility(c: &Caller) -> Option<&str> {
    c.scope_path.trim_end_matches('/').rsplit('/').next().filter(|s| !s.is_empty())
}

async fn all_units(app: &App, c: &Caller, facility_id: &str) -> Result<Vec<StorageUnit>> {
    super::listing::units(app, c, facility_id, LIST_CAP).await
}

async fn products(app: &App, c: &Caller) -> Result<HashMap<String, Product>> {
    super::listing::products(app, c, LIST_CAP).await
}

/// Loads the desk of a request, or answers with the facility picker or the error page.
pub(super) async fn desk_or_picker(
    app: &App,
    ui: &Ui,
    requested: Option<&str>,
    next: &str,
) -> std::result::Result<Desk, Response> {
    match Desk::load(app, &ui.caller, requested).await {
        Ok(Some(d)) => Ok(d),
        Ok(None) => Err(picker(app, ui, next).await),
        Err(e) => Err(error_page(ui.lang, e)),
    }
}

/// The page an admin or officer sees first: which store's desk to open.
async fn picker(app: &App, ui: &Ui, next: &str) -> Response {
    let t = ui.t();
    let mut facilities = Vec::new();
    let mut token = String::new();
    loop {
        match app.list_facilities(&ui.caller, FacilityQuery::default(), 1000, &token).await {
            Ok(page) => {
                facilities.extend(page.items.into_iter().filter(|f| f.kind != FacilityKind::SessionSite));
                if page.next_page_token.is_empty() || facilities.len() >= LIST_CAP {
                    break;
                }
                token = page.next_page_token;
            }
            Err(e) => return error_page(ui.lang, e),
        }
    }
    facilities.sort_by(|a, b| a.kind.as_i32().cmp(&b.kind.as_i32()).then_with(|| a.name.cmp(&b.name)));
    let mut body = format!(
        r#"<form method="get" action="{next}"><label for="facility">{}</label><select id="facility" name="facility" required>"#,
        esc(t.desk_pick_facility)
    );
    for f in facilities.iter().take(1000) {
        let _ = write!(
            body,
            r#"<option value="{}">{} · {} ({})</option>"#,
            esc(&f.id),
            esc(&f.name),
            esc(&f.code),
            esc(kind_word(t, f.kind))
        );
    }
    let _ = write!(body, "</select><button>{}</button></form>", esc(t.show));
    layout(ui, t.nav_desk, Nav::Desk, &body)
}

/// The people's name of a facility kind.
pub(super) fn kind_word(t: &Strings, k: FacilityKind) -> &'static str {
    match k {
        FacilityKind::NationalStore => t.fk_national,
        FacilityKind::StateStore => t.fk_state,
        FacilityKind::DistrictStore => t.fk_district,
        FacilityKind::ColdChainPoint => t.fk_ccp,
        FacilityKind::SessionSite => t.fk_site,
    }
}

/// Percent-encodes a query value.
pub(super) fn url_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// A desk page: the facility's name above the title, and the desk's section of the navigation.
pub(super) fn desk_page(ui: &Ui, d: &Desk, title: &str, body: &str) -> Response {
    page_with_status(ui, d, title, body, StatusCode::OK)
}

/// A desk page with a status other than 200 (a refused form comes back with the error's status,
/// so scripts and tests can tell it from a result).
pub(super) fn page_with_status(ui: &Ui, d: &Desk, title: &str, body: &str, code: StatusCode) -> Response {
    let t = ui.t();
    // Whose forms the browser may send from its offline queue on this page: a queued form waits
    // for the person who filled it in, never goes out under someone else's session.
    let who = crate::domain::token::sha256_hex(ui.caller.token_id.as_bytes());
    let head = format!(
        r#"<p class="where" data-who="{}"><a href="{}">{}</a> · {} <small>{}</small></p>{body}"#,
        esc(who.get(..16).unwrap_or(&who)),
        esc(&d.href("/desk")),
        esc(t.nav_desk),
        esc(&d.f.name),
        esc(kind_word(t, d.f.kind)),
    );
    let mut r = layout(ui, title, Nav::Desk, &head);
    *r.status_mut() = code;
    r
}

/// Answers a handler's unexpected failure (a read that failed) with the error page.
pub(super) fn fail(ui: &Ui, e: Error) -> Response {
    error_page(ui.lang, e)
}
