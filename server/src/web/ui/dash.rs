//! The district dashboard: overview, live alerts, facility pages with charts, and reports.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt::Write as _;

use axum::Form;
use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use chrono::{DateTime, Datelike as _, Duration, NaiveDate, Utc};
use futures::StreamExt as _;
use serde::Deserialize;
use vaxtrace_proto::v1 as pb;

use super::chart::{self, Chart, Period};
use super::i18n::Strings;
use super::listing;
use super::page::{Nav, error_page, esc, layout, notice, num, pct, when};
use super::{Ui, session_back};
use crate::app::App;
use crate::app::report::Grouping;
use crate::domain::alert::{Alert, AlertKind, AlertState, Severity};
use crate::domain::stock::StockFilter;
use crate::domain::{Caller, Facility, Product, StorageUnit};
use crate::error::{Error, Result};
use crate::web::WebState;

/// The dashboard's routes.
pub(super) fn routes() -> Router<WebState> {
    Router::new()
        .route("/dash", get(overview))
        .route("/dash/alerts", get(alerts))
        .route("/dash/alerts/stream", get(alert_stream))
        .route("/dash/alerts/{id}/acknowledge", post(acknowledge))
        .route("/dash/alerts/{id}/resolve", post(resolve))
        .route("/dash/facilities/{id}", get(facility))
        .route("/dash/exposures/{id}/assess", post(assess))
        .route("/dash/reports", get(reports))
        .route("/dash/reports/{file}", get(report_csv))
}

/// Up to this many rows come from a listing that a page shows whole.
const LIST_CAP: usize = 5000;

async fn all_facilities(app: &App, c: &Caller) -> Result<Vec<Facility>> {
    listing::facilities(app, c, LIST_CAP).await
}

async fn all_units(app: &App, c: &Caller, facility_id: &str) -> Result<Vec<StorageUnit>> {
    listing::units(app, c, facility_id, LIST_CAP).await
}

async fn products(app: &App, c: &Caller) -> Result<HashMap<String, Product>> {
    listing::products(app, c, LIST_CAP).await
}

/// Unresolved alerts (open or acknowledged) in scope, newest first.
async fn unresolved_alerts(app: &App, c: &Caller, kinds: Vec<i32>) -> Result<(Vec<Alert>, i64)> {
    let mut out = Vec::new();
    let mut token = String::new();
    let states = vec![AlertState::Open.as_i32(), AlertState::Acknowledged.as_i32()];
    let mut cursor = None;
    loop {
        let (page, latest) =
            app.list_alerts(c, "", "", kinds.clone(), states.clone(), 0, (None, None), 1000, &token).await?;
        cursor.get_or_insert(latest);
        out.extend(page.items);
        if page.next_page_token.is_empty() || out.len() >= LIST_CAP {
            return Ok((out, cursor.unwrap_or(0)));
        }
        token = page.next_page_token;
    }
}

/// Names of the facilities and units alerts refer to, read once per id.
#[derive(Debug, Default)]
struct Names {
    facilities: HashMap<String, String>,
    units: HashMap<String, String>,
}

impl Names {
    async fn load(app: &App, c: &Caller, alerts: &[Alert]) -> Names {
        let mut n = Names::default();
        let fids: HashSet<&str> = alerts.iter().map(|a| a.subject.facility_id.as_str()).collect();
        for id in fids.into_iter().filter(|i| !i.is_empty()) {
            if let Ok(f) = app.get_facility(c, id).await {
                n.facilities.insert(f.id, f.name);
            }
        }
        let uids: HashSet<&str> = alerts.iter().map(|a| a.subject.storage_unit_id.as_str()).collect();
        for id in uids.into_iter().filter(|i| !i.is_empty()) {
            if let Ok(u) = app.get_storage_unit(c, id).await {
                n.units.insert(u.id, u.name);
            }
        }
        n
    }

    fn facility<'a>(&'a self, id: &'a str) -> &'a str {
        self.facilities.get(id).map_or(id, String::as_str)
    }

    fn unit<'a>(&'a self, id: &'a str) -> &'a str {
        self.units.get(id).map_or(id, String::as_str)
    }
}

/// The people's name of an alert kind.
pub(crate) fn kind_label(t: &Strings, k: AlertKind) -> &'static str {
    match k {
        AlertKind::Excursion => t.kind_excursion,
        AlertKind::Heat => t.kind_heat,
        AlertKind::Freeze => t.kind_freeze,
        AlertKind::NoData => t.kind_no_data,
        AlertKind::PowerOut => t.kind_power_out,
        AlertKind::SensorFault => t.kind_sensor_fault,
        AlertKind::StockOut => t.kind_stock_out,
        AlertKind::BelowMinimum => t.kind_below_minimum,
        AlertKind::ExpiryRisk => t.kind_expiry_risk,
        AlertKind::WastageHigh => t.kind_wastage_high,
        AlertKind::ShipmentOverdue => t.kind_shipment_overdue,
    }
}

const ALL_KINDS: [AlertKind; 11] = [
    AlertKind::Heat,
    AlertKind::Freeze,
    AlertKind::Excursion,
    AlertKind::NoData,
    AlertKind::PowerOut,
    AlertKind::SensorFault,
    AlertKind::StockOut,
    AlertKind::BelowMinimum,
    AlertKind::ExpiryRisk,
    AlertKind::WastageHigh,
    AlertKind::ShipmentOverdue,
];

/// A severity as a badge: a word and a symbol, never colour alone.
fn severity_badge(t: &Strings, s: Severity) -> String {
    let (class, sym, word) = match s {
        Severity::Info => ("s-info", "ℹ", t.sev_info),
        Severity::Warning => ("s-warn", "⚠", t.sev_warning),
        Severity::Alarm => ("s-bad", "▲", t.sev_alarm),
        Severity::Critical => ("s-bad", "‼", t.sev_critical),
    };
    format!(r#"<span class="badge {class}">{sym} {}</span>"#, esc(word))
}

fn state_word(t: &Strings, s: AlertState) -> &'static str {
    match s {
        AlertState::Open => t.state_open,
        AlertState::Acknowledged => t.state_acknowledged,
        AlertState::Resolved => t.state_resolved,
    }
}

const RESOLUTIONS: [i32; 9] = [1, 2, 3, 4, 5, 6, 7, 8, 9];

fn resolution_word(t: &Strings, r: i32) -> &'static str {
    match r {
        1 => t.res_sensor_malfunction,
        2 => t.res_unit_repaired,
        3 => t.res_power_restored,
        4 => t.res_stock_replenished,
        5 => t.res_stock_moved,
        6 => t.res_stock_used,
        7 => t.res_shipment_settled,
        8 => t.res_false_alarm,
        _ => t.res_other,
    }
}

/// What an alert measured, in a line.
fn alert_details(t: &Strings, a: &Alert) -> String {
    let d = &a.details;
    let mut parts = Vec::new();
    if let (Some(lo), Some(hi)) = (d.min_temp_c, d.max_temp_c) {
        parts.push(format!("{lo:.1} … {hi:.1} °C"));
    }
    if let Some(m) = d.minutes_past_threshold {
        parts.push(format!("{} {m}", t.minutes_past));
    }
    if let Some(h) = d.degree_hours_above_max.filter(|h| *h > 0.0) {
        parts.push(format!("{h:.1} °C·h"));
    }
    if let Some(x) = d.stock_doses {
        parts.push(format!("{} {}", num(x), t.doses));
    }
    if let (Some(lo), Some(hi)) = (d.min_doses, d.max_doses) {
        parts.push(format!("min {} / max {}", num(lo), num(hi)));
    }
    if let Some(x) = d.days_to_expiry {
        parts.push(format!("{} {x}", t.days_to_expiry));
    }
    if let Some(r) = d.wastage_rate_bp {
        parts.push(format!("{} {} (max {})", t.wastage_rate, pct(r), pct(d.acceptable_wastage_bp.unwrap_or(0))));
    }
    if let Some(q) = d.quarantined_vials {
        parts.push(format!("{} {} {}", t.quarantined, num(q), t.vials));
    }
    esc(&parts.join(" · "))
}

/// A refused form's input, shown again beside the reason so nothing typed is lost.
#[derive(Debug, Clone, Default)]
struct Kept {
    /// The alert or exposure the form was about.
    id: String,
    /// Which form: `acknowledge`, `resolve` or `assess`.
    form: &'static str,
    /// Why it was refused.
    error: String,
    comment: String,
    resolution: i32,
    decision: i32,
    discard_reason: i32,
    discard_vials: String,
}

/// The confirmation a `done=` code stands for; anything else shows nothing (the code, never
/// text from the address, so a crafted link cannot show its own "success" message).
fn done_text(t: &Strings, code: Option<&str>) -> Option<&'static str> {
    match code? {
        "acknowledged" => Some(t.acknowledged_by),
        "resolved" => Some(t.resolved_by),
        "assessed" => Some(t.exposure_assessed),
        _ => None,
    }
}

/// One alert as a table row, with its acknowledge and resolve forms (the live list replaces
/// rows by their id).
fn alert_row(ui: &Ui, names: &Names, a: &Alert, kept: Option<&Kept>) -> String {
    let t = ui.t();
    let kept = kept.filter(|k| k.id == a.id);
    let kept_for = |form: &str| kept.filter(|k| k.form == form);
    let open_if = |form: &str| if kept_for(form).is_some() { " open" } else { "" };
    let comment_of = |form: &str| kept_for(form).map(|k| esc(&k.comment)).unwrap_or_default();
    let error_of = |form: &str| kept_for(form).map(|k| notice(false, &k.error)).unwrap_or_default();
    let mut s = String::new();
    let facility = esc(names.facility(&a.subject.facility_id));
    let unit = if a.subject.storage_unit_id.is_empty() {
        String::new()
    } else {
        format!(" · {}", esc(names.unit(&a.subject.storage_unit_id)))
    };
    let period = match a.end {
        Some(e) => format!("{} – {} <small>({})</small>", when(a.start), when(e), esc(t.condition_cleared)),
        None => format!("{} – {}", when(a.start), esc(t.condition_active)),
    };
    let mut handling = esc(state_word(t, a.state));
    if let Some(h) = &a.acknowledgement {
        let _ =
            write!(handling, "<br><small>{}: {} — {}</small>", esc(t.acknowledged_by), when(h.time), esc(&h.comment));
    }
    if let Some(h) = &a.resolution {
        let _ = write!(
            handling,
            "<br><small>{}: {} — {} {}</small>",
            esc(t.resolved_by),
            when(h.time),
            esc(resolution_word(t, h.resolution)),
            esc(&h.comment)
        );
    }
    let mut actions = String::new();
    let back = "/dash/alerts";
    if ui.is_officer() && a.state == AlertState::Open {
        let _ = write!(
            actions,
            r#"<details{open}><summary>{ack}</summary>{error}<form method="post" action="/dash/alerts/{id}/acknowledge">{keys}<input type="hidden" name="back" value="{back}"><label for="ack-{id}">{q}</label><textarea id="ack-{id}" name="comment" required maxlength="1000" rows="2">{comment}</textarea><button>{ack}</button></form></details>"#,
            open = open_if("acknowledge"),
            error = error_of("acknowledge"),
            comment = comment_of("acknowledge"),
            ack = esc(t.acknowledge),
            id = esc(&a.id),
            keys = ui.form_keys(),
            q = esc(t.ack_comment),
        );
    }
    if ui.is_officer() && a.state != AlertState::Resolved {
        let options: String = RESOLUTIONS
            .iter()
            .map(|r| {
                let sel = if kept_for("resolve").is_some_and(|k| k.resolution == *r) { " selected" } else { "" };
                format!(r#"<option value="{r}"{sel}>{}</option>"#, esc(resolution_word(t, *r)))
            })
            .collect();
        let _ = write!(
            actions,
            r#"<details{open}><summary>{res}</summary>{error}<form method="post" action="/dash/alerts/{id}/resolve">{keys}<input type="hidden" name="back" value="{back}"><label for="res-{id}">{resolution}</label><select id="res-{id}" name="resolution" required>{options}</select><label for="rc-{id}">{comment}</label><textarea id="rc-{id}" name="comment" required maxlength="1000" rows="2">{typed}</textarea><button>{res}</button></form></details>"#,
            open = open_if("resolve"),
            error = error_of("resolve"),
            typed = comment_of("resolve"),
            res = esc(t.resolve),
            id = esc(&a.id),
            keys = ui.form_keys(),
            resolution = esc(t.resolution),
            comment = esc(t.comment),
        );
    }
    let _ = write!(
        s,
        r#"<tr id="alert-{id}" class="alert-row" data-state="{state}"><td data-label="{l_sev}">{sev}</td><td data-label="{l_kind}"><strong>{kind}</strong></td><td data-label="{l_fac}"><a href="/dash/facilities/{fid}">{facility}</a>{unit}</td><td data-label="{l_when}">{period}</td><td data-label="{l_det}">{details}</td><td data-label="{l_state}">{handling}</td><td>{actions}</td></tr>"#,
        id = esc(&a.id),
        state = a.state.as_i32(),
        l_sev = esc(t.severity),
        sev = severity_badge(t, a.severity),
        l_kind = esc(t.kind),
        kind = esc(kind_label(t, a.kind)),
        l_fac = esc(t.facility),
        fid = esc(&a.subject.facility_id),
        l_when = esc(t.started),
        l_det = esc(t.details),
        details = alert_details(t, a),
        l_state = esc(t.state),
    );
    s
}

fn alerts_table(ui: &Ui, names: &Names, alerts: &[Alert], live_url: Option<&str>, kept: Option<&Kept>) -> String {
    let t = ui.t();
    let live = live_url.map(|u| format!(r#" data-live="{}""#, esc(u))).unwrap_or_default();
    let mut s = format!(
        r#"<div class="scroll"><table class="stack alerts"{live}><thead><tr><th>{}</th><th>{}</th><th>{}</th><th>{}</th><th>{}</th><th>{}</th><th></th></tr></thead><tbody>"#,
        esc(t.severity),
        esc(t.kind),
        esc(t.facility),
        esc(t.started),
        esc(t.details),
        esc(t.state)
    );
    for a in alerts {
        s.push_str(&alert_row(ui, names, a, kept));
    }
    s.push_str("</tbody></table></div>");
    if alerts.is_empty() {
        let _ = write!(s, r#"<p id="no-alerts">{}</p>"#, esc(t.no_alerts));
    }
    s
}

/// The facility statuses the overview shows, from the open alerts of a facility.
#[derive(Debug, Default, Clone, Copy)]
struct Status {
    breach: Option<Severity>,
    offline: bool,
    stockout: bool,
    below_min: bool,
    expiring: bool,
}

impl Status {
    fn add(&mut self, a: &Alert) {
        match a.kind {
            AlertKind::Heat | AlertKind::Freeze | AlertKind::Excursion => {
                self.breach = Some(match self.breach {
                    Some(s) if s.as_i32() >= a.severity.as_i32() => s,
                    _ => a.severity,
                });
            }
            AlertKind::NoData | AlertKind::PowerOut | AlertKind::SensorFault => self.offline = true,
            AlertKind::StockOut => self.stockout = true,
            AlertKind::BelowMinimum => self.below_min = true,
            AlertKind::ExpiryRisk => self.expiring = true,
            AlertKind::WastageHigh | AlertKind::ShipmentOverdue => {}
        }
    }

    fn weight(&self) -> u8 {
        u8::from(self.breach.is_some()) * 8
            + u8::from(self.stockout) * 4
            + u8::from(self.offline) * 2
            + u8::from(self.below_min)
            + u8::from(self.expiring)
    }

    fn badges(&self, t: &Strings) -> String {
        let mut s = String::new();
        let mut badge = |class: &str, sym: &str, word: &str| {
            let _ = write!(s, r#"<span class="badge {class}">{sym} {}</span>"#, esc(word));
        };
        if let Some(sev) = self.breach {
            badge(if sev.as_i32() >= Severity::Alarm.as_i32() { "s-bad" } else { "s-warn" }, "▲", t.status_breach);
        }
        if self.offline {
            badge("s-warn", "⌁", t.status_offline);
        }
        if self.stockout {
            badge("s-bad", "∅", t.status_stockout);
        }
        if self.below_min {
            badge("s-warn", "↓", t.status_below_min);
        }
        if self.expiring {
            badge("s-warn", "◷", t.status_expiring);
        }
        if self.weight() == 0 {
            badge("s-ok", "✔", t.status_ok);
        }
        s
    }
}

fn render_error(ui: &Ui, e: Error) -> Response {
    error_page(ui.lang, e)
}

/// `GET /dash`: the facilities at a glance, open alerts by kind, wastage this month.
async fn overview(State(s): State<WebState>, ui: Ui) -> Response {
    let t = ui.t();
    let c = &ui.caller;
    let today = Utc::now().date_naive();
    let month_start = today.with_day(1).unwrap_or(today);
    let loaded = async {
        let facilities = all_facilities(&s.app, c).await?;
        let units = all_units(&s.app, c, "").await?;
        let (alerts, _) = unresolved_alerts(&s.app, c, Vec::new()).await?;
        let wastage = match s.app.wastage(c, "", "", month_start, today, None).await {
            Err(Error::NotFound { .. }) => Vec::new(),
            r => r?,
        };
        Ok::<_, Error>((facilities, units, alerts, wastage))
    };
    let (facilities, units, alerts, wastage) = match loaded.await {
        Ok(x) => x,
        Err(e) => return render_error(&ui, e),
    };
    let mut status: HashMap<&str, Status> = HashMap::new();
    let mut by_kind: BTreeMap<i32, usize> = BTreeMap::new();
    for a in &alerts {
        status.entry(a.subject.facility_id.as_str()).or_default().add(a);
        *by_kind.entry(a.kind.as_i32()).or_default() += 1;
    }
    let with_units: HashSet<&str> = units.iter().map(|u| u.facility_id.as_str()).collect();
    let mut shown: Vec<(&Facility, Status)> = facilities
        .iter()
        .filter(|f| with_units.contains(f.id.as_str()) || status.contains_key(f.id.as_str()))
        .map(|f| (f, status.get(f.id.as_str()).copied().unwrap_or_default()))
        .collect();
    shown.sort_by(|a, b| b.1.weight().cmp(&a.1.weight()).then_with(|| a.0.name.cmp(&b.0.name)));

    let mut body = String::new();
    // Open alerts by kind.
    let _ = write!(
        body,
        r#"<section aria-labelledby="h-kinds"><h2 id="h-kinds">{}</h2><div class="grid">"#,
        esc(t.overview_open_alerts)
    );
    for k in ALL_KINDS {
        let n = by_kind.get(&k.as_i32()).copied().unwrap_or(0);
        if n > 0 {
            let _ = write!(
                body,
                r#"<a class="tile" href="/dash/alerts?kind={}"><span class="big">{}</span><br>{}</a>"#,
                k.as_i32(),
                num(n as i64),
                esc(kind_label(t, k))
            );
        }
    }
    if by_kind.is_empty() {
        let _ = write!(body, "<p>{}</p>", esc(t.no_alerts));
    }
    body.push_str("</div></section>");
    // Facilities.
    let _ = write!(
        body,
        r#"<section aria-labelledby="h-fac"><h2 id="h-fac">{} ({})</h2><div class="scroll"><table class="stack facilities"><thead><tr><th>{}</th><th>{}</th></tr></thead><tbody>"#,
        esc(t.overview_facilities),
        num(shown.len() as i64),
        esc(t.facility),
        esc(t.overview_status)
    );
    for (f, st) in shown.iter().take(500) {
        let _ = write!(
            body,
            r#"<tr><td data-label="{lf}"><a href="/dash/facilities/{id}">{name}</a> <small>{code}</small></td><td data-label="{ls}">{badges}</td></tr>"#,
            lf = esc(t.facility),
            id = esc(&f.id),
            name = esc(&f.name),
            code = esc(&f.code),
            ls = esc(t.overview_status),
            badges = st.badges(t),
        );
    }
    body.push_str("</tbody></table></div></section>");
    // Wastage this month.
    let _ = write!(
        body,
        r#"<section aria-labelledby="h-waste"><h2 id="h-waste">{} <small>({} {})</small></h2>"#,
        esc(t.overview_wastage),
        month_start.format("%Y-%m"),
        esc(t.month_to_date)
    );
    if wastage.iter().all(|w| w.doses_issued == 0) {
        let _ = write!(body, "<p>{}</p>", esc(t.no_sessions));
    } else {
        let _ = write!(
            body,
            r#"<div class="scroll"><table class="stack wastage"><thead><tr><th>{}</th><th class="n">{}</th><th class="n">{}</th><th class="n">{}</th><th class="n">{}</th><th></th></tr></thead><tbody>"#,
            esc(t.product),
            esc(t.issued),
            esc(t.administered),
            esc(t.wastage_rate),
            esc(t.wastage_max)
        );
        for w in wastage.iter().filter(|w| w.doses_issued > 0) {
            let max = w.product.acceptable_wastage_bp;
            let verdict = match w.rate_bp {
                Some(r) if r > max => format!(r#"<span class="badge s-bad">✖ {}</span>"#, esc(t.above_max)),
                Some(_) => format!(r#"<span class="badge s-ok">✔ {}</span>"#, esc(t.within_max)),
                None => String::new(),
            };
            let _ = write!(
                body,
                r#"<tr><td data-label="{lp}">{name}</td><td class="n" data-label="{li}">{issued}</td><td class="n" data-label="{la}">{given}</td><td class="n" data-label="{lr}">{rate}</td><td class="n" data-label="{lm}">{max}</td><td>{verdict}</td></tr>"#,
                lp = esc(t.product),
                name = esc(&w.product.name),
                li = esc(t.issued),
                issued = num(w.doses_issued),
                la = esc(t.administered),
                given = num(w.doses_administered),
                lr = esc(t.wastage_rate),
                rate = w.rate_bp.map(pct).unwrap_or_default(),
                lm = esc(t.wastage_max),
                max = pct(max),
            );
        }
        body.push_str("</tbody></table></div>");
    }
    body.push_str("</section>");
    layout(&ui, t.nav_overview, Nav::Overview, &body)
}

/// Query of the alerts page.
#[derive(Debug, Deserialize)]
struct AlertsQuery {
    state: Option<String>,
    kind: Option<i32>,
    page_token: Option<String>,
    done: Option<String>,
}

/// `GET /dash/alerts`: the alert list; the unresolved view updates live.
async fn alerts(State(s): State<WebState>, ui: Ui, Query(q): Query<AlertsQuery>) -> Response {
    alerts_page(&s.app, &ui, &q, None).await
}

async fn alerts_page(app: &App, ui: &Ui, q: &AlertsQuery, kept: Option<&Kept>) -> Response {
    let t = ui.t();
    let c = &ui.caller;
    // Only these three words ever reach the page, whatever the address said.
    let (view, states) = match q.state.as_deref() {
        Some("resolved") => ("resolved", vec![AlertState::Resolved.as_i32()]),
        Some("all") => ("all", Vec::new()),
        _ => ("open", vec![AlertState::Open.as_i32(), AlertState::Acknowledged.as_i32()]),
    };
    let kinds = q.kind.map(|k| vec![k]).unwrap_or_default();
    let token = q.page_token.clone().unwrap_or_default();
    let (page, latest) = match app.list_alerts(c, "", "", kinds, states, 0, (None, None), 200, &token).await {
        Ok(x) => x,
        Err(e) => return render_error(ui, e),
    };
    let names = Names::load(app, c, &page.items).await;
    let mut body = String::new();
    if let Some(done) = done_text(t, q.done.as_deref()) {
        body.push_str(&notice(true, done));
    }
    // A refusal about an alert not on this page still needs saying.
    if let Some(k) = kept.filter(|k| !page.items.iter().any(|a| a.id == k.id)) {
        body.push_str(&notice(false, &k.error));
    }
    let kind_q = q.kind.map(|k| format!("&kind={k}")).unwrap_or_default();
    let tab = |v: &str, label: &str| {
        let cur = if v == view { r#" aria-current="page""# } else { "" };
        format!(r#"<a href="/dash/alerts?state={v}{kind_q}"{cur}>{}</a>"#, esc(label))
    };
    let _ = write!(
        body,
        r#"<nav class="tabs" aria-label="{}">{}{}{}</nav>"#,
        esc(t.state),
        tab("open", t.alerts_open),
        tab("resolved", t.alerts_handled),
        tab("all", t.alerts_all)
    );
    let live = (view == "open" && token.is_empty()).then(|| {
        let kind = q.kind.map(|k| format!("&kind={k}")).unwrap_or_default();
        format!("/dash/alerts/stream?after={latest}{kind}")
    });
    if live.is_some() {
        let _ = write!(
            body,
            r#"<p class="live" id="live-status" data-ok="{}" data-lost="{}">{}</p><p class="skip" aria-live="polite" id="live-announce"></p>"#,
            esc(t.live_connected),
            esc(t.live_lost),
            esc(t.live_connected)
        );
    }
    body.push_str(&alerts_table(ui, &names, &page.items, live.as_deref(), kept));
    if !page.next_page_token.is_empty() {
        let _ = write!(
            body,
            r#"<p><a class="button" href="/dash/alerts?state={view}{kind_q}&page_token={}">→</a></p>"#,
            esc(&page.next_page_token)
        );
    }
    layout(ui, t.nav_alerts, Nav::Alerts, &body)
}

/// Query of the live alert stream.
#[derive(Debug, Deserialize)]
struct StreamQuery {
    after: Option<i64>,
    kind: Option<i32>,
}

/// `GET /dash/alerts/stream`: server-sent events, one per alert change, each carrying the
/// rendered row. The browser reconnects by itself with `Last-Event-ID`, so nothing is missed.
async fn alert_stream(State(s): State<WebState>, ui: Ui, headers: HeaderMap, Query(q): Query<StreamQuery>) -> Response {
    let resume = headers.get("last-event-id").and_then(|v| v.to_str().ok()).and_then(|v| v.trim().parse::<i64>().ok());
    let after = resume.or(q.after).unwrap_or(0);
    let kinds = q.kind.map(|k| vec![k]).unwrap_or_default();
    let rx = match s.app.watch_alerts(&ui.caller, after, "", kinds, 0).await {
        Ok(rx) => rx,
        Err(e) => return super::page::plain_error(StatusCode::BAD_REQUEST, &e.to_string()),
    };
    // The session is checked again before every event and every 30 s: signing out, expiry or a
    // revoked token ends an open stream too, not only new requests.
    let secret = super::page::cookie(&headers, super::page::SESSION_COOKIE).unwrap_or("").to_owned();
    let (app, watcher, watched) = (s.app.clone(), s.app.clone(), secret.clone());
    let session_ended = async move {
        loop {
            tokio::time::sleep(std::time::Duration::from_secs(30)).await;
            if watcher.session_caller(&watched).await.is_err() {
                return;
            }
        }
    };
    let stream = tokio_stream::wrappers::ReceiverStream::new(rx).then(move |ev| {
        let app = app.clone();
        let ui = ui.clone();
        let secret = secret.clone();
        async move {
            let ev = ev?;
            app.session_caller(&secret).await?;
            let names = Names::load(&app, &ui.caller, std::slice::from_ref(&ev.alert)).await;
            let t = ui.t();
            let label = format!(
                "{}: {} — {}",
                t.alert_new,
                kind_label(t, ev.alert.kind),
                names.facility(&ev.alert.subject.facility_id)
            );
            let data = serde_json::json!({
                "id": ev.alert.id,
                "html": alert_row(&ui, &names, &ev.alert, None),
                "label": label,
                "opened": ev.kind == crate::domain::alert::EventType::Opened,
            });
            Ok::<_, Error>(Event::default().id(ev.event_id.to_string()).event("alert").data(data.to_string()))
        }
    });
    Sse::new(stream.take_until(Box::pin(session_ended))).keep_alive(KeepAlive::default()).into_response()
}

/// The acknowledge form.
#[derive(Debug, Deserialize)]
struct AckForm {
    csrf: String,
    request_id: String,
    comment: String,
    back: Option<String>,
}

async fn acknowledge(State(s): State<WebState>, ui: Ui, Path(id): Path<String>, Form(f): Form<AckForm>) -> Response {
    if let Some(r) = ui.refuse_forged(&f.csrf) {
        return r;
    }
    match s.app.acknowledge_alert(&ui.caller, &f.request_id, &id, &f.comment).await {
        Ok(_) => Redirect::to(&done(session_back(f.back.as_deref()), "acknowledged")).into_response(),
        Err(e) => {
            let kept = Kept { id, form: "acknowledge", comment: f.comment, ..Default::default() };
            refused(&s.app, &ui, e, kept).await
        }
    }
}

/// The resolve form.
#[derive(Debug, Deserialize)]
struct ResolveForm {
    csrf: String,
    request_id: String,
    resolution: i32,
    comment: String,
    back: Option<String>,
}

async fn resolve(State(s): State<WebState>, ui: Ui, Path(id): Path<String>, Form(f): Form<ResolveForm>) -> Response {
    if let Some(r) = ui.refuse_forged(&f.csrf) {
        return r;
    }
    match s.app.resolve_alert(&ui.caller, &f.request_id, &id, f.resolution, &f.comment).await {
        Ok(_) => Redirect::to(&done(session_back(f.back.as_deref()), "resolved")).into_response(),
        Err(e) => {
            let kept = Kept { id, form: "resolve", comment: f.comment, resolution: f.resolution, ..Default::default() };
            refused(&s.app, &ui, e, kept).await
        }
    }
}

/// The alert list again after a refused acknowledge or resolve: the reason beside the form and
/// the comment as typed.
async fn refused(app: &App, ui: &Ui, e: Error, mut kept: Kept) -> Response {
    let (code, msg) = super::page::error_text(ui.t(), e);
    kept.error = msg;
    let q = AlertsQuery { state: Some("all".into()), kind: None, page_token: None, done: None };
    let mut r = alerts_page(app, ui, &q, Some(&kept)).await;
    if r.status().is_success() {
        *r.status_mut() = code;
    }
    r
}

/// A page to go back to, with the code of a confirmation to show there.
fn done(back: &str, code: &str) -> String {
    let sep = if back.contains('?') { '&' } else { '?' };
    format!("{back}{sep}done={code}")
}

fn url_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// A chart window: span and bucket width.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Range {
    Day,
    Week,
    Month,
}

impl Range {
    fn parse(s: Option<&str>) -> Range {
        match s {
            Some("7d") => Range::Week,
            Some("30d") => Range::Month,
            _ => Range::Day,
        }
    }

    fn code(self) -> &'static str {
        match self {
            Range::Day => "24h",
            Range::Week => "7d",
            Range::Month => "30d",
        }
    }

    /// Span and bucket: about 100–170 points whatever the span, so a chart stays small.
    fn span(self) -> (Duration, Duration) {
        match self {
            Range::Day => (Duration::hours(24), Duration::minutes(10)),
            Range::Week => (Duration::days(7), Duration::hours(1)),
            Range::Month => (Duration::days(30), Duration::hours(6)),
        }
    }

    fn label(self, t: &Strings) -> &'static str {
        match self {
            Range::Day => t.chart_range_24h,
            Range::Week => t.chart_range_7d,
            Range::Month => t.chart_range_30d,
        }
    }
}

/// Query of a facility page.
#[derive(Debug, Deserialize)]
struct FacilityQueryParams {
    range: Option<String>,
    done: Option<String>,
}

/// The safe range of a unit, °C (the limits drawn on its chart), with its own overrides.
fn limits(u: &StorageUnit) -> (f64, f64) {
    let p = crate::app::coldchain::unit_profile(u, 60);
    (f64::from(p.range_low_centi) / 100.0, f64::from(p.range_high_centi) / 100.0)
}

/// `GET /dash/facilities/{id}`: units with temperature and charts, stock, shipments, exposures.
async fn facility(
    State(s): State<WebState>,
    ui: Ui,
    Path(id): Path<String>,
    Query(q): Query<FacilityQueryParams>,
) -> Response {
    match facility_page(&s.app, &ui, &id, Range::parse(q.range.as_deref()), q.done.as_deref(), None).await {
        Ok(r) => r,
        Err(e) => render_error(&ui, e),
    }
}

async fn facility_page(
    app: &App,
    ui: &Ui,
    id: &str,
    range: Range,
    done: Option<&str>,
    kept: Option<&Kept>,
) -> Result<Response> {
    let t = ui.t();
    let c = &ui.caller;
    let f = app.get_facility(c, id).await?;
    let units = all_units(app, c, &f.id).await?;
    let latest = app.latest_readings(c, &f.id, 1000, "").await?;
    let latest: HashMap<&str, _> = latest.items.iter().map(|l| (l.storage_unit_id.as_str(), l)).collect();
    let (span, bucket) = range.span();
    // Spans of whole hours on hour boundaries are served from the hourly rollups (720 rows for a
    // month instead of 43,200 readings), so the window ends at the top of the coming hour.
    let now = Utc::now();
    let end = if bucket.num_seconds() % 3600 == 0 {
        let secs = now.timestamp();
        DateTime::from_timestamp(secs - secs.rem_euclid(3600) + 3600, 0).unwrap_or(now)
    } else {
        now
    };
    let start = end - span;
    let mut body = String::new();
    if let Some(d) = done_text(t, done) {
        body.push_str(&notice(true, d));
    }
    // Storage units and charts.
    let _ = write!(body, r#"<section aria-labelledby="h-units"><h2 id="h-units">{}</h2>"#, esc(t.units));
    let tabs: String = [Range::Day, Range::Week, Range::Month]
        .into_iter()
        .map(|r| {
            let cur = if r == range { r#" aria-current="page""# } else { "" };
            format!(r#"<a href="/dash/facilities/{}?range={}"{cur}>{}</a>"#, esc(&f.id), r.code(), esc(r.label(t)))
        })
        .collect();
    let _ = write!(body, r#"<nav class="tabs" aria-label="{}">{tabs}</nav>"#, esc(t.chart_title));
    for u in &units {
        let current = match latest.get(u.id.as_str()) {
            Some(l) => match &l.reading {
                Some(r) => {
                    let stale = if l.stale {
                        format!(r#" <span class="badge s-warn">⌁ {}</span>"#, esc(t.logger_stale))
                    } else {
                        String::new()
                    };
                    format!(
                        "{} <small>({})</small>{stale}",
                        r.reading.temp_c.map_or_else(|| "–".to_owned(), |v| format!("{v:.1} °C")),
                        when(r.reading.time)
                    )
                }
                None => esc(t.no_reading),
            },
            None => esc(t.no_reading),
        };
        let buckets = app.query_readings(c, &u.id, Some(start), Some(end), bucket.num_seconds(), 0).await?;
        let (alarm_page, _) = app
            .list_alerts(
                c,
                "",
                &u.id,
                vec![AlertKind::Heat.as_i32(), AlertKind::Freeze.as_i32(), AlertKind::Excursion.as_i32()],
                Vec::new(),
                0,
                (Some(start), Some(end)),
                200,
                "",
            )
            .await?;
        let periods: Vec<Period> = alarm_page
            .items
            .iter()
            .filter(|a| a.start < end && a.end.is_none_or(|e| e > start))
            .map(|a| Period { start: a.start, end: a.end.unwrap_or(now), label: kind_label(t, a.kind).to_owned() })
            .collect();
        let chart_id = format!("chart-{}", u.id);
        let title = format!("{} — {} ({})", u.name, t.chart_title, range.label(t));
        let svg = chart::svg(&Chart {
            id: &chart_id,
            title: &title,
            description: t.chart_alt,
            start,
            end,
            bucket,
            buckets: &buckets,
            limits: limits(u),
            alarms: &periods,
        });
        let _ = write!(
            body,
            r#"<div class="unit" id="unit-{id}"><h3>{name} <small>{profile:?}</small></h3><p>{lnow}: <strong class="temp-now">{current}</strong></p><figure class="chart">{svg}</figure></div>"#,
            id = esc(&u.id),
            name = esc(&u.name),
            profile = u.temperature_profile,
            lnow = esc(t.temperature_now),
        );
    }
    body.push_str("</section>");
    // Stock on hand by product and lot.
    let products = products(app, c).await?;
    let balances = app
        .list_balances(c, StockFilter { facility_id: Some(f.id.clone()), ..Default::default() }, "", 1000, "")
        .await?;
    let unit_names: HashMap<&str, &str> = units.iter().map(|u| (u.id.as_str(), u.name.as_str())).collect();
    let _ = write!(body, r#"<section aria-labelledby="h-stock"><h2 id="h-stock">{}</h2>"#, esc(t.stock_on_hand));
    if balances.items.is_empty() {
        let _ = write!(body, "<p>{}</p>", esc(t.no_stock));
    } else {
        let _ = write!(
            body,
            r#"<div class="scroll"><table class="stack stock"><thead><tr><th>{}</th><th>{}</th><th>{}</th><th>{}</th><th class="n">{}</th><th class="n">{}</th><th>{}</th><th class="n">{}</th></tr></thead><tbody>"#,
            esc(t.product),
            esc(t.lot),
            esc(t.storage_unit),
            esc(t.expiry),
            esc(t.vials),
            esc(t.doses),
            esc(t.vvm),
            esc(t.quarantined)
        );
        let today = now.date_naive();
        for b in &balances.items {
            let product = products.get(&b.product_id).map_or(b.product_id.as_str(), |p| p.name.as_str());
            let expired = b.expiry < today;
            let expiry = if expired {
                format!(r#"{} <span class="badge s-bad">✖ {}</span>"#, b.expiry, esc(t.reason_expired))
            } else {
                b.expiry.to_string()
            };
            let q = if b.balance.quarantined > 0 {
                format!(r#"<span class="badge s-bad">■ {}</span>"#, num(b.balance.quarantined))
            } else {
                "0".to_owned()
            };
            let _ = write!(
                body,
                r#"<tr><td data-label="{lp}">{product}</td><td data-label="{ll}">{lot}</td><td data-label="{lu}">{unit}</td><td data-label="{le}">{expiry}</td><td class="n" data-label="{lv}">{vials}</td><td class="n" data-label="{ld}">{doses}</td><td data-label="{lvvm}">{vvm}</td><td class="n" data-label="{lq}">{q}</td></tr>"#,
                lp = esc(t.product),
                product = esc(product),
                ll = esc(t.lot),
                lot = esc(&b.lot_number),
                lu = esc(t.storage_unit),
                unit = esc(unit_names.get(b.storage_unit_id.as_str()).copied().unwrap_or(&b.storage_unit_id)),
                le = esc(t.expiry),
                lv = esc(t.vials),
                vials = num(b.balance.vials),
                ld = esc(t.doses),
                doses = num(b.balance.vials * b.doses_per_vial),
                lvvm = esc(t.vvm),
                vvm = if b.vvm_stage > 0 { b.vvm_stage.to_string() } else { "–".into() },
                lq = esc(t.quarantined),
            );
        }
        body.push_str("</tbody></table></div>");
    }
    body.push_str("</section>");
    // Shipments on the way in or out.
    let ships =
        app.list_shipments(c, &f.id, 0, &[crate::domain::stock::ShipmentState::Dispatched.as_i32()], 100, "").await?;
    let _ = write!(body, r#"<section aria-labelledby="h-ship"><h2 id="h-ship">{}</h2>"#, esc(t.shipments_in_transit));
    if ships.items.is_empty() {
        let _ = write!(body, "<p>{}</p>", esc(t.no_shipments));
    } else {
        body.push_str("<ul>");
        for sh in &ships.items {
            let (dir, other) =
                if sh.to_facility_id == f.id { ("←", &sh.from_facility_id) } else { ("→", &sh.to_facility_id) };
            let other = app.get_facility(c, other).await.map(|x| x.name).unwrap_or_else(|_| other.clone());
            let doses: i64 = sh.lines.iter().map(|l| l.vials * l.doses_per_vial).sum();
            let _ = write!(
                body,
                "<li>{dir} {} · {} {} · {}</li>",
                esc(&other),
                num(doses),
                esc(t.doses),
                sh.dispatched_at.map(when).unwrap_or_default()
            );
        }
        body.push_str("</ul>");
    }
    body.push_str("</section>");
    // Exposed lots waiting for an assessment.
    let pending = crate::domain::stock::ExposureQuery {
        facility_id: f.id.clone(),
        states: vec![crate::domain::stock::ExposureState::Pending.as_i32()],
        ..Default::default()
    };
    let exposures = app.list_exposures(c, &pending, 100, "").await?;
    let _ = write!(body, r#"<section aria-labelledby="h-exp"><h2 id="h-exp">{}</h2>"#, esc(t.exposures));
    if exposures.items.is_empty() {
        let _ = write!(body, "<p>{}</p>", esc(t.no_exposures));
    }
    for x in &exposures.items {
        let product = products.get(&x.product_id).map_or(x.product_id.as_str(), |p| p.name.as_str());
        let lot = app.get_lot(c, &x.lot_id).await.map(|l| l.lot_number).unwrap_or_else(|_| x.lot_id.clone());
        let d = &x.details;
        let temps = match (d.min_temp_c, d.max_temp_c) {
            (Some(lo), Some(hi)) => format!("{lo:.1} / {hi:.1}"),
            _ => "–".into(),
        };
        let _ = write!(
            body,
            r#"<div class="exposure" id="exposure-{id}"><h3>{product} · {llot} {lot} · {unit}</h3><p>{lstart}: {start} – {end} · {lq}: {q} {lv} · {lt}: {temps} · {lm}: {mins} · {ldh}: {dh:.1}</p>"#,
            id = esc(&x.id),
            product = esc(product),
            llot = esc(t.lot),
            lot = esc(&lot),
            unit = esc(unit_names.get(x.storage_unit_id.as_str()).copied().unwrap_or(&x.storage_unit_id)),
            lstart = esc(t.started),
            start = when(x.start),
            end = x.end.map(when).unwrap_or_else(|| esc(t.condition_active)),
            lq = esc(t.quarantined),
            q = num(x.quarantined_vials),
            lv = esc(t.vials),
            lt = esc(t.min_max_temp),
            lm = esc(t.minutes_past),
            mins = d.minutes_past_threshold.unwrap_or(0),
            ldh = esc(t.degree_hours),
            dh = d.degree_hours_above_max.unwrap_or(0.0),
        );
        if ui.is_officer() && x.end.is_some() {
            let k = kept.filter(|k| k.form == "assess" && k.id == x.id);
            if let Some(k) = k {
                body.push_str(&notice(false, &k.error));
            }
            let checked = |v: i32| if k.is_some_and(|k| k.decision == v) { " checked" } else { "" };
            let reasons: String = [
                (2, t.reason_vvm),
                (3, t.reason_frozen),
                (1, t.reason_expired),
                (5, t.reason_broken),
                (14, t.reason_other),
            ]
            .iter()
            .map(|(v, w)| {
                let sel = if k.is_some_and(|k| k.discard_reason == *v) { " selected" } else { "" };
                format!(r#"<option value="{v}"{sel}>{}</option>"#, esc(w))
            })
            .collect();
            let _ = write!(
                body,
                r#"<form method="post" action="/dash/exposures/{id}/assess">{keys}<input type="hidden" name="facility_id" value="{fid}"><fieldset><legend>{assess}</legend><label><input type="radio" name="decision" value="1" required{c1}> {release}</label><label><input type="radio" name="decision" value="2"{c2}> {discard}</label></fieldset><label for="dr-{id}">{lreason}</label><select id="dr-{id}" name="discard_reason"><option value="0">–</option>{reasons}</select><label for="dv-{id}">{lvials}</label><input id="dv-{id}" name="discard_vials" type="number" min="0" max="{max}" inputmode="numeric" value="{vials}"><label for="dc-{id}">{lcomment}</label><textarea id="dc-{id}" name="comment" required maxlength="1000" rows="2">{comment}</textarea><button>{assess}</button></form>"#,
                c1 = checked(1),
                c2 = checked(2),
                vials = k.map(|k| esc(&k.discard_vials)).unwrap_or_default(),
                comment = k.map(|k| esc(&k.comment)).unwrap_or_default(),
                id = esc(&x.id),
                keys = ui.form_keys(),
                fid = esc(&f.id),
                assess = esc(t.assess),
                release = esc(t.release),
                discard = esc(t.discard),
                lreason = esc(t.discard_reason),
                lvials = esc(t.discard_vials),
                max = x.quarantined_vials,
                lcomment = esc(t.comment),
            );
        }
        body.push_str("</div>");
    }
    body.push_str("</section>");
    Ok(layout(ui, &f.name, Nav::Facility, &body))
}

/// The assessment form.
#[derive(Debug, Deserialize)]
struct AssessForm {
    csrf: String,
    request_id: String,
    facility_id: String,
    decision: Option<i32>,
    discard_reason: Option<i32>,
    discard_vials: Option<String>,
    comment: String,
}

async fn assess(State(s): State<WebState>, ui: Ui, Path(id): Path<String>, Form(f): Form<AssessForm>) -> Response {
    if let Some(r) = ui.refuse_forged(&f.csrf) {
        return r;
    }
    let typed = f.discard_vials.clone().unwrap_or_default();
    let vials = match typed.trim() {
        "" => Ok(0),
        v => v.parse::<i64>().map_err(|_| Error::invalid("discard_vials", "must be a whole number of vials")),
    };
    let r = match (vials, f.decision) {
        (Err(e), _) => Err(e),
        (Ok(_), None) => Err(Error::invalid("decision", "choose release or discard")),
        (Ok(n), Some(d)) => s
            .app
            .assess_exposure(&ui.caller, &f.request_id, &id, d, f.discard_reason.unwrap_or(0), n, &f.comment)
            .await
            .map(|_| ()),
    };
    match r {
        Ok(()) => {
            let back = format!("/dash/facilities/{}", url_encode(&f.facility_id));
            Redirect::to(&done(&back, "assessed")).into_response()
        }
        Err(e) => {
            // The facility page again, with the reason at the form and everything as typed.
            let (code, error) = super::page::error_text(ui.t(), e);
            let kept = Kept {
                id,
                form: "assess",
                error,
                comment: f.comment,
                decision: f.decision.unwrap_or(0),
                discard_reason: f.discard_reason.unwrap_or(0),
                discard_vials: typed,
                ..Default::default()
            };
            match facility_page(&s.app, &ui, &f.facility_id, Range::Day, None, Some(&kept)).await {
                Ok(mut r) => {
                    *r.status_mut() = code;
                    r
                }
                Err(e) => render_error(&ui, e),
            }
        }
    }
}

/// Query of the reports page.
#[derive(Debug, Deserialize)]
struct ReportQuery {
    report: Option<String>,
    month: Option<String>,
}

fn month_bounds(month: Option<&str>, today: NaiveDate) -> (NaiveDate, NaiveDate) {
    let first = month
        .and_then(|m| NaiveDate::parse_from_str(&format!("{m}-01"), "%Y-%m-%d").ok())
        .unwrap_or_else(|| today.with_day(1).unwrap_or(today));
    let next = first.checked_add_months(chrono::Months::new(1)).unwrap_or(first);
    let last = next.pred_opt().unwrap_or(first).min(today.max(first));
    (first, last)
}

/// `GET /dash/reports`: stock on hand, wastage and expiry risk, each with its CSV.
async fn reports(State(s): State<WebState>, ui: Ui, Query(q): Query<ReportQuery>) -> Response {
    match reports_page(&s.app, &ui, &q).await {
        Ok(r) => r,
        Err(e) => render_error(&ui, e),
    }
}

async fn reports_page(app: &App, ui: &Ui, q: &ReportQuery) -> Result<Response> {
    let t = ui.t();
    let c = &ui.caller;
    let which = q.report.as_deref().unwrap_or("stock");
    let today = Utc::now().date_naive();
    let (start, end) = month_bounds(q.month.as_deref(), today);
    let tab = |v: &str, label: &str| {
        let cur = if v == which { r#" aria-current="page""# } else { "" };
        format!(r#"<a href="/dash/reports?report={v}"{cur}>{}</a>"#, esc(label))
    };
    let mut body = format!(
        r#"<nav class="tabs" aria-label="{}">{}{}{}</nav>"#,
        esc(t.nav_reports),
        tab("stock", t.report_stock),
        tab("wastage", t.report_wastage),
        tab("expiry", t.report_expiry)
    );
    let th = |cells: &[&str]| -> String {
        let mut s = String::from("<div class=\"scroll\"><table class=\"stack report\"><thead><tr>");
        for (i, c) in cells.iter().enumerate() {
            let class = if i >= 2 { r#" class="n""# } else { "" };
            let _ = write!(s, "<th{class}>{}</th>", esc(c));
        }
        s.push_str("</tr></thead><tbody>");
        s
    };
    let td = |labels: &[&str], cells: Vec<String>| -> String {
        let mut s = String::from("<tr>");
        for (i, (l, c)) in labels.iter().zip(cells).enumerate() {
            let class = if i >= 2 { r#" class="n""# } else { "" };
            let _ = write!(s, r#"<td{class} data-label="{}">{c}</td>"#, esc(l));
        }
        s.push_str("</tr>");
        s
    };
    match which {
        "wastage" => {
            let _ = write!(
                body,
                r#"<form method="get" action="/dash/reports" class="row"><input type="hidden" name="report" value="wastage"><div><label for="month">{}</label><input id="month" name="month" type="month" value="{}"></div><div><button>{}</button></div></form>"#,
                esc(t.period),
                start.format("%Y-%m"),
                esc(t.show)
            );
            let _ = write!(
                body,
                r#"<p><a class="button" href="/dash/reports/wastage.csv?month={}" download>{}</a></p>"#,
                start.format("%Y-%m"),
                esc(t.download_csv)
            );
            let rows = match app.wastage(c, "", "", start, end, Some(1)).await {
                Err(Error::NotFound { .. }) => Vec::new(),
                r => r?,
            };
            let labels = [
                t.facility,
                t.product,
                t.issued,
                t.administered,
                t.wastage_rate,
                t.opened_wastage,
                t.unopened_wastage,
                t.wastage_max,
            ];
            body.push_str(&th(&labels));
            for r in rows {
                let above = r.rate_bp.is_some_and(|x| x > r.product.acceptable_wastage_bp);
                let rate = match r.rate_bp {
                    Some(x) if above => format!("{} ✖", pct(x)),
                    Some(x) => pct(x),
                    None => "–".into(),
                };
                let name = r
                    .facility
                    .map(|f| format!("{}{}", "· ".repeat(f.depth as usize), f.facility.name))
                    .unwrap_or_default();
                body.push_str(&td(
                    &labels,
                    vec![
                        esc(&name),
                        esc(&r.product.name),
                        num(r.doses_issued),
                        num(r.doses_administered),
                        rate,
                        num(r.opened_vial_doses),
                        num(r.unopened_vial_doses),
                        pct(r.product.acceptable_wastage_bp),
                    ],
                ));
            }
            body.push_str("</tbody></table></div>");
        }
        "expiry" => {
            let _ = write!(
                body,
                r#"<p><a class="button" href="/dash/reports/expiry.csv" download>{}</a></p>"#,
                esc(t.download_csv)
            );
            let rows = match app.expiry_risk(c, "", "", 90, true).await {
                Err(Error::NotFound { .. }) => Vec::new(),
                r => r?,
            };
            let labels = [t.facility, t.product, t.lot, t.expiry, t.days_to_expiry, t.doses, t.doses_at_risk];
            body.push_str(&th(&labels));
            for r in rows {
                body.push_str(&td(
                    &labels,
                    vec![
                        esc(&r.facility.name),
                        esc(&r.product.name),
                        esc(&r.lot.1),
                        r.lot.2.to_string(),
                        r.days.to_string(),
                        num(r.on_hand.1),
                        num(r.doses_at_risk),
                    ],
                ));
            }
            body.push_str("</tbody></table></div>");
        }
        _ => {
            let _ = write!(
                body,
                r#"<p><a class="button" href="/dash/reports/stock.csv" download>{}</a></p>"#,
                esc(t.download_csv)
            );
            let group = Grouping { facility: true, product: true, lot: false };
            let rows = match app.stock_on_hand(c, "", group, 2, "", None, false).await {
                Err(Error::NotFound { .. }) => Vec::new(),
                r => r?,
            };
            let labels = [t.facility, t.product, t.available, t.quarantined, t.in_transit, t.reason_expired];
            body.push_str(&th(&labels));
            for r in rows {
                let name = r
                    .facility
                    .map(|f| format!("{}{}", "· ".repeat(f.depth as usize), f.facility.name))
                    .unwrap_or_default();
                body.push_str(&td(
                    &labels,
                    vec![
                        esc(&name),
                        esc(&r.product.map(|p| p.name).unwrap_or_default()),
                        num(r.available.1),
                        num(r.quarantined.1),
                        num(r.in_transit.1),
                        num(r.expired.1),
                    ],
                ));
            }
            body.push_str("</tbody></table></div>");
        }
    }
    Ok(layout(ui, t.nav_reports, Nav::Reports, &body))
}

/// Query of a CSV download.
#[derive(Debug, Deserialize)]
struct CsvQuery {
    month: Option<String>,
}

/// `GET /dash/reports/{stock,wastage,expiry}.csv`: the same CSV as `ExportReportCsv`.
async fn report_csv(
    State(s): State<WebState>,
    ui: Ui,
    Path(file): Path<String>,
    Query(q): Query<CsvQuery>,
) -> Response {
    use pb::export_report_csv_request::Report;
    let today = Utc::now().date_naive();
    let report = match file.as_str() {
        "stock.csv" => Report::StockOnHand(pb::StockOnHandReportRequest {
            group_by: vec![
                pb::ReportDimension::Facility as i32,
                pb::ReportDimension::Product as i32,
                pb::ReportDimension::Lot as i32,
            ],
            facility_grouping: Some(pb::FacilityGrouping { depth: 2 }),
            ..Default::default()
        }),
        "wastage.csv" => {
            let (start, end) = month_bounds(q.month.as_deref(), today);
            Report::Wastage(pb::WastageReportRequest {
                start_date: Some(crate::grpc::convert::date(start)),
                end_date: Some(crate::grpc::convert::date(end)),
                facility_grouping: Some(pb::FacilityGrouping { depth: 1 }),
                ..Default::default()
            })
        }
        "expiry.csv" => Report::ExpiryRisk(pb::ExpiryRiskReportRequest {
            within_days: 90,
            include_expired: true,
            ..Default::default()
        }),
        _ => return StatusCode::NOT_FOUND.into_response(),
    };
    let api = crate::grpc::report::ReportApi(s.app.clone());
    match api.report_csv(&ui.caller, Some(report)).await {
        Ok((name, text)) => {
            let disposition = format!("attachment; filename=\"{name}_{today}.csv\"");
            (
                [
                    (header::CONTENT_TYPE, "text/csv; charset=utf-8".to_owned()),
                    (header::CONTENT_DISPOSITION, disposition),
                    (header::CACHE_CONTROL, "no-store".to_owned()),
                ],
                text,
            )
                .into_response()
        }
        Err(status) => {
            let (code, msg) = (crate::web::api::http_status(status.code()), status.message().to_owned());
            super::page::plain_error(code, &msg)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn month_bounds_stop_at_today() {
        let today = NaiveDate::from_ymd_opt(2026, 11, 27).unwrap_or_default();
        let d = |y, m, dd| NaiveDate::from_ymd_opt(y, m, dd).unwrap_or_default();
        assert_eq!(month_bounds(None, today), (d(2026, 11, 1), d(2026, 11, 27)));
        assert_eq!(month_bounds(Some("2026-02"), today), (d(2026, 2, 1), d(2026, 2, 28)));
        assert_eq!(month_bounds(Some("garbage"), today), (d(2026, 11, 1), d(2026, 11, 27)));
    }

    #[test]
    fn a_breach_outweighs_everything_else() {
        let breach = Status { breach: Some(Severity::Warning), ..Default::default() };
        let rest = Status { offline: true, stockout: false, below_min: true, expiring: true, ..Default::default() };
        assert!(breach.weight() > rest.weight());
        assert!(Status::default().badges(&super::super::i18n::EN).contains("All normal"));
    }
}
