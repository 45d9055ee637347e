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
    /// Added to the device's own seqs when stored (non-zero after a sequence reset); `last_seq`
    /// and stored readings are in the shifted space, the device and its acks in its own.
    #[serde(default)]
    pub seq_offset: i64,
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
    /// Active (updates only: a registration is always active).
    pub active: bool,
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
        let probes = parse_probes(d.probes)?;
        Ok(NewDevice {
            expected_interval_secs: interval(d.expected_interval_secs)?,
            serial: validate::text("device.serial", &d.serial, 64)?,
            name: validate::optional_text("device.name", &d.name, 200)?,
            model: validate::optional_text("device.model", &d.model, 200)?,
            facility_id: validate::id("device.facility_id", &d.facility_id)?,
            probes,
            unsigned_allowed: d.unsigned_allowed,
        })
    }
}

/// Validates a device's probes: 1..16, indexes 0..15 each used once.
fn parse_probes(input: Vec<(u32, String, String)>) -> Result<Vec<Probe>> {
    if input.is_empty() || input.len() > 16 {
        return Err(Error::invalid("device.probes", "a device has 1..16 probes"));
    }
    let mut probes: Vec<Probe> = Vec::with_capacity(input.len());
    for (i, (index, unit, label)) in input.into_iter().enumerate() {
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
    Ok(probes)
}

fn interval(secs: i64) -> Result<i64> {
    if (60..=86_400).contains(&secs) {
        Ok(secs)
    } else {
        Err(Error::invalid("device.expected_interval", "must be within 1 minute..24 hours"))
    }
}

/// A validated change to a device; `None` fields stay as they are. The serial is not here: it
/// identifies the hardware and never changes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DevicePatch {
    /// New name.
    pub name: Option<String>,
    /// New model.
    pub model: Option<String>,
    /// New facility (the probes must then be at it).
    pub facility_id: Option<String>,
    /// New probes, replacing all of them.
    pub probes: Option<Vec<Probe>>,
    /// New interval, seconds.
    pub expected_interval_secs: Option<i64>,
    /// New unsigned_allowed.
    pub unsigned_allowed: Option<bool>,
    /// New active flag.
    pub active: Option<bool>,
}

impl DevicePatch {
    /// Validates the fields named in `mask` (empty = all mutable fields) as a registration would.
    pub fn parse(d: DeviceInput, mask: &[String]) -> Result<Self> {
        const FIELDS: [&str; 7] =
            ["name", "model", "facility_id", "probes", "expected_interval", "unsigned_allowed", "active"];
        let mask = super::facility::field_mask("update_mask", mask, &FIELDS)?;
        let has = |f: &str| mask.iter().any(|m| m == f);
        Ok(DevicePatch {
            name: if has("name") { Some(validate::optional_text("device.name", &d.name, 200)?) } else { None },
            model: if has("model") { Some(validate::optional_text("device.model", &d.model, 200)?) } else { None },
            facility_id: if has("facility_id") {
                Some(validate::id("device.facility_id", &d.facility_id)?)
            } else {
                None
            },
            probes: if has("probes") { Some(parse_probes(d.probes)?) } else { None },
            expected_interval_secs: if has("expected_interval") {
                Some(interval(d.expected_interval_secs)?)
            } else {
                None
            },
            unsigned_allowed: has("unsigned_allowed").then_some(d.unsigned_allowed),
            active: has("active").then_some(d.active),
        })
    }

    /// True when the probes' placement must be checked again (they or the facility change).
    pub fn moves_probes(&self) -> bool {
        self.facility_id.is_some() || self.probes.is_some()
    }

    /// Applies the patch.
    pub fn apply(&self, d: &mut Device) {
        if let Some(v) = &self.name {
            d.name.clone_from(v);
        }
        if let Some(v) = &self.model {
            d.model.clone_from(v);
        }
        if let Some(v) = &self.facility_id {
            d.facility_id.clone_from(v);
        }
        if let Some(v) = &self.probes {
            d.probes.clone_from(v);
        }
        if let Some(v) = self.expected_interval_secs {
            d.expected_interval_secs = v;
        }
        if let Some(v) = self.unsigned_allowed {
            d.unsigned_allowed = v;
        }
        if let Some(v) = self.active {
            d.active = v;
        }
    }
}

/// The probe indexes whose alarm history no longer applies after a re-binding: moved to another
/// storage unit, or removed. Their rules' state must start afresh, or a run begun in one unit
/// would be continued (and alerted on) in another.
pub fn rebound_probes(before: &[Probe], after: &[Probe]) -> Vec<u32> {
    before
        .iter()
        .filter(|b| !after.iter().any(|a| a.index == b.index && a.storage_unit_id == b.storage_unit_id))
        .map(|b| b.index)
        .collect()
}

/// Filters of a device listing; the caller's scope is applied on top.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeviceFilter {
    /// Only devices at this facility.
    pub facility_id: Option<String>,
    /// Only devices at facilities under this path (inclusive).
    pub ancestor_path: Option<String>,
    /// Only devices with a probe in this storage unit.
    pub storage_unit_id: Option<String>,
    /// Include decommissioned devices.
    pub include_inactive: bool,
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

/// A stored reading as served: who sent it and when it arrived.
#[derive(Debug, Clone, PartialEq)]
pub struct RecordedReading {
    /// The device that sent it.
    pub device_id: String,
    /// When the server received it.
    pub received_at: DateTime<Utc>,
    /// The reading, with the storage unit its probe was in on arrival.
    pub reading: StoredReading,
}

/// Whose readings to list: exactly one device or one storage unit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReadingSource {
    /// Every reading of a device, whatever unit its probes were in.
    Device(String),
    /// Every reading taken in a storage unit, by any device.
    StorageUnit(String),
}

impl ReadingSource {
    /// Validates the pair of request fields, of which exactly one must be set.
    pub fn parse(device_id: &str, storage_unit_id: &str) -> Result<Self> {
        match (device_id.is_empty(), storage_unit_id.is_empty()) {
            (false, true) => Ok(ReadingSource::Device(validate::id("device_id", device_id)?)),
            (true, false) => Ok(ReadingSource::StorageUnit(validate::id("storage_unit_id", storage_unit_id)?)),
            (true, true) => Err(Error::invalid("device_id", "one of device_id and storage_unit_id is required")),
            (false, false) => {
                Err(Error::invalid("storage_unit_id", "give either device_id or storage_unit_id, not both"))
            }
        }
    }
}

/// A validated half-open time range `[start, end)` of reading times.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimeRange {
    /// Inclusive.
    pub start: DateTime<Utc>,
    /// Exclusive.
    pub end: DateTime<Utc>,
}

impl TimeRange {
    /// `start` is required; a missing `end` means `now`.
    pub fn parse(start: Option<DateTime<Utc>>, end: Option<DateTime<Utc>>, now: DateTime<Utc>) -> Result<Self> {
        let start = start.ok_or_else(|| Error::invalid("start_time", "is required"))?;
        let end = end.unwrap_or(now);
        if end < start {
            return Err(Error::invalid("end_time", "must not be before start_time"));
        }
        // No stored reading lies outside [2000, now + 5 min]; clamping keeps every bound inside
        // what both engines can compare (PostgreSQL refuses timestamps before 4713 BC).
        let lo = DateTime::from_timestamp(MIN_TIME_SECS, 0).unwrap_or(DateTime::<Utc>::MIN_UTC);
        let hi = DateTime::from_timestamp(253_402_300_799, 0).unwrap_or(DateTime::<Utc>::MAX_UTC); // 9999-12-31
        Ok(TimeRange { start: start.clamp(lo, hi), end: end.clamp(lo, hi) })
    }
}

/// Where a page of readings ended, in their order (reading time, device id, seq). The time
/// travels in nanoseconds so the next page resumes exactly after the stored value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadingCursor {
    /// Reading time of the last row.
    pub time: DateTime<Utc>,
    /// Its device.
    pub device_id: String,
    /// Its seq.
    pub seq: i64,
}

impl ReadingCursor {
    /// The cursor just after a reading.
    pub fn after(r: &RecordedReading) -> Self {
        ReadingCursor { time: r.reading.time, device_id: r.device_id.clone(), seq: r.reading.seq }
    }

    /// The text kept in a page token.
    pub fn encode(&self) -> String {
        // Reading times lie between 2000 and a few minutes from now, well inside i64 nanoseconds.
        let nanos = self.time.timestamp_nanos_opt().unwrap_or(i64::MAX);
        format!("{nanos}.{}.{}", self.seq, self.device_id)
    }

    /// Reads a page token's text back; anything else is an invalid token.
    pub fn parse(s: &str) -> Result<Self> {
        let mut parts = s.splitn(3, '.');
        let (Some(nanos), Some(seq), Some(device_id)) = (parts.next(), parts.next(), parts.next()) else {
            return Err(Error::InvalidPageToken);
        };
        let nanos: i64 = nanos.parse().map_err(|_| Error::InvalidPageToken)?;
        let seq: i64 = seq.parse().map_err(|_| Error::InvalidPageToken)?;
        let device_id = validate::id("page_token", device_id).map_err(|_| Error::InvalidPageToken)?;
        Ok(ReadingCursor { time: DateTime::from_timestamp_nanos(nanos), device_id, seq })
    }
}

/// The most buckets one QueryReadings answer may span.
pub const MAX_BUCKETS: i64 = 10_000;
/// The reason for a range and width that would need more buckets than that.
pub const TOO_MANY_BUCKETS: &str = "TOO_MANY_BUCKETS";

/// A validated downsampling: bucket width and the range it covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bucketing {
    /// Bucket width in seconds (whole minutes); buckets start at multiples of it since the epoch.
    pub width_secs: i64,
    /// The readings' range.
    pub range: TimeRange,
}

impl Bucketing {
    /// Checks the width (a whole number of minutes, 1 min..31 days) and that the aligned buckets
    /// covering the range are at most [`MAX_BUCKETS`].
    pub fn parse(width_secs: i64, width_nanos: i32, range: TimeRange) -> Result<Self> {
        if width_nanos != 0 || width_secs % 60 != 0 || !(60..=31 * 86_400).contains(&width_secs) {
            return Err(Error::invalid("bucket", "must be a whole number of minutes within 1 minute..31 days"));
        }
        let first = range.start.timestamp().div_euclid(width_secs);
        // The bucket holding the last instant before `end`; an empty range needs none.
        let last_instant = range.end - chrono::Duration::nanoseconds(1);
        let buckets =
            if range.end > range.start { last_instant.timestamp().div_euclid(width_secs) - first + 1 } else { 0 };
        if buckets > MAX_BUCKETS {
            return Err(Error::invalid_because(
                "bucket",
                TOO_MANY_BUCKETS,
                format!("the range needs {buckets} buckets of {width_secs} s; at most {MAX_BUCKETS}"),
            ));
        }
        Ok(Bucketing { width_secs, range })
    }
}

/// The readings of one time bucket (sensor faults excluded).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ReadingBucket {
    /// Start of the bucket.
    pub start: DateTime<Utc>,
    /// Lowest °C.
    pub min_temp_c: f64,
    /// Mean °C.
    pub mean_temp_c: f64,
    /// Highest °C.
    pub max_temp_c: f64,
    /// Number of readings.
    pub count: i64,
}

/// The latest reading of one monitored storage unit.
#[derive(Debug, Clone, PartialEq)]
pub struct LatestReading {
    /// The unit.
    pub storage_unit_id: String,
    /// Its facility.
    pub facility_id: String,
    /// Its most recent reading by reading time, if it ever had one.
    pub reading: Option<RecordedReading>,
    /// No reading within 3 × the interval of the device that sent the latest one.
    pub stale: bool,
}

/// True when a unit has had no reading for longer than the no-data limit (3 × the device's
/// interval, as the NO_DATA rule counts it); a unit that never had one is stale.
pub fn is_stale(latest: Option<DateTime<Utc>>, interval_secs: i64, now: DateTime<Utc>) -> bool {
    match latest {
        None => true,
        Some(t) => chrono::TimeDelta::try_seconds(interval_secs.saturating_mul(3)).is_some_and(|limit| now - t > limit),
    }
}

#[cfg(test)]
mod query_tests {
    use super::*;

    fn at(secs: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(secs, 0).unwrap_or_default()
    }

    #[test]
    fn buckets_are_counted_on_epoch_aligned_boundaries() {
        let r = |a, b| TimeRange { start: at(a), end: at(b) };
        assert_eq!(Bucketing::parse(60, 0, r(0, 60 * 10_000)).map(|b| b.width_secs), Ok(60));
        // One second later the range touches a 10 001st aligned bucket.
        assert!(matches!(
            Bucketing::parse(60, 0, r(1, 60 * 10_000 + 1)),
            Err(Error::InvalidArgument { reason: TOO_MANY_BUCKETS, .. })
        ));
        assert!(Bucketing::parse(60, 0, r(5, 5)).is_ok());
        assert!(Bucketing::parse(90, 0, r(0, 60)).is_err(), "not whole minutes");
        assert!(Bucketing::parse(60, 1, r(0, 60)).is_err());
        assert!(Bucketing::parse(32 * 86_400, 0, r(0, 60)).is_err());
        assert!(Bucketing::parse(0, 0, r(0, 60)).is_err());
    }

    #[test]
    fn cursor_round_trips_and_rejects_junk() {
        let c = ReadingCursor {
            time: DateTime::from_timestamp(1_790_000_000, 123_456_789).unwrap_or_default(),
            device_id: "0190f3e2-7c1a-7abc-8def-0123456789ab".into(),
            seq: 42,
        };
        assert_eq!(ReadingCursor::parse(&c.encode()), Ok(c));
        assert_eq!(ReadingCursor::parse("1.2"), Err(Error::InvalidPageToken));
        assert_eq!(ReadingCursor::parse("x.2.0190f3e2-7c1a-7abc-8def-0123456789ab"), Err(Error::InvalidPageToken));
        assert_eq!(ReadingCursor::parse("1.2.not-an-id"), Err(Error::InvalidPageToken));
    }

    #[test]
    fn sources_and_ranges_are_validated() {
        let id = "0190f3e2-7c1a-7abc-8def-0123456789ab";
        assert!(ReadingSource::parse("", "").is_err());
        assert!(ReadingSource::parse(id, id).is_err());
        assert_eq!(ReadingSource::parse(id, ""), Ok(ReadingSource::Device(id.into())));
        assert!(TimeRange::parse(None, None, at(10)).is_err());
        assert!(TimeRange::parse(Some(at(10)), Some(at(9)), at(10)).is_err());
        let (y2000, later) = (at(MIN_TIME_SECS), at(MIN_TIME_SECS + 10));
        assert_eq!(TimeRange::parse(Some(y2000), None, later), Ok(TimeRange { start: y2000, end: later }));
        assert_eq!(TimeRange::parse(Some(at(1)), None, later).map(|r| r.start), Ok(y2000), "clamped to 2000");
    }

    #[test]
    fn staleness_uses_three_intervals() {
        assert!(is_stale(None, 60, at(1000)));
        assert!(!is_stale(Some(at(820)), 60, at(1000)));
        assert!(is_stale(Some(at(819)), 60, at(1000)));
    }

    #[test]
    fn rebinding_resets_only_moved_or_removed_probes() {
        let p = |i, u: &str| Probe { index: i, storage_unit_id: u.into(), label: String::new() };
        let before = [p(0, "a"), p(1, "a"), p(2, "b")];
        let after = [p(0, "a"), p(1, "b"), p(3, "b")];
        assert_eq!(rebound_probes(&before, &after), vec![1, 2]);
    }

    #[test]
    fn patches_follow_the_mask() {
        let input = DeviceInput { name: "new".into(), model: "m".into(), ..Default::default() };
        let p = DevicePatch::parse(input.clone(), &["name".into()]);
        assert_eq!(p, Ok(DevicePatch { name: Some("new".into()), ..Default::default() }));
        assert!(matches!(
            DevicePatch::parse(input.clone(), &["serial".into()]),
            Err(Error::InvalidArgument { field, message, .. }) if field == "update_mask" && message.contains("serial")
        ));
        // An empty mask replaces every mutable field, so every one is validated.
        assert!(DevicePatch::parse(input, &[]).is_err());
    }
}
