//! GS1 element strings as a scanner sends them (raw, bracketed, with symbology identifiers):
//! the parser is total, both renderings parse back to the same value, and the server's reading
//! of a scanned pack code (`scanned_code` in stock RPCs) never panics.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vaxtrace_gs1::parse_bytes;

fuzz_target!(|bytes: &[u8]| {
    let parsed = parse_bytes(bytes);
    if let Ok(es) = &parsed {
        assert_eq!(vaxtrace_gs1::parse(&es.to_raw()).as_ref(), Ok(es), "raw form does not round-trip");
        assert_eq!(vaxtrace_gs1::parse(&es.to_bracketed()).as_ref(), Ok(es), "bracketed form does not round-trip");
    }
    if let Ok(code) = std::str::from_utf8(bytes) {
        let scan = vaxtrace_server::domain::scan::parse("scanned_code", code);
        if let Ok(lot) = scan {
            assert!(vaxtrace_gs1::check_digit_ok(&lot.gtin), "scan accepted a GTIN with a wrong check digit");
        }
    }
});
