//! The MQTT contract's batch signature, shared by devices and the server: HMAC-SHA256 with the
//! device key over the protobuf bytes of a `ReadingBatch` without its signature field (15).

use hmac::{Hmac, Mac};
use prost::Message;
use sha2::Sha256;

use crate::v1::ReadingBatch;

type HmacSha256 = Hmac<Sha256>;

/// Tag byte of `ReadingBatch.signature` (field 15, wire type 2) followed by its length (32).
const SIGNATURE_PREFIX: [u8; 2] = [0x7A, 0x20];
const SIGNATURE_FIELD: u64 = 15;

/// Why a payload could not be decoded or verified.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum WireError {
    /// The bytes are not valid protobuf of the expected message.
    #[error("malformed payload: {0}")]
    Malformed(String),
    /// The key is unusable (HMAC accepts any length, so only an empty key is refused).
    #[error("empty HMAC key")]
    EmptyKey,
}

/// Encodes a batch and, with a key, appends the signature exactly as telemetry.proto specifies:
/// bytes B of the batch without a signature, then `0x7A 0x20` and HMAC-SHA256(key, B).
pub fn encode_signed(batch: &ReadingBatch, key: Option<&[u8]>) -> Result<Vec<u8>, WireError> {
    let mut unsigned = batch.clone();
    unsigned.signature.clear();
    let mut bytes = unsigned.encode_to_vec();
    if let Some(key) = key {
        let tag = hmac_sha256(key, &bytes)?;
        bytes.reserve(SIGNATURE_PREFIX.len() + tag.len());
        bytes.extend_from_slice(&SIGNATURE_PREFIX);
        bytes.extend_from_slice(&tag);
    }
    Ok(bytes)
}

/// HMAC-SHA256 of `data`.
pub fn hmac_sha256(key: &[u8], data: &[u8]) -> Result<[u8; 32], WireError> {
    if key.is_empty() {
        return Err(WireError::EmptyKey);
    }
    let mut mac = HmacSha256::new_from_slice(key).map_err(|_| WireError::EmptyKey)?;
    mac.update(data);
    Ok(mac.finalize().into_bytes().into())
}

/// Lowercase hex of bytes (for JSON signatures and logs).
pub fn to_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Outcome of [`verify_signed`].
#[derive(Debug, Clone, PartialEq)]
pub enum Verified {
    /// The last signature field matches the HMAC over the other fields.
    Valid(ReadingBatch),
    /// No signature field at all.
    Unsigned(ReadingBatch),
    /// A signature is present and wrong.
    BadSignature,
}

/// The server's check: removes every top-level field 15 from the bytes as received (never
/// re-encoding), HMACs the rest and compares with the decoded signature in constant time.
pub fn verify_signed(bytes: &[u8], key: &[u8]) -> Result<Verified, WireError> {
    let batch = ReadingBatch::decode(bytes).map_err(|e| WireError::Malformed(e.to_string()))?;
    let stripped = strip_top_level_field(bytes, SIGNATURE_FIELD)?;
    if batch.signature.is_empty() {
        return Ok(Verified::Unsigned(batch));
    }
    if key.is_empty() {
        return Err(WireError::EmptyKey);
    }
    let mut mac = HmacSha256::new_from_slice(key).map_err(|_| WireError::EmptyKey)?;
    mac.update(&stripped);
    Ok(match mac.verify_slice(&batch.signature) {
        Ok(()) => Verified::Valid(batch),
        Err(_) => Verified::BadSignature,
    })
}

fn read_varint(bytes: &[u8], pos: &mut usize) -> Result<u64, WireError> {
    let mut value = 0u64;
    for shift in (0..64).step_by(7) {
        let b = *bytes.get(*pos).ok_or_else(|| WireError::Malformed("truncated varint".into()))?;
        *pos += 1;
        value |= u64::from(b & 0x7F) << shift;
        if b & 0x80 == 0 {
            return Ok(value);
        }
    }
    Err(WireError::Malformed("varint too long".into()))
}

/// Copies `bytes` without the top-level occurrences of `field`.
fn strip_top_level_field(bytes: &[u8], field: u64) -> Result<Vec<u8>, WireError> {
    let mut out = Vec::with_capacity(bytes.len());
    let mut pos = 0;
    while pos < bytes.len() {
        let start = pos;
        let key = read_varint(bytes, &mut pos)?;
        let skip = match key & 7 {
            0 => {
                read_varint(bytes, &mut pos)?;
                0
            }
            1 => 8,
            2 => usize::try_from(read_varint(bytes, &mut pos)?)
                .map_err(|_| WireError::Malformed("length overflows".into()))?,
            5 => 4,
            other => return Err(WireError::Malformed(format!("unsupported wire type {other}"))),
        };
        let end = pos.checked_add(skip).filter(|&e| e <= bytes.len());
        let end = end.ok_or_else(|| WireError::Malformed("field runs past the end".into()))?;
        if key >> 3 != field {
            out.extend_from_slice(&bytes[start..end]);
        }
        pos = end;
    }
    Ok(out)
}
