//! Properties: the parser is total, renderings round-trip, and the check digit is exact.

use proptest::prelude::*;
use vaxtrace_gs1::{Date, ElementString, Error, check_digit_for, check_digit_ok, parse, parse_bytes};

const CSET82: &str = "!\"%&'()*+,-./0123456789:;<=>?ABCDEFGHIJKLMNOPQRSTUVWXYZ_abcdefghijklmnopqrstuvwxyz";
const OTHER_AIS: [(&str, usize); 9] = [
    ("240", 30),
    ("241", 30),
    ("250", 30),
    ("710", 20),
    ("711", 20),
    ("712", 20),
    ("713", 20),
    ("714", 20),
    ("715", 20),
];

fn cset82(max: usize) -> impl Strategy<Value = String> {
    let chars: Vec<char> = CSET82.chars().collect();
    prop::collection::vec(prop::sample::select(chars), 1..=max).prop_map(|v| v.into_iter().collect())
}

fn gtin() -> impl Strategy<Value = String> {
    prop::collection::vec(0u32..10, 13).prop_map(|digits| {
        let payload: String = digits.iter().filter_map(|&d| char::from_digit(d, 10)).collect();
        let check = check_digit_for(&payload).unwrap_or('?');
        format!("{payload}{check}")
    })
}

fn date() -> impl Strategy<Value = Date> {
    (2000u16..=2099, 1u8..=12, 1u8..=31).prop_filter_map("day exists", |(y, m, d)| Date::new(y, m, d))
}

fn element_string() -> impl Strategy<Value = ElementString> {
    let others = OTHER_AIS.map(|(ai, max)| proptest::option::of(cset82(max).prop_map(move |v| (ai.to_string(), v))));
    (
        (
            proptest::option::of(gtin()),
            proptest::option::of(cset82(20)),
            proptest::option::of(date()),
            proptest::option::of(date()),
            proptest::option::of(cset82(20)),
            proptest::option::of(0u32..=99_999_999),
            proptest::option::of(0u32..=99_999_999),
        ),
        others,
    )
        .prop_map(|((gtin, lot, expiry, production_date, serial, count, trade_item_count), others)| {
            ElementString {
                gtin,
                lot,
                expiry,
                production_date,
                serial,
                count,
                trade_item_count,
                other: others.into_iter().flatten().collect(),
            }
        })
}

/// Strings over the characters the parser branches on, so random inputs get past the first check.
fn gs1ish() -> impl Strategy<Value = String> {
    let alphabet: Vec<char> = "0123456789()\\\u{1d}]dCQ ABé\r\n#".chars().collect();
    prop::collection::vec(prop::sample::select(alphabet), 0..60).prop_map(|v| v.into_iter().collect())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn never_panics_on_strings(s in any::<String>()) {
        let _ = parse(&s);
    }

    #[test]
    fn never_panics_on_bytes(b in any::<Vec<u8>>()) {
        let _ = parse_bytes(&b);
    }

    #[test]
    fn never_panics_on_gs1_like_strings(s in gs1ish()) {
        let _ = parse(&s);
        let _ = parse_bytes(s.as_bytes());
    }

    #[test]
    fn raw_and_bracketed_round_trip(es in element_string()) {
        if es == ElementString::default() {
            prop_assert_eq!(parse(&es.to_raw()), Err(Error::Empty));
        } else {
            prop_assert_eq!(parse(&es.to_raw()), Ok(es.clone()));
            prop_assert_eq!(parse(&es.to_bracketed()), Ok(es.clone()));
            // What a scanner would actually send.
            prop_assert_eq!(parse_bytes(format!("]d2{}\r\n", es.to_raw()).as_bytes()), Ok(es.clone()));
        }
    }

    #[test]
    fn check_digit_accepts_only_the_correct_digit(payload in "[0-9]{1,17}") {
        let correct = check_digit_for(&payload);
        prop_assert!(correct.is_some());
        for d in '0'..='9' {
            let key = format!("{payload}{d}");
            prop_assert_eq!(check_digit_ok(&key), Some(d) == correct, "{}", key);
        }
    }
}
