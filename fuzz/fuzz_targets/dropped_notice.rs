//! `vaxtrace/v1/devices/{id}/status/dropped`: a device's JSON notice of seqs lost for good.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vaxtrace_fuzz::{KEY, device, offset};
use vaxtrace_server::app::telemetry::check_dropped;

fuzz_target!(|payload: &[u8]| {
    let state = payload.last().copied().unwrap_or(0);
    let device = device(state & 0x10 != 0, offset(state));
    if let Ok((rejects, total)) = check_dropped(&device, KEY, payload) {
        // Seqs past i64 are skipped, never wrapped into someone else's range.
        assert!(u64::try_from(rejects.len()).is_ok_and(|n| n <= total));
        assert!(rejects.iter().all(|(seq, _)| *seq > device.seq_offset));
    }
});
