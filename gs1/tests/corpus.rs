//! Table of scanner outputs and printed lines, valid and invalid, with the exact expected result.

use vaxtrace_gs1::{Date, ElementString, Error, parse, parse_bytes};

const GS: &str = "\u{1d}";
/// GS1's example GTIN; its check digit is 2.
const G: &str = "09506000134352";

fn ok(fill: impl FnOnce(&mut ElementString)) -> Result<ElementString, Error> {
    let mut es = ElementString::default();
    fill(&mut es);
    Ok(es)
}

fn s(v: &str) -> Option<String> {
    Some(v.to_string())
}

fn d(year: u16, month: u8, day: u8) -> Option<Date> {
    Some(Date { year, month, day })
}

fn ai(a: &str) -> String {
    a.to_string()
}

fn corpus() -> Vec<(String, Result<ElementString, Error>)> {
    let gtin_exp_lot = ok(|e| {
        e.gtin = s(G);
        e.expiry = d(2027, 12, 31);
        e.lot = s("AB1234");
    });
    let gtin_exp_lot_serial = ok(|e| {
        e.gtin = s(G);
        e.expiry = d(2027, 12, 31);
        e.lot = s("AB1234");
        e.serial = s("SN0001");
    });
    let gtin_exp = ok(|e| {
        e.gtin = s(G);
        e.expiry = d(2027, 12, 31);
    });
    let cases: Vec<(String, Result<ElementString, Error>)> = vec![
        // ---- raw form, symbology identifiers, separators ----
        (format!("]d201{G}1727123110AB1234"), gtin_exp_lot.clone()),
        (format!("]C101{G}1727123110AB1234{GS}21SN0001"), gtin_exp_lot_serial.clone()),
        (format!("]Q301{G}1727123110AB1234{GS}21SN0001"), gtin_exp_lot_serial.clone()),
        (format!("]e001{G}10AB1234{GS}17271231"), gtin_exp_lot.clone()),
        (format!("01{G}10AB1234{GS}17271231"), gtin_exp_lot.clone()),
        // FNC1 in first position, with and without identifier.
        (format!("{GS}01{G}17271231"), gtin_exp.clone()),
        (format!("]d2{GS}01{G}17271231"), gtin_exp.clone()),
        // Redundant GS after fixed-length fields.
        (format!("01{G}{GS}17271231{GS}10AB1234"), gtin_exp_lot.clone()),
        // Scanner Enter suffix, and a trailing GS after the last field.
        (format!("]d201{G}1727123110AB1234\r\n"), gtin_exp_lot.clone()),
        (format!("]d201{G}1727123110AB1234{GS}\n"), gtin_exp_lot.clone()),
        // Lot last without separator; a 20-character lot is exactly at the limit.
        (
            format!("01{G}10ABCDEFGHIJKLMNOPQRST"),
            ok(|e| {
                e.gtin = s(G);
                e.lot = s("ABCDEFGHIJKLMNOPQRST");
            }),
        ),
        // Missing GS between lot and expiry: undetectable, the lot absorbs the expiry.
        (
            format!("]d201{G}10AB123417271231"),
            ok(|e| {
                e.gtin = s(G);
                e.lot = s("AB123417271231");
            }),
        ),
        // ---- bracketed form ----
        ("(01)09506000134352(17)271231(10)AB1234".into(), gtin_exp_lot.clone()),
        ("(01) 09506000134352 (17) 271231 (10) AB1234".into(), gtin_exp_lot.clone()),
        ("  (01)09506000134352  (17)271231(10)AB1234\r\n".into(), gtin_exp_lot.clone()),
        ("]d2(01)09506000134352(17)271231".into(), gtin_exp.clone()),
        ("(10)A\\(B)".into(), ok(|e| e.lot = s("A(B)"))),
        ("(10)ABC)".into(), ok(|e| e.lot = s("ABC)"))),
        // ---- dates ----
        ("(17)280200".into(), ok(|e| e.expiry = d(2028, 2, 29))),
        ("(17)270200".into(), ok(|e| e.expiry = d(2027, 2, 28))),
        ("(17)270400".into(), ok(|e| e.expiry = d(2027, 4, 30))),
        (
            format!("]d201{G}17270600"),
            ok(|e| {
                e.gtin = s(G);
                e.expiry = d(2027, 6, 30);
            }),
        ),
        (
            "(11)250115(17)270115".into(),
            ok(|e| {
                e.production_date = d(2025, 1, 15);
                e.expiry = d(2027, 1, 15);
            }),
        ),
        // ---- counts and tolerated pharma AIs ----
        (
            format!("01{G}3012{GS}37000048"),
            ok(|e| {
                e.gtin = s(G);
                e.count = Some(12);
                e.trade_item_count = Some(48);
            }),
        ),
        (
            "(30)99999999(37)1".into(),
            ok(|e| {
                e.count = Some(99_999_999);
                e.trade_item_count = Some(1);
            }),
        ),
        (
            format!("]d201{G}240ABC-123{GS}712NHRN42{GS}10L1"),
            ok(|e| {
                e.gtin = s(G);
                e.lot = s("L1");
                e.other = vec![(ai("240"), ai("ABC-123")), (ai("712"), ai("NHRN42"))];
            }),
        ),
        (
            "(250)SEC1(710)PZN1(715)NDC(241)CUST".into(),
            ok(|e| {
                e.other = vec![
                    (ai("250"), ai("SEC1")),
                    (ai("710"), ai("PZN1")),
                    (ai("715"), ai("NDC")),
                    (ai("241"), ai("CUST")),
                ];
            }),
        ),
        ("(10)!\"%&'*+,-./:;<=>?_".into(), ok(|e| e.lot = s("!\"%&'*+,-./:;<=>?_"))),
        // Same AI twice with the same value is tolerated.
        (format!("(01){G}(01){G}"), ok(|e| e.gtin = s(G))),
        (
            format!("10AB{GS}10AB{GS}240X{GS}240X"),
            ok(|e| {
                e.lot = s("AB");
                e.other = vec![(ai("240"), ai("X"))];
            }),
        ),
        // ---- empty ----
        (String::new(), Err(Error::Empty)),
        (" \r\n".into(), Err(Error::Empty)),
        ("]d2".into(), Err(Error::Empty)),
        (format!("]C1{GS}\r\n"), Err(Error::Empty)),
        ("]d".into(), Err(Error::BadSymbologyIdentifier { found: "]d".into() })),
        (format!("]dX01{G}"), Err(Error::BadSymbologyIdentifier { found: "]dX".into() })),
        // ---- invalid dates ----
        ("(17)271301".into(), Err(Error::InvalidDate { ai: ai("17"), value: "271301".into() })),
        (format!("]d201{G}17271232"), Err(Error::InvalidDate { ai: ai("17"), value: "271232".into() })),
        ("(17)270431".into(), Err(Error::InvalidDate { ai: ai("17"), value: "270431".into() })),
        ("(17)270229".into(), Err(Error::InvalidDate { ai: ai("17"), value: "270229".into() })),
        ("(11)270015".into(), Err(Error::InvalidDate { ai: ai("11"), value: "270015".into() })),
        ("(17)27I231".into(), Err(Error::InvalidCharacter { ai: ai("17"), character: 'I', position: 6 })),
        (format!("]d201{G}17271"), Err(Error::BadLength { ai: ai("17"), expected: 6, found: 3 })),
        // ---- GTIN ----
        ("(01)09506000134353".into(), Err(Error::BadCheckDigit { gtin: "09506000134353".into(), expected: '2' })),
        (
            "]d2010950600013435317271231".into(),
            Err(Error::BadCheckDigit { gtin: "09506000134353".into(), expected: '2' }),
        ),
        ("(01)0950600013435A".into(), Err(Error::InvalidCharacter { ai: ai("01"), character: 'A', position: 17 })),
        ("(01)0950600013435".into(), Err(Error::BadLength { ai: ai("01"), expected: 14, found: 13 })),
        ("(01)095060001343520".into(), Err(Error::BadLength { ai: ai("01"), expected: 14, found: 15 })),
        ("010950600013435".into(), Err(Error::BadLength { ai: ai("01"), expected: 14, found: 13 })),
        (format!("01095060001343{GS}10AB"), Err(Error::BadLength { ai: ai("01"), expected: 14, found: 12 })),
        // An over-long GTIN in raw form leaves a stray digit where the next AI should start.
        (format!("01{G}0"), Err(Error::InvalidAi { found: "0".into(), position: 16 })),
        // ---- AIs ----
        ("(99)INTERNAL".into(), Err(Error::UnknownAi { ai: ai("99"), position: 1 })),
        (format!("]d201{G}99ABC"), Err(Error::UnknownAi { ai: ai("99"), position: 19 })),
        (format!("01{G}422276"), Err(Error::UnknownAi { ai: ai("422"), position: 16 })),
        ("00106141411234567897".into(), Err(Error::UnknownAi { ai: ai("00"), position: 0 })),
        ("(716)X".into(), Err(Error::UnknownAi { ai: ai("716"), position: 1 })),
        (format!("01{G}2"), Err(Error::InvalidAi { found: "2".into(), position: 16 })),
        ("24".into(), Err(Error::InvalidAi { found: "24".into(), position: 0 })),
        ("ABC".into(), Err(Error::InvalidAi { found: "A".into(), position: 0 })),
        (format!("10AB{GS}{GS}17271231"), Err(Error::InvalidAi { found: GS.into(), position: 5 })),
        ("()X".into(), Err(Error::InvalidAi { found: String::new(), position: 1 })),
        ("(AB)X".into(), Err(Error::InvalidAi { found: "AB".into(), position: 1 })),
        // ---- lengths and separators ----
        ("10ABCDEFGHIJKLMNOPQRSTU".into(), Err(Error::MissingSeparator { ai: ai("10"), max: 20 })),
        ("(10)ABCDEFGHIJKLMNOPQRSTU".into(), Err(Error::TooLong { ai: ai("10"), max: 20 })),
        // Missing GS after a lot long enough that the swallowed expiry overruns 20 characters.
        (format!("]d201{G}10LOT-2027-ABCDEF17271231"), Err(Error::MissingSeparator { ai: ai("10"), max: 20 })),
        ("30123456789".into(), Err(Error::MissingSeparator { ai: ai("30"), max: 8 })),
        ("(37)123456789".into(), Err(Error::TooLong { ai: ai("37"), max: 8 })),
        (format!("10{GS}17271231"), Err(Error::EmptyValue { ai: ai("10") })),
        ("(10)(17)271231".into(), Err(Error::EmptyValue { ai: ai("10") })),
        ("(01)".into(), Err(Error::EmptyValue { ai: ai("01") })),
        // ---- parentheses ----
        ("(01".into(), Err(Error::UnbalancedParenthesis { position: 0 })),
        ("(01)09506000134352(17271231".into(), Err(Error::UnbalancedParenthesis { position: 18 })),
        ("(10)AB(1".into(), Err(Error::UnbalancedParenthesis { position: 6 })),
        // ---- characters ----
        ("10AB#1".into(), Err(Error::InvalidCharacter { ai: ai("10"), character: '#', position: 4 })),
        ("(10)ABé".into(), Err(Error::InvalidCharacter { ai: ai("10"), character: 'é', position: 6 })),
        ("(240)é(10)#".into(), Err(Error::InvalidCharacter { ai: ai("240"), character: 'é', position: 5 })),
        ("(21)AB 12".into(), Err(Error::InvalidCharacter { ai: ai("21"), character: ' ', position: 6 })),
        ("(10)A\\B".into(), Err(Error::InvalidCharacter { ai: ai("10"), character: '\\', position: 5 })),
        (
            format!("(10)AB{GS}(17)271231"),
            Err(Error::InvalidCharacter { ai: ai("10"), character: '\u{1d}', position: 6 }),
        ),
        ("(30)12A".into(), Err(Error::InvalidCharacter { ai: ai("30"), character: 'A', position: 6 })),
        // ---- duplicates ----
        ("(10)AB(10)CD".into(), Err(Error::DuplicateAi { ai: ai("10") })),
        (format!("01{G}1727123117280101"), Err(Error::DuplicateAi { ai: ai("17") })),
        (format!("240A{GS}240B"), Err(Error::DuplicateAi { ai: ai("240") })),
    ];
    cases
}

#[test]
fn corpus_parses_as_expected() {
    let cases = corpus();
    assert!(cases.len() >= 40);
    let mut failures = Vec::new();
    for (input, want) in &cases {
        let got = parse(input);
        if &got != want {
            failures.push(format!("{input:?}\n   want {want:?}\n    got {got:?}"));
        }
        // The byte entry point must agree on every UTF-8 input.
        assert_eq!(parse_bytes(input.as_bytes()), got, "parse_bytes disagrees on {input:?}");
    }
    assert!(failures.is_empty(), "{} of {} cases failed:\n{}", failures.len(), cases.len(), failures.join("\n"));
}

#[test]
fn valid_corpus_entries_round_trip_through_both_renderings() {
    for (input, want) in corpus() {
        if let Ok(es) = want {
            assert_eq!(parse(&es.to_raw()).as_ref(), Ok(&es), "raw of {input:?}");
            assert_eq!(parse(&es.to_bracketed()).as_ref(), Ok(&es), "bracketed of {input:?}");
        }
    }
}

#[test]
fn non_utf8_bytes_are_an_error() {
    assert_eq!(parse_bytes(b"10AB\xff"), Err(Error::InvalidUtf8 { position: 4 }));
    assert_eq!(parse_bytes(b"\xc3"), Err(Error::InvalidUtf8 { position: 0 }));
    assert_eq!(parse_bytes(b"]d2\x1d10AB\x80\x1d17271231"), Err(Error::InvalidUtf8 { position: 8 }));
    assert_eq!(parse_bytes(b""), Err(Error::Empty));
}
