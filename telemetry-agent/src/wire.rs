//! Payload encodings: buffer records, signed `ReadingBatch`es, and the server's signature check.
//!
//! A buffer record is a protobuf `vaxtrace.v1.Reading` with `seq` left at 0: the buffer's own seq
//! is the authority and is filled in when the batch is built, so the two can never disagree.

use prost::Message;
use vaxtrace_proto::v1::Reading;
// The signature is part of the contract, so its one implementation lives with the protos.
pub use vaxtrace_proto::signing::{Verified, WireError, encode_signed, hmac_sha256, to_hex, verify_signed};

/// Encodes a reading for the disk buffer (seq omitted).
pub fn encode_record(reading: &Reading) -> Vec<u8> {
    let mut r = *reading;
    r.seq = 0;
    r.encode_to_vec()
}

/// Decodes a buffer record and gives it its seq.
pub fn decode_record(seq: u64, bytes: &[u8]) -> Result<Reading, WireError> {
    let mut r = Reading::decode(bytes).map_err(|e| WireError::Malformed(e.to_string()))?;
    r.seq = seq;
    Ok(r)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use prost_types::Timestamp;
    use vaxtrace_proto::v1::ReadingBatch;

    fn batch() -> ReadingBatch {
        ReadingBatch {
            device_id: "dev-1".into(),
            readings: vec![Reading {
                seq: 7,
                time: Some(Timestamp { seconds: 1_700_000_000, nanos: 0 }),
                probe: 1,
                temp_c: 4.25,
                power_on: Some(true),
                ..Default::default()
            }],
            key_version: 0,
            signature: vec![],
        }
    }

    #[test]
    fn signature_is_appended_as_field_15_over_the_unsigned_encoding() {
        let key = b"0123456789abcdef0123456789abcdef";
        let bytes = encode_signed(&batch(), Some(key)).unwrap();
        let unsigned = batch().encode_to_vec();
        assert_eq!(&bytes[..unsigned.len()], unsigned.as_slice());
        assert_eq!(&bytes[unsigned.len()..unsigned.len() + 2], &[0x7A, 0x20]);
        assert_eq!(&bytes[unsigned.len() + 2..], &hmac_sha256(key, &unsigned).unwrap());
        let Verified::Valid(decoded) = verify_signed(&bytes, key).unwrap() else { panic!("not valid") };
        assert_eq!(decoded.readings, batch().readings);
    }

    #[test]
    fn verification_fails_for_another_key_or_a_changed_reading() {
        let key = b"k1";
        let mut bytes = encode_signed(&batch(), Some(key)).unwrap();
        assert_eq!(verify_signed(&bytes, b"k2").unwrap(), Verified::BadSignature);
        // Flip a bit inside the temperature: the batch still decodes but the HMAC no longer matches.
        let at = bytes.len() - 34 - 3;
        bytes[at] ^= 1;
        assert_eq!(verify_signed(&bytes, key).unwrap(), Verified::BadSignature);
        assert!(matches!(verify_signed(&encode_signed(&batch(), None).unwrap(), key), Ok(Verified::Unsigned(_))));
    }

    #[test]
    fn records_round_trip_and_take_the_buffer_seq() {
        let r = batch().readings[0];
        let bytes = encode_record(&r);
        let back = decode_record(42, &bytes).unwrap();
        assert_eq!(back.seq, 42);
        assert_eq!(Reading { seq: 7, ..back }, r);
        assert!(decode_record(1, &[0xFF, 0xFF]).is_err());
    }
}
