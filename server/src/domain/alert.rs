//! Alerts: kinds, the lifecycle OPEN → ACKNOWLEDGED → RESOLVED, and the stock conditions that
//! raise them (stock-out, below minimum, expiry, wastage, overdue shipments).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::facility::int_enum;

int_enum! {
    /// What an alert is about (numbers as in the API).
    AlertKind {
        /// Reading outside the range (warning).
        Excursion = 1,
        /// Sustained heat.
        Heat = 2,
        /// Freezing.
        Freeze = 3,
        /// No readings.
        NoData = 4,
        /// Mains power off.
        PowerOut = 5,
        /// Probe fault.
        SensorFault = 6,
        /// No available doses of a product with a policy.
        StockOut = 7,
        /// Available doses below the policy minimum.
        BelowMinimum = 8,
        /// Stock of a lot expires within 90 days.
        ExpiryRisk = 9,
        /// Wastage above the acceptable maximum.
        WastageHigh = 10,
        /// A dispatched shipment is overdue.
        ShipmentOverdue = 11,
    }
}

int_enum! {
    /// How urgent; ordered.
    Severity {
        /// For information.
        Info = 1,
        /// Needs attention soon.
        Warning = 2,
        /// Needs action now.
        Alarm = 3,
        /// Vaccine at risk of loss now.
        Critical = 4,
    }
}

int_enum! {
    /// Where an alert is in its handling.
    AlertState {
        /// Raised.
        Open = 1,
        /// Someone is on it.
        Acknowledged = 2,
        /// Closed (final).
        Resolved = 3,
    }
}

int_enum! {
    /// How an alert was resolved (numbers as in the API).
    Resolution {
        /// Sensor fault.
        SensorMalfunction = 1,
        /// Unit repaired.
        UnitRepaired = 2,
        /// Power restored.
        PowerRestored = 3,
        /// Stock replenished.
        StockReplenished = 4,
        /// Stock moved.
        StockMoved = 5,
        /// Stock used or discarded.
        StockUsedOrDiscarded = 6,
        /// Shipment settled.
        ShipmentSettled = 7,
        /// False alarm.
        FalseAlarm = 8,
        /// Other.
        Other = 9,
        /// Withdrawn by the server: late data showed no such episode.
        Superseded = 10,
    }
}

int_enum! {
    /// What happened to an alert.
    EventType {
        /// Opened.
        Opened = 1,
        /// Details changed.
        Updated = 2,
        /// Severity rose.
        Escalated = 3,
        /// Acknowledged.
        Acknowledged = 4,
        /// Resolved.
        Resolved = 5,
        /// Condition cleared.
        ConditionCleared = 6,
    }
}

/// What an alert concerns; one unresolved alert exists per (kind, subject).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Subject {
    /// Facility (always).
    pub facility_id: String,
    /// Storage unit.
    pub storage_unit_id: String,
    /// Lot.
    pub lot_id: String,
    /// Device.
    pub device_id: String,
    /// Product.
    pub product_id: String,
    /// Shipment.
    pub shipment_id: String,
    /// Probe index.
    pub probe: u32,
    /// For cold-chain alarms: the reading time (ms) the episode started at; 0 otherwise.
    #[serde(default)]
    pub episode_start_ms: i64,
}

impl Subject {
    /// The uniqueness key of an alert of `kind` about this subject.
    pub fn key(&self, kind: AlertKind) -> String {
        format!(
            "{}|{}|{}|{}|{}|{}|{}|{}|{}",
            kind.as_i32(),
            self.facility_id,
            self.storage_unit_id,
            self.lot_id,
            self.device_id,
            self.product_id,
            self.shipment_id,
            self.probe,
            self.episode_start_ms
        )
    }
}

/// Measurements behind an alert.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Details {
    /// Lowest temperature, °C.
    pub min_temp_c: Option<f64>,
    /// Highest temperature, °C.
    pub max_temp_c: Option<f64>,
    /// Minutes past the threshold.
    pub minutes_past_threshold: Option<i64>,
    /// Degree-hours above the upper limit.
    pub degree_hours_above_max: Option<f64>,
    /// Last reading before a gap.
    pub last_reading_time: Option<DateTime<Utc>>,
    /// Available doses.
    pub stock_doses: Option<i64>,
    /// Policy minimum.
    pub min_doses: Option<i64>,
    /// Policy maximum.
    pub max_doses: Option<i64>,
    /// Doses to reach the maximum.
    pub quantity_to_max_doses: Option<i64>,
    /// Days to expiry.
    pub days_to_expiry: Option<i32>,
    /// Wastage rate, bp.
    pub wastage_rate_bp: Option<i32>,
    /// Acceptable wastage, bp.
    pub acceptable_wastage_bp: Option<i32>,
    /// Days overdue.
    pub days_overdue: Option<i32>,
    /// Vials quarantined.
    pub quarantined_vials: Option<i64>,
    /// One-line summary.
    pub summary: String,
    /// Raised from the wall clock while the logger was really silent (NO_DATA sweep), so late
    /// data never withdraws it: it records what the district saw at the time.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub observed_live: bool,
}

/// A condition as its evaluator sees it now: raise (or update) the alert, or clear it.
#[derive(Debug, Clone, PartialEq)]
pub struct Condition {
    /// Kind.
    pub kind: AlertKind,
    /// Subject.
    pub subject: Subject,
    /// Severity now.
    pub severity: Severity,
    /// When the condition started.
    pub start: DateTime<Utc>,
    /// The reading (or evaluation) time the condition is known to hold through.
    pub through: DateTime<Utc>,
    /// Measurements now.
    pub details: Details,
}

/// Who acknowledged or resolved, when, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Handling {
    /// Token id.
    pub by: String,
    /// When.
    pub time: DateTime<Utc>,
    /// Resolution number (resolutions only).
    pub resolution: i32,
    /// Comment.
    pub comment: String,
}

/// An alert.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Alert {
    /// Id.
    pub id: String,
    /// Kind.
    pub kind: AlertKind,
    /// Severity.
    pub severity: Severity,
    /// State.
    pub state: AlertState,
    /// Subject.
    pub subject: Subject,
    /// Condition start.
    pub start: DateTime<Utc>,
    /// Condition end.
    pub end: Option<DateTime<Utc>>,
    /// Opened.
    pub opened_at: DateTime<Utc>,
    /// Last change.
    pub updated_at: DateTime<Utc>,
    /// Acknowledgement.
    pub acknowledgement: Option<Handling>,
    /// Resolution.
    pub resolution: Option<Handling>,
    /// Measurements.
    pub details: Details,
    /// Condition still going.
    pub condition_active: bool,
}

/// One change of one alert.
#[derive(Debug, Clone, PartialEq)]
pub struct AlertEvent {
    /// Cursor.
    pub event_id: i64,
    /// What happened.
    pub kind: EventType,
    /// The alert after the change.
    pub alert: Alert,
    /// When.
    pub time: DateTime<Utc>,
}

/// Filters of an alert listing or watch.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AlertFilter {
    /// Only under this facility path.
    pub ancestor_path: Option<String>,
    /// Only this unit.
    pub storage_unit_id: Option<String>,
    /// Only these kinds.
    pub kinds: Vec<i32>,
    /// Only these states.
    pub states: Vec<i32>,
    /// At least this severity.
    pub min_severity: i32,
    /// Only alerts whose condition was going on at or after this time (no end, or an end at or
    /// after it).
    pub start: Option<DateTime<Utc>>,
    /// Only alerts whose condition started before this time.
    pub end: Option<DateTime<Utc>>,
}

/// Expiry risk severity: expired or within 30 days is an alarm, 31..60 days a warning, 61..90 info.
pub fn expiry_severity(days: i64) -> Option<Severity> {
    match days {
        ..=30 => Some(Severity::Alarm),
        31..=60 => Some(Severity::Warning),
        61..=90 => Some(Severity::Info),
        _ => None,
    }
}

/// The stock-level condition of a product at a facility with a policy: stock-out (alarm) at zero
/// available doses, below-minimum (warning) under the minimum, else none.
pub fn stock_level(available_doses: i64, min_doses: i64, max_doses: i64) -> Option<(AlertKind, Severity, Details)> {
    let to_max = (max_doses > 0).then(|| (max_doses - available_doses).max(0));
    let details = Details {
        stock_doses: Some(available_doses),
        min_doses: Some(min_doses),
        max_doses: (max_doses > 0).then_some(max_doses),
        quantity_to_max_doses: to_max,
        ..Default::default()
    };
    if available_doses <= 0 {
        Some((AlertKind::StockOut, Severity::Alarm, details))
    } else if available_doses < min_doses {
        Some((AlertKind::BelowMinimum, Severity::Warning, details))
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stock_levels() {
        assert_eq!(stock_level(0, 100, 500).map(|c| c.0), Some(AlertKind::StockOut));
        let below = stock_level(99, 100, 500);
        assert_eq!(below.as_ref().map(|c| c.0), Some(AlertKind::BelowMinimum));
        assert_eq!(below.and_then(|c| c.2.quantity_to_max_doses), Some(401));
        assert_eq!(stock_level(100, 100, 500), None);
    }

    #[test]
    fn expiry_bands() {
        assert_eq!(expiry_severity(-3), Some(Severity::Alarm));
        assert_eq!(expiry_severity(30), Some(Severity::Alarm));
        assert_eq!(expiry_severity(31), Some(Severity::Warning));
        assert_eq!(expiry_severity(90), Some(Severity::Info));
        assert_eq!(expiry_severity(91), None);
    }

    #[test]
    fn subject_keys_differ_by_kind_and_subject() {
        let s = Subject { facility_id: "f".into(), product_id: "p".into(), ..Default::default() };
        assert_ne!(s.key(AlertKind::StockOut), s.key(AlertKind::BelowMinimum));
        let t = Subject { product_id: "q".into(), ..s.clone() };
        assert_ne!(s.key(AlertKind::StockOut), t.key(AlertKind::StockOut));
    }
}

/// What a condition does to the alert of its (kind, subject).
#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    /// A new alert.
    Open(Alert),
    /// The alert changed, with the event type to record.
    Update(Alert, EventType),
    /// Nothing to record.
    Nothing,
}

/// Applies a present condition. `open` is the unresolved alert of the key, if any; `suppressed`
/// is true when the key's last alert was resolved while its condition was still active (then no
/// new alert opens until the condition clears and starts again).
pub fn raise(
    open: Option<Alert>,
    suppressed: bool,
    c: &Condition,
    now: DateTime<Utc>,
    new_id: impl FnOnce() -> String,
) -> Change {
    match open {
        None if suppressed => Change::Nothing,
        None => Change::Open(Alert {
            id: new_id(),
            kind: c.kind,
            severity: c.severity,
            state: AlertState::Open,
            subject: c.subject.clone(),
            start: c.start,
            end: None,
            opened_at: now,
            updated_at: now,
            acknowledgement: None,
            resolution: None,
            details: c.details.clone(),
            condition_active: true,
        }),
        Some(mut a) => {
            let escalated = c.severity.as_i32() > a.severity.as_i32();
            // Once seen live (the NO_DATA timer), always: a replay's view must not erase it.
            let mut details = c.details.clone();
            details.observed_live |= a.details.observed_live;
            let changed = escalated || a.details != details || !a.condition_active;
            if !changed {
                return Change::Nothing;
            }
            if escalated {
                a.severity = c.severity;
            }
            a.details = details;
            a.condition_active = true;
            a.end = None;
            a.updated_at = now;
            Change::Update(a, if escalated { EventType::Escalated } else { EventType::Updated })
        }
    }
}

/// Marks an alert's condition over at `end`; `None` when it already was.
pub fn clear(mut a: Alert, end: DateTime<Utc>, now: DateTime<Utc>) -> Option<Alert> {
    if !a.condition_active {
        return None;
    }
    a.condition_active = false;
    a.end = Some(end);
    a.updated_at = now;
    Some(a)
}

/// The alert kind of a cold-chain alarm.
pub fn alarm_kind(k: vaxtrace_coldchain::AlarmKind) -> AlertKind {
    use vaxtrace_coldchain::AlarmKind as K;
    match k {
        K::Excursion => AlertKind::Excursion,
        K::Heat => AlertKind::Heat,
        K::Freeze => AlertKind::Freeze,
        K::NoData => AlertKind::NoData,
        K::PowerOut => AlertKind::PowerOut,
        K::SensorFault => AlertKind::SensorFault,
    }
}

/// The alert severity of a cold-chain severity.
pub fn alarm_severity(s: vaxtrace_coldchain::Severity) -> Severity {
    use vaxtrace_coldchain::Severity as S;
    match s {
        S::Warning => Severity::Warning,
        S::Alarm => Severity::Alarm,
        S::Critical => Severity::Critical,
    }
}

/// The measurements of a cold-chain alarm event, with the limit of `profile` (the unit's
/// effective rules, overrides included) it was measured against in the summary.
pub fn alarm_details(
    e: &vaxtrace_coldchain::AlarmEvent,
    unit_name: &str,
    profile: &vaxtrace_coldchain::Profile,
) -> Details {
    let c = |v: Option<i32>| v.map(|x| f64::from(x) / 100.0);
    let (min, max) = (c(e.min_centi), c(e.max_centi));
    let no_data = e.kind == vaxtrace_coldchain::AlarmKind::NoData;
    let summary = match (min, max) {
        (Some(lo), Some(hi)) => format!("{unit_name}: {lo:.1}..{hi:.1} °C for {} min", e.minutes_past_threshold),
        // A NoData episode starts at the last reading before the silence.
        _ if no_data => format!("{unit_name}: no reading for {} min", (e.at_ms - e.start_ms) / 60_000),
        _ => format!("{unit_name}: {:?} for {} min", e.kind, e.minutes_past_threshold),
    };
    let limit = super::thresholds::limit_text(e, profile);
    let summary = if limit.is_empty() { summary } else { format!("{summary} ({limit})") };
    Details {
        min_temp_c: min,
        max_temp_c: max,
        minutes_past_threshold: Some(e.minutes_past_threshold),
        degree_hours_above_max: (e.kind == vaxtrace_coldchain::AlarmKind::Heat).then(|| e.degree_hours()),
        last_reading_time: no_data.then(|| chrono::DateTime::from_timestamp_millis(e.start_ms)).flatten(),
        summary,
        ..Default::default()
    }
}
