//! The session report: what a vaccination session took out, opened, gave, brought back and
//! discarded, per lot. It is also how stock reaches a session site: the issue page sends the
//! EEFO lots here, and the vials are booked when the report is filed.

use std::fmt::Write as _;

use axum::Form;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use chrono::{NaiveDate, Utc};

use super::super::Ui;
use super::super::page::{esc, notice, num, pct};
use super::forms::{
    Fields, Problem, adjustment_options, check_choice, comment_field, date_field, line_key, num_field, scan_field,
    select_field, stock_options, unit_options,
};
use super::receive::{next_links, queue_attrs};
use super::{Desk, desk_or_picker, fail, page_with_status};
use crate::app::App;
use crate::domain::report::wastage_rate_bp;
use crate::domain::stock::{SessionLine, SessionReport};
use crate::domain::{Caller, FacilityKind};
use crate::error::{Error, Result};
use crate::web::WebState;

/// The number fields of a session line (a line where all are blank and no lot is named is unused).
const NUMBERS: [&str; 7] = [
    "vials_issued",
    "vials_opened",
    "doses_administered",
    "unopened_vials_returned",
    "unopened_vials_discarded",
    "opened_vials_kept",
    "opened_vials_reused",
];

/// Empty lines a session form offers beyond the lots the issue page sent.
const SPARE_LINES: usize = 2;

/// `GET /desk/session`: a new report, filled in with the lots the issue page suggested.
pub(super) async fn session_page(
    State(s): State<WebState>,
    ui: Ui,
    Query(pairs): Query<Vec<(String, String)>>,
) -> Response {
    let mut v = Fields::from_pairs(pairs);
    let d = match desk_or_picker(&s.app, &ui, Some(v.get("facility")), "/desk/session").await {
        Ok(d) => d,
        Err(r) => return r,
    };
    if v.get("session_date").is_empty() {
        v.set("session_date", Utc::now().date_naive().to_string());
    }
    if v.get("storage_unit_id").is_empty() {
        v.set("storage_unit_id", d.units.first().map(|u| u.id.clone()).unwrap_or_default());
    }
    let next = v.rows().last().map_or(0, |i| i + 1);
    for i in next..next + SPARE_LINES {
        v.set(line_key(i, "vials_issued"), "");
    }
    match form(&s.app, &ui, &d, &v, &Problem::default()).await {
        Ok(b) => page_with_status(&ui, &d, ui.t().desk_session, &b, StatusCode::OK),
        Err(e) => fail(&ui, e),
    }
}

/// Where the facility's sessions are held: the facility itself (a fixed session) and its sites.
async fn site_options(app: &App, c: &Caller, d: &Desk) -> Result<Vec<(String, String)>> {
    let mut out = Vec::new();
    if matches!(d.f.kind, FacilityKind::ColdChainPoint | FacilityKind::DistrictStore) {
        out.push((d.f.id.clone(), d.f.name.clone()));
    }
    for f in d.session_sites(app, c).await? {
        out.push((f.id.clone(), format!("{} · {}", f.name, f.code)));
    }
    Ok(out)
}

async fn form(app: &App, ui: &Ui, d: &Desk, v: &Fields, p: &Problem) -> Result<String> {
    let t = ui.t();
    let c = &ui.caller;
    // Only what may be taken to a session: usable vials, not expired (the list repeats per line).
    let today = Utc::now().date_naive();
    let stock: Vec<_> = d.stock(app, c).await?.into_iter().filter(|s| s.usable_vials(today) > 0).collect();
    let choices = stock_options(t, d, &stock);
    let sites = site_options(app, c, d).await?;
    let reasons = adjustment_options(t, true);
    let mut b = p.notice();
    let _ = write!(b, r#"<p class="help">{}</p>"#, esc(t.desk_session_help));
    let _ = write!(
        b,
        r#"<form method="post" action="/desk/session" class="desk-form" data-queue{}>{}{}<div class="row">"#,
        queue_attrs(ui),
        ui.form_keys(),
        d.hidden()
    );
    b.push_str(&select_field(v, p, "site", t.desk_session_site, &sites, None));
    b.push_str(&date_field(v, p, "session_date", t.desk_session_date, true));
    b.push_str(&select_field(v, p, "storage_unit_id", t.desk_from_unit, &unit_options(d), None));
    b.push_str("</div>");
    for i in v.rows() {
        let mark = if p.on_line(i) { " bad" } else { "" };
        let _ = write!(b, r#"<fieldset class="line{mark}"><legend>{} {}</legend>"#, esc(t.line), i + 1);
        b.push_str(&select_field(v, p, &line_key(i, "stock"), t.desk_lot_in_stock, &choices, Some("—")));
        let scan_open = if v.line(i, "scan").is_empty() { p.open_for(&[line_key(i, "scan")]) } else { " open" };
        let _ = write!(b, r#"<details{scan_open}><summary>{}</summary>"#, esc(t.desk_or_scan));
        b.push_str(&scan_field(v, p, &line_key(i, "scan"), t));
        b.push_str(r#"</details><div class="row">"#);
        b.push_str(&num_field(v, p, &line_key(i, "vials_issued"), t.desk_vials_issued, false));
        b.push_str(&num_field(v, p, &line_key(i, "vials_opened"), t.desk_vials_opened, false));
        b.push_str(&num_field(v, p, &line_key(i, "doses_administered"), t.administered, false));
        b.push_str(&num_field(v, p, &line_key(i, "unopened_vials_returned"), t.desk_returned, false));
        b.push_str(&num_field(v, p, &line_key(i, "unopened_vials_discarded"), t.desk_discarded_unopened, false));
        b.push_str(&select_field(v, p, &line_key(i, "discard_reason"), t.discard_reason, &reasons, Some("—")));
        b.push_str("</div>");
        let mdvp = [line_key(i, "opened_vials_kept"), line_key(i, "opened_vials_reused")];
        let open =
            if v.line_blank(i, &["opened_vials_kept", "opened_vials_reused"]) { p.open_for(&mdvp) } else { " open" };
        let _ = write!(
            b,
            r#"<details{open}><summary>{}</summary><p class="help">{}</p><div class="row">"#,
            esc(t.desk_mdvp),
            esc(t.desk_mdvp_help)
        );
        b.push_str(&num_field(v, p, &line_key(i, "opened_vials_kept"), t.desk_kept, false));
        b.push_str(&num_field(v, p, &line_key(i, "opened_vials_reused"), t.desk_reused, false));
        b.push_str("</div></details></fieldset>");
    }
    b.push_str(&comment_field(v, p, "comment", t.comment));
    let _ = write!(b, r#"<button class="big">{}</button></form>"#, esc(t.desk_file_report));
    Ok(b)
}

/// The lot and figures of each used line, and the form line each came from.
type ReportLines = (Vec<(crate::app::stock::LotRef, SessionLine)>, Vec<usize>);

/// The lines of a session form that hold a number. A line with a lot but no figures is unused:
/// the issue page hands over every lot it could take, those it did not need with 0 vials, and
/// filing them would book empty lines.
fn report_lines(v: &Fields) -> Result<ReportLines> {
    let mut lines = Vec::new();
    let mut rows = Vec::new();
    for i in v.rows() {
        if v.line_blank(i, &NUMBERS) {
            continue;
        }
        let n = |name: &str| v.line_int(i, name);
        let line = SessionLine {
            lot_id: String::new(),
            storage_unit_id: v.line_stock_unit(i).to_owned(),
            vials_issued: n("vials_issued")?,
            vials_opened: n("vials_opened")?,
            opened_vials_reused: n("opened_vials_reused")?,
            doses_administered: n("doses_administered")?,
            unopened_vials_returned: n("unopened_vials_returned")?,
            unopened_vials_discarded: n("unopened_vials_discarded")?,
            discard_reason: i32::try_from(n("discard_reason")?).unwrap_or(-1),
            opened_vials_kept: n("opened_vials_kept")?,
        };
        lines.push((v.line_lot(i), line));
        rows.push(i);
    }
    Ok((lines, rows))
}

/// `POST /desk/session`.
pub(super) async fn submit(State(s): State<WebState>, ui: Ui, Form(pairs): Form<Vec<(String, String)>>) -> Response {
    let v = Fields::from_pairs(pairs);
    if let Some(r) = ui.refuse_forged(v.get("csrf")) {
        return r;
    }
    let d = match desk_or_picker(&s.app, &ui, Some(v.get("facility")), "/desk/session").await {
        Ok(d) => d,
        Err(r) => return r,
    };
    let t = ui.t();
    // The site and the unit must be ones this form offers: a value from a stale or altered form
    // is refused with the field marked, never filed somewhere else.
    let offered = match site_options(&s.app, &ui.caller, &d).await {
        Ok(sites) => check_choice(t, &v, "site", t.desk_session_site, &sites)
            .and_then(|()| check_choice(t, &v, "storage_unit_id", t.desk_from_unit, &unit_options(&d))),
        Err(e) => return fail(&ui, e),
    };
    if let Err(p) = offered {
        return match form(&s.app, &ui, &d, &v, &p).await {
            Ok(b) => page_with_status(&ui, &d, t.desk_session, &b, StatusCode::BAD_REQUEST),
            Err(e) => fail(&ui, e),
        };
    }
    let parsed = report_lines(&v).map_err(|e| (e, Vec::new())).and_then(|(lines, rows)| {
        let date = NaiveDate::parse_from_str(v.trimmed("session_date"), "%Y-%m-%d")
            .map_err(|_| (Error::invalid("session_date", "must be a date (YYYY-MM-DD)"), Vec::new()))?;
        Ok((lines, rows, date))
    });
    let result = match parsed {
        Ok((lines, rows, date)) => s
            .app
            .submit_session_report(
                &ui.caller,
                v.get("request_id"),
                v.trimmed("site"),
                v.get("storage_unit_id"),
                date,
                lines,
                v.trimmed("comment"),
            )
            .await
            .map_err(|e| (e, rows)),
        Err(e) => Err(e),
    };
    match result {
        Ok(report) => {
            page_with_status(&ui, &d, t.desk_session, &result_body(&s.app, &ui, &d, &report).await, StatusCode::OK)
        }
        Err((e, rows)) => {
            let (code, p) = Problem::from_error(t, e, &rows);
            match form(&s.app, &ui, &d, &v, &p).await {
                Ok(b) => page_with_status(&ui, &d, t.desk_session, &b, code),
                Err(e) => fail(&ui, e),
            }
        }
    }
}

/// The filed report: per lot what was used and wasted, and the session's wastage rate.
async fn result_body(app: &App, ui: &Ui, d: &Desk, r: &SessionReport) -> String {
    let t = ui.t();
    let mut b = notice(true, t.desk_session_done);
    let site = app.get_facility(&ui.caller, &r.facility_id).await.map(|f| f.name).unwrap_or_default();
    let _ = write!(b, "<p>{} · {}</p>", esc(&site), r.session_date);
    let _ = write!(
        b,
        r#"<div class="scroll"><table class="stack session"><thead><tr><th>{}</th><th>{}</th><th class="n">{}</th><th class="n">{}</th><th class="n">{}</th><th class="n">{}</th><th class="n">{}</th><th class="n">{}</th></tr></thead><tbody>"#,
        esc(t.product),
        esc(t.lot),
        esc(t.desk_vials_issued),
        esc(t.desk_vials_opened),
        esc(t.desk_returned),
        esc(t.issued),
        esc(t.administered),
        esc(t.wastage_rate),
    );
    let (mut issued, mut given) = (0, 0);
    for (l, product, dpv) in &r.lines {
        let lot = app.get_lot(&ui.caller, &l.lot_id).await.map(|x| x.lot_number).unwrap_or_default();
        let doses = l.doses_issued(*dpv);
        issued += doses;
        given += l.doses_administered;
        let _ = write!(
            b,
            r#"<tr><td data-label="{}">{}</td><td data-label="{}">{}</td><td class="n" data-label="{}">{}</td><td class="n" data-label="{}">{}</td><td class="n" data-label="{}">{}</td><td class="n" data-label="{}">{}</td><td class="n" data-label="{}">{}</td><td class="n" data-label="{}">{}</td></tr>"#,
            esc(t.product),
            esc(d.product_name(product)),
            esc(t.lot),
            esc(&lot),
            esc(t.desk_vials_issued),
            num(l.vials_issued),
            esc(t.desk_vials_opened),
            num(l.vials_opened),
            esc(t.desk_returned),
            num(l.unopened_vials_returned),
            esc(t.issued),
            num(doses),
            esc(t.administered),
            num(l.doses_administered),
            esc(t.wastage_rate),
            wastage_rate_bp(doses, l.doses_administered).map(pct).unwrap_or_else(|| "–".into()),
        );
    }
    b.push_str("</tbody></table></div>");
    let _ = write!(
        b,
        r#"<p class="session-wastage" data-issued="{issued}" data-given="{given}">{} <strong>{}</strong> · {} {} · {} {}</p>"#,
        esc(t.wastage_rate),
        wastage_rate_bp(issued, given).map(pct).unwrap_or_else(|| "–".into()),
        esc(t.issued),
        num(issued),
        esc(t.administered),
        num(given),
    );
    b.push_str(&next_links(ui, d));
    b
}
