//! The batch signature (proto/src/signing.rs) on arbitrary bytes: verification never panics,
//! and whatever decodes as a batch verifies as valid once signed with `encode_signed`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use prost::Message as _;
use vaxtrace_fuzz::KEY;
use vaxtrace_proto::signing::{Verified, encode_signed, verify_signed};

fuzz_target!(|bytes: &[u8]| {
    let batch = match verify_signed(bytes, KEY) {
        Ok(Verified::Valid(b) | Verified::Unsigned(b)) => b,
        Ok(Verified::BadSignature) | Err(_) => return,
    };
    let Ok(signed) = encode_signed(&batch, Some(KEY)) else { return };
    let mut unsigned = batch.clone();
    unsigned.signature.clear();
    match verify_signed(&signed, KEY) {
        Ok(Verified::Valid(mut b)) => {
            // Bytes, not values: a NaN temperature is never equal to itself.
            b.signature.clear();
            assert_eq!(b.encode_to_vec(), unsigned.encode_to_vec());
        }
        other => panic!("a batch signed by encode_signed does not verify: {other:?}"),
    }
    // Another key must not verify it.
    assert!(matches!(verify_signed(&signed, b"another key"), Ok(Verified::BadSignature)));
});
