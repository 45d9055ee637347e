//! Receiving: shipments arriving from another store (per line: vials, VVM stage, and why any are
//! missing) and supplier deliveries into national and state stores (lots typed or scanned).

use std::collections::HashMap;
use std::fmt::Write as _;

use axum::Form;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use chrono::{Datelike as _, NaiveDate};

use super::super::Ui;
use super::super::page::{esc, notice, num, when};
use super::forms::{
    Fields, Problem, comment_field, date_field, discrepancy_options, line_key, num_field, scan_field, select_field,
    text_field, unit_options, vvm_options,
};
use super::home::{other_end, shipments};
use super::{At, Desk, desk_or_picker, desk_page, fail, page_with_status, url_encode};
use crate::app::App;
use crate::app::stock::{LotRef, ReceiptLine, ReceivedLine};
use crate::domain::catalog::LotInput;
use crate::domain::stock::{Shipment, ShipmentState};
use crate::domain::{Caller, FacilityKind, Lot};
use crate::error::{Error, Result};
use crate::web::WebState;

/// `GET /desk/receive`: shipments on their way here, each with its receive form a tap away.
pub(super) async fn incoming(State(s): State<WebState>, ui: Ui, Query(at): Query<At>) -> Response {
    let d = match desk_or_picker(&s.app, &ui, at.facility.as_deref(), "/desk/receive").await {
        Ok(d) => d,
        Err(r) => return r,
    };
    let t = ui.t();
    let c = &ui.caller;
    let list = match shipments(&s.app, c, &d.f.id, 1, &[ShipmentState::Dispatched]).await {
        Ok(l) => l,
        Err(e) => return fail(&ui, e),
    };
    let mut b = String::new();
    if matches!(d.f.kind, FacilityKind::NationalStore | FacilityKind::StateStore) {
        let _ = write!(
            b,
            r#"<p><a class="button" href="{}">{}</a></p>"#,
            esc(&d.href("/desk/supplier")),
            esc(t.desk_supplier)
        );
    }
    let _ = write!(b, r#"<section aria-labelledby="h-in"><h2 id="h-in">{}</h2>"#, esc(t.desk_incoming));
    if list.is_empty() {
        let _ = write!(b, "<p>{}</p>", esc(t.no_shipments));
    } else {
        b.push_str(r#"<ul class="plain shipments">"#);
        for sh in &list {
            let from = other_end(&s.app, c, &sh.from_facility_id, t.desk_higher_store).await;
            let doses: i64 = sh.lines.iter().map(|l| l.vials * l.doses_per_vial).sum();
            let reference = if sh.reference.is_empty() { String::new() } else { format!(" · {}", esc(&sh.reference)) };
            let _ = write!(
                b,
                r#"<li class="shipment" data-id="{id}">← <strong>{from}</strong>{reference} · {n} {lines} · {doses} {ld} · {when} <a class="button" href="{href}">{act}</a></li>"#,
                id = esc(&sh.id),
                from = esc(&from),
                n = sh.lines.len(),
                lines = esc(t.desk_lines),
                doses = num(doses),
                ld = esc(t.doses),
                when = sh.dispatched_at.map(when).unwrap_or_default(),
                href = esc(&d.href(&format!("/desk/shipments/{}", url_encode(&sh.id)))),
                act = esc(t.desk_receive_this),
            );
        }
        b.push_str("</ul>");
    }
    b.push_str("</section>");
    desk_page(&ui, &d, t.desk_receive, &b)
}

/// The lots a shipment names, read once each.
pub(super) async fn lots_of(app: &App, c: &Caller, s: &Shipment) -> HashMap<String, Lot> {
    let mut out = HashMap::new();
    for l in &s.lines {
        if !out.contains_key(&l.lot_id)
            && let Ok(lot) = app.get_lot(c, &l.lot_id).await
        {
            out.insert(l.lot_id.clone(), lot);
        }
    }
    out
}

/// `GET /desk/shipments/{id}`: the receive form of a shipment arriving here; otherwise its lines,
/// with dispatch and cancel for the sender.
pub(super) async fn shipment(
    State(s): State<WebState>,
    ui: Ui,
    Path(id): Path<String>,
    Query(at): Query<At>,
) -> Response {
    let d = match desk_or_picker(&s.app, &ui, at.facility.as_deref(), "/desk").await {
        Ok(d) => d,
        Err(r) => return r,
    };
    let sh = match s.app.get_shipment(&ui.caller, &id).await {
        Ok(sh) => sh,
        Err(e) => return fail(&ui, e),
    };
    if sh.state == ShipmentState::Dispatched && sh.to_facility_id == d.f.id {
        let mut v = Fields::default();
        let default_unit = d.units.first().map(|u| u.id.clone()).unwrap_or_default();
        v.set("storage_unit_id", default_unit);
        for (i, l) in sh.lines.iter().enumerate() {
            v.set(line_key(i, "line_id"), l.id.clone());
            v.set(line_key(i, "received_vials"), l.vials.to_string());
            v.set(line_key(i, "vvm_stage"), l.dispatched_vvm_stage.to_string());
        }
        return receive_page(&s.app, &ui, &d, &sh, &v, &Problem::default(), StatusCode::OK).await;
    }
    let lots = lots_of(&s.app, &ui.caller, &sh).await;
    let mut b = shipment_summary(&s.app, &ui, &d, &sh, &lots).await;
    b.push_str(&super::issue::sender_actions(&ui, &d, &sh));
    desk_page(&ui, &d, ui.t().desk_shipment, &b)
}

/// A shipment's lines as a table: what left, and what arrived once received.
pub(super) async fn shipment_summary(
    app: &App,
    ui: &Ui,
    d: &Desk,
    sh: &Shipment,
    lots: &HashMap<String, Lot>,
) -> String {
    let t = ui.t();
    let c = &ui.caller;
    let from = other_end(app, c, &sh.from_facility_id, t.desk_higher_store).await;
    let to = other_end(app, c, &sh.to_facility_id, &sh.to_facility_id).await;
    let mut b = format!(
        r#"<p class="shipment-head" data-state="{}">{} → {} · <strong>{}</strong>{}</p>"#,
        sh.state.as_i32(),
        esc(&from),
        esc(&to),
        esc(super::issue::state_word(t, sh.state)),
        if sh.reference.is_empty() { String::new() } else { format!(" · {}", esc(&sh.reference)) },
    );
    let received = sh.state == ShipmentState::Received;
    let _ = write!(
        b,
        r#"<div class="scroll"><table class="stack lines"><thead><tr><th>{}</th><th>{}</th><th>{}</th><th class="n">{}</th>"#,
        esc(t.product),
        esc(t.lot),
        esc(t.expiry),
        esc(t.desk_dispatched_vials),
    );
    if received {
        let _ = write!(
            b,
            r#"<th class="n">{}</th><th>{}</th><th>{}</th>"#,
            esc(t.desk_received_vials),
            esc(t.vvm),
            esc(t.desk_discrepancy)
        );
    }
    b.push_str("</tr></thead><tbody>");
    let reasons = discrepancy_options(t);
    for l in &sh.lines {
        let lot = lots.get(&l.lot_id);
        let _ = write!(
            b,
            r#"<tr data-line="{id}"><td data-label="{lp}">{p}</td><td data-label="{ll}">{lot}</td><td data-label="{le}">{exp}</td><td class="n" data-label="{lv}">{v}</td>"#,
            id = esc(&l.id),
            lp = esc(t.product),
            p = esc(d.product_name(&l.product_id)),
            ll = esc(t.lot),
            lot = esc(lot.map_or(l.lot_id.as_str(), |x| x.lot_number.as_str())),
            le = esc(t.expiry),
            exp = lot.map(|x| x.expiry.to_string()).unwrap_or_default(),
            lv = esc(t.desk_dispatched_vials),
            v = num(l.vials),
        );
        if received {
            let short = l.vials - l.received_vials;
            let why = reasons
                .iter()
                .find(|(v, _)| *v == l.discrepancy_reason.to_string())
                .map(|(_, w)| w.as_str())
                .unwrap_or("");
            let disc = if short > 0 {
                format!(r#"<span class="badge s-warn">⚠ −{} {}</span> {}"#, num(short), esc(t.vials), esc(why))
            } else {
                format!(r#"<span class="badge s-ok">✔ {}</span>"#, esc(t.desk_complete))
            };
            let _ = write!(
                b,
                r#"<td class="n received" data-label="{lr}">{r}</td><td data-label="{lvvm}">{vvm}</td><td data-label="{ld}">{disc}</td>"#,
                lr = esc(t.desk_received_vials),
                r = num(l.received_vials),
                lvvm = esc(t.vvm),
                vvm = if l.received_vvm_stage > 0 { l.received_vvm_stage.to_string() } else { "–".into() },
                ld = esc(t.desk_discrepancy),
            );
        }
        b.push_str("</tr>");
    }
    b.push_str("</tbody></table></div>");
    b
}

/// The receive form, with `v` filled in (the dispatched figures, or what was sent and refused).
async fn receive_page(
    app: &App,
    ui: &Ui,
    d: &Desk,
    sh: &Shipment,
    v: &Fields,
    p: &Problem,
    code: StatusCode,
) -> Response {
    let t = ui.t();
    let lots = lots_of(app, &ui.caller, sh).await;
    let from = other_end(app, &ui.caller, &sh.from_facility_id, t.desk_higher_store).await;
    let mut b = p.notice();
    let _ = write!(
        b,
        r#"<p>← <strong>{}</strong>{} · {}</p><p class="help">{}</p>"#,
        esc(&from),
        if sh.reference.is_empty() { String::new() } else { format!(" · {}", esc(&sh.reference)) },
        sh.dispatched_at.map(when).unwrap_or_default(),
        esc(t.desk_receive_help),
    );
    let _ = write!(
        b,
        r#"<form method="post" action="/desk/shipments/{id}/receive" class="desk-form" data-queue{q}>{keys}{hidden}"#,
        id = esc(&url_encode(&sh.id)),
        q = queue_attrs(ui),
        keys = ui.form_keys(),
        hidden = d.hidden(),
    );
    b.push_str(&select_field(v, p, "storage_unit_id", t.desk_into_unit, &unit_options(d), None));
    // Finding a line by scanning a pack: the script jumps to the line of that lot.
    let _ = write!(
        b,
        r#"<div class="f wide"><label for="find">{}</label><input id="find" type="text" class="scan" data-scan data-scan-find data-notfound="{}" autocomplete="off" autocapitalize="off" spellcheck="false"><p class="help">{}</p></div>"#,
        esc(t.desk_find_by_scan),
        esc(t.desk_scan_not_in_shipment),
        esc(t.desk_find_by_scan_help),
    );
    let reasons = discrepancy_options(t);
    let vvm = vvm_options(t);
    for (i, l) in sh.lines.iter().enumerate() {
        let lot = lots.get(&l.lot_id);
        let gtins = d.products.get(&l.product_id).map(|p| p.gtins.join(" ")).unwrap_or_default();
        let mark = if p.on_line(i) { " bad" } else { "" };
        let _ = write!(
            b,
            r#"<fieldset class="line{mark}" data-lot="{lotno}" data-gtins="{gtins}"><legend>{n}. {product} · {llot} {lotno} · {lexp} {exp} · {sent} {lv} ({doses} {ld})</legend><input type="hidden" name="{lid}" value="{line_id}"><div class="row">"#,
            lotno = esc(lot.map_or("", |x| x.lot_number.as_str())),
            gtins = esc(&gtins),
            n = i + 1,
            product = esc(d.product_name(&l.product_id)),
            llot = esc(t.lot),
            lexp = esc(t.expiry),
            exp = lot.map(|x| x.expiry.to_string()).unwrap_or_default(),
            sent = num(l.vials),
            lv = esc(t.vials),
            doses = num(l.vials * l.doses_per_vial),
            ld = esc(t.doses),
            lid = esc(&line_key(i, "line_id")),
            line_id = esc(&l.id),
        );
        b.push_str(&num_field(v, p, &line_key(i, "received_vials"), t.desk_received_vials, true));
        b.push_str(&select_field(v, p, &line_key(i, "vvm_stage"), t.vvm, &vvm, None));
        b.push_str(&select_field(v, p, &line_key(i, "discrepancy_reason"), t.desk_discrepancy, &reasons, Some("—")));
        b.push_str(&text_field(v, p, &line_key(i, "comment"), t.comment, 1000, false));
        b.push_str("</div></fieldset>");
    }
    let _ = write!(b, r#"<button class="big">{}</button></form>"#, esc(t.desk_confirm_receipt));
    page_with_status(ui, d, t.desk_receive_this, &b, code)
}

/// The data attributes the script uses when a form cannot be sent: its messages, in the page's
/// language, kept with the form in the browser's queue.
pub(super) fn queue_attrs(ui: &Ui) -> String {
    let t = ui.t();
    format!(
        r#" data-offline="{}" data-server="{}" data-stale="{}" data-sent="{}" data-signin="{}""#,
        esc(t.queue_saved),
        esc(t.queue_server),
        esc(t.queue_stale),
        esc(t.queue_sent),
        esc(t.queue_signin),
    )
}

/// `POST /desk/shipments/{id}/receive`.
pub(super) async fn receive(
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
    let t = ui.t();
    let rows = v.rows();
    let parsed: Result<Vec<ReceivedLine>> = rows
        .iter()
        .map(|&i| {
            Ok(ReceivedLine {
                line_id: v.line(i, "line_id").to_owned(),
                received_vials: v.line_int(i, "received_vials")?,
                storage_unit_id: String::new(),
                vvm_stage: i32::try_from(v.line_int(i, "vvm_stage")?).unwrap_or(-1),
                discrepancy_reason: i32::try_from(v.line_int(i, "discrepancy_reason")?).unwrap_or(-1),
                comment: v.line(i, "comment").to_owned(),
                scanned_code: String::new(),
            })
        })
        .collect();
    let result = match parsed {
        Ok(lines) => {
            s.app.receive_shipment(&ui.caller, v.get("request_id"), &id, v.get("storage_unit_id"), lines, false).await
        }
        Err(e) => Err(e),
    };
    match result {
        Ok(sh) => {
            let lots = lots_of(&s.app, &ui.caller, &sh).await;
            let short: i64 = sh.lines.iter().map(|l| l.vials - l.received_vials).sum();
            let mut b = notice(true, t.desk_received_done);
            if short > 0 {
                let _ = write!(
                    b,
                    r#"<p><span class="badge s-warn">⚠ {} {} {}</span></p>"#,
                    esc(t.desk_transit_loss),
                    num(short),
                    esc(t.vials)
                );
            }
            b.push_str(&shipment_summary(&s.app, &ui, &d, &sh, &lots).await);
            b.push_str(&next_links(&ui, &d));
            desk_page(&ui, &d, t.desk_receive_this, &b)
        }
        Err(e) => {
            // The shipment is read again so the form shows its lines, with what was typed.
            let sh = match s.app.get_shipment(&ui.caller, &id).await {
                Ok(sh) => sh,
                Err(_) => return fail(&ui, e),
            };
            if sh.state != ShipmentState::Dispatched {
                return fail(&ui, e);
            }
            let (code, p) = Problem::from_error(t, e, &rows);
            receive_page(&s.app, &ui, &d, &sh, &v, &p, code).await
        }
    }
}

/// Where to go after a form was saved.
pub(super) fn next_links(ui: &Ui, d: &Desk) -> String {
    let t = ui.t();
    format!(r#"<p><a class="button" href="{}">{}</a></p>"#, esc(&d.href("/desk")), esc(t.desk_back))
}

/// Lines a new supplier receipt form offers (more with `?lines=`).
const SUPPLIER_LINES: usize = 4;

/// Query of the supplier receipt page.
#[derive(Debug, Default, serde::Deserialize)]
pub(super) struct LinesQuery {
    facility: Option<String>,
    lines: Option<usize>,
}

/// `GET /desk/supplier`: a delivery from the manufacturer or procurement agency.
pub(super) async fn supplier_page(State(s): State<WebState>, ui: Ui, Query(q): Query<LinesQuery>) -> Response {
    let d = match desk_or_picker(&s.app, &ui, q.facility.as_deref(), "/desk/supplier").await {
        Ok(d) => d,
        Err(r) => return r,
    };
    let mut v = Fields::default();
    v.set("storage_unit_id", d.units.first().map(|u| u.id.clone()).unwrap_or_default());
    let n = q.lines.unwrap_or(SUPPLIER_LINES).clamp(1, 50);
    for i in 0..n {
        v.set(line_key(i, "vials"), "");
    }
    supplier_form(&ui, &d, &v, &Problem::default(), StatusCode::OK)
}

fn supplier_form(ui: &Ui, d: &Desk, v: &Fields, p: &Problem, code: StatusCode) -> Response {
    let t = ui.t();
    let mut b = p.notice();
    let _ = write!(b, r#"<p class="help">{}</p>"#, esc(t.desk_supplier_help));
    let _ = write!(
        b,
        r#"<form method="post" action="/desk/supplier" class="desk-form" data-queue{}>{}{}"#,
        queue_attrs(ui),
        ui.form_keys(),
        d.hidden()
    );
    b.push_str(r#"<div class="row">"#);
    b.push_str(&select_field(v, p, "storage_unit_id", t.desk_into_unit, &unit_options(d), None));
    b.push_str(&text_field(v, p, "supplier", t.desk_supplier_name, 200, false));
    b.push_str(&text_field(v, p, "reference", t.desk_reference, 64, false));
    b.push_str("</div>");
    let mut products: Vec<(String, String)> =
        d.products.values().filter(|p| p.active).map(|p| (p.id.clone(), format!("{} ({})", p.name, p.code))).collect();
    products.sort_by(|a, b| a.1.cmp(&b.1));
    let vvm = vvm_options(t);
    for i in v.rows() {
        let mark = if p.on_line(i) { " bad" } else { "" };
        let _ = write!(b, r#"<fieldset class="line{mark}"><legend>{} {}</legend>"#, esc(t.line), i + 1);
        b.push_str(&scan_field(v, p, &line_key(i, "scan"), t));
        let typed = [line_key(i, "product"), line_key(i, "lot_number"), line_key(i, "expiry")];
        let _ = write!(
            b,
            r#"<details{}><summary>{}</summary><div class="row">"#,
            if v.line(i, "lot_number").is_empty() { p.open_for(&typed) } else { " open" },
            esc(t.desk_type_lot)
        );
        b.push_str(&select_field(v, p, &line_key(i, "product"), t.product, &products, Some("—")));
        b.push_str(&text_field(v, p, &line_key(i, "lot_number"), t.lot, 20, false));
        b.push_str(&date_field(v, p, &line_key(i, "expiry"), t.expiry, false));
        b.push_str("</div></details><div class=\"row\">");
        b.push_str(&text_field(v, p, &line_key(i, "manufacturer"), t.desk_manufacturer, 200, false));
        b.push_str(&num_field(v, p, &line_key(i, "vials"), t.vials, false));
        b.push_str(&select_field(v, p, &line_key(i, "vvm_stage"), t.vvm, &vvm, None));
        b.push_str("</div></fieldset>");
    }
    b.push_str(&comment_field(v, p, "comment", t.comment));
    let _ = write!(
        b,
        r#"<button class="big">{}</button> <a href="{}">{}</a></form>"#,
        esc(t.desk_book_receipt),
        esc(&d.href(&format!("/desk/supplier?lines={}", v.rows().len() + 4))),
        esc(t.desk_more_lines),
    );
    page_with_status(ui, d, t.desk_supplier, &b, code)
}

/// A typed date (`2027-06-30`), as the App's date parts.
fn date_parts(v: &Fields, key: &str) -> Result<Option<(i32, i32, i32)>> {
    match v.trimmed(key) {
        "" => Ok(None),
        s => NaiveDate::parse_from_str(s, "%Y-%m-%d")
            .map(|d| Some((d.year(), d.month() as i32, d.day() as i32)))
            .map_err(|_| Error::invalid(key, "must be a date (YYYY-MM-DD)")),
    }
}

/// The lines of a supplier receipt form: every line with a scan, a lot number or vials.
fn receipt_lines(v: &Fields) -> Result<(Vec<ReceiptLine>, Vec<usize>)> {
    let mut lines = Vec::new();
    let mut rows = Vec::new();
    for i in v.rows() {
        if v.line_blank(i, &["scan", "lot_number", "vials"]) {
            continue;
        }
        let lot = if !v.line(i, "scan").is_empty() {
            LotRef::Scanned(v.line(i, "scan").to_owned())
        } else {
            if v.line(i, "lot_number").is_empty() {
                return Err(Error::invalid(line_key(i, "lot_number"), "scan the pack or type the lot number"));
            }
            let expiry = date_parts(v, &line_key(i, "expiry"))?;
            if expiry.is_none() {
                return Err(Error::invalid(line_key(i, "expiry"), "is required for a typed lot"));
            }
            if v.line(i, "product").is_empty() {
                return Err(Error::invalid(line_key(i, "product"), "is required for a typed lot"));
            }
            LotRef::New(LotInput {
                product_id: v.line(i, "product").to_owned(),
                gtin: String::new(),
                lot_number: v.line(i, "lot_number").to_owned(),
                manufacturer: v.line(i, "manufacturer").to_owned(),
                expiry,
            })
        };
        lines.push(ReceiptLine {
            lot,
            vials: v.line_int(i, "vials")?,
            vvm_stage: i32::try_from(v.line_int(i, "vvm_stage")?).unwrap_or(-1),
            storage_unit_id: String::new(),
            manufacturer: v.line(i, "manufacturer").to_owned(),
        });
        rows.push(i);
    }
    Ok((lines, rows))
}

/// `POST /desk/supplier`.
pub(super) async fn supplier(State(s): State<WebState>, ui: Ui, Form(pairs): Form<Vec<(String, String)>>) -> Response {
    let v = Fields::from_pairs(pairs);
    if let Some(r) = ui.refuse_forged(v.get("csrf")) {
        return r;
    }
    let d = match desk_or_picker(&s.app, &ui, Some(v.get("facility")), "/desk/supplier").await {
        Ok(d) => d,
        Err(r) => return r,
    };
    let t = ui.t();
    let (result, rows) = match receipt_lines(&v) {
        Ok((lines, rows)) => {
            // The supplier and reference go into the entries' comment, as over gRPC.
            let comment = match (v.trimmed("supplier"), v.trimmed("reference")) {
                ("", "") => v.trimmed("comment").to_owned(),
                (sup, r) => format!("{sup}: {r} {}", v.trimmed("comment")).trim().to_owned(),
            };
            let r = s
                .app
                .receive_from_supplier(&ui.caller, v.get("request_id"), v.get("storage_unit_id"), lines, &comment)
                .await;
            (r, rows)
        }
        Err(e) => (Err(e), Vec::new()),
    };
    match result {
        Ok((entries, lots)) => {
            let mut b = notice(true, t.desk_supplier_done);
            let _ = write!(
                b,
                r#"<div class="scroll"><table class="stack"><thead><tr><th>{}</th><th>{}</th><th>{}</th><th class="n">{}</th><th class="n">{}</th></tr></thead><tbody>"#,
                esc(t.product),
                esc(t.lot),
                esc(t.expiry),
                esc(t.vials),
                esc(t.doses)
            );
            for e in entries.iter().filter(|e| e.draft.kind == crate::domain::stock::EntryKind::Receipt) {
                let lot = lots.iter().find(|l| l.id == e.draft.lot_id);
                let _ = write!(
                    b,
                    r#"<tr><td data-label="{}">{}</td><td data-label="{}">{}</td><td data-label="{}">{}</td><td class="n" data-label="{}">{}</td><td class="n" data-label="{}">{}</td></tr>"#,
                    esc(t.product),
                    esc(d.product_name(&e.draft.product_id)),
                    esc(t.lot),
                    esc(lot.map_or("", |l| l.lot_number.as_str())),
                    esc(t.expiry),
                    lot.map(|l| l.expiry.to_string()).unwrap_or_default(),
                    esc(t.vials),
                    num(e.draft.quantity_vials),
                    esc(t.doses),
                    num(e.doses),
                );
            }
            b.push_str("</tbody></table></div>");
            b.push_str(&next_links(&ui, &d));
            desk_page(&ui, &d, t.desk_supplier, &b)
        }
        Err(e) => {
            let (code, p) = Problem::from_error(t, e, &rows);
            supplier_form(&ui, &d, &v, &p, code)
        }
    }
}
