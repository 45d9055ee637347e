//! The alarm state machine: pure functions over (profile, state, reading).

use core::fmt;

use crate::events::{AlarmEvent, AlarmKind, Events, Severity, Transition};
use crate::profile::{Accumulation, Escalation, MINUTE_MS, Profile, Rule};
use crate::reading::Reading;
use crate::state::{RuleState, Run, State, Window};

/// Why `evaluate` refused a reading; the state is left untouched in both cases.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EvalError {
    /// The reading is older than the last evaluated one; replay the unit's history in order.
    OutOfOrder {
        /// Time of the last evaluated reading.
        last_ms: i64,
        /// Time of the rejected reading.
        time_ms: i64,
    },
    /// A reading with this exact time was already evaluated; safe to ignore.
    Duplicate {
        /// The repeated time.
        time_ms: i64,
    },
}

impl fmt::Display for EvalError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::OutOfOrder { last_ms, time_ms } => {
                write!(f, "reading at {time_ms} ms is older than last reading at {last_ms} ms")
            }
            Self::Duplicate { time_ms } => write!(f, "reading at {time_ms} ms already evaluated"),
        }
    }
}

impl core::error::Error for EvalError {}

/// How an alarm is labelled and when it opens/escalates.
#[derive(Clone, Copy)]
struct Track {
    kind: AlarmKind,
    rule: Option<u8>,
    duration_ms: i64,
    severity: Severity,
    escalation: Option<Escalation>,
}

/// The parts of the current reading the trackers need.
#[derive(Clone, Copy)]
struct Sample {
    now: i64,
    temp: Option<i32>,
    /// The silence since this tracker's previous sample exceeded the no-data limit.
    gap: bool,
}

const CENTI_MS_PER_CENTI_HOUR: i64 = 3_600_000;

fn event(run: &Run, track: &Track, transition: Transition, severity: Severity, at_ms: i64, past_ms: i64) -> AlarmEvent {
    AlarmEvent {
        kind: track.kind,
        transition,
        severity,
        rule: track.rule,
        start_ms: run.start_ms,
        at_ms,
        min_centi: run.has_temp.then_some(run.min_centi),
        max_centi: run.has_temp.then_some(run.max_centi),
        past_ms,
        minutes_past_threshold: past_ms / MINUTE_MS,
        centi_degree_hours: run.degree_centi_ms / CENTI_MS_PER_CENTI_HOUR,
    }
}

fn is_gap(prev: Option<i64>, now: i64, limit: i64) -> bool {
    prev.is_some_and(|p| now.saturating_sub(p) > limit)
}

/// Ends the run, emitting `Closed` if its alarm was open.
fn close(run: &mut Run, track: &Track, now: i64, past_ms: i64, out: &mut Events) {
    if let Some(severity) = run.open {
        out.push(event(run, track, Transition::Closed, severity, now, past_ms));
    }
    *run = Run::default();
}

/// Opens the alarm when `satisfied`, then escalates once `measure` reaches the escalation time.
fn open_or_escalate(run: &mut Run, track: &Track, satisfied: bool, measure: i64, now: i64, out: &mut Events) {
    if run.open.is_none() && satisfied {
        run.open = Some(track.severity);
        out.push(event(run, track, Transition::Opened, track.severity, now, measure));
    }
    if let (Some(current), Some(esc)) = (run.open, track.escalation)
        && esc.severity > current
        && measure >= esc.after_ms
    {
        run.open = Some(esc.severity);
        out.push(event(run, track, Transition::Escalated, esc.severity, now, measure));
    }
}

/// Continuous rule: `excess` is `Some(distance past threshold)` when the reading is past it.
fn step_continuous(run: &mut Run, track: &Track, s: Sample, excess: Option<i64>, out: &mut Events) {
    if s.gap && run.active {
        close(run, track, s.now, run.duration_ms(), out);
    }
    let Some(excess) = excess else {
        if run.active {
            close(run, track, s.now, run.duration_ms(), out);
        }
        return;
    };
    if run.active {
        run.extend(s.now, excess);
    } else {
        *run = Run::begin(s.now);
        run.last_excess = excess;
    }
    if let Some(t) = s.temp {
        run.note_temp(t);
    }
    let duration = run.duration_ms();
    open_or_escalate(run, track, duration >= track.duration_ms, duration, s.now, out);
}

/// Cumulative rule: time between two consecutive past readings (no gap) is added to the window.
fn step_cumulative(
    rs: &mut RuleState,
    track: &Track,
    window_ms: i64,
    s: Sample,
    prev_temp_ms: Option<i64>,
    excess: Option<i64>,
    out: &mut Events,
) {
    let bucket_ms = Window::bucket_ms(window_ms);
    rs.window.advance(s.now, bucket_ms);
    let run = &mut rs.run;
    if let Some(excess) = excess {
        let prev_past = run.active && prev_temp_ms == Some(run.last_ms);
        if prev_past && !s.gap {
            rs.window.add(run.last_ms, s.now, bucket_ms);
            run.extend(s.now, excess);
        } else if run.active {
            // The episode goes on, but the time since its previous past reading was not past time.
            run.last_ms = s.now;
            run.last_excess = excess;
        } else {
            *run = Run::begin(s.now);
            run.last_excess = excess;
        }
        if let Some(t) = s.temp {
            run.note_temp(t);
        }
    }
    let total = rs.window.total();
    let total_ms = i64::try_from(total).unwrap_or(i64::MAX);
    let needed = u64::try_from(track.duration_ms).unwrap_or(0);
    // `total > 0 || past` keeps a zero-duration rule from staying open on an empty window.
    let satisfied = run.active && total >= needed && (total > 0 || excess.is_some());
    if run.open.is_some() && !satisfied {
        close(run, track, s.now, total_ms, out);
        if let Some(excess) = excess {
            *run = Run::begin(s.now);
            run.last_excess = excess;
            if let Some(t) = s.temp {
                run.note_temp(t);
            }
        }
    } else {
        open_or_escalate(run, track, satisfied, total_ms, s.now, out);
    }
    if run.open.is_none() && run.active && total == 0 && excess.is_none() {
        *run = Run::default();
    }
}

/// Flag-driven alarms (power, sensor fault): a run of readings with `flag` set.
fn step_flag(run: &mut Run, track: &Track, s: Sample, flag: bool, strict: bool, out: &mut Events) {
    if s.gap && run.active {
        close(run, track, s.now, run.duration_ms(), out);
    }
    if !flag {
        if run.active {
            close(run, track, s.now, run.duration_ms(), out);
        }
        return;
    }
    if run.active {
        run.last_ms = s.now;
    } else {
        *run = Run::begin(s.now);
    }
    if let Some(t) = s.temp {
        run.note_temp(t);
    }
    let duration = run.duration_ms();
    let limit = track.duration_ms.max(0);
    let satisfied = if strict { duration > limit } else { duration >= limit };
    open_or_escalate(run, track, satisfied, duration, s.now, out);
}

fn no_data_event(transition: Transition, last_ms: i64, at_ms: i64) -> AlarmEvent {
    AlarmEvent {
        kind: AlarmKind::NoData,
        transition,
        severity: Severity::Alarm,
        rule: None,
        start_ms: last_ms,
        at_ms,
        min_centi: None,
        max_centi: None,
        past_ms: at_ms.saturating_sub(last_ms),
        minutes_past_threshold: at_ms.saturating_sub(last_ms) / MINUTE_MS,
        centi_degree_hours: 0,
    }
}

fn rule_track(index: usize, rule: &Rule) -> Track {
    Track {
        kind: rule.kind,
        rule: u8::try_from(index).ok(),
        duration_ms: rule.duration_ms,
        severity: rule.severity,
        escalation: rule.escalation,
    }
}

/// Evaluates one reading against the profile, updating `state`, and returns the alarm transitions.
///
/// Contract: feed each unit's readings in strictly increasing `time_ms`. An older reading returns
/// `EvalError::OutOfOrder` and a same-time one `EvalError::Duplicate`; neither changes `state`.
/// To ingest late data, re-evaluate the unit's history from `State::new()` in time order
/// (see `evaluate_all`). Events are emitted in this order: NoData, SensorFault, PowerOut,
/// Excursion, then the profile's rules by slot.
pub fn evaluate(profile: &Profile, state: &mut State, reading: Reading) -> Result<Events, EvalError> {
    let now = reading.time_ms;
    if let Some(last_ms) = state.last_ms {
        if now < last_ms {
            return Err(EvalError::OutOfOrder { last_ms, time_ms: now });
        }
        if now == last_ms {
            return Err(EvalError::Duplicate { time_ms: now });
        }
    }
    let limit = profile.no_data_ms.max(0);
    let mut out = Events::new();

    let gap_any = is_gap(state.last_ms, now, limit);
    if let Some(last_ms) = state.last_ms {
        if gap_any && !state.no_data_open {
            out.push(no_data_event(Transition::Opened, last_ms, last_ms.saturating_add(limit)));
        }
        // Any reading ends an open NoData, even one taken before the silence was noticed
        // (a logger uploading its buffer after an outage).
        if gap_any || state.no_data_open {
            out.push(no_data_event(Transition::Closed, last_ms, now));
        }
    }
    state.no_data_open = false;

    let fault = profile.is_sensor_fault(&reading);
    let temp = (!fault).then_some(reading.centi_c);

    let fault_track =
        Track { kind: AlarmKind::SensorFault, rule: None, duration_ms: 0, severity: Severity::Alarm, escalation: None };
    let s = Sample { now, temp: None, gap: gap_any };
    step_flag(&mut state.fault, &fault_track, s, fault, false, &mut out);

    if let Some(on) = reading.power_on {
        let power_track = Track {
            kind: AlarmKind::PowerOut,
            rule: None,
            duration_ms: profile.power_out_ms,
            severity: Severity::Alarm,
            escalation: None,
        };
        let s = Sample { now, temp, gap: is_gap(state.last_power_ms, now, limit) };
        step_flag(&mut state.power, &power_track, s, !on, true, &mut out);
        state.last_power_ms = Some(now);
    }

    if let Some(t) = temp {
        let prev_temp_ms = state.last_temp_ms;
        let s = Sample { now, temp, gap: is_gap(prev_temp_ms, now, limit) };
        let (low, high) = (profile.range_low_centi, profile.range_high_centi);
        let outside = i64::from(low).saturating_sub(i64::from(t)).max(i64::from(t).saturating_sub(i64::from(high)));
        let excursion_track = Track {
            kind: AlarmKind::Excursion,
            rule: None,
            duration_ms: 0,
            severity: Severity::Warning,
            escalation: None,
        };
        step_continuous(&mut state.excursion, &excursion_track, s, (t < low || t > high).then_some(outside), &mut out);
        for (index, (slot, rs)) in profile.rules.iter().zip(state.rules.iter_mut()).enumerate() {
            let Some(rule) = slot else { continue };
            let track = rule_track(index, rule);
            let excess = rule
                .comparison
                .matches(t, rule.threshold_centi)
                .then(|| rule.comparison.excess(t, rule.threshold_centi));
            match rule.accumulation {
                Accumulation::Continuous => step_continuous(&mut rs.run, &track, s, excess, &mut out),
                Accumulation::Cumulative { window_ms } => {
                    step_cumulative(rs, &track, window_ms, s, prev_temp_ms, excess, &mut out);
                }
            }
        }
        state.last_temp_ms = Some(now);
    }

    state.last_ms = Some(now);
    Ok(out)
}

/// Opens NoData when more than `profile.no_data_ms` has passed since the last reading.
///
/// Call it from a timer with the current wall-clock time. The event's `at_ms` is the last
/// reading + limit (not `now_ms`), so it matches what `evaluate` reports when the gap is only
/// seen on the next reading. Returns `None` before the first reading or when already open.
pub fn check_no_data(profile: &Profile, state: &mut State, now_ms: i64) -> Option<AlarmEvent> {
    let last_ms = state.last_ms?;
    let limit = profile.no_data_ms.max(0);
    if state.no_data_open || !is_gap(Some(last_ms), now_ms, limit) {
        return None;
    }
    state.no_data_open = true;
    Some(no_data_event(Transition::Opened, last_ms, last_ms.saturating_add(limit)))
}

/// Replays readings the documented way: stable sort by time, skip repeated times (first wins), evaluate from a fresh state.
#[cfg(any(test, feature = "alloc"))]
pub fn evaluate_all(profile: &Profile, readings: &mut [Reading]) -> alloc::vec::Vec<AlarmEvent> {
    readings.sort_by_key(|r| r.time_ms);
    let mut state = State::new();
    let mut events = alloc::vec::Vec::new();
    for reading in readings.iter() {
        // After sorting, the only possible error is Duplicate, which the contract says to skip.
        if let Ok(batch) = evaluate(profile, &mut state, *reading) {
            events.extend_from_slice(&batch);
        }
    }
    events
}
