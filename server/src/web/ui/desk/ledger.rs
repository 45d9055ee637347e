//! The store's own corrections: a physical count, an adjustment with its reason, and a transfer
//! between two storage units of the facility.

use std::collections::HashMap;
use std::fmt::Write as _;

use axum::Form;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::Response;

use super::super::Ui;
use super::super::page::{esc, notice, num};
use super::forms::{
    Fields, Problem, adjustment_options, comment_field, line_key, num_field, scan_field, select_field, stock_options,
    stock_value, unit_options, vvm_options,
};
use super::receive::{next_links, queue_attrs};
use super::{At, Desk, desk_or_picker, fail, page_with_status};
use crate::app::App;
use crate::app::stock::{CountLine, LotRef};
use crate::domain::stock::{LedgerEntry, StockItem};
use crate::error::Result;
use crate::web::WebState;

/// Renames the App's field names to the form's, so the refused field is marked.
fn rename(mut p: Problem, names: &[(&str, &str)]) -> Problem {
    if let Some((_, to)) = names.iter().find(|(from, _)| *from == p.field) {
        p.field = (*to).to_owned();
    }
    p
}

/// Lot numbers and products of a store's lots, for result pages.
fn lot_names(stock: &[StockItem]) -> HashMap<&str, (&str, &str)> {
    stock.iter().map(|s| (s.lot_id.as_str(), (s.lot_number.as_str(), s.product_id.as_str()))).collect()
}

/// Ledger entries written, as a list: unit, product, lot, change, and what is on hand after.
async fn entries_list(app: &App, ui: &Ui, d: &Desk, entries: &[LedgerEntry]) -> String {
    let t = ui.t();
    let stock = d.stock(app, &ui.caller).await.unwrap_or_default();
    let names = lot_names(&stock);
    let mut b = String::from(r#"<ul class="plain entries">"#);
    for e in entries {
        let (lot, product) = match names.get(e.draft.lot_id.as_str()) {
            Some((l, p)) => ((*l).to_owned(), (*p).to_owned()),
            None => (
                app.get_lot(&ui.caller, &e.draft.lot_id).await.map(|l| l.lot_number).unwrap_or_default(),
                e.draft.product_id.clone(),
            ),
        };
        let q = e.draft.quantity_vials;
        let _ = write!(
            b,
            r#"<li data-entry="{}">{} · {} · {} {} · <strong>{}{} {}</strong> → {} {}</li>"#,
            esc(&e.id),
            esc(d.unit_name(e.draft.storage_unit_id.as_deref().unwrap_or(""))),
            esc(d.product_name(&product)),
            esc(t.lot),
            esc(&lot),
            if q > 0 { "+" } else { "" },
            num(q),
            esc(t.vials),
            num(e.balance_after_vials),
            esc(t.desk_on_hand),
        );
    }
    b.push_str("</ul>");
    b
}

/// Spare lines a count form offers for lots found that are not on the books (one: each carries
/// a list of the store's lots, and the page must stay small).
const SPARE_LINES: usize = 1;

/// Lots a count page lists at a time (about 60 KB); a long unit is counted page by page.
const COUNT_ROWS: usize = 50;

/// `GET /desk/count`: the (unit, lot) balances on the books, one storage unit at a time (a count
/// goes fridge by fridge), to count.
pub(super) async fn count_page(State(s): State<WebState>, ui: Ui, Query(at): Query<At>) -> Response {
    let d = match desk_or_picker(&s.app, &ui, at.facility.as_deref(), "/desk/count").await {
        Ok(d) => d,
        Err(r) => return r,
    };
    let stock = match d.stock(&s.app, &ui.caller).await {
        Ok(x) => x,
        Err(e) => return fail(&ui, e),
    };
    let unit = at
        .unit
        .filter(|u| d.units.iter().any(|x| x.id == *u))
        .or_else(|| d.units.first().map(|u| u.id.clone()))
        .unwrap_or_default();
    let in_unit: Vec<&StockItem> = sorted(&d, &stock).into_iter().filter(|s| s.storage_unit_id == unit).collect();
    // `from` comes from the address: clamped to the list, so the next page's start cannot overflow.
    let from = at.from.unwrap_or(0).min(in_unit.len());
    let next = from.saturating_add(COUNT_ROWS);
    let mut v = Fields::default();
    v.set("unit", unit.clone());
    v.set("from", from.to_string());
    // "Counted completely" is offered only when the whole unit is on this page.
    v.set("whole", if from == 0 && in_unit.len() <= COUNT_ROWS { "1" } else { "" });
    let mut i = 0;
    for item in in_unit.iter().skip(from).take(COUNT_ROWS) {
        v.set(line_key(i, "stock"), stock_value(&item.storage_unit_id, &item.lot_id));
        v.set(line_key(i, "counted_vials"), "");
        i += 1;
    }
    for j in i..i + SPARE_LINES {
        v.set(line_key(j, "unit"), unit.clone());
        v.set(line_key(j, "counted_vials"), "");
    }
    if in_unit.len() > next {
        v.set("next", next.to_string());
    }
    count_form(&ui, &d, &stock, &v, &Problem::default(), StatusCode::OK)
}

fn sorted<'a>(d: &Desk, stock: &'a [StockItem]) -> Vec<&'a StockItem> {
    let mut items: Vec<&StockItem> = stock.iter().collect();
    items.sort_by(|a, b| {
        d.unit_name(&a.storage_unit_id)
            .cmp(d.unit_name(&b.storage_unit_id))
            .then(d.product_name(&a.product_id).cmp(d.product_name(&b.product_id)))
            .then(a.expiry.cmp(&b.expiry))
    });
    items
}

fn count_form(ui: &Ui, d: &Desk, stock: &[StockItem], v: &Fields, p: &Problem, code: StatusCode) -> Response {
    let t = ui.t();
    let by_key: HashMap<String, &StockItem> =
        stock.iter().map(|s| (stock_value(&s.storage_unit_id, &s.lot_id), s)).collect();
    // A lot found that is not on the books: any lot the store has held, in any unit.
    let mut lots: Vec<(String, String)> = Vec::new();
    for s in stock {
        if !lots.iter().any(|(id, _)| *id == s.lot_id) {
            lots.push((
                s.lot_id.clone(),
                format!("{} · {} {} · {} {}", d.product_name(&s.product_id), t.lot, s.lot_number, t.expiry, s.expiry),
            ));
        }
    }
    let vvm = vvm_options(t);
    let unit = v.get("unit");
    let mut b = p.notice();
    let tabs: String = d
        .units
        .iter()
        .map(|u| {
            let cur = if u.id == unit { r#" aria-current="page""# } else { "" };
            format!(
                r#"<a href="{}"{cur}>{}</a>"#,
                esc(&d.href(&format!("/desk/count?unit={}", super::url_encode(&u.id)))),
                esc(&u.name)
            )
        })
        .collect();
    let _ = write!(b, r#"<nav class="tabs" aria-label="{}">{tabs}</nav>"#, esc(t.storage_unit));
    let _ = write!(b, r#"<p class="help">{}</p>"#, esc(t.desk_count_help));
    let _ = write!(
        b,
        r#"<form method="post" action="/desk/count" class="desk-form" data-queue{}>{}{}<input type="hidden" name="unit" value="{}"><input type="hidden" name="whole" value="{}">"#,
        queue_attrs(ui),
        ui.form_keys(),
        d.hidden(),
        esc(unit),
        esc(v.get("whole")),
    );
    for i in v.rows() {
        let mark = if p.on_line(i) { " bad" } else { "" };
        match by_key.get(v.line(i, "stock")) {
            Some(s) => {
                let _ = write!(
                    b,
                    r#"<fieldset class="line{mark}"><legend>{unit} · {product} · {llot} {lot} · {lexp} {exp} · {lbooks} {books} {lv}</legend><input type="hidden" name="{sk}" value="{sv}"><div class="row">"#,
                    unit = esc(d.unit_name(&s.storage_unit_id)),
                    product = esc(d.product_name(&s.product_id)),
                    llot = esc(t.lot),
                    lot = esc(&s.lot_number),
                    lexp = esc(t.expiry),
                    exp = s.expiry,
                    lbooks = esc(t.desk_on_books),
                    books = num(s.balance.vials),
                    lv = esc(t.vials),
                    sk = esc(&line_key(i, "stock")),
                    sv = esc(v.line(i, "stock")),
                );
            }
            None => {
                let _ = write!(
                    b,
                    r#"<fieldset class="line{mark}"><legend>{}</legend><div class="row">"#,
                    esc(t.desk_count_other)
                );
                b.push_str(&select_field(v, p, &line_key(i, "unit"), t.storage_unit, &unit_options(d), None));
                b.push_str(&select_field(v, p, &line_key(i, "lot"), t.lot, &lots, Some("—")));
                b.push_str("</div>");
                b.push_str(&scan_field(v, p, &line_key(i, "scan"), t));
                b.push_str(r#"<div class="row">"#);
            }
        }
        b.push_str(&num_field(v, p, &line_key(i, "counted_vials"), t.desk_counted, false));
        b.push_str(&select_field(v, p, &line_key(i, "vvm_stage"), t.vvm, &vvm, None));
        b.push_str("</div></fieldset>");
    }
    if v.get("whole") == "1" {
        let checked = if v.all("complete").any(|x| x == unit) { " checked" } else { "" };
        let _ = write!(
            b,
            r#"<label class="check"><input type="checkbox" name="complete" value="{}"{checked}> {} ({})</label>"#,
            esc(unit),
            esc(t.desk_complete_units),
            esc(d.unit_name(unit)),
        );
    }
    b.push_str(&comment_field(v, p, "comment", t.comment));
    let _ = write!(b, r#"<button class="big">{}</button></form>"#, esc(t.desk_record_count));
    if !v.get("next").is_empty() {
        let _ = write!(
            b,
            r#"<p class="help">{} <a class="button" href="{}">→</a></p>"#,
            esc(t.desk_more_rows),
            esc(&d.href(&format!("/desk/count?unit={}&from={}", super::url_encode(unit), v.get("next")))),
        );
    }
    page_with_status(ui, d, t.desk_count, &b, code)
}

/// The counted lines: every line with a number (a blank line was not counted; 0 is a count).
fn count_lines(v: &Fields) -> Result<(Vec<CountLine>, Vec<usize>)> {
    let mut lines = Vec::new();
    let mut rows = Vec::new();
    for i in v.rows() {
        if v.line(i, "counted_vials").is_empty() {
            continue;
        }
        let (unit, lot) = if v.line(i, "stock").is_empty() {
            let lot = if v.line(i, "scan").is_empty() {
                LotRef::Id(v.line(i, "lot").to_owned())
            } else {
                LotRef::Scanned(v.line(i, "scan").to_owned())
            };
            (v.line(i, "unit").to_owned(), lot)
        } else {
            (v.line_stock_unit(i).to_owned(), v.line_lot(i))
        };
        lines.push(CountLine {
            storage_unit_id: unit,
            lot,
            counted_vials: v.line_int(i, "counted_vials")?,
            vvm_stage: i32::try_from(v.line_int(i, "vvm_stage")?).unwrap_or(-1),
        });
        rows.push(i);
    }
    Ok((lines, rows))
}

/// `POST /desk/count`.
pub(super) async fn count(State(s): State<WebState>, ui: Ui, Form(pairs): Form<Vec<(String, String)>>) -> Response {
    let v = Fields::from_pairs(pairs);
    if let Some(r) = ui.refuse_forged(v.get("csrf")) {
        return r;
    }
    let d = match desk_or_picker(&s.app, &ui, Some(v.get("facility")), "/desk/count").await {
        Ok(d) => d,
        Err(r) => return r,
    };
    let t = ui.t();
    let stock = match d.stock(&s.app, &ui.caller).await {
        Ok(x) => x,
        Err(e) => return fail(&ui, e),
    };
    let complete: Vec<String> =
        v.all("complete").filter(|u| v.get("whole") == "1" && *u == v.get("unit")).map(str::to_owned).collect();
    let result = match count_lines(&v) {
        Ok((lines, rows)) => s
            .app
            .physical_count(&ui.caller, v.get("request_id"), &d.f.id, lines, &complete, v.trimmed("comment"))
            .await
            .map_err(|e| (e, rows)),
        Err(e) => Err((e, Vec::new())),
    };
    match result {
        Ok((_, results)) => {
            let names = lot_names(&stock);
            let mut b = notice(true, t.desk_count_done);
            let _ = write!(
                b,
                r#"<div class="scroll"><table class="stack count"><thead><tr><th>{}</th><th>{}</th><th class="n">{}</th><th class="n">{}</th><th class="n">{}</th></tr></thead><tbody>"#,
                esc(t.storage_unit),
                esc(t.lot),
                esc(t.desk_on_books),
                esc(t.desk_counted),
                esc(t.desk_difference),
            );
            for r in &results {
                let diff = r.counted_vials - r.expected_vials;
                let shown = match diff {
                    0 => "0 ✔".to_owned(),
                    d if d > 0 => format!("+{} ⚠", num(d)),
                    d => format!("{} ⚠", num(d)),
                };
                let lot = names.get(r.lot_id.as_str()).map_or(r.lot_id.as_str(), |(l, _)| l);
                let _ = write!(
                    b,
                    r#"<tr><td data-label="{}">{}</td><td data-label="{}">{}</td><td class="n" data-label="{}">{}</td><td class="n" data-label="{}">{}</td><td class="n" data-label="{}">{}</td></tr>"#,
                    esc(t.storage_unit),
                    esc(d.unit_name(&r.storage_unit_id)),
                    esc(t.lot),
                    esc(lot),
                    esc(t.desk_on_books),
                    num(r.expected_vials),
                    esc(t.desk_counted),
                    num(r.counted_vials),
                    esc(t.desk_difference),
                    shown,
                );
            }
            b.push_str("</tbody></table></div>");
            b.push_str(&next_links(&ui, &d));
            page_with_status(&ui, &d, t.desk_count, &b, StatusCode::OK)
        }
        Err((e, rows)) => {
            let (code, p) = Problem::from_error(t, e, &rows);
            count_form(&ui, &d, &stock, &v, &p, code)
        }
    }
}

/// The lot of a one-lot form (adjustment, transfer): a scan names the lot, the unit comes from
/// the unit field; otherwise the picked stock names both.
fn one_lot(v: &Fields) -> (String, LotRef) {
    let scan = v.trimmed("scan");
    if !scan.is_empty() {
        return (v.get("unit").to_owned(), LotRef::Scanned(scan.to_owned()));
    }
    match v.trimmed("stock").split_once(':') {
        Some((u, l)) => (u.to_owned(), LotRef::Id(l.to_owned())),
        None => (String::new(), LotRef::Id(String::new())),
    }
}

/// The lot picker of a one-lot form: the stock, or a scan and the unit it is in.
fn lot_picker(ui: &Ui, d: &Desk, stock: &[StockItem], v: &Fields, p: &Problem) -> String {
    let t = ui.t();
    let mut b = select_field(v, p, "stock", t.desk_lot_in_stock, &stock_options(t, d, stock), Some("—"));
    let _ = write!(
        b,
        r#"<details{}><summary>{}</summary>"#,
        if v.get("scan").is_empty() { p.open_for(&["scan".to_owned(), "unit".to_owned()]) } else { " open" },
        esc(t.desk_or_scan)
    );
    b.push_str(&scan_field(v, p, "scan", t));
    b.push_str(&select_field(v, p, "unit", t.storage_unit, &unit_options(d), None));
    b.push_str("</details>");
    b
}

/// `GET /desk/adjust`.
pub(super) async fn adjust_page(
    State(s): State<WebState>,
    ui: Ui,
    Query(pairs): Query<Vec<(String, String)>>,
) -> Response {
    let v = Fields::from_pairs(pairs);
    let d = match desk_or_picker(&s.app, &ui, Some(v.get("facility")), "/desk/adjust").await {
        Ok(d) => d,
        Err(r) => return r,
    };
    adjust_form(&s.app, &ui, &d, &v, &Problem::default(), StatusCode::OK).await
}

async fn adjust_form(app: &App, ui: &Ui, d: &Desk, v: &Fields, p: &Problem, code: StatusCode) -> Response {
    let t = ui.t();
    let stock = match d.stock(app, &ui.caller).await {
        Ok(x) => x,
        Err(e) => return fail(ui, e),
    };
    let mut b = p.notice();
    let _ = write!(
        b,
        r#"<form method="post" action="/desk/adjust" class="desk-form" data-queue{}>{}{}"#,
        queue_attrs(ui),
        ui.form_keys(),
        d.hidden()
    );
    b.push_str(&lot_picker(ui, d, &stock, v, p));
    b.push_str(r#"<div class="row">"#);
    b.push_str(&select_field(v, p, "reason", t.desk_reason, &adjustment_options(t, false), Some("—")));
    let dirs = vec![("-".to_owned(), t.desk_remove.to_owned()), ("+".to_owned(), t.desk_add.to_owned())];
    b.push_str(&select_field(v, p, "direction", t.desk_direction, &dirs, None));
    b.push_str(&num_field(v, p, "vials", t.vials, true));
    b.push_str("</div>");
    let _ = write!(b, r#"<p class="help">{}</p>"#, esc(t.desk_adjust_help));
    b.push_str(&comment_field(v, p, "comment", t.comment));
    let _ = write!(b, r#"<button class="big">{}</button></form>"#, esc(t.desk_record_adjustment));
    page_with_status(ui, d, t.desk_adjust, &b, code)
}

/// `POST /desk/adjust`.
pub(super) async fn adjust(State(s): State<WebState>, ui: Ui, Form(pairs): Form<Vec<(String, String)>>) -> Response {
    let v = Fields::from_pairs(pairs);
    if let Some(r) = ui.refuse_forged(v.get("csrf")) {
        return r;
    }
    let d = match desk_or_picker(&s.app, &ui, Some(v.get("facility")), "/desk/adjust").await {
        Ok(d) => d,
        Err(r) => return r,
    };
    let t = ui.t();
    let (unit, lot) = one_lot(&v);
    let result = async {
        let vials = v.int("vials")?;
        let reason = i32::try_from(v.int("reason")?).unwrap_or(0);
        let signed = if v.get("direction") == "+" { vials } else { -vials };
        s.app.adjust(&ui.caller, v.get("request_id"), &unit, &lot, signed, reason, v.trimmed("comment")).await
    }
    .await;
    match result {
        Ok(e) => {
            let mut b = notice(true, t.desk_adjust_done);
            b.push_str(&entries_list(&s.app, &ui, &d, std::slice::from_ref(&e)).await);
            b.push_str(&next_links(&ui, &d));
            page_with_status(&ui, &d, t.desk_adjust, &b, StatusCode::OK)
        }
        Err(e) => {
            let (code, p) = Problem::from_error(t, e, &[]);
            let p = rename(
                p,
                &[
                    ("quantity_vials", "vials"),
                    ("lot_id", "stock"),
                    ("scanned_code", "scan"),
                    ("storage_unit_id", "stock"),
                ],
            );
            adjust_form(&s.app, &ui, &d, &v, &p, code).await
        }
    }
}

/// `GET /desk/transfer`.
pub(super) async fn transfer_page(
    State(s): State<WebState>,
    ui: Ui,
    Query(pairs): Query<Vec<(String, String)>>,
) -> Response {
    let v = Fields::from_pairs(pairs);
    let d = match desk_or_picker(&s.app, &ui, Some(v.get("facility")), "/desk/transfer").await {
        Ok(d) => d,
        Err(r) => return r,
    };
    transfer_form(&s.app, &ui, &d, &v, &Problem::default(), StatusCode::OK).await
}

async fn transfer_form(app: &App, ui: &Ui, d: &Desk, v: &Fields, p: &Problem, code: StatusCode) -> Response {
    let t = ui.t();
    let stock = match d.stock(app, &ui.caller).await {
        Ok(x) => x,
        Err(e) => return fail(ui, e),
    };
    let mut b = p.notice();
    if d.units.len() < 2 {
        let _ = write!(b, r#"<p class="notice error">{}</p>"#, esc(t.desk_one_unit));
    }
    let _ = write!(
        b,
        r#"<form method="post" action="/desk/transfer" class="desk-form" data-queue{}>{}{}"#,
        queue_attrs(ui),
        ui.form_keys(),
        d.hidden()
    );
    b.push_str(&lot_picker(ui, d, &stock, v, p));
    b.push_str(r#"<div class="row">"#);
    b.push_str(&select_field(v, p, "to", t.desk_to_unit, &unit_options(d), Some("—")));
    b.push_str(&num_field(v, p, "vials", t.vials, true));
    b.push_str("</div>");
    b.push_str(&comment_field(v, p, "comment", t.comment));
    let _ = write!(b, r#"<button class="big">{}</button></form>"#, esc(t.desk_move));
    page_with_status(ui, d, t.desk_transfer, &b, code)
}

/// `POST /desk/transfer`.
pub(super) async fn transfer(State(s): State<WebState>, ui: Ui, Form(pairs): Form<Vec<(String, String)>>) -> Response {
    let v = Fields::from_pairs(pairs);
    if let Some(r) = ui.refuse_forged(v.get("csrf")) {
        return r;
    }
    let d = match desk_or_picker(&s.app, &ui, Some(v.get("facility")), "/desk/transfer").await {
        Ok(d) => d,
        Err(r) => return r,
    };
    let t = ui.t();
    let (unit, lot) = one_lot(&v);
    let result = async {
        let vials = v.int("vials")?;
        s.app.transfer(&ui.caller, v.get("request_id"), &unit, v.get("to"), &lot, vials, v.trimmed("comment")).await
    }
    .await;
    match result {
        Ok((out, into)) => {
            let mut b = notice(true, t.desk_transfer_done);
            b.push_str(&entries_list(&s.app, &ui, &d, &[out, into]).await);
            b.push_str(&next_links(&ui, &d));
            page_with_status(&ui, &d, t.desk_transfer, &b, StatusCode::OK)
        }
        Err(e) => {
            let (code, p) = Problem::from_error(t, e, &[]);
            let p = rename(
                p,
                &[
                    ("from_storage_unit_id", "stock"),
                    ("to_storage_unit_id", "to"),
                    ("lot_id", "stock"),
                    ("scanned_code", "scan"),
                ],
            );
            transfer_form(&s.app, &ui, &d, &v, &p, code).await
        }
    }
}
