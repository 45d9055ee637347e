//! Field validators shared by every operation; each error names the field.

use crate::error::{Error, Result};

/// A required, trimmed text of 1..=max characters without control characters.
pub fn text(field: &str, value: &str, max: usize) -> Result<String> {
    let v = value.trim();
    if v.is_empty() {
        return Err(Error::invalid(field, "is required"));
    }
    optional_text(field, v, max)
}

/// An optional text of at most max characters without control characters ("" when absent).
pub fn optional_text(field: &str, value: &str, max: usize) -> Result<String> {
    let v = value.trim();
    if v.chars().count() > max {
        return Err(Error::invalid(field, format!("must be at most {max} characters")));
    }
    if v.chars().any(char::is_control) {
        return Err(Error::invalid(field, "must not contain control characters"));
    }
    Ok(v.to_owned())
}

/// A code: 1..=64 characters of letters, digits, `-`, `_`, `.` and `/`.
pub fn code(field: &str, value: &str) -> Result<String> {
    let v = text(field, value, 64)?;
    if !v.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '/')) {
        return Err(Error::invalid(field, "may contain only letters, digits, '-', '_', '.' and '/'"));
    }
    Ok(v)
}

/// An object id as issued by the server (a UUID); anything else is INVALID_ARGUMENT.
pub fn id(field: &str, value: &str) -> Result<String> {
    if value.is_empty() {
        return Err(Error::invalid(field, "is required"));
    }
    match uuid::Uuid::parse_str(value) {
        Ok(u) => Ok(u.hyphenated().to_string()),
        Err(_) => Err(Error::invalid(field, "is not a valid id")),
    }
}

/// An optional id ("" = absent).
pub fn optional_id(field: &str, value: &str) -> Result<Option<String>> {
    if value.is_empty() { Ok(None) } else { id(field, value).map(Some) }
}

/// A client request_id: 1..=64 printable ASCII characters.
pub fn request_id(value: &str) -> Result<()> {
    if value.len() > 64 || !value.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(Error::invalid("request_id", "must be 1..64 printable ASCII characters"));
    }
    Ok(())
}

/// True when `digits` (all ASCII digits) ends in a valid GS1 mod-10 check digit.
pub fn gs1_check_digit_ok(digits: &str) -> bool {
    vaxtrace_gs1::check_digit_ok(digits)
}

/// A GS1 GTIN-14 (GTIN-8/12/13 are left-padded with zeros to 14 digits).
pub fn gtin(field: &str, value: &str) -> Result<String> {
    let v = value.trim();
    if !matches!(v.len(), 8 | 12 | 13 | 14) || !v.bytes().all(|b| b.is_ascii_digit()) {
        return Err(Error::invalid(field, "must be a GTIN of 8, 12, 13 or 14 digits"));
    }
    let padded = format!("{v:0>14}");
    if !gs1_check_digit_ok(&padded) {
        return Err(Error::invalid(field, format!("GTIN {v} has a wrong check digit")));
    }
    Ok(padded)
}

/// An optional GS1 GLN (13 digits).
pub fn optional_gln(field: &str, value: &str) -> Result<String> {
    let v = value.trim();
    if v.is_empty() {
        return Ok(String::new());
    }
    if v.len() != 13 || !gs1_check_digit_ok(v) {
        return Err(Error::invalid(field, "must be a 13-digit GLN with a valid check digit"));
    }
    Ok(v.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn check_digits() {
        assert!(gs1_check_digit_ok("09506000134352"));
        assert!(!gs1_check_digit_ok("09506000134353"));
        assert!(gtin("g", "9506000134352").is_ok());
        assert_eq!(gtin("g", "9506000134352").ok().as_deref(), Some("09506000134352"));
        assert!(gtin("g", "950600013435x").is_err());
        assert!(optional_gln("g", "0614141000005").is_ok());
        assert!(optional_gln("g", "0614141000006").is_err());
    }

    #[test]
    fn ids_and_text() {
        assert!(id("id", "not-a-uuid").is_err());
        assert!(id("id", "").is_err());
        assert!(id("id", "0190f3e2-7c1a-7abc-8def-0123456789ab").is_ok());
        assert!(text("name", "  ", 10).is_err());
        assert!(text("name", "abcdefghijk", 10).is_err());
        assert!(text("name", "a\u{0}b", 10).is_err());
        assert!(code("code", "MH-PUNE/01").is_ok());
        assert!(code("code", "bad code").is_err());
    }
}
