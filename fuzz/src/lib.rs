//! What the fuzz targets share: the device a payload is checked against, its key and a fixed
//! "now", so that every run of an input takes the same path.

use chrono::{DateTime, TimeZone as _, Utc};
use vaxtrace_server::domain::telemetry::{Device, Probe};

/// The HMAC key of [`device`]; the signed seeds in `corpus/` are signed with it.
pub const KEY: &[u8] = b"vaxtrace-fuzz-device-key";
/// The id of [`device`], as the topic would name it.
pub const DEVICE_ID: &str = "dev-fuzz-1";

/// The instant the targets check readings at (2026-11-26T12:00:00Z), near the seeds' times.
pub fn now() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 26, 12, 0, 0).single().unwrap_or_default()
}

/// A registered, active logger with probes 0 and 1; `unsigned_allowed` and `seq_offset` vary
/// so both signature rules and shifted seqs are reached.
pub fn device(unsigned_allowed: bool, seq_offset: i64) -> Device {
    let t = now();
    let probe = |index: u32| Probe { index, storage_unit_id: format!("su-fuzz-{index}"), label: String::new() };
    Device {
        id: DEVICE_ID.to_owned(),
        serial: "SN-FUZZ".to_owned(),
        name: "fuzz".to_owned(),
        model: String::new(),
        facility_id: "fac-fuzz".to_owned(),
        probes: vec![probe(0), probe(1)],
        expected_interval_secs: 60,
        unsigned_allowed,
        key_version: 1,
        key_rotated_at: t,
        last_seen_at: None,
        last_seq: seq_offset,
        seq_offset,
        online: true,
        active: true,
        created_at: t,
        updated_at: t,
    }
}

/// Offsets a device has after 0, 1 or many sequence resets, and one at the edge of i64.
pub fn offset(selector: u8) -> i64 {
    match selector % 4 {
        0 => 0,
        1 => 1_000,
        2 => i64::MAX / 2,
        _ => i64::MAX - 1,
    }
}
