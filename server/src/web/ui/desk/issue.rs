//! Issuing: choose where stock goes, which product and how many doses; the page shows the EEFO
//! suggestion (lots in issuing order, and why each lot is taken or skipped), the manager accepts
//! or changes the vials, and the shipment is created and dispatched in one go. Stock for a
//! session site goes with the session report instead (sites hold no stock of their own).

use std::fmt::Write as _;

use axum::Form;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use chrono::NaiveDate;

use super::super::Ui;
use super::super::i18n::Strings;
use super::super::page::{esc, notice, num};
use super::forms::{Fields, Problem, comment_field, date_field, line_key, stock_value, text_field};
use super::receive::{next_links, queue_attrs, shipment_summary};
use super::{Desk, desk_or_picker, fail, kind_word, page_with_status, url_encode};
use crate::app::App;
use crate::app::stock::{LotRef, NewShipmentLine};
use crate::domain::stock::{AllocationReason, Shipment, ShipmentState};
use crate::domain::{Caller, Facility, FacilityKind};
use crate::error::{Error, Result};
use crate::web::WebState;

/// The people's word for a shipment's state.
pub(super) fn state_word(t: &Strings, s: ShipmentState) -> &'static str {
    match s {
        ShipmentState::Draft => t.ship_draft,
        ShipmentState::Dispatched => t.ship_dispatched,
        ShipmentState::Received => t.ship_received,
        ShipmentState::Cancelled => t.ship_cancelled,
    }
}

/// Why a lot is taken or skipped, in words.
fn reason_word(t: &Strings, r: AllocationReason) -> &'static str {
    match r {
        AllocationReason::VvmStage => t.alloc_vvm,
        AllocationReason::EarliestExpiry => t.alloc_eefo,
        AllocationReason::Quarantined => t.alloc_quarantined,
        AllocationReason::Expired => t.alloc_expired,
        AllocationReason::ShortShelfLife => t.alloc_short,
        AllocationReason::VvmDiscardPoint => t.alloc_vvm_discard,
        AllocationReason::NotNeeded => t.alloc_not_needed,
    }
}

/// Where the store may send stock: the facilities directly below it (all of them, however many).
async fn destinations(app: &App, c: &Caller, d: &Desk) -> Result<Vec<Facility>> {
    let mut out: Vec<Facility> = d.children(app, c, 0).await?.into_iter().filter(|f| f.id != d.f.id).collect();
    out.sort_by(|a, b| a.kind.as_i32().cmp(&b.kind.as_i32()).then_with(|| a.name.cmp(&b.name)));
    Ok(out)
}

/// `GET /desk/issue`: the choice, then the suggestion.
pub(super) async fn issue_page(
    State(s): State<WebState>,
    ui: Ui,
    Query(pairs): Query<Vec<(String, String)>>,
) -> Response {
    let v = Fields::from_pairs(pairs);
    let d = match desk_or_picker(&s.app, &ui, Some(v.get("facility")), "/desk/issue").await {
        Ok(d) => d,
        Err(r) => return r,
    };
    match render(&s.app, &ui, &d, &v, &Problem::default()).await {
        Ok(b) => page_with_status(&ui, &d, ui.t().desk_issue, &b, StatusCode::OK),
        Err(e) => fail(&ui, e),
    }
}

/// The issue page for the values in `v`: the choice form, and the suggestion once a destination,
/// product and doses are chosen. A refused shipment comes back with the vials that were sent.
async fn render(app: &App, ui: &Ui, d: &Desk, v: &Fields, p: &Problem) -> Result<String> {
    let t = ui.t();
    let c = &ui.caller;
    let dests = destinations(app, c, d).await?;
    let mut b = p.notice();
    // Step 1: where, what, how much (a plain GET form: it changes nothing).
    let _ = write!(
        b,
        r#"<form method="get" action="/desk/issue" class="desk-form">{}<div class="row"><div class="f"><label for="to">{}</label><select id="to" name="to" required><option value="">—</option>"#,
        d.hidden(),
        esc(t.desk_destination)
    );
    for f in &dests {
        let sel = if f.id == v.trimmed("to") { " selected" } else { "" };
        let _ = write!(
            b,
            r#"<option value="{}"{sel}>{} · {} ({})</option>"#,
            esc(&f.id),
            esc(&f.name),
            esc(&f.code),
            esc(kind_word(t, f.kind))
        );
    }
    let _ = write!(
        b,
        r#"</select></div><div class="f"><label for="product">{}</label><select id="product" name="product" required><option value="">—</option>"#,
        esc(t.product)
    );
    let mut products: Vec<_> = d.products.values().filter(|p| p.active).collect();
    products.sort_by(|a, b| a.name.cmp(&b.name));
    for pr in products {
        let sel = if pr.id == v.trimmed("product") { " selected" } else { "" };
        let _ = write!(
            b,
            r#"<option value="{}"{sel}>{} ({} {})</option>"#,
            esc(&pr.id),
            esc(&pr.name),
            pr.doses_per_vial,
            esc(t.desk_doses_per_vial)
        );
    }
    let _ = write!(
        b,
        r#"</select></div><div class="f"><label for="doses">{}</label><input id="doses" name="doses" type="number" inputmode="numeric" min="1" step="1" required value="{}"></div></div><button>{}</button></form>"#,
        esc(t.desk_doses_needed),
        esc(v.trimmed("doses")),
        esc(t.desk_suggest)
    );
    let (to, product) = (v.trimmed("to"), v.trimmed("product"));
    let doses = v.int("doses").unwrap_or(0);
    if to.is_empty() || product.is_empty() || doses <= 0 {
        return Ok(b);
    }
    let Some(dest) = dests.iter().find(|f| f.id == to) else {
        b.push_str(&notice(false, t.error_forbidden));
        return Ok(b);
    };
    let alloc = app.suggest_allocation(c, &d.f.id, product, doses, "", 0).await?;
    let to_site = dest.kind == FacilityKind::SessionSite;

    // Step 2: the suggestion, in issuing order, with the reason for every lot.
    let _ = write!(
        b,
        r#"<section aria-labelledby="h-eefo"><h2 id="h-eefo">{}</h2><p class="help">{}</p>"#,
        esc(t.desk_suggestion),
        esc(t.desk_suggestion_help)
    );
    let _ = write!(
        b,
        r#"<p class="eefo-total">{} <strong>{}</strong> · {} <strong>{}</strong> {}</p>"#,
        esc(t.desk_doses_needed),
        num(doses),
        esc(t.desk_suggested),
        num(alloc.suggested_doses),
        esc(t.doses)
    );
    if alloc.shortfall_doses > 0 {
        let _ = write!(
            b,
            r#"<p class="notice error" role="alert">⚠ {} {} {}</p>"#,
            esc(t.desk_shortfall),
            num(alloc.shortfall_doses),
            esc(t.doses)
        );
    }
    let (method, action, vials_name) =
        if to_site { ("get", "/desk/session", "vials_issued") } else { ("post", "/desk/issue", "vials") };
    let _ = write!(
        b,
        r#"<form method="{method}" action="{action}" class="desk-form"{queue}>{keys}{hidden}<input type="hidden" name="{dest_name}" value="{to}"><input type="hidden" name="product" value="{product}"><input type="hidden" name="doses" value="{doses}"><ol class="eefo">"#,
        queue = if to_site { String::new() } else { format!(" data-queue{}", queue_attrs(ui)) },
        keys = if to_site { String::new() } else { ui.form_keys() },
        hidden = d.hidden(),
        dest_name = if to_site { "site" } else { "to" },
        to = esc(to),
        product = esc(product),
    );
    let mut row = 0;
    for lot in &alloc.lots {
        let it = &lot.item;
        let chosen = matches!(lot.reason, AllocationReason::VvmStage | AllocationReason::EarliestExpiry);
        let takeable = chosen || matches!(lot.reason, AllocationReason::NotNeeded | AllocationReason::ShortShelfLife);
        let badge = if chosen {
            format!(r#"<span class="badge s-ok">✔ {}</span>"#, esc(t.desk_take))
        } else {
            format!(r#"<span class="badge s-info">✖ {}</span>"#, esc(t.desk_skip))
        };
        let _ = write!(
            b,
            r#"<li class="{cls}" data-lot="{lotno}" data-reason="{reason:?}">{badge} <strong>{llot} {lotno}</strong> · {lexp} {exp} · {unit} · {lvvm} {vvm} · {avail} {lavail}<br><small class="why">{why}</small>"#,
            cls = if chosen { "chosen" } else { "skipped" },
            lotno = esc(&it.lot_number),
            reason = lot.reason,
            llot = esc(t.lot),
            lexp = esc(t.expiry),
            exp = it.expiry,
            unit = esc(d.unit_name(&it.storage_unit_id)),
            lvvm = esc(t.vvm),
            vvm = if it.vvm_stage > 0 { it.vvm_stage.to_string() } else { "–".into() },
            avail = num(it.balance.available()),
            lavail = esc(t.desk_vials_available),
            why = esc(reason_word(t, lot.reason)),
        );
        if takeable {
            // Keep what the manager sent when the form comes back refused, matched by lot.
            let stock = stock_value(&it.storage_unit_id, &it.lot_id);
            let sent =
                v.rows().into_iter().find(|&i| v.line(i, "stock") == stock).map(|i| v.line(i, vials_name).to_owned());
            let value = sent.unwrap_or_else(|| lot.vials.to_string());
            let key = line_key(row, vials_name);
            let _ = write!(
                b,
                r#"<input type="hidden" name="{sk}" value="{stock}"><div class="f"><label for="{id}">{lv} ({dpv} {ldpv})</label><input id="{id}" name="{key}" type="number" inputmode="numeric" min="0" max="{max}" step="1" value="{value}"{attrs}></div>"#,
                sk = esc(&line_key(row, "stock")),
                stock = esc(&stock),
                id = super::forms::id_of(&key),
                lv = esc(t.desk_vials_to_issue),
                dpv = it.doses_per_vial,
                ldpv = esc(t.desk_doses_per_vial),
                key = esc(&key),
                max = it.balance.available(),
                value = esc(&value),
                attrs = p.attrs(&key),
            );
            row += 1;
        }
        b.push_str("</li>");
    }
    b.push_str("</ol>");
    if to_site {
        let _ = write!(
            b,
            r#"<p class="help">{}</p><button class="big">{}</button></form>"#,
            esc(t.desk_site_issue_help),
            esc(t.desk_to_session_report)
        );
    } else {
        b.push_str(r#"<div class="row">"#);
        b.push_str(&text_field(v, p, "reference", t.desk_reference, 64, false));
        b.push_str(&date_field(v, p, "expected_arrival", t.desk_expected_arrival, false));
        b.push_str("</div>");
        b.push_str(&comment_field(v, p, "comment", t.comment));
        let _ = write!(b, r#"<button class="big">{}</button></form>"#, esc(t.desk_ship_now));
    }
    b.push_str("</section>");
    Ok(b)
}

/// The shipment lines of an accepted suggestion: every lot with vials.
fn ship_lines(v: &Fields) -> Result<(Vec<NewShipmentLine>, Vec<usize>)> {
    let mut lines = Vec::new();
    let mut rows = Vec::new();
    for i in v.rows() {
        let vials = v.line_int(i, "vials")?;
        if vials == 0 {
            continue;
        }
        let LotRef::Id(lot) = v.line_lot(i) else { continue };
        lines.push(NewShipmentLine {
            lot: LotRef::Id(lot),
            vials,
            source_storage_unit_id: v.line_stock_unit(i).to_owned(),
        });
        rows.push(i);
    }
    if lines.is_empty() {
        return Err(Error::invalid("lines", "give the vials of at least one lot"));
    }
    Ok((lines, rows))
}

/// `POST /desk/issue`: creates the shipment and dispatches it.
pub(super) async fn ship(State(s): State<WebState>, ui: Ui, Form(pairs): Form<Vec<(String, String)>>) -> Response {
    let v = Fields::from_pairs(pairs);
    if let Some(r) = ui.refuse_forged(v.get("csrf")) {
        return r;
    }
    let d = match desk_or_picker(&s.app, &ui, Some(v.get("facility")), "/desk/issue").await {
        Ok(d) => d,
        Err(r) => return r,
    };
    let t = ui.t();
    let c = &ui.caller;
    let rid = v.get("request_id");
    let created = async {
        let (lines, rows) = ship_lines(&v).map_err(|e| (e, Vec::new()))?;
        let expected = match v.trimmed("expected_arrival") {
            "" => None,
            x => Some(
                NaiveDate::parse_from_str(x, "%Y-%m-%d")
                    .map_err(|_| (Error::invalid("expected_arrival", "must be a date (YYYY-MM-DD)"), Vec::new()))?,
            ),
        };
        s.app
            .create_shipment(
                c,
                rid,
                &d.f.id,
                v.trimmed("to"),
                lines,
                v.trimmed("reference"),
                v.trimmed("comment"),
                expected,
            )
            .await
            .map_err(|e| (e, rows))
    };
    let draft = match created.await {
        Ok(sh) => sh,
        Err((e, rows)) => {
            let (code, p) = Problem::from_error(t, e, &rows);
            return match render(&s.app, &ui, &d, &v, &p).await {
                Ok(b) => page_with_status(&ui, &d, t.desk_issue, &b, code),
                Err(e) => fail(&ui, e),
            };
        }
    };
    // Both further steps are keyed by the same form: sent again, each replays its first result.
    let step = |name: &str| if rid.is_empty() { String::new() } else { format!("{rid}:{name}") };
    match s.app.dispatch_shipment(c, &step("dispatch"), &draft.id).await {
        Ok(sh) => shipment_result(&s.app, &ui, &d, Ok(sh), &draft, t.desk_shipped_done).await,
        Err(e) => {
            // Nothing left: the draft is withdrawn, so the form can come back as typed, with the
            // reason, instead of leaving a half-done shipment behind.
            let why = format!("{} {e}", t.desk_not_dispatched);
            if let Err(c_err) = s.app.cancel_shipment(c, &step("cancel"), &draft.id, &why).await {
                tracing::warn!(error = %c_err, shipment = %draft.id, "could not withdraw an undispatched draft");
                return shipment_result(&s.app, &ui, &d, Err(e), &draft, t.desk_shipped_done).await;
            }
            let (code, p) = Problem::from_error(t, e, &[]);
            match render(&s.app, &ui, &d, &v, &p).await {
                Ok(b) => page_with_status(&ui, &d, t.desk_issue, &b, code),
                Err(e) => fail(&ui, e),
            }
        }
    }
}

/// The page after a dispatch or cancel: the shipment, or why it did not go (then it stays a
/// draft, with its buttons).
async fn shipment_result(app: &App, ui: &Ui, d: &Desk, r: Result<Shipment>, before: &Shipment, done: &str) -> Response {
    let t = ui.t();
    let lots = super::receive::lots_of(app, &ui.caller, before).await;
    match r {
        Ok(sh) => {
            let mut b = notice(true, done);
            b.push_str(&shipment_summary(app, ui, d, &sh, &lots).await);
            b.push_str(&sender_actions(ui, d, &sh));
            b.push_str(&next_links(ui, d));
            page_with_status(ui, d, t.desk_shipment, &b, StatusCode::OK)
        }
        Err(e) => {
            let (code, p) = Problem::from_error(t, e, &[]);
            let now = app.get_shipment(&ui.caller, &before.id).await.unwrap_or_else(|_| before.clone());
            let mut b = p.notice();
            b.push_str(&shipment_summary(app, ui, d, &now, &lots).await);
            b.push_str(&sender_actions(ui, d, &now));
            b.push_str(&next_links(ui, d));
            page_with_status(ui, d, t.desk_shipment, &b, code)
        }
    }
}

/// The sender's buttons under a shipment: dispatch a draft, cancel a draft or one on its way.
pub(super) fn sender_actions(ui: &Ui, d: &Desk, sh: &Shipment) -> String {
    let t = ui.t();
    if sh.from_facility_id != d.f.id || !matches!(sh.state, ShipmentState::Draft | ShipmentState::Dispatched) {
        return String::new();
    }
    let id = url_encode(&sh.id);
    let mut b = String::new();
    if sh.state == ShipmentState::Draft {
        let _ = write!(
            b,
            r#"<form method="post" action="/desk/shipments/{id}/dispatch" data-queue{q}>{keys}{hidden}<button class="big">{}</button></form>"#,
            esc(t.desk_dispatch),
            q = queue_attrs(ui),
            keys = ui.form_keys(),
            hidden = d.hidden(),
        );
    }
    let _ = write!(
        b,
        r#"<details><summary>{cancel}</summary><form method="post" action="/desk/shipments/{id}/cancel" data-queue{q}>{keys}{hidden}<label for="cancel-comment">{why}</label><textarea id="cancel-comment" name="comment" required maxlength="1000" rows="2"></textarea><button class="secondary">{cancel}</button></form></details>"#,
        cancel = esc(t.desk_cancel_shipment),
        q = queue_attrs(ui),
        keys = ui.form_keys(),
        hidden = d.hidden(),
        why = esc(t.desk_cancel_why),
    );
    b
}

/// `POST /desk/shipments/{id}/dispatch`.
pub(super) async fn dispatch(
    State(s): State<WebState>,
    ui: Ui,
    Path(id): Path<String>,
    Form(pairs): Form<Vec<(String, String)>>,
) -> Response {
    let v = Fields::from_pairs(pairs);
    if let Some(r) = ui.refuse_forged(v.get("csrf")) {
        return r;
    }
    let d = match desk_or_picker(&s.app, &ui, Some(v.get("facility")), "/desk").await {
        Ok(d) => d,
        Err(r) => return r,
    };
    let before = match s.app.get_shipment(&ui.caller, &id).await {
        Ok(sh) => sh,
        Err(e) => return fail(&ui, e),
    };
    let r = s.app.dispatch_shipment(&ui.caller, v.get("request_id"), &id).await;
    shipment_result(&s.app, &ui, &d, r, &before, ui.t().desk_shipped_done).await
}

/// `POST /desk/shipments/{id}/cancel`.
pub(super) async fn cancel(
    State(s): State<WebState>,
    ui: Ui,
    Path(id): Path<String>,
    Form(pairs): Form<Vec<(String, String)>>,
) -> Response {
    let v = Fields::from_pairs(pairs);
    if let Some(r) = ui.refuse_forged(v.get("csrf")) {
        return r;
    }
    let d = match desk_or_picker(&s.app, &ui, Some(v.get("facility")), "/desk").await {
        Ok(d) => d,
        Err(r) => return r,
    };
    let before = match s.app.get_shipment(&ui.caller, &id).await {
        Ok(sh) => sh,
        Err(e) => return fail(&ui, e),
    };
    let r = s.app.cancel_shipment(&ui.caller, v.get("request_id"), &id, v.trimmed("comment")).await;
    shipment_result(&s.app, &ui, &d, r, &before, ui.t().desk_cancelled_done).await
}
