//! Alert use cases: list, acknowledge, resolve, watch; and the stock-alert evaluator that raises
//! and clears STOCK_OUT, BELOW_MINIMUM, EXPIRY_RISK, WASTAGE_HIGH and SHIPMENT_OVERDUE.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use chrono::{DateTime, Days, Utc};
use tokio::sync::mpsc;

use super::App;
use crate::domain::alert::{
    self as al, Alert, AlertEvent, AlertFilter, AlertKind, AlertState, Condition, Details, EventType, Handling,
    Resolution, Severity, Subject,
};
use crate::domain::report as rp;
use crate::domain::stock::ShipmentState;
use crate::domain::{Action, Caller, FacilityKind, Idempotency, Page, PageRequest, validate};
use crate::error::{Error, Result};

impl App {
    pub(crate) fn published(&self, ev: Option<AlertEvent>) -> usize {
        match ev {
            Some(e) => {
                self.events.send_replace(e.event_id);
                1
            }
            None => 0,
        }
    }

    /// Raises (or updates) an alert for a present condition and wakes the watchers.
    pub async fn raise_alert(&self, c: &Condition) -> Result<usize> {
        let ev = self.store.raise(c).await?;
        Ok(self.published(ev))
    }

    /// As [`App::raise_alert`], returning the event written.
    pub async fn raise_alert_event(&self, c: &Condition) -> Result<Option<AlertEvent>> {
        let ev = self.store.raise(c).await?;
        if let Some(e) = &ev {
            self.events.send_replace(e.event_id);
        }
        Ok(ev)
    }

    /// Marks a condition over and wakes the watchers.
    pub async fn clear_alert(&self, kind: AlertKind, subject: &Subject, end: chrono::DateTime<Utc>) -> Result<usize> {
        Ok(self.clear_alert_event(kind, subject, end).await?.map_or(0, |_| 1))
    }

    /// As [`App::clear_alert`], returning the event written.
    pub async fn clear_alert_event(
        &self,
        kind: AlertKind,
        subject: &Subject,
        end: chrono::DateTime<Utc>,
    ) -> Result<Option<AlertEvent>> {
        let ev = self.store.clear(kind, subject, end).await?;
        if let Some(e) = &ev {
            self.events.send_replace(e.event_id);
        }
        Ok(ev)
    }

    async fn alert_filter(
        &self,
        caller: &Caller,
        ancestor_id: &str,
        unit: &str,
        kinds: Vec<i32>,
        states: Vec<i32>,
        min_severity: i32,
    ) -> Result<AlertFilter> {
        caller.require(Action::ReadStock)?;
        let ancestor_path = match validate::optional_id("ancestor_id", ancestor_id)? {
            Some(a) => match self.store.get_facility(&a).await? {
                Some(f) if caller.covers(&f.path) => Some(f.path),
                Some(_) => return Err(Error::PermissionDenied),
                None => return Err(caller.not_found("FACILITY_NOT_FOUND", "facility")),
            },
            None => None,
        };
        if kinds.iter().any(|k| AlertKind::from_i32(*k).is_none()) {
            return Err(Error::invalid("kinds", "unknown alert kind"));
        }
        if states.iter().any(|k| AlertState::from_i32(*k).is_none()) {
            return Err(Error::invalid("states", "unknown alert state"));
        }
        if !(0..=4).contains(&min_severity) {
            return Err(Error::invalid("min_severity", "unknown severity"));
        }
        Ok(AlertFilter {
            ancestor_path,
            storage_unit_id: validate::optional_id("storage_unit_id", unit)?,
            kinds,
            states,
            min_severity,
            start: None,
            end: None,
        })
    }

    /// Lists alerts in scope, newest first, with the latest event id to resume a watch from.
    pub async fn list_alerts(
        &self,
        caller: &Caller,
        ancestor_id: &str,
        unit: &str,
        kinds: Vec<i32>,
        states: Vec<i32>,
        min_severity: i32,
        (start, end): (Option<DateTime<Utc>>, Option<DateTime<Utc>>),
        page_size: i32,
        page_token: &str,
    ) -> Result<(Page<Alert>, i64)> {
        let mut f = self.alert_filter(caller, ancestor_id, unit, kinds, states, min_severity).await?;
        if let (Some(s), Some(e)) = (start, end)
            && e <= s
        {
            return Err(Error::invalid("end_time", "must be after start_time"));
        }
        (f.start, f.end) = (start, end);
        // Read the cursor first: an event landing in between is then replayed, never missed.
        let latest = self.store.event_bounds().await?.1;
        let page = PageRequest::parse(page_size, page_token, &f)?;
        Ok((self.store.list_alerts(&caller.scope_path, &f, &page).await?, latest))
    }

    async fn visible_alert(&self, caller: &Caller, id: &str) -> Result<Alert> {
        caller.require(Action::ReadStock)?;
        let id = validate::id("id", id)?;
        match self.store.get_alert(&id).await? {
            Some((a, path)) if caller.covers(&path) => Ok(a),
            Some(_) => Err(Error::PermissionDenied),
            None => Err(caller.not_found("ALERT_NOT_FOUND", "alert")),
        }
    }

    /// Reads one alert.
    pub async fn get_alert(&self, caller: &Caller, id: &str) -> Result<Alert> {
        self.visible_alert(caller, id).await
    }

    /// Acknowledges an open alert; the comment is mandatory.
    pub async fn acknowledge_alert(&self, caller: &Caller, request_id: &str, id: &str, comment: &str) -> Result<Alert> {
        caller.require(Action::WriteStock)?;
        let comment = validate::text("comment", comment, 1000)
            .map_err(|_| Error::invalid_because("comment", "COMMENT_REQUIRED", "say what is being done"))?;
        let idem = Idempotency::from_request(caller, "AcknowledgeAlert", request_id, &(id, &comment))?;
        let r = self
            .idempotent(idem.as_ref(), async {
                let mut a = self.visible_alert(caller, id).await?;
                let now = crate::domain::now();
                a.state = AlertState::Acknowledged;
                a.acknowledgement = Some(Handling { by: caller.token_id.clone(), time: now, resolution: 0, comment });
                a.updated_at = now;
                self.store.handle_alert(idem.as_ref(), &a, &[AlertState::Open], EventType::Acknowledged).await
            })
            .await?;
        self.events.send_replace(self.store.event_bounds().await?.1);
        Ok(r)
    }

    /// Resolves an open or acknowledged alert with a resolution and a comment.
    pub async fn resolve_alert(
        &self,
        caller: &Caller,
        request_id: &str,
        id: &str,
        resolution: i32,
        comment: &str,
    ) -> Result<Alert> {
        caller.require(Action::SetPolicies)?;
        let resolution = Resolution::from_i32(resolution)
            .filter(|r| *r != Resolution::Superseded)
            .ok_or_else(|| Error::invalid("resolution", "is required (SUPERSEDED is set by the server only)"))?;
        let comment = validate::text("comment", comment, 1000)
            .map_err(|_| Error::invalid_because("comment", "COMMENT_REQUIRED", "explain the resolution"))?;
        let idem = Idempotency::from_request(caller, "ResolveAlert", request_id, &(id, resolution.as_i32(), &comment))?;
        let r = self
            .idempotent(idem.as_ref(), async {
                let mut a = self.visible_alert(caller, id).await?;
                let now = crate::domain::now();
                a.state = AlertState::Resolved;
                a.resolution =
                    Some(Handling { by: caller.token_id.clone(), time: now, resolution: resolution.as_i32(), comment });
                a.updated_at = now;
                let from = [AlertState::Open, AlertState::Acknowledged];
                self.store.handle_alert(idem.as_ref(), &a, &from, EventType::Resolved).await
            })
            .await?;
        self.events.send_replace(self.store.event_bounds().await?.1);
        Ok(r)
    }

    /// Streams events after a cursor, then live, until the receiver is dropped. The database is
    /// the source of truth: a local wake-up makes delivery immediate, a 1 s poll picks up events
    /// other replicas wrote.
    pub async fn watch_alerts(
        &self,
        caller: &Caller,
        after: i64,
        ancestor_id: &str,
        kinds: Vec<i32>,
        min_severity: i32,
    ) -> Result<mpsc::Receiver<Result<AlertEvent>>> {
        let f = self.alert_filter(caller, ancestor_id, "", kinds, Vec::new(), min_severity).await?;
        let (lo, hi) = self.store.event_bounds().await?;
        if after < 0 || after > hi {
            return Err(Error::invalid("after_event_id", format!("must be within 0..{hi}")));
        }
        if after > 0 && lo > 0 && after < lo - 1 {
            return Err(Error::precondition(
                "CURSOR_EXPIRED",
                "the cursor is older than the 30-day retention; list alerts again",
            ));
        }
        let mut cursor = if after == 0 { hi } else { after };
        // Held by the task below, so the place frees when the stream ends or its client leaves.
        let slot = self.streams.open(&caller.token_id, &self.limits)?;
        let (tx, rx) = mpsc::channel(256);
        let app = self.clone();
        let scope = caller.scope_path.clone();
        let mut wake = self.events.subscribe();
        let mut closing = self.closing.subscribe();
        tokio::spawn(async move {
            let _slot = slot;
            loop {
                if *closing.borrow_and_update() {
                    return;
                }
                match app.store.events_after(&scope, &f, cursor, 500).await {
                    Ok(batch) => {
                        let full = batch.len() == 500;
                        for e in batch {
                            cursor = e.event_id;
                            if tx.send(Ok(e)).await.is_err() {
                                return;
                            }
                        }
                        if full {
                            continue;
                        }
                    }
                    Err(e) => {
                        let _ = tx.send(Err(e)).await;
                        return;
                    }
                }
                tokio::select! {
                    _ = wake.changed() => {}
                    () = tokio::time::sleep(Duration::from_secs(1)) => {}
                    () = tx.closed() => return,
                    _ = closing.changed() => return,
                }
            }
        });
        Ok(rx)
    }

    /// Evaluates every stock condition once: raises what holds now and clears what no longer
    /// does. Returns the number of alert events written.
    pub async fn evaluate_stock_alerts(&self, overdue_days: i64) -> Result<usize> {
        let now = crate::domain::now();
        let today = now.date_naive();
        let mut present: HashSet<String> = HashSet::new();
        let mut written = 0;
        let raise = async |c: Condition, present: &mut HashSet<String>| -> Result<usize> {
            present.insert(c.subject.key(c.kind));
            self.raise_alert(&c).await
        };
        let facilities: HashMap<String, crate::domain::Facility> =
            self.store.subtree_facilities("/").await?.into_iter().map(|f| (f.id.clone(), f)).collect();
        let stock = self.store.subtree_stock("/", None, None).await?;

        // Stock levels against policies.
        let mut available: HashMap<(String, String), i64> = HashMap::new();
        for (item, _) in &stock {
            *available.entry((item.facility_id.clone(), item.product_id.clone())).or_default() +=
                item.usable_vials(today) * item.doses_per_vial;
        }
        let mut token = String::new();
        loop {
            let page = PageRequest::parse(1000, &token, &"policies")?;
            let policies = self.store.list_policies("/", None, None, &page).await?;
            for p in &policies.items {
                let doses = available.get(&(p.facility_id.clone(), p.product_id.clone())).copied().unwrap_or(0);
                if let Some((kind, severity, mut details)) = al::stock_level(doses, p.min_doses, p.max_doses) {
                    let name = facilities.get(&p.facility_id).map_or("", |f| f.name.as_str());
                    details.summary = format!("{name}: {doses} doses available, minimum {}", p.min_doses);
                    let subject = Subject {
                        facility_id: p.facility_id.clone(),
                        product_id: p.product_id.clone(),
                        ..Default::default()
                    };
                    written +=
                        raise(Condition { kind, subject, severity, start: now, through: now, details }, &mut present)
                            .await?;
                }
            }
            if policies.next_page_token.is_empty() {
                break;
            }
            token = policies.next_page_token;
        }

        // Lots expiring within 90 days (or expired) per facility.
        let mut lots: HashMap<(String, String), (i64, i64, String, String)> = HashMap::new();
        for (item, _) in &stock {
            let days = rp::days_to(today, item.expiry);
            if al::expiry_severity(days).is_some() {
                let e = lots.entry((item.facility_id.clone(), item.lot_id.clone())).or_insert((
                    days,
                    0,
                    item.product_id.clone(),
                    item.lot_number.clone(),
                ));
                e.1 += item.balance.vials * item.doses_per_vial;
            }
        }
        for ((facility_id, lot_id), (days, doses, product_id, lot_number)) in lots {
            let Some(severity) = al::expiry_severity(days) else { continue };
            let details = Details {
                stock_doses: Some(doses),
                days_to_expiry: i32::try_from(days).ok(),
                summary: if days < 0 {
                    format!("lot {lot_number} expired {} days ago: {doses} doses on hand", -days)
                } else {
                    format!("lot {lot_number} expires in {days} days: {doses} doses on hand")
                },
                ..Default::default()
            };
            let subject = Subject { facility_id, lot_id, product_id, ..Default::default() };
            written += raise(
                Condition { kind: AlertKind::ExpiryRisk, subject, severity, start: now, through: now, details },
                &mut present,
            )
            .await?;
        }

        // Session wastage over the last 30 days, per cold-chain point (session sites roll up).
        let since = today.checked_sub_days(Days::new(30)).unwrap_or(today);
        let products: HashMap<String, crate::domain::Product> = {
            let page = PageRequest::parse(1000, "", &"products")?;
            self.store.list_products(true, &page).await?.items.into_iter().map(|p| (p.id.clone(), p)).collect()
        };
        let mut usage: HashMap<(String, String), (i64, i64)> = HashMap::new();
        for u in self.store.session_usage("/", None, since, today).await? {
            let id = u.facility_path.trim_end_matches('/').rsplit('/').next().unwrap_or_default().to_owned();
            let owner = match facilities.get(&id) {
                Some(f) if f.kind == FacilityKind::SessionSite => f.parent_id.clone().unwrap_or(id),
                _ => id,
            };
            let e = usage.entry((owner, u.product_id)).or_default();
            e.0 += u.doses_issued;
            e.1 += u.doses_administered;
        }
        for ((facility_id, product_id), (issued, given)) in usage {
            let (Some(rate), Some(p)) = (rp::wastage_rate_bp(issued, given), products.get(&product_id)) else {
                continue;
            };
            if rate > p.acceptable_wastage_bp {
                let details = Details {
                    wastage_rate_bp: Some(rate),
                    acceptable_wastage_bp: Some(p.acceptable_wastage_bp),
                    summary: format!(
                        "{}: wastage {:.1} % over 30 days, acceptable {:.1} %",
                        p.code,
                        f64::from(rate) / 100.0,
                        f64::from(p.acceptable_wastage_bp) / 100.0
                    ),
                    ..Default::default()
                };
                let subject = Subject { facility_id, product_id, ..Default::default() };
                written += raise(
                    Condition {
                        kind: AlertKind::WastageHigh,
                        subject,
                        severity: Severity::Warning,
                        start: now,
                        through: now,
                        details,
                    },
                    &mut present,
                )
                .await?;
            }
        }

        // Dispatched shipments past their expected arrival (or `overdue_days` after dispatch).
        for (s, _, _) in self.store.in_transit("/").await? {
            if s.state != ShipmentState::Dispatched {
                continue;
            }
            let due = match (s.expected_arrival, s.dispatched_at) {
                (Some(d), _) => d,
                (None, Some(t)) => t
                    .date_naive()
                    .checked_add_days(Days::new(u64::try_from(overdue_days).unwrap_or(7)))
                    .unwrap_or(today),
                (None, None) => continue,
            };
            let late = (today - due).num_days();
            if late > 0 {
                let details = Details {
                    days_overdue: i32::try_from(late).ok(),
                    summary: format!("shipment {} is {late} days overdue", s.reference),
                    ..Default::default()
                };
                let subject =
                    Subject { facility_id: s.to_facility_id.clone(), shipment_id: s.id.clone(), ..Default::default() };
                written += raise(
                    Condition {
                        kind: AlertKind::ShipmentOverdue,
                        subject,
                        severity: Severity::Warning,
                        start: now,
                        through: now,
                        details,
                    },
                    &mut present,
                )
                .await?;
            }
        }

        // Whatever is active but no longer present has cleared.
        let kinds = [
            AlertKind::StockOut,
            AlertKind::BelowMinimum,
            AlertKind::ExpiryRisk,
            AlertKind::WastageHigh,
            AlertKind::ShipmentOverdue,
        ]
        .map(AlertKind::as_i32);
        for a in self.store.active_conditions(&kinds).await? {
            if !present.contains(&a.subject.key(a.kind)) {
                written += self.clear_alert(a.kind, &a.subject, now).await?;
            }
        }
        Ok(written)
    }

    /// Runs the stock-alert evaluator and event retention every `every` until the process ends;
    /// a shipment without an expected arrival date is overdue `overdue_days` after dispatch.
    pub fn spawn_stock_alerts(&self, every: Duration, overdue_days: i64) -> tokio::task::JoinHandle<()> {
        let app = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            loop {
                tick.tick().await;
                if let Err(e) = app.evaluate_stock_alerts(overdue_days).await {
                    tracing::warn!(error = %e, "stock alert evaluation failed");
                }
                if let Err(e) = app.store.prune_events(Utc::now() - chrono::Duration::days(30)).await {
                    tracing::warn!(error = %e, "alert event retention failed");
                }
            }
        })
    }
}
