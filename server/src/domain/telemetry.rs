//! Loggers, their probes, and the rules for incoming readings: what is rejected and how far the
//! end-to-end ack may advance.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::validate;
use crate::error::{Error, Result};

/// A probe of a logger, placed in one storage unit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Probe {
    /// Index on the device, 0..15.
    pub index: u32,
    /// The storage unit it measures.
    pub storage_unit_id: String,
    /// Label.
    pub label: String,
}

/// A temperature logger.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Device {
    /// Id: the MQTT username and topic segment.
    pub id: String,
    /// Manufacturer serial, unique.
    pub serial: String,
    /// Display name.
    pub name: String,
    /// Make and model.
    pub model: String,
    /// Facility.
    pub facility_id: String,
    /// Probes.
    pub probes: Vec<Probe>,
    /// Expected seconds between readings.
    pub expected_interval_secs: i64,
    /// Accept unsigned batches (third-party loggers).
    pub unsigned_allowed: bool,
    /// Current key version.
    pub key_version: i32,
    /// When the key was issued.
    pub key_rotated_at: DateTime<Utc>,
    /// Last heard from.
    pub last_seen_at: Option<DateTime<Utc>>,
    /// Every reading up to this seq is committed.
    pub last_seq: i64,
    /// Status topic says online.
    pub online: bool,
    /// Not decommissioned.
    pub active: bool,
    /// Registered.
    pub created_at: DateTime<Utc>,
    /// Last changed.
    pub updated_at: DateTime<Utc>,
}

/// Raw device fields from any transport.
#[derive(Debug, Clone, Default)]
pub struct DeviceInput {
    /// Serial.
    pub serial: String,
    /// Name.
    pub name: String,
    /// Model.
    pub model: String,
    /// Facility id.
    pub facility_id: String,
    /// Probes (index, unit, label).
    pub probes: Vec<(u32, String, String)>,
    /// Expected interval in seconds.
    pub expected_interval_secs: i64,
    /// Unsigned allowed.
    pub unsigned_allowed: bool,
}

/// A validated registration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewDevice {
    /// Serial.
    pub serial: String,
    /// Name.
    pub name: String,
    /// Model.
    pub model: String,
    /// Facility.
    pub facility_id: String,
    /// Probes.
    pub probes: Vec<Probe>,
    /// Interval, seconds.
    pub expected_interval_secs: i64,
    /// Unsigned allowed.
    pub unsigned_allowed: bool,
}

impl NewDevice {
    /// Validates a registration; errors name the field.
    pub fn parse(d: DeviceInput) -> Result<Self> {
        if d.probes.is_empty() || d.probes.len() > 16 {
            return Err(Error::invalid("device.probes", "a device has 1..16 probes"));
        }
        let mut probes: Vec<Probe> = Vec::with_capacity(d.probes.len());
        for (i, (index, unit, label)) in d.probes.into_iter().enumerate() {
            if index > 15 {
                return Err(Error::invalid(format!("device.probes[{i}].index"), "must be within 0..15"));
            }
            if probes.iter().any(|p| p.index == index) {
                return Err(Error::invalid_because(
                    format!("device.probes[{i}].index"),
                    "DUPLICATE_PROBE",
                    "each probe index once",
                ));
            }
            probes.push(Probe {
                index,
                storage_unit_id: validate::id(&format!("device.probes[{i}].storage_unit_id"), &unit)?,
                label: validate::optional_text(&format!("device.probes[{i}].label"), &label, 100)?,
            });
        }
        if !(60..=86_400).contains(&d.expected_interval_secs) {
            return Err(Error::invalid("device.expected_interval", "must be within 1 minute..24 hours"));
        }
        Ok(NewDevice {
            serial: validate::text("device.serial", &d.serial, 64)?,
            name: validate::optional_text("device.name", &d.name, 200)?,
            model: validate::optional_text("device.model", &d.model, 200)?,
            facility_id: validate::id("device.facility_id", &d.facility_id)?,
            probes,
            expected_interval_secs: d.expected_interval_secs,
            unsigned_allowed: d.unsigned_allowed,
        })
    }
}

/// A reading as received, before validation.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Incoming {
    /// Seq.
    pub seq: u64,
    /// When taken.
    pub time: Option<DateTime<Utc>>,
    /// Probe index.
    pub probe: u32,
    /// °C.
    pub temp_c: f64,
    /// Mains power.
    pub power_on: Option<bool>,
    /// Battery, percent.
    pub battery_pct: Option<u32>,
    /// Door open.
    pub door_open: Option<bool>,
    /// Probe fault.
    pub sensor_fault: bool,
}

/// Lowest accepted temperature, °C.
pub const MIN_TEMP_C: f64 = -100.0;
/// Highest accepted temperature, °C.
pub const MAX_TEMP_C: f64 = 80.0;
/// The earliest accepted reading time (2000-01-01T00:00:00Z).
pub const MIN_TIME_SECS: i64 = 946_684_800;
/// How far in the future a reading's time may be (device clocks drift).
pub const MAX_FUTURE_SECS: i64 = 300;

/// Why a reading's content is refused; `None` when it is acceptable. A refused reading is
/// dropped for good (and acknowledged, so the device stops re-sending it).
pub fn reject_reason(r: &Incoming, probe_known: bool, now: DateTime<Utc>) -> Option<&'static str> {
    if r.seq == 0 || i64::try_from(r.seq).is_err() {
        return Some("SEQ_INVALID");
    }
    if !probe_known {
        return Some("UNKNOWN_PROBE");
    }
    let Some(t) = r.time else { return Some("TIME_MISSING") };
    // Anything before vaxtrace existed is a broken clock; far-past times would also fail
    // PostgreSQL's timestamptz range and roll back (and so block) the whole batch.
    if t.timestamp() < MIN_TIME_SECS {
        return Some("TIME_TOO_OLD");
    }
    if t > now + chrono::Duration::seconds(MAX_FUTURE_SECS) {
        return Some("TIME_IN_FUTURE");
    }
    let plausible = r.temp_c.is_finite() && (MIN_TEMP_C..=MAX_TEMP_C).contains(&r.temp_c);
    if !r.sensor_fault && !plausible {
        return Some("TEMPERATURE_OUT_OF_RANGE");
    }
    if r.battery_pct.is_some_and(|b| b > 100) {
        return Some("BATTERY_OUT_OF_RANGE");
    }
    None
}

/// The highest seq up to which every seq is committed: starting from `last`, walk the committed
/// seqs above it (ascending) while they are contiguous.
pub fn advance_ack(last: i64, committed_above: &[i64]) -> i64 {
    let mut acked = last;
    for &s in committed_above {
        if s == acked + 1 {
            acked = s;
        } else if s > acked + 1 {
            break;
        }
    }
    acked
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reading(seq: u64, temp: f64, secs_ahead: i64, now: DateTime<Utc>) -> Incoming {
        Incoming {
            seq,
            time: Some(now + chrono::Duration::seconds(secs_ahead)),
            probe: 0,
            temp_c: temp,
            power_on: None,
            battery_pct: None,
            door_open: None,
            sensor_fault: false,
        }
    }

    #[test]
    fn readings_are_checked_at_their_edges() {
        let now = Utc::now();
        assert_eq!(reject_reason(&reading(1, 4.5, 0, now), true, now), None);
        assert_eq!(reject_reason(&reading(0, 4.5, 0, now), true, now), Some("SEQ_INVALID"));
        assert_eq!(reject_reason(&reading(1, 4.5, 0, now), false, now), Some("UNKNOWN_PROBE"));
        let mut ancient = reading(1, 4.5, 0, now);
        ancient.time = chrono::DateTime::from_timestamp(-3_000_000_000_000, 0);
        assert_eq!(reject_reason(&ancient, true, now), Some("TIME_TOO_OLD"));
        assert_eq!(reject_reason(&reading(1, 4.5, 300, now), true, now), None, "exactly 5 min ahead is accepted");
        assert_eq!(reject_reason(&reading(1, 4.5, 301, now), true, now), Some("TIME_IN_FUTURE"));
        assert_eq!(reject_reason(&reading(1, 80.0, 0, now), true, now), None);
        assert_eq!(reject_reason(&reading(1, 80.01, 0, now), true, now), Some("TEMPERATURE_OUT_OF_RANGE"));
        assert_eq!(reject_reason(&reading(1, -100.0, 0, now), true, now), None);
        assert_eq!(reject_reason(&reading(1, f64::NAN, 0, now), true, now), Some("TEMPERATURE_OUT_OF_RANGE"));
        let mut fault = reading(1, f64::NAN, 0, now);
        fault.sensor_fault = true;
        assert_eq!(reject_reason(&fault, true, now), None, "a faulty probe's reading is kept as a fault");
    }

    #[test]
    fn the_ack_stops_at_the_first_gap() {
        assert_eq!(advance_ack(0, &[1, 2, 3, 5]), 3);
        assert_eq!(advance_ack(3, &[5, 6]), 3);
        assert_eq!(advance_ack(3, &[4, 5, 6]), 6);
        assert_eq!(advance_ack(0, &[]), 0);
    }

    #[test]
    fn registrations_are_validated() {
        let ok = DeviceInput {
            serial: "SN1".into(),
            facility_id: "0190f3e2-7c1a-7abc-8def-0123456789ab".into(),
            probes: vec![(0, "0190f3e2-7c1a-7abc-8def-0123456789ac".into(), String::new())],
            expected_interval_secs: 600,
            ..Default::default()
        };
        assert!(NewDevice::parse(ok.clone()).is_ok());
        let mut dup = ok.clone();
        dup.probes.push(dup.probes[0].clone());
        assert!(NewDevice::parse(dup).is_err());
        let mut fast = ok;
        fast.expected_interval_secs = 59;
        assert!(NewDevice::parse(fast).is_err());
    }
}

/// A validated reading ready to store, with the storage unit its probe measures.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredReading {
    /// Seq.
    pub seq: i64,
    /// Probe index.
    pub probe: u32,
    /// The probe's storage unit.
    pub storage_unit_id: String,
    /// When taken.
    pub time: DateTime<Utc>,
    /// °C (`None` for a sensor fault).
    pub temp_c: Option<f64>,
    /// Mains power.
    pub power_on: Option<bool>,
    /// Battery, percent.
    pub battery_pct: Option<u32>,
    /// Door open.
    pub door_open: Option<bool>,
    /// Probe fault.
    pub sensor_fault: bool,
    /// Its batch carried a valid signature.
    pub verified: bool,
}
