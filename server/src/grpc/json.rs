//! The proto3 JSON form of the messages webhooks carry, by hand for the few that need it:
//! lowerCamelCase names, enums by name, 64-bit integers and Timestamps as strings, and fields at
//! their default left out (but `optional` fields whenever set), as every protobuf JSON parser
//! expects.

use serde_json::{Map, Value};
use vaxtrace_proto::v1 as pb;

use crate::domain::alert::AlertEvent;

/// One AlertEvent as the JSON document a webhook receives.
pub fn alert_event(e: AlertEvent) -> Value {
    let e = super::alert::event(e);
    let mut o = Obj::default();
    o.uint64("eventId", e.event_id);
    o.enumeration("type", e.r#type, |v| pb::AlertEventType::try_from(v).ok().map(|t| t.as_str_name()));
    o.message("alert", e.alert.map(alert));
    o.timestamp("time", e.time.as_ref());
    o.into()
}

fn alert(a: pb::Alert) -> Value {
    let mut o = Obj::default();
    o.string("id", a.id);
    o.enumeration("kind", a.kind, |v| pb::AlertKind::try_from(v).ok().map(|k| k.as_str_name()));
    o.enumeration("severity", a.severity, |v| pb::AlertSeverity::try_from(v).ok().map(|k| k.as_str_name()));
    o.enumeration("state", a.state, |v| pb::AlertState::try_from(v).ok().map(|k| k.as_str_name()));
    o.message("subject", a.subject.map(subject));
    o.timestamp("startTime", a.start_time.as_ref());
    o.timestamp("endTime", a.end_time.as_ref());
    o.timestamp("openTime", a.open_time.as_ref());
    o.timestamp("updateTime", a.update_time.as_ref());
    o.message("acknowledgement", a.acknowledgement.map(acknowledgement));
    o.message("resolution", a.resolution.map(resolution));
    o.message("details", a.details.map(details));
    o.boolean("conditionActive", a.condition_active);
    o.into()
}

fn subject(s: pb::AlertSubject) -> Value {
    let mut o = Obj::default();
    o.string("facilityId", s.facility_id);
    o.string("storageUnitId", s.storage_unit_id);
    o.string("lotId", s.lot_id);
    o.string("deviceId", s.device_id);
    o.string("productId", s.product_id);
    o.string("shipmentId", s.shipment_id);
    o.int32("probe", i64::from(s.probe));
    o.into()
}

fn acknowledgement(a: pb::AlertAcknowledgement) -> Value {
    let mut o = Obj::default();
    o.string("by", a.by);
    o.timestamp("time", a.time.as_ref());
    o.string("comment", a.comment);
    o.into()
}

fn resolution(r: pb::AlertResolutionRecord) -> Value {
    let mut o = Obj::default();
    o.string("by", r.by);
    o.timestamp("time", r.time.as_ref());
    o.enumeration("resolution", r.resolution, |v| pb::AlertResolution::try_from(v).ok().map(|k| k.as_str_name()));
    o.string("comment", r.comment);
    o.into()
}

fn details(d: pb::AlertDetails) -> Value {
    let mut o = Obj::default();
    o.optional_double("minTempC", d.min_temp_c);
    o.optional_double("maxTempC", d.max_temp_c);
    o.optional_int64("minutesPastThreshold", d.minutes_past_threshold);
    o.optional_double("degreeHoursAboveMax", d.degree_hours_above_max);
    o.timestamp("lastReadingTime", d.last_reading_time.as_ref());
    o.optional_int64("stockDoses", d.stock_doses);
    o.optional_int64("minDoses", d.min_doses);
    o.optional_int64("maxDoses", d.max_doses);
    o.optional_int64("quantityToMaxDoses", d.quantity_to_max_doses);
    o.optional_int32("daysToExpiry", d.days_to_expiry);
    o.optional_int32("wastageRateBp", d.wastage_rate_bp);
    o.optional_int32("acceptableWastageBp", d.acceptable_wastage_bp);
    o.optional_int32("daysOverdue", d.days_overdue);
    o.optional_int64("quarantinedVials", d.quarantined_vials);
    o.string("summary", d.summary);
    o.into()
}

/// A JSON object under construction, one method per proto3 JSON field rule.
#[derive(Debug, Default)]
struct Obj(Map<String, Value>);

impl From<Obj> for Value {
    fn from(o: Obj) -> Value {
        Value::Object(o.0)
    }
}

impl Obj {
    fn string(&mut self, name: &str, v: String) {
        if !v.is_empty() {
            self.0.insert(name.to_owned(), Value::String(v));
        }
    }

    fn boolean(&mut self, name: &str, v: bool) {
        if v {
            self.0.insert(name.to_owned(), Value::Bool(true));
        }
    }

    /// 32-bit integers are JSON numbers.
    fn int32(&mut self, name: &str, v: i64) {
        if v != 0 {
            self.0.insert(name.to_owned(), Value::from(v));
        }
    }

    fn optional_int32(&mut self, name: &str, v: Option<i32>) {
        if let Some(v) = v {
            self.0.insert(name.to_owned(), Value::from(v));
        }
    }

    /// 64-bit integers are strings: JavaScript numbers lose precision above 2^53.
    fn uint64(&mut self, name: &str, v: u64) {
        if v != 0 {
            self.0.insert(name.to_owned(), Value::String(v.to_string()));
        }
    }

    fn optional_int64(&mut self, name: &str, v: Option<i64>) {
        if let Some(v) = v {
            self.0.insert(name.to_owned(), Value::String(v.to_string()));
        }
    }

    /// Doubles are numbers, except the non-finite ones, which JSON cannot write.
    fn optional_double(&mut self, name: &str, v: Option<f64>) {
        let Some(v) = v else { return };
        let json = if v.is_nan() {
            Value::String("NaN".into())
        } else if v.is_infinite() {
            Value::String(if v > 0.0 { "Infinity" } else { "-Infinity" }.into())
        } else {
            serde_json::Number::from_f64(v).map_or(Value::Null, Value::Number)
        };
        self.0.insert(name.to_owned(), json);
    }

    /// Enums by name; a number this build does not know stays a number, as proto3 JSON says.
    fn enumeration(&mut self, name: &str, v: i32, name_of: impl Fn(i32) -> Option<&'static str>) {
        if v != 0 {
            let json = name_of(v).map_or_else(|| Value::from(v), |n| Value::String(n.to_owned()));
            self.0.insert(name.to_owned(), json);
        }
    }

    fn message(&mut self, name: &str, v: Option<Value>) {
        if let Some(v) = v {
            self.0.insert(name.to_owned(), v);
        }
    }

    /// RFC 3339 in UTC with "Z" and 0, 3, 6 or 9 fractional digits.
    fn timestamp(&mut self, name: &str, t: Option<&prost_types::Timestamp>) {
        let Some(t) = t else { return };
        let Some(dt) = chrono::DateTime::from_timestamp(t.seconds, u32::try_from(t.nanos).unwrap_or(0)) else {
            return;
        };
        let text = dt.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true);
        self.0.insert(name.to_owned(), Value::String(text));
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone as _;

    use super::*;
    use crate::domain::alert::{Alert, AlertKind, AlertState, Details, EventType, Severity, Subject};

    #[test]
    fn alert_event_in_proto3_json() {
        let t = chrono::Utc.with_ymd_and_hms(2026, 11, 26, 10, 0, 0).single().unwrap_or_default();
        let alert = Alert {
            id: "a1".into(),
            kind: AlertKind::Heat,
            severity: Severity::Critical,
            state: AlertState::Open,
            subject: Subject { facility_id: "f1".into(), probe: 0, ..Default::default() },
            start: t,
            end: None,
            opened_at: t + chrono::Duration::milliseconds(1500),
            updated_at: t,
            acknowledgement: None,
            resolution: None,
            details: Details {
                min_temp_c: Some(8.5),
                minutes_past_threshold: Some(0),
                quarantined_vials: Some(9_007_199_254_740_993),
                summary: "ILR 1".into(),
                ..Default::default()
            },
            condition_active: true,
        };
        let json = alert_event(AlertEvent { event_id: 42, kind: EventType::Opened, alert, time: t });
        let expected = serde_json::json!({
            "eventId": "42",
            "type": "ALERT_EVENT_TYPE_OPENED",
            "time": "2026-11-26T10:00:00Z",
            "alert": {
                "id": "a1",
                "kind": "ALERT_KIND_HEAT",
                "severity": "ALERT_SEVERITY_CRITICAL",
                "state": "ALERT_STATE_OPEN",
                "subject": {"facilityId": "f1"},
                "startTime": "2026-11-26T10:00:00Z",
                "openTime": "2026-11-26T10:00:01.500Z",
                "updateTime": "2026-11-26T10:00:00Z",
                "details": {
                    "minTempC": 8.5,
                    "minutesPastThreshold": "0",
                    "quarantinedVials": "9007199254740993",
                    "summary": "ILR 1"
                },
                "conditionActive": true
            }
        });
        assert_eq!(json, expected);
    }
}
