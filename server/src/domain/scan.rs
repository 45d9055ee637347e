//! A lot named by a scanned GS1 barcode: the rules that turn an element string into catalogue
//! keys, so every RPC that accepts `scanned_code` reads it the same way.

use chrono::NaiveDate;

use crate::error::{Error, Result};

/// Reason of a code that cannot be read or lacks what a lot needs.
pub const INVALID_SCANNED_CODE: &str = "INVALID_SCANNED_CODE";
/// Reason when no product carries the scanned GTIN.
pub const UNKNOWN_GTIN: &str = "UNKNOWN_GTIN";
/// Reason when the scanned lot is not in the catalogue and the RPC does not create lots.
pub const UNKNOWN_LOT: &str = "UNKNOWN_LOT";
/// Reason when the code's expiry differs from the catalogue lot's.
pub const EXPIRY_MISMATCH: &str = "EXPIRY_MISMATCH";

/// What a scan says about a lot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScannedLot {
    /// GTIN-14 from AI (01).
    pub gtin: String,
    /// Lot number from AI (10).
    pub lot_number: String,
    /// Expiry from AI (17), when printed.
    pub expiry: Option<NaiveDate>,
}

/// Reads a scanned element string; `field` names the request field in errors.
pub fn parse(field: &str, code: &str) -> Result<ScannedLot> {
    let bad = |msg: String| Error::invalid_because(field, INVALID_SCANNED_CODE, msg);
    if code.len() > 1000 {
        return Err(bad("longer than 1000 characters; not a pack barcode".into()));
    }
    let es = vaxtrace_gs1::parse(code).map_err(|e| bad(e.to_string()))?;
    let gtin = es.gtin.ok_or_else(|| bad("has no GTIN, AI (01)".into()))?;
    let lot_number = es.lot.ok_or_else(|| bad("has no lot number, AI (10)".into()))?;
    let expiry = match es.expiry {
        Some(d) => Some(
            NaiveDate::from_ymd_opt(i32::from(d.year), u32::from(d.month), u32::from(d.day))
                .ok_or_else(|| bad(format!("AI (17): {d} is not a date")))?,
        ),
        None => None,
    };
    Ok(ScannedLot { gtin, lot_number, expiry })
}

/// Refuses a scan whose printed expiry contradicts the lot on record; both dates are named.
pub fn check_expiry(scan: &ScannedLot, recorded: NaiveDate) -> Result<()> {
    match scan.expiry {
        Some(printed) if printed != recorded => Err(Error::precondition(
            EXPIRY_MISMATCH,
            format!("lot {} is on record with expiry {recorded}, but the scanned code says {printed}", scan.lot_number),
        )),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_gtin_lot_and_expiry_with_day_00() {
        let s = parse("code", "]d2010950600013435217280200\u{1d}10AB-12").expect("valid code");
        assert_eq!(s.gtin, "09506000134352");
        assert_eq!(s.lot_number, "AB-12");
        assert_eq!(s.expiry, NaiveDate::from_ymd_opt(2028, 2, 29));
    }

    #[test]
    fn names_the_missing_ai_and_the_field() {
        let e = parse("lines[2].scanned_code", "(01)09506000134352(17)271231").expect_err("no lot");
        let text = format!("{e:?}");
        assert!(text.contains("AI (10)") && text.contains("lines[2].scanned_code"), "{text}");
        let e = parse("code", "(10)AB12").expect_err("no GTIN");
        assert!(format!("{e:?}").contains("AI (01)"));
        let e = parse("code", "(01)09506000134353(10)AB12").expect_err("bad check digit");
        assert!(format!("{e:?}").contains(INVALID_SCANNED_CODE));
    }

    #[test]
    fn expiry_mismatch_names_both_dates() {
        let s = parse("code", "(01)09506000134352(17)271231(10)AB12").expect("valid");
        let recorded = NaiveDate::from_ymd_opt(2027, 11, 30).expect("date");
        let e = check_expiry(&s, recorded).expect_err("mismatch");
        let text = format!("{e:?}");
        assert!(text.contains("2027-11-30") && text.contains("2027-12-31"), "{text}");
        assert!(check_expiry(&s, NaiveDate::from_ymd_opt(2027, 12, 31).expect("date")).is_ok());
    }
}
