//! `vaxtrace/v1/devices/{id}/readings`: a protobuf `ReadingBatch`, signed or not, through the
//! whole check ingest runs before the database. The input is the payload exactly as published.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vaxtrace_fuzz::{KEY, device, now, offset};
use vaxtrace_server::app::telemetry::{Checked, MAX_BATCH, check_batch};

fuzz_target!(|payload: &[u8]| {
    // The last byte picks the device's state, so the payload itself stays a valid seed.
    let state = payload.last().copied().unwrap_or(0);
    let device = device(state & 0x10 != 0, offset(state));
    if let Checked::Ready { rows, rejects, .. } = check_batch(&device, KEY, payload, false, now()) {
        assert!(rows.len() <= MAX_BATCH);
        for r in &rows {
            assert!(r.seq > device.seq_offset, "stored seq {} not above the offset", r.seq);
            assert!(r.temp_c.is_none_or(f64::is_finite), "non-finite temperature stored");
        }
        assert!(rejects.iter().all(|(seq, _)| *seq > device.seq_offset));
    }
});
