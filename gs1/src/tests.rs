//! Unit tests of the building blocks; the end-to-end corpus lives in `tests/corpus.rs`.
#![allow(clippy::unwrap_used)]

use crate::ai::{ai_length, is_cset82, lookup};
use crate::*;

#[test]
fn check_digits_of_known_keys() {
    // GTIN-14, GTIN-13, GTIN-12, GTIN-8, SSCC from the GS1 General Specifications examples.
    for key in ["09506000134352", "9506000134352", "614141000036", "95012346", "106141411234567897"] {
        assert!(check_digit_ok(key), "{key}");
    }
    assert!(!check_digit_ok("09506000134353"));
    assert_eq!(check_digit_for("0950600013435"), Some('2'));
    assert_eq!(check_digit_for("0000000000000"), Some('0'));
}

#[test]
fn check_digit_rejects_non_keys() {
    for s in ["", "0", "0950600013435X", "X9506000134352", "0950600013435 2", "٠٠"] {
        assert!(!check_digit_ok(s), "{s:?}");
    }
    assert_eq!(check_digit_for("12a"), None);
    // A check over an empty payload is meaningless, so `check_digit_for` still answers but
    // `check_digit_ok` insists on at least one payload digit.
    assert_eq!(check_digit_for(""), Some('0'));
}

#[test]
fn yymmdd_day_zero_is_last_day_of_month() {
    let d = |s: &str| Date::from_yymmdd(s).map(|d| d.to_string());
    assert_eq!(d("280200").as_deref(), Some("2028-02-29"));
    assert_eq!(d("270200").as_deref(), Some("2027-02-28"));
    assert_eq!(d("000200").as_deref(), Some("2000-02-29")); // divisible by 400: leap
    assert_eq!(d("270400").as_deref(), Some("2027-04-30"));
    assert_eq!(d("271200").as_deref(), Some("2027-12-31"));
    assert_eq!(d("991231").as_deref(), Some("2099-12-31"));
}

#[test]
fn yymmdd_rejects_impossible_dates() {
    for s in ["271301", "270001", "270000", "270431", "271232", "270229", "2712", "2712311", "27-231", "+71231"] {
        assert_eq!(Date::from_yymmdd(s), None, "{s}");
    }
}

#[test]
fn date_new_validates_and_orders() {
    assert_eq!(Date::new(2028, 2, 29), Some(Date { year: 2028, month: 2, day: 29 }));
    assert_eq!(Date::new(2100, 2, 29), None); // century, not divisible by 400
    assert_eq!(Date::new(2027, 0, 1), None);
    assert_eq!(Date::new(2027, 1, 0), None);
    assert!(Date::new(2027, 12, 31) < Date::new(2028, 1, 1));
    assert_eq!(Date { year: 2027, month: 1, day: 5 }.to_yymmdd(), "270105");
    assert_eq!(Date { year: 2027, month: 1, day: 5 }.to_string(), "2027-01-05");
}

#[test]
fn ai_lengths_follow_gs1_prefixes() {
    assert_eq!(ai_length("01"), 2);
    assert_eq!(ai_length("24"), 3);
    assert_eq!(ai_length("71"), 3);
    assert_eq!(ai_length("42"), 3);
    assert_eq!(ai_length("31"), 4);
    assert_eq!(ai_length("99"), 2);
    assert!(lookup("240").is_some());
    assert!(lookup("716").is_none());
    assert!(lookup("1").is_none());
}

#[test]
fn character_set_82() {
    let allowed: String = (' '..='~').filter(|&c| is_cset82(c)).collect();
    assert_eq!(allowed, "!\"%&'()*+,-./0123456789:;<=>?ABCDEFGHIJKLMNOPQRSTUVWXYZ_abcdefghijklmnopqrstuvwxyz");
    assert_eq!(allowed.len(), 82);
    assert!(!is_cset82('\u{1d}'));
    assert!(!is_cset82('é'));
}

#[test]
fn messages_name_the_ai_and_the_problem() {
    let msg = |input: &str| parse(input).map_err(|e| e.to_string()).err();
    assert_eq!(
        msg("(01)09506000134353").as_deref(),
        Some("AI (01): wrong check digit in GTIN 09506000134353, expected 2")
    );
    assert_eq!(
        msg("10ABCDEFGHIJKLMNOPQRSTU").as_deref(),
        Some("AI (10): longer than 20 characters — is a GS separator missing after it?")
    );
    assert_eq!(msg("(10)ABCDEFGHIJKLMNOPQRSTU").as_deref(), Some("AI (10): longer than 20 characters"));
    assert_eq!(msg("(99)X").as_deref(), Some("AI (99) at byte 1 is not supported"));
    assert_eq!(msg("(17)271301").as_deref(), Some("AI (17): 271301 is not a valid YYMMDD date"));
    assert_eq!(msg("(10)AB#").as_deref(), Some("AI (10): character '#' at byte 6 is not allowed"));
    assert_eq!(
        msg("(01)09506000134352(17").as_deref(),
        Some("unbalanced parenthesis: '(' at byte 18 has no matching ')' (write a literal '(' in data as \\()")
    );
    assert_eq!(msg("").as_deref(), Some("empty element string: no AI found"));
}

#[test]
fn error_is_std_error() {
    fn takes(_: &dyn std::error::Error) {}
    takes(&Error::Empty);
}

#[test]
fn from_str_and_display() {
    let es: ElementString = "]d2010950600013435217271231".parse().unwrap();
    assert_eq!(es.to_string(), "(01)09506000134352(17)271231");
}

#[test]
fn rendering_orders_fixed_fields_first_and_escapes_parentheses() {
    let es = ElementString {
        gtin: Some("09506000134352".into()),
        lot: Some("A(1)".into()),
        expiry: Date::new(2027, 12, 31),
        serial: Some("S1".into()),
        other: vec![("712".into(), "X".into())],
        ..ElementString::default()
    };
    assert_eq!(es.to_raw(), "01095060001343521727123110A(1)\u{1d}21S1\u{1d}712X");
    assert_eq!(es.to_bracketed(), "(01)09506000134352(17)271231(10)A\\(1)(21)S1(712)X");
    assert_eq!(parse(&es.to_raw()), Ok(es.clone()));
    assert_eq!(parse(&es.to_bracketed()), Ok(es));
}
