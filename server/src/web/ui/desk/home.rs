//! `GET /desk`: what the store holds, what is short, what is on the way, and what is wrong.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use axum::extract::{Query, State};
use axum::response::Response;
use chrono::{Datelike as _, Utc};

use super::super::Ui;
use super::super::page::{esc, num, pct, when};
use super::{At, Desk, desk_or_picker, desk_page, fail};
use crate::app::App;
use crate::domain::alert::{AlertState, Severity};
use crate::domain::stock::{Shipment, ShipmentState};
use crate::domain::{Caller, FacilityKind};
use crate::error::{Error, Result};
use crate::web::WebState;

/// `GET /desk`.
pub(super) async fn home(State(s): State<WebState>, ui: Ui, Query(at): Query<At>) -> Response {
    let d = match desk_or_picker(&s.app, &ui, at.facility.as_deref(), "/desk").await {
        Ok(d) => d,
        Err(r) => return r,
    };
    match body(&s.app, &ui, &d, at.from.unwrap_or(0)).await {
        Ok(b) => desk_page(&ui, &d, ui.t().nav_desk, &b),
        Err(e) => fail(&ui, e),
    }
}

/// The shipments of a facility in some states, newest first.
pub(super) async fn shipments(
    app: &App,
    c: &Caller,
    facility_id: &str,
    direction: i32,
    states: &[ShipmentState],
) -> Result<Vec<Shipment>> {
    let states: Vec<i32> = states.iter().map(|s| s.as_i32()).collect();
    Ok(app.list_shipments(c, facility_id, direction, &states, 200, "").await?.items)
}

/// The name of the facility at the other end of a shipment, when the caller may read it (a
/// depot manager does not see the store above it).
pub(super) async fn other_end(app: &App, c: &Caller, id: &str, fallback: &str) -> String {
    app.get_facility(c, id).await.map(|f| f.name).unwrap_or_else(|_| fallback.to_owned())
}

async fn body(app: &App, ui: &Ui, d: &Desk, from: usize) -> Result<String> {
    let t = ui.t();
    let c = &ui.caller;
    let mut b = String::new();
    let incoming = shipments(app, c, &d.f.id, 1, &[ShipmentState::Dispatched]).await?;
    let outgoing = shipments(app, c, &d.f.id, 2, &[ShipmentState::Draft, ShipmentState::Dispatched]).await?;

    // What to do: large buttons, the first thing on a phone.
    let _ = write!(b, r#"<nav class="actions" aria-label="{}">"#, esc(t.desk_actions));
    let mut action = |href: String, label: &str, extra: String| {
        let _ = write!(b, r#"<a class="button big" href="{}">{}{extra}</a>"#, esc(&href), esc(label));
    };
    if d.holds_stock() {
        let badge = if incoming.is_empty() {
            String::new()
        } else {
            format!(r#" <span class="count">{}</span>"#, incoming.len())
        };
        action(d.href("/desk/receive"), t.desk_receive, badge);
        if matches!(d.f.kind, FacilityKind::NationalStore | FacilityKind::StateStore) {
            action(d.href("/desk/supplier"), t.desk_supplier, String::new());
        }
        action(d.href("/desk/issue"), t.desk_issue, String::new());
    }
    action(d.href("/desk/session"), t.desk_session, String::new());
    if d.holds_stock() {
        action(d.href("/desk/count"), t.desk_count, String::new());
        action(d.href("/desk/adjust"), t.desk_adjust, String::new());
        action(d.href("/desk/transfer"), t.desk_transfer, String::new());
    }
    b.push_str("</nav>");

    // Open alerts of the facility and its sites.
    let (alerts, _) = app
        .list_alerts(
            c,
            &d.f.id,
            "",
            Vec::new(),
            vec![AlertState::Open.as_i32(), AlertState::Acknowledged.as_i32()],
            0,
            (None, None),
            100,
            "",
        )
        .await?;
    let _ = write!(b, r#"<section aria-labelledby="h-alerts"><h2 id="h-alerts">{}</h2>"#, esc(t.desk_alerts));
    if alerts.items.is_empty() {
        let _ = write!(b, r#"<p><span class="badge s-ok">✔ {}</span></p>"#, esc(t.status_ok));
    } else {
        b.push_str(r#"<ul class="plain">"#);
        for a in &alerts.items {
            let (class, sym) = match a.severity {
                Severity::Info => ("s-info", "ℹ"),
                Severity::Warning => ("s-warn", "⚠"),
                Severity::Alarm | Severity::Critical => ("s-bad", "▲"),
            };
            let unit = if a.subject.storage_unit_id.is_empty() {
                String::new()
            } else {
                format!(" · {}", esc(d.unit_name(&a.subject.storage_unit_id)))
            };
            let product = if a.subject.product_id.is_empty() {
                String::new()
            } else {
                format!(" · {}", esc(d.product_name(&a.subject.product_id)))
            };
            let _ = write!(
                b,
                r#"<li><span class="badge {class}">{sym} {}</span>{unit}{product} <small>{} {}</small></li>"#,
                esc(crate::web::ui::dash_kind_label(t, a.kind)),
                esc(t.started),
                when(a.start),
            );
        }
        b.push_str("</ul>");
    }
    b.push_str("</section>");

    // Below minimum: the facility's own policies against its own usable doses (what it holds
    // itself, not its sites below; expired and VVM 3/4 vials do not count), as the alert engine
    // and the README put it.
    let today = Utc::now().date_naive();
    let stock = if d.holds_stock() { d.stock(app, c).await? } else { Vec::new() };
    let policies = app.list_policies(c, &d.f.id, "", "", 1000, "").await?.items;
    if !policies.is_empty() {
        let mut own: BTreeMap<&str, i64> = BTreeMap::new();
        for s in &stock {
            *own.entry(s.product_id.as_str()).or_default() += s.usable_vials(today) * s.doses_per_vial;
        }
        let _ = write!(b, r#"<section aria-labelledby="h-min"><h2 id="h-min">{}</h2>"#, esc(t.desk_below_min));
        let short: Vec<_> = policies
            .iter()
            .filter_map(|p| {
                let have = own.get(p.product_id.as_str()).copied().unwrap_or(0);
                // The alert engine's own rule, so the page and the alerts never disagree.
                let (kind, _, _) = crate::domain::alert::stock_level(have, p.min_doses, p.max_doses)?;
                Some((p, have, kind == crate::domain::alert::AlertKind::StockOut))
            })
            .collect();
        if short.is_empty() {
            let _ = write!(b, r#"<p><span class="badge s-ok">✔ {}</span></p>"#, esc(t.desk_none_below_min));
        } else {
            b.push_str(r#"<ul class="plain below-min">"#);
            for (p, have, out) in short {
                let (class, sym) = if out { ("s-bad", "∅") } else { ("s-warn", "↓") };
                let _ = write!(
                    b,
                    r#"<li><span class="badge {class}">{sym} {}</span> {}: {} {} &lt; min {}</li>"#,
                    esc(if out { t.status_stockout } else { t.status_below_min }),
                    esc(d.product_name(&p.product_id)),
                    num(have),
                    esc(t.doses),
                    num(p.min_doses),
                );
            }
            b.push_str("</ul>");
        }
        b.push_str("</section>");
    }

    // Shipments on the way in and out.
    let _ = write!(b, r#"<section aria-labelledby="h-ship"><h2 id="h-ship">{}</h2>"#, esc(t.shipments_in_transit));
    if incoming.is_empty() && outgoing.is_empty() {
        let _ = write!(b, "<p>{}</p>", esc(t.no_shipments));
    } else {
        b.push_str(r#"<ul class="plain shipments">"#);
        for sh in incoming.iter().chain(outgoing.iter()) {
            let inbound = sh.to_facility_id == d.f.id;
            let (dir, other) = if inbound {
                ("←", other_end(app, c, &sh.from_facility_id, t.desk_higher_store).await)
            } else {
                ("→", other_end(app, c, &sh.to_facility_id, &sh.to_facility_id).await)
            };
            let doses: i64 = sh.lines.iter().map(|l| l.vials * l.doses_per_vial).sum();
            let state = super::issue::state_word(t, sh.state);
            let what = if inbound { t.desk_receive_this } else { t.details };
            let _ = write!(
                b,
                r#"<li class="shipment" data-id="{id}">{dir} <strong>{other}</strong> · {doses} {ld} · {state} {when} <a class="button" href="{href}">{what}</a></li>"#,
                id = esc(&sh.id),
                other = esc(&other),
                doses = num(doses),
                ld = esc(t.doses),
                state = esc(state),
                when = sh.dispatched_at.map(when).unwrap_or_default(),
                href = esc(&d.href(&format!("/desk/shipments/{}", super::url_encode(&sh.id)))),
                what = esc(what),
            );
        }
        b.push_str("</ul>");
    }
    b.push_str("</section>");

    // Stock on hand by product, then lot.
    if d.holds_stock() {
        b.push_str(&stock_section(ui, d, &stock, from));
    }

    // Wastage at sessions this month.
    let month_start = today.with_day(1).unwrap_or(today);
    let wastage = match app.wastage(c, &d.f.id, "", month_start, today, None).await {
        Err(Error::NotFound { .. }) => Vec::new(),
        r => r?,
    };
    let _ = write!(
        b,
        r#"<section aria-labelledby="h-waste"><h2 id="h-waste">{} <small>({} {})</small></h2>"#,
        esc(t.overview_wastage),
        month_start.format("%Y-%m"),
        esc(t.month_to_date)
    );
    let used: Vec<_> = wastage.iter().filter(|w| w.doses_issued > 0).collect();
    if used.is_empty() {
        let _ = write!(b, "<p>{}</p>", esc(t.no_sessions));
    } else {
        let _ = write!(
            b,
            r#"<div class="scroll"><table class="stack wastage"><thead><tr><th>{}</th><th class="n">{}</th><th class="n">{}</th><th class="n">{}</th><th class="n">{}</th></tr></thead><tbody>"#,
            esc(t.product),
            esc(t.issued),
            esc(t.administered),
            esc(t.wastage_rate),
            esc(t.wastage_max)
        );
        for w in used {
            let max = w.product.acceptable_wastage_bp;
            let rate = match w.rate_bp {
                Some(r) if r > max => format!("{} ✖ {}", pct(r), esc(t.above_max)),
                Some(r) => format!("{} ✔", pct(r)),
                None => "–".into(),
            };
            let _ = write!(
                b,
                r#"<tr data-product="{pid}"><td data-label="{lp}">{name}</td><td class="n issued" data-label="{li}">{issued}</td><td class="n given" data-label="{la}">{given}</td><td class="n rate" data-label="{lr}" data-bp="{bp}">{rate}</td><td class="n" data-label="{lm}">{max}</td></tr>"#,
                pid = esc(&w.product.id),
                lp = esc(t.product),
                name = esc(&w.product.name),
                li = esc(t.issued),
                issued = num(w.doses_issued),
                la = esc(t.administered),
                given = num(w.doses_administered),
                lr = esc(t.wastage_rate),
                bp = w.rate_bp.map(|r| r.to_string()).unwrap_or_default(),
                lm = esc(t.wastage_max),
                max = pct(max),
            );
        }
        b.push_str("</tbody></table></div>");
    }
    b.push_str("</section>");
    Ok(b)
}

/// Rows the stock table shows at a time (about 70 KB), so the page stays small on a slow link;
/// the rest follow page by page.
pub(super) const STOCK_ROWS: usize = 100;

/// Stock on hand by product and lot: doses and vials, expiry, VVM, quarantine, each flagged in
/// words and symbols as well as colour.
fn stock_section(ui: &Ui, d: &Desk, stock: &[crate::domain::stock::StockItem], from: usize) -> String {
    let t = ui.t();
    let today = Utc::now().date_naive();
    let mut b = format!(r#"<section aria-labelledby="h-stock"><h2 id="h-stock">{}</h2>"#, esc(t.stock_on_hand));
    if stock.is_empty() {
        let _ = write!(b, "<p>{}</p>", esc(t.no_stock));
        b.push_str("</section>");
        return b;
    }
    // Totals per product first: what a manager asks before anything else.
    let mut totals: BTreeMap<&str, (i64, i64)> = BTreeMap::new();
    for s in stock {
        let e = totals.entry(d.product_name(&s.product_id)).or_default();
        e.0 += s.usable_vials(today) * s.doses_per_vial;
        e.1 += s.balance.vials;
    }
    b.push_str(r#"<div class="grid">"#);
    for (name, (doses, vials)) in &totals {
        let _ = write!(
            b,
            r#"<div class="tile"><strong>{}</strong><br><span class="big">{}</span> {}<br><small>{} {}</small></div>"#,
            esc(name),
            num(*doses),
            esc(t.desk_usable_doses),
            num(*vials),
            esc(t.vials)
        );
    }
    b.push_str("</div>");
    let _ = write!(
        b,
        r#"<div class="scroll"><table class="stack stock"><thead><tr><th>{}</th><th>{}</th><th>{}</th><th>{}</th><th class="n">{}</th><th class="n">{}</th><th>{}</th><th>{}</th></tr></thead><tbody>"#,
        esc(t.product),
        esc(t.lot),
        esc(t.storage_unit),
        esc(t.expiry),
        esc(t.doses),
        esc(t.vials),
        esc(t.vvm),
        esc(t.state),
    );
    let mut items: Vec<_> = stock.iter().collect();
    items
        .sort_by(|a, b| d.product_name(&a.product_id).cmp(d.product_name(&b.product_id)).then(a.expiry.cmp(&b.expiry)));
    // `from` comes from the address: clamped to the list, so the next page's start cannot overflow.
    let from = from.min(items.len());
    let next = from.saturating_add(STOCK_ROWS);
    for s in items.iter().skip(from).take(STOCK_ROWS) {
        let days = (s.expiry - today).num_days();
        let mut flags = Vec::new();
        if s.expired(today) {
            flags.push(format!(r#"<span class="badge s-bad">✖ {}</span>"#, esc(t.reason_expired)));
        } else if days <= 90 {
            flags.push(format!(r#"<span class="badge s-warn">◷ {} {}</span>"#, esc(t.days_to_expiry), days));
        }
        if s.balance.quarantined > 0 {
            flags.push(format!(
                r#"<span class="badge s-bad">‼ {} {}</span>"#,
                esc(t.quarantined),
                num(s.balance.quarantined)
            ));
        }
        if s.vvm_stage >= 3 {
            flags.push(format!(r#"<span class="badge s-bad">✖ {}</span>"#, esc(t.vvm_discard)));
        }
        if flags.is_empty() {
            flags.push(format!(r#"<span class="badge s-ok">✔ {}</span>"#, esc(t.desk_usable)));
        }
        let _ = write!(
            b,
            r#"<tr><td data-label="{lp}">{p}</td><td data-label="{ll}">{lot}</td><td data-label="{lu}">{u}</td><td data-label="{le}">{exp}</td><td class="n" data-label="{ld}">{doses}</td><td class="n" data-label="{lv}">{vials}</td><td data-label="{lvvm}">{vvm}</td><td data-label="{ls}">{flags}</td></tr>"#,
            lp = esc(t.product),
            p = esc(d.product_name(&s.product_id)),
            ll = esc(t.lot),
            lot = esc(&s.lot_number),
            lu = esc(t.storage_unit),
            u = esc(d.unit_name(&s.storage_unit_id)),
            le = esc(t.expiry),
            exp = s.expiry,
            ld = esc(t.doses),
            doses = num(s.balance.vials * s.doses_per_vial),
            lv = esc(t.vials),
            vials = num(s.balance.vials),
            lvvm = esc(t.vvm),
            vvm = if s.vvm_stage > 0 { s.vvm_stage.to_string() } else { "–".into() },
            ls = esc(t.state),
            flags = flags.join(" "),
        );
    }
    b.push_str("</tbody></table></div>");
    if items.len() > next {
        let _ = write!(
            b,
            r#"<p class="help">{} {} <a class="button" href="{}#h-stock">→</a></p>"#,
            esc(t.desk_more_rows),
            num((items.len() - next) as i64),
            esc(&d.href(&format!("/desk?from={next}"))),
        );
    }
    b.push_str("</section>");
    b
}
