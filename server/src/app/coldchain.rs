//! WHO cold-chain alarms from stored readings: each probe's readings are fed to the `coldchain`
//! rules in reading-time order, with the rules' state persisted, and their transitions become
//! alerts. A reading older than what was already evaluated (an agent's backlog, a re-ordered
//! batch) makes that probe replay from the start, so the alarms come out the same whatever the
//! arrival order; an alarm episode is identified by its start time, so a replay finds its alert.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};
use vaxtrace_coldchain as cc;

use super::App;
use crate::domain::TemperatureProfile;
use crate::domain::alert::{self as al, Condition, Subject};
use crate::domain::telemetry::{Device, Probe};
use crate::error::{Error, Result};
use crate::store::ProbeKey;

/// One evaluation at a time per device in this process (the database lock covers replicas; this
/// keeps a process from tying up pool connections waiting on itself).
#[derive(Debug, Default)]
pub(crate) struct ProbeLocks(Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>);

impl ProbeLocks {
    fn get(&self, device: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut m = self.0.lock().unwrap_or_else(|p| p.into_inner());
        m.entry(device.to_owned()).or_default().clone()
    }
}

/// A device and the probes new readings moved, each with the earliest new reading time.
pub(crate) type DeviceProbes = (Device, Vec<(Probe, DateTime<Utc>)>);

/// Where one probe's evaluation resumes: the rules' state and the instant it reached (`None`:
/// from the first reading).
type Plan<'a> = (&'a Device, &'a Probe, cc::State, Option<DateTime<Utc>>, ProbeKey);

fn to_time(ms: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(ms).unwrap_or(DateTime::<Utc>::MIN_UTC)
}

/// The rules of a temperature profile as built in, with no-data at 3 × the device's interval;
/// a unit's alarms run with [`unit_profile`], which adds the unit's overrides.
pub fn profile_for(profile: TemperatureProfile, interval_secs: i64) -> cc::Profile {
    crate::domain::thresholds::base_profile(profile).with_expected_interval_ms(interval_secs.saturating_mul(1000))
}

/// The rules a unit's alarms run with: its profile's ([`profile_for`]), then the unit's own
/// overrides (an overridden no-data limit wins over the interval's).
pub fn unit_profile(unit: &crate::domain::StorageUnit, interval_secs: i64) -> cc::Profile {
    unit.alarm_overrides.apply(profile_for(unit.temperature_profile, interval_secs))
}

/// The alert subject of one episode of a probe in its unit.
fn subject(unit: &crate::domain::StorageUnit, device: &Device, probe: &Probe, episode_start_ms: i64) -> Subject {
    Subject {
        facility_id: unit.facility_id.clone(),
        storage_unit_id: unit.id.clone(),
        device_id: device.id.clone(),
        probe: probe.index,
        episode_start_ms,
        ..Default::default()
    }
}

/// The alert condition of an opening or escalating transition whose episode reaches `through_ms`.
fn condition(
    e: &cc::AlarmEvent,
    subject: Subject,
    unit_name: &str,
    profile: &cc::Profile,
    through_ms: i64,
) -> Condition {
    Condition {
        kind: al::alarm_kind(e.kind),
        subject,
        severity: al::alarm_severity(e.severity),
        start: to_time(e.start_ms),
        through: to_time(through_ms),
        details: al::alarm_details(e, unit_name, profile),
    }
}

impl App {
    /// Raises NO_DATA for every probe of an active device silent for longer than its limit
    /// (3 × the device's interval, or its unit's override) at `now`; returns the alerts opened.
    /// The readings that end the silence — live or an agent's backlog — close it through the
    /// normal evaluation, with the real gap. Probes that never reported have no baseline and are
    /// skipped.
    pub async fn sweep_no_data(&self, now: DateTime<Utc>) -> Result<usize> {
        let mut devices: HashMap<String, Option<Device>> = HashMap::new();
        let mut candidates: Vec<(String, Probe, DateTime<Utc>)> = Vec::new();
        for (device_id, probe, bytes, evaluated_to) in self.store.alarm_states().await? {
            let Some(last) = evaluated_to else { continue };
            if !devices.contains_key(&device_id) {
                let d = self.store.get_device(&device_id).await?.map(|(d, _, _)| d).filter(|d| d.active);
                devices.insert(device_id.clone(), d);
            }
            let Some(Some(device)) = devices.get(&device_id) else { continue };
            let Some(p) = device.probes.iter().find(|p| p.index == probe) else { continue };
            let open = cc::State::from_bytes(&bytes)
                .is_ok_and(|st| st.is_open(&cc::Profile::vaccine_2_8(), cc::AlarmKind::NoData));
            if !open {
                candidates.push((device_id, p.clone(), last));
            }
        }
        // A unit may override the limit, so the candidates' units are read, a thousand per query.
        let mut unit_ids: Vec<String> = candidates.iter().map(|(_, p, _)| p.storage_unit_id.clone()).collect();
        unit_ids.sort_unstable();
        unit_ids.dedup();
        let mut units: HashMap<String, crate::domain::StorageUnit> = HashMap::new();
        for chunk in unit_ids.chunks(1000) {
            units.extend(self.store.units_with_facility(chunk).await?.into_iter().map(|(u, _)| (u.id.clone(), u)));
        }
        let mut opened = 0;
        for (device_id, probe, last) in candidates {
            let Some(Some(device)) = devices.get(&device_id) else { continue };
            let limit_ms = match units.get(&probe.storage_unit_id) {
                Some(u) => unit_profile(u, device.expected_interval_secs).no_data_ms,
                None => device.expected_interval_secs.saturating_mul(3000),
            };
            if (now - last).num_milliseconds() <= limit_ms {
                continue;
            }
            opened += self.no_data_probe(device, &probe, now).await?;
        }
        Ok(opened)
    }

    /// Opens one probe's NO_DATA under the same locks as its evaluation.
    async fn no_data_probe(&self, device: &Device, probe: &Probe, now: DateTime<Utc>) -> Result<usize> {
        let lock = self.probe_locks.get(&device.id);
        let _guard = lock.lock().await;
        let _db_guard = self.store.lock_device_evaluation(&device.id).await?;
        // Re-read under the lock: readings may have arrived since the sweep looked.
        let Some((bytes, evaluated_to)) = self.store.alarm_state(&device.id, probe.index).await? else { return Ok(0) };
        let (unit, _) = self
            .store
            .get_storage_unit(&probe.storage_unit_id)
            .await?
            .ok_or_else(|| Error::Internal(format!("probe unit {} vanished", probe.storage_unit_id)))?;
        let profile = unit_profile(&unit, device.expected_interval_secs);
        let mut state = cc::State::from_bytes(&bytes).map_err(|e| Error::Internal(format!("alarm state: {e:?}")))?;
        let Some(e) = cc::check_no_data(&profile, &mut state, now.timestamp_millis()) else { return Ok(0) };
        let mut c = condition(&e, subject(&unit, device, probe, e.start_ms), &unit.name, &profile, e.at_ms);
        c.details.observed_live = true;
        let ev = self.raise_alert_event(&c).await?;
        self.store.save_alarm_state(&device.id, probe.index, &state.to_bytes(), evaluated_to).await?;
        if ev.is_some() {
            tracing::warn!(device = %device.id, probe = probe.index, unit = %unit.name, "no data from a logger");
        }
        Ok(usize::from(ev.is_some()))
    }

    /// Readings housekeeping now and then every hour: the coming months' partitions
    /// (PostgreSQL) and, with `retention_days`, deleting readings older than that (hourly
    /// rollups are kept, so long-range charts still work).
    pub fn spawn_readings_maintenance(&self, retention_days: Option<u32>) -> tokio::task::JoinHandle<()> {
        let app = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(std::time::Duration::from_secs(3600));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let now = Utc::now();
                let keep_after = retention_days.map(|d| now - chrono::Duration::days(i64::from(d)));
                match app.store.maintain_readings(now, keep_after).await {
                    Ok(n) if n > 0 => tracing::info!(deleted = n, "readings past retention deleted"),
                    Ok(_) => {}
                    Err(e) => tracing::warn!(error = %e, "readings maintenance failed"),
                }
            }
        })
    }

    /// Runs [`App::sweep_no_data`] every `every` until the process ends.
    pub fn spawn_no_data_sweep(&self, every: std::time::Duration) -> tokio::task::JoinHandle<()> {
        let app = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                // First the readings an evaluation missed, so a silence they end is no silence.
                let stale = Utc::now() - chrono::Duration::from_std(every).unwrap_or(chrono::Duration::MAX);
                if let Err(e) = app.evaluate_unevaluated(stale).await {
                    tracing::warn!(error = %e, "evaluating missed readings failed");
                }
                if let Err(e) = app.sweep_no_data(Utc::now()).await {
                    tracing::warn!(error = %e, "no-data sweep failed");
                }
            }
        })
    }

    /// Evaluates the devices whose readings were committed before `before` but never evaluated
    /// (the process was killed between the commit and the evaluation, or the evaluation failed);
    /// returns how many devices were evaluated.
    pub async fn evaluate_unevaluated(&self, before: DateTime<Utc>) -> Result<usize> {
        let mut n = 0;
        loop {
            let ids = self.store.stale_unevaluated(before, 200).await?;
            if ids.is_empty() {
                return Ok(n);
            }
            let mut items: Vec<DeviceProbes> = Vec::with_capacity(ids.len());
            for id in &ids {
                if let Some((device, _, _)) = self.store.get_device(id).await? {
                    // The mark supplies where each probe resumes; "now" only names the probes.
                    let probes = device.probes.iter().map(|p| (p.clone(), Utc::now())).collect();
                    items.push((device, probes));
                }
            }
            self.evaluate_devices(&items).await?;
            n += items.len();
            // A mark that could not be cleared (a probe keeps failing, a device gone) would come
            // back at once: stop and let the next sweep try again.
            let again = self.store.unevaluated_marks(&ids).await?;
            if !again.is_empty() {
                return Ok(n);
            }
        }
    }

    /// Quarantines every lot with available vials in the unit under a heat or freeze alarm, one
    /// exposure per lot; repeated for the same alarm, it only adds lots that were not there yet.
    async fn quarantine_unit(&self, alert: &al::Alert, unit: &crate::domain::StorageUnit) -> Result<usize> {
        let stock = self.store.facility_stock(&unit.facility_id, None).await?;
        let mut exposures = Vec::new();
        let mut drafts = Vec::new();
        for item in stock.iter().filter(|i| i.storage_unit_id == unit.id && i.balance.available() > 0) {
            let x = crate::domain::stock::Exposure {
                id: crate::domain::new_id(),
                alert_id: alert.id.clone(),
                storage_unit_id: unit.id.clone(),
                facility_id: unit.facility_id.clone(),
                lot_id: item.lot_id.clone(),
                product_id: item.product_id.clone(),
                start: alert.start,
                end: None,
                quarantined_vials: 0,
                state: crate::domain::stock::ExposureState::Pending,
                details: alert.details.clone(),
                assessment: None,
            };
            let info = crate::domain::stock::LotInfo {
                lot_id: item.lot_id.clone(),
                product_id: item.product_id.clone(),
                doses_per_vial: item.doses_per_vial,
                expiry: item.expiry,
            };
            let mut d = crate::domain::stock::EntryDraft::new(
                crate::domain::stock::EntryKind::Quarantine,
                &unit.id,
                &unit.facility_id,
                &info,
                0,
            );
            d.quarantine_available = true;
            d.exposure_id = Some(x.id.clone());
            d.comment = format!("{:?} alarm: {}", alert.kind, alert.details.summary);
            exposures.push(x);
            drafts.push(d);
        }
        if exposures.is_empty() {
            return Ok(0);
        }
        let n = self.store.open_exposures(&exposures, &drafts, "system:coldchain").await?;
        if n > 0 {
            tracing::warn!(unit = %unit.name, lots = n, alert = %alert.id, "stock quarantined after a cold-chain alarm");
        }
        Ok(n)
    }

    /// Evaluates one probe after new readings whose earliest reading time is `earliest_new`;
    /// returns the alert events written.
    pub async fn evaluate_probe(&self, device: &Device, probe: &Probe, earliest_new: DateTime<Utc>) -> Result<usize> {
        self.evaluate_devices(&[(device.clone(), vec![(probe.clone(), earliest_new)])]).await
    }

    /// Evaluates the probes of several devices after new readings (each probe with the earliest
    /// reading time of its new readings), with a handful of queries for the whole set: the locks,
    /// the units, the rule states and the readings each in one, the states saved in one. Returns
    /// the alert events written. A probe whose alerts cannot be written is left without a saved
    /// state (its next evaluation replays it) without stopping the others.
    pub(crate) async fn evaluate_devices(&self, items: &[DeviceProbes]) -> Result<usize> {
        let mut ids: Vec<String> = items.iter().map(|(d, _)| d.id.clone()).collect();
        ids.sort_unstable();
        ids.dedup();
        // In id order: every holder of several takes them in the same order (no deadlock); the
        // other evaluators hold one at a time.
        let mut guards = Vec::with_capacity(ids.len());
        for id in &ids {
            guards.push(self.probe_locks.get(id).lock_owned().await);
        }
        // Across replicas too: the state read, the evaluation and the state write happen under it.
        let _db_guard = self.store.lock_devices_evaluation(&ids).await?;
        // Readings committed without being evaluated (a process killed in between, a failed
        // evaluation) left a mark on their device: every probe of it is evaluated from there, which
        // replays the probe when those readings are older than what it had evaluated.
        let marks = self.store.unevaluated_marks(&ids).await?;
        let marked: Vec<DeviceProbes>;
        let items: &[DeviceProbes] = if marks.is_empty() {
            items
        } else {
            marked = items
                .iter()
                .map(|(device, probes)| match marks.get(&device.id) {
                    Some((from, _)) => {
                        let all = device
                            .probes
                            .iter()
                            .map(|p| {
                                let new = probes.iter().filter(|(q, _)| q.index == p.index).map(|(_, t)| *t).min();
                                (p.clone(), new.map_or(*from, |t| t.min(*from)))
                            })
                            .collect();
                        (device.clone(), all)
                    }
                    None => (device.clone(), probes.clone()),
                })
                .collect();
            &marked
        };
        let mut unit_ids: Vec<String> =
            items.iter().flat_map(|(_, ps)| ps.iter().map(|(p, _)| p.storage_unit_id.clone())).collect();
        unit_ids.sort_unstable();
        unit_ids.dedup();
        let mut units: HashMap<String, crate::domain::StorageUnit> = HashMap::new();
        for chunk in unit_ids.chunks(1000) {
            units.extend(self.store.units_with_facility(chunk).await?.into_iter().map(|(u, _)| (u.id.clone(), u)));
        }
        let keys: Vec<(String, u32)> =
            items.iter().flat_map(|(d, ps)| ps.iter().map(|(p, _)| (d.id.clone(), p.index))).collect();
        let mut states = self.store.alarm_states_of(&keys).await?;
        // Where each probe resumes: after what was evaluated, or from the start (first evaluation,
        // or a reading older than what was evaluated: replay).
        let mut plans: Vec<Plan<'_>> = Vec::new();
        for (device, probes) in items {
            for (probe, earliest_new) in probes {
                let (state, after) = match states.remove(&(device.id.clone(), probe.index)) {
                    Some((bytes, to)) if to.is_none_or(|t| *earliest_new > t) => (
                        cc::State::from_bytes(&bytes).map_err(|e| Error::Internal(format!("alarm state: {e:?}")))?,
                        to,
                    ),
                    _ => (cc::State::new(), None),
                };
                let key = ProbeKey {
                    device_id: device.id.clone(),
                    probe: probe.index,
                    storage_unit_id: probe.storage_unit_id.clone(),
                };
                if plans.iter().any(|p| p.4 == key) {
                    continue;
                }
                plans.push((device, probe, state, after, key));
            }
        }
        // Only what each probe measured in its present unit: a re-bound probe's earlier readings
        // belong to another unit's history.
        let asks: Vec<(ProbeKey, Option<DateTime<Utc>>)> = plans.iter().map(|p| (p.4.clone(), p.3)).collect();
        let mut readings = self.store.probes_readings(&asks).await?;
        // Phase 1, pure: the rules over each probe's readings.
        let mut runs = Vec::with_capacity(plans.len());
        for (device, probe, mut state, after, key) in plans {
            let Some(unit) = units.get(&probe.storage_unit_id) else {
                tracing::error!(device = %device.id, unit = %probe.storage_unit_id, "probe unit vanished");
                continue;
            };
            let rows = readings.remove(&key).unwrap_or_default();
            let profile = unit_profile(unit, device.expected_interval_secs);
            let (events, last) = run_rules(&profile, &mut state, after, &rows);
            runs.push(Run { device, probe, unit, profile, state, after, rows, events, last });
        }
        // The alerts are written one transaction each, the state after them: a process killed in
        // between would leave alerts the saved state knows nothing of, and the next evaluation,
        // resuming from that state, would never revisit them (an episode split by a gap that was
        // only a batch in flight at another replica). So a probe about to write drops its saved
        // state first: if the writes do not finish, its next evaluation replays it from the first
        // reading and reconciles every alert. Evaluations that write nothing (most) skip this.
        let writing: Vec<(String, u32)> = runs
            .iter()
            .filter(|r| !r.events.is_empty() || (r.after.is_none() && !r.rows.is_empty()))
            .map(|r| (r.device.id.clone(), r.probe.index))
            .collect();
        self.store.forget_alarm_states(&writing).await?;
        // Phase 2: the alerts.
        let mut written = 0;
        let mut saves = Vec::with_capacity(runs.len());
        let mut failed: std::collections::HashSet<String> = std::collections::HashSet::new();
        for run in runs {
            let (device, probe) = (run.device, run.probe);
            match self.write_events(&run).await {
                Ok(n) => {
                    written += n;
                    saves.push((device.id.clone(), probe.index, run.state.to_bytes().to_vec(), run.last));
                }
                Err(e) => {
                    failed.insert(device.id.clone());
                    tracing::error!(device = %device.id, probe = probe.index, error = %e, "alarm evaluation failed");
                }
            }
        }
        self.store.save_alarm_states(&saves).await?;
        // A mark stays when a probe failed (the sweep retries) or a commit moved it meanwhile.
        let done: Vec<(String, i64)> = marks
            .into_iter()
            .filter(|(id, _)| !failed.contains(id))
            .map(|(id, (_, generation))| (id, generation))
            .collect();
        if !done.is_empty() {
            self.store.clear_unevaluated_marks(&done).await?;
        }
        Ok(written)
    }

    /// Writes one probe's rule transitions as alerts (and, after a replay, withdraws the alerts
    /// it no longer produces); returns the events written.
    async fn write_events(&self, run: &Run<'_>) -> Result<usize> {
        let (device, probe, unit, profile, state) = (run.device, run.probe, run.unit, &run.profile, &run.state);
        let (after, readings, events, last) = (run.after, run.rows.as_slice(), &run.events, run.last);
        let last_ms = last.map_or(0, |t| t.timestamp_millis());
        let mut reach: HashMap<(cc::AlarmKind, i64), i64> = HashMap::new();
        for e in events {
            let r = reach.entry((e.kind, e.start_ms)).or_insert(last_ms);
            if e.transition == cc::Transition::Closed {
                // The closing reading is not part of the episode, and the next episode may start
                // at that very reading: its alert must not be mistaken for part of this one.
                *r = e.at_ms - 1;
            }
        }
        let mut written = 0;
        for e in events {
            let subject = subject(unit, device, probe, e.start_ms);
            let kind = al::alarm_kind(e.kind);
            let quarantines = matches!(kind, al::AlertKind::Heat | al::AlertKind::Freeze);
            let ev = match e.transition {
                cc::Transition::Opened | cc::Transition::Escalated => {
                    let through = reach.get(&(e.kind, e.start_ms)).copied().unwrap_or(e.at_ms);
                    let c = condition(e, subject, &unit.name, profile, through);
                    let ev = self.raise_alert_event(&c).await?;
                    if let (true, Some(ev)) = (quarantines, &ev)
                        && ev.kind == al::EventType::Opened
                    {
                        self.quarantine_unit(&ev.alert, unit).await?;
                    }
                    ev
                }
                cc::Transition::Closed => {
                    let ev = self.clear_alert_event(kind, &subject, to_time(e.at_ms)).await?;
                    if let (true, Some(ev)) = (quarantines, &ev) {
                        let details = al::alarm_details(e, &unit.name, profile);
                        self.store.close_exposures(&ev.alert.id, to_time(e.at_ms), &details).await?;
                    }
                    ev
                }
            };
            written += usize::from(ev.is_some());
        }
        // A replay from the first reading is the whole truth about this probe: an episode seen
        // earlier from part of the data (a gap that was only a gap in arrival, a piece of a longer
        // episode) that the replay does not produce is withdrawn. Alerts the NO_DATA sweep raised
        // from a real silence stay: they record what was seen at the time.
        if after.is_none()
            && let Some(first) = readings.first()
        {
            let produced: std::collections::HashSet<(al::AlertKind, i64)> =
                events.iter().map(|e| (al::alarm_kind(e.kind), e.start_ms)).collect();
            let since = first.time.timestamp_millis();
            for a in self.store.probe_alerts(&device.id, probe.index, &unit.id, since).await? {
                // A resolved alert (by a person, or withdrawn already) is left as it is.
                let resolved = a.state == al::AlertState::Resolved;
                if resolved || a.details.observed_live || produced.contains(&(a.kind, a.subject.episode_start_ms)) {
                    continue;
                }
                let handling = al::Handling {
                    by: "system:coldchain".into(),
                    time: crate::domain::now(),
                    resolution: al::Resolution::Superseded.as_i32(),
                    comment: "late or re-ordered readings showed no such episode".into(),
                };
                if let Some(ev) = self.store.supersede(&a.id, &handling).await? {
                    tracing::info!(alert = %ev.alert.id, kind = ?ev.alert.kind, "alert withdrawn after a replay");
                    // Its exposures end now, so a district officer can assess the stock it held.
                    if matches!(ev.alert.kind, al::AlertKind::Heat | al::AlertKind::Freeze) {
                        self.store.close_exposures(&ev.alert.id, handling.time, &ev.alert.details).await?;
                    }
                    written += self.published(Some(ev));
                }
            }
        }
        // While a heat or freeze alarm lasts, stock put into the unit (a delivery, a transfer) is
        // exposed too: quarantine it at each evaluation, not only when the alarm opened.
        if [cc::AlarmKind::Heat, cc::AlarmKind::Freeze].into_iter().any(|k| state.is_open(profile, k)) {
            // This probe's alerts only (indexed by device and probe), not every active one.
            for a in self.store.probe_alerts(&device.id, probe.index, &unit.id, 0).await? {
                if a.condition_active && matches!(a.kind, al::AlertKind::Heat | al::AlertKind::Freeze) {
                    self.quarantine_unit(&a, unit).await?;
                }
            }
        }
        Ok(written)
    }
}

/// One probe's evaluation between the rules and the writes.
struct Run<'a> {
    device: &'a Device,
    probe: &'a Probe,
    unit: &'a crate::domain::StorageUnit,
    profile: cc::Profile,
    state: cc::State,
    after: Option<DateTime<Utc>>,
    rows: Vec<crate::domain::telemetry::StoredReading>,
    events: Vec<cc::AlarmEvent>,
    last: Option<DateTime<Utc>>,
}

/// Runs one probe's rules over its readings (from `after` on, `state` being the rules' state
/// there); returns the transitions and how far the state now reaches.
fn run_rules(
    profile: &cc::Profile,
    state: &mut cc::State,
    after: Option<DateTime<Utc>>,
    readings: &[crate::domain::telemetry::StoredReading],
) -> (Vec<cc::AlarmEvent>, Option<DateTime<Utc>>) {
    let mut events: Vec<cc::AlarmEvent> = Vec::new();
    let mut last = after;
    for r in readings {
        let mut reading = cc::Reading::from_celsius(r.time.timestamp_millis(), r.temp_c.unwrap_or(f64::NAN))
            .with_sensor_fault(r.sensor_fault);
        if let Some(p) = r.power_on {
            reading = reading.with_power(p);
        }
        last = Some(r.time);
        if let Ok(evs) = cc::evaluate(profile, state, reading) {
            events.extend_from_slice(evs.as_slice());
        }
    }
    (events, last)
}
