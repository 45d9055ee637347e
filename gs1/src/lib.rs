//! GS1 element strings as read from GS1 DataMatrix and GS1-128 barcodes on vaccine packs.
//!
//! Std only, no dependencies. [`parse`] and [`parse_bytes`] are total: any input yields `Ok` or
//! an [`Error`], never a panic, because scanner output reaches us unfiltered from the field.
//!
//! # Accepted forms
//! * Raw (what a scanner sends): AIs concatenated, a variable-length field ended by GS (0x1D,
//!   the FNC1 stand-in) unless it is last. Ignored: a leading symbology identifier (`]`, a
//!   letter, a digit: `]d2`, `]C1`, `]Q3`, ...), a leading GS, surrounding spaces/tabs/CR/LF
//!   (scanners append Enter) and a trailing GS. A GS after a fixed-length field is redundant
//!   and accepted.
//! * Bracketed (human-readable line under the barcode): `(01)09506000134352(17)271231(10)AB1234`;
//!   spaces around elements are ignored. A literal `(` inside data is written `\(`.
//!
//! Dates (AIs 11, 17) map `YY` to `20YY` (2000–2099, no GS1 sliding window) and day `00` to the
//! last day of the month; the resolved day is stored.
//!
//! Error positions are byte offsets into the input as passed in.
#![forbid(unsafe_code)]
#![deny(missing_docs)]
// Totality is a requirement, so the usual panicking shortcuts are banned outside tests.
#![cfg_attr(
    not(test),
    deny(
        clippy::indexing_slicing,
        clippy::string_slice,
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic,
        clippy::unreachable,
        clippy::todo,
        clippy::unimplemented
    )
)]

mod ai;
mod date;
mod error;
mod parse;
mod render;

pub use date::Date;
pub use error::Error;
pub use parse::{parse, parse_bytes};

/// The data carried by one GS1 element string, one field per supported AI.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct ElementString {
    /// AI (01): GTIN-14, 14 digits with a valid check digit.
    pub gtin: Option<String>,
    /// AI (10): batch/lot number, 1–20 characters of GS1 set 82.
    pub lot: Option<String>,
    /// AI (17): expiry date.
    pub expiry: Option<Date>,
    /// AI (11): production date.
    pub production_date: Option<Date>,
    /// AI (21): serial number, 1–20 characters of GS1 set 82.
    pub serial: Option<String>,
    /// AI (30): variable count of items.
    pub count: Option<u32>,
    /// AI (37): count of trade items contained in a logistic unit.
    pub trade_item_count: Option<u32>,
    /// Tolerated pharma AIs (240, 241, 250, 710–715) as `(ai, value)`, in input order.
    pub other: Vec<(String, String)>,
}

impl std::str::FromStr for ElementString {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        parse(s)
    }
}

/// True if `digits` (all ASCII digits, at least two) ends with a correct GS1 mod-10 check digit.
///
/// Works for every GS1 key that uses the algorithm (GTIN-8/12/13/14, GLN, SSCC, ...); the length
/// itself is not checked because the weights are aligned from the right.
pub fn check_digit_ok(digits: &str) -> bool {
    match digits.as_bytes().split_last() {
        Some((&last, payload)) if !payload.is_empty() => check_digit(payload) == Some(char::from(last)),
        _ => false,
    }
}

/// The GS1 mod-10 check digit for `payload` (the key without its check digit), if it is all ASCII digits.
pub fn check_digit_for(payload: &str) -> Option<char> {
    check_digit(payload.as_bytes())
}

fn check_digit(payload: &[u8]) -> Option<char> {
    // Weights 3,1,3,... start at the rightmost payload digit, so keys of any length share the code.
    // Summing modulo 10 keeps the arithmetic bounded for arbitrarily long input.
    let mut sum: u32 = 0;
    for (i, &b) in payload.iter().rev().enumerate() {
        if !b.is_ascii_digit() {
            return None;
        }
        let weight = if i % 2 == 0 { 3 } else { 1 };
        sum = (sum + u32::from(b - b'0') * weight) % 10;
    }
    char::from_digit((10 - sum) % 10, 10)
}

#[cfg(test)]
mod tests;
