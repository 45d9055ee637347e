//! Rule edges, each at the exact boundary.
#![allow(clippy::unwrap_used)]

use alloc::vec::Vec;

use crate::*;

const T0: i64 = 1_700_000_000_000;
const TEN_MIN: i64 = 10 * MINUTE_MS;

/// Evaluates readings in order, panicking on contract errors (tests feed ordered data).
fn feed(profile: &Profile, state: &mut State, readings: &[Reading]) -> Vec<AlarmEvent> {
    let mut out = Vec::new();
    for r in readings {
        out.extend_from_slice(&evaluate(profile, state, *r).unwrap());
    }
    out
}

fn run_fresh(profile: &Profile, readings: &[Reading]) -> Vec<AlarmEvent> {
    feed(profile, &mut State::new(), readings)
}

/// `count` readings of `centi` every `step` ms starting at `start`.
fn series(start: i64, step: i64, count: i64, centi: i32) -> Vec<Reading> {
    (0..count).map(|i| Reading::new(start + i * step, centi)).collect()
}

fn of_kind(events: &[AlarmEvent], kind: AlarmKind) -> Vec<AlarmEvent> {
    events.iter().filter(|e| e.kind == kind).copied().collect()
}

fn transitions(events: &[AlarmEvent], kind: AlarmKind) -> Vec<(Transition, i64)> {
    of_kind(events, kind).iter().map(|e| (e.transition, e.at_ms)).collect()
}

#[test]
fn heat_opens_at_exactly_10h_of_readings_above_8() {
    let p = Profile::vaccine_2_8();
    let mut st = State::new();
    // t0 .. t0+9h50: 60 readings, none may open.
    let before = feed(&p, &mut st, &series(T0, TEN_MIN, 60, 900));
    assert!(of_kind(&before, AlarmKind::Heat).is_empty());
    let at = feed(&p, &mut st, &[Reading::new(T0 + 10 * HOUR_MS, 900)]);
    let heat = of_kind(&at, AlarmKind::Heat);
    assert_eq!(heat.len(), 1);
    let e = heat[0];
    assert_eq!(e.transition, Transition::Opened);
    assert_eq!(e.severity, Severity::Alarm);
    assert_eq!(e.rule, Some(0));
    assert_eq!((e.start_ms, e.at_ms), (T0, T0 + 10 * HOUR_MS));
    assert_eq!((e.min_centi, e.max_centi), (Some(900), Some(900)));
    assert_eq!(e.past_ms, 10 * HOUR_MS);
    assert_eq!(e.minutes_past_threshold, 600);
    // 1 °C above for 10 h = 10 °C·h.
    assert_eq!(e.centi_degree_hours, 1_000);
    assert!(st.is_open(&p, AlarmKind::Heat));
}

#[test]
fn heat_9h59_then_one_in_range_reading_never_opens_and_resets_the_run() {
    let p = Profile::vaccine_2_8();
    let mut st = State::new();
    let mut readings = series(T0, MINUTE_MS, 600, 900); // t0 .. t0+9h59
    readings.push(Reading::new(T0 + 10 * HOUR_MS, 500));
    let second = T0 + 10 * HOUR_MS + MINUTE_MS;
    readings.extend(series(second, MINUTE_MS, 600, 900)); // 9h59 again: still closed
    let ev = feed(&p, &mut st, &readings);
    assert!(of_kind(&ev, AlarmKind::Heat).is_empty());
    // The new run counts from its own first reading, not from t0.
    let ev = feed(&p, &mut st, &[Reading::new(second + 10 * HOUR_MS, 900)]);
    let heat = of_kind(&ev, AlarmKind::Heat);
    assert_eq!(heat.len(), 1);
    assert_eq!(heat[0].start_ms, second);
}

#[test]
fn exactly_8_0_is_not_above_8() {
    let p = Profile::vaccine_2_8();
    let ev = run_fresh(&p, &series(T0, TEN_MIN, 24 * 6 + 1, 800));
    assert!(ev.is_empty(), "{ev:?}");
    let ev = run_fresh(&p, &series(T0, TEN_MIN, 2, 801));
    assert_eq!(transitions(&ev, AlarmKind::Excursion), [(Transition::Opened, T0)]);
}

#[test]
fn freeze_opens_after_60_min_at_exactly_minus_0_5() {
    let p = Profile::vaccine_2_8();
    let mut st = State::new();
    let before = feed(&p, &mut st, &series(T0, TEN_MIN, 6, -50)); // t0 .. t0+50 min
    assert!(of_kind(&before, AlarmKind::Freeze).is_empty());
    let at = feed(&p, &mut st, &[Reading::new(T0 + 60 * MINUTE_MS, -50)]);
    let freeze = of_kind(&at, AlarmKind::Freeze);
    assert_eq!(freeze.len(), 1);
    assert_eq!(freeze[0].transition, Transition::Opened);
    assert_eq!(freeze[0].at_ms, T0 + 60 * MINUTE_MS);
    assert_eq!(freeze[0].rule, Some(1));
    // At the threshold itself the distance past it is zero.
    assert_eq!(freeze[0].centi_degree_hours, 0);
}

#[test]
fn minus_0_4_for_2h_does_not_freeze() {
    let p = Profile::vaccine_2_8();
    let ev = run_fresh(&p, &series(T0, TEN_MIN, 13, -40));
    assert!(of_kind(&ev, AlarmKind::Freeze).is_empty());
    // Below +2 °C is still an excursion.
    assert_eq!(transitions(&ev, AlarmKind::Excursion), [(Transition::Opened, T0)]);
}

#[test]
fn gap_longer_than_no_data_limit_breaks_the_run() {
    let p = Profile::vaccine_2_8(); // no-data limit 30 min
    let mut readings = series(T0, TEN_MIN, 31, 900); // t0 .. t0+5h
    let resume = T0 + 5 * HOUR_MS + 30 * MINUTE_MS + 1; // 30 min + 1 ms of silence
    readings.extend(series(resume, TEN_MIN, 61, 900)); // resume .. resume+10h
    let ev = run_fresh(&p, &readings);
    let heat = of_kind(&ev, AlarmKind::Heat);
    assert_eq!(heat.len(), 1);
    assert_eq!((heat[0].start_ms, heat[0].at_ms), (resume, resume + 10 * HOUR_MS));
    assert_eq!(
        transitions(&ev, AlarmKind::NoData),
        [(Transition::Opened, T0 + 5 * HOUR_MS + 30 * MINUTE_MS), (Transition::Closed, resume)]
    );
    // The excursion run is broken too: closed at the reading after the gap, reopened there.
    assert_eq!(
        transitions(&ev, AlarmKind::Excursion),
        [(Transition::Opened, T0), (Transition::Closed, resume), (Transition::Opened, resume)]
    );
}

#[test]
fn gap_of_exactly_the_limit_does_not_break_the_run() {
    let p = Profile::vaccine_2_8();
    let mut readings = series(T0, TEN_MIN, 31, 900);
    let resume = T0 + 5 * HOUR_MS + 30 * MINUTE_MS;
    readings.extend(series(resume, TEN_MIN, 30, 900)); // up to t0+10h20
    let ev = run_fresh(&p, &readings);
    assert!(of_kind(&ev, AlarmKind::NoData).is_empty());
    assert_eq!(transitions(&ev, AlarmKind::Heat), [(Transition::Opened, T0 + 10 * HOUR_MS)]);
}

#[test]
fn gap_closes_an_open_alarm_at_the_next_reading() {
    let p = Profile::vaccine_2_8();
    let mut readings = series(T0, TEN_MIN, 61, 900);
    let resume = T0 + 11 * HOUR_MS;
    readings.push(Reading::new(resume, 900));
    let ev = run_fresh(&p, &readings);
    let heat = of_kind(&ev, AlarmKind::Heat);
    assert_eq!(heat.len(), 2);
    assert_eq!(heat[1].transition, Transition::Closed);
    assert_eq!(heat[1].at_ms, resume);
    assert_eq!(heat[1].past_ms, 10 * HOUR_MS);
}

#[test]
fn heat_escalates_to_critical_at_20h() {
    let p = Profile::vaccine_2_8();
    let mut st = State::new();
    let ev = feed(&p, &mut st, &series(T0, TEN_MIN, 120, 900)); // to t0+19h50
    assert_eq!(transitions(&ev, AlarmKind::Heat), [(Transition::Opened, T0 + 10 * HOUR_MS)]);
    let ev = feed(&p, &mut st, &[Reading::new(T0 + 20 * HOUR_MS, 1_000)]);
    let heat = of_kind(&ev, AlarmKind::Heat);
    assert_eq!(heat.len(), 1);
    assert_eq!(heat[0].transition, Transition::Escalated);
    assert_eq!(heat[0].severity, Severity::Critical);
    assert_eq!(heat[0].max_centi, Some(1_000));
    assert_eq!(st.highest_open_severity(), Some(Severity::Critical));
    // No second escalation; Closed keeps the highest severity.
    let mut tail = series(T0 + 20 * HOUR_MS + TEN_MIN, TEN_MIN, 5, 900);
    tail.push(Reading::new(T0 + 21 * HOUR_MS, 500));
    let ev = feed(&p, &mut st, &tail);
    let heat = of_kind(&ev, AlarmKind::Heat);
    assert_eq!(heat.len(), 1);
    assert_eq!(heat[0].transition, Transition::Closed);
    assert_eq!(heat[0].severity, Severity::Critical);
    assert_eq!(heat[0].at_ms, T0 + 21 * HOUR_MS);
    assert_eq!(heat[0].past_ms, 21 * HOUR_MS - TEN_MIN);
}

#[test]
fn freeze_escalates_to_critical_at_5h() {
    let p = Profile::vaccine_2_8();
    let mut st = State::new();
    let ev = feed(&p, &mut st, &series(T0, TEN_MIN, 30, -100)); // to t0+4h50
    assert_eq!(transitions(&ev, AlarmKind::Freeze), [(Transition::Opened, T0 + HOUR_MS)]);
    let ev = feed(&p, &mut st, &[Reading::new(T0 + 5 * HOUR_MS, -100)]);
    let freeze = of_kind(&ev, AlarmKind::Freeze);
    assert_eq!(freeze.len(), 1);
    assert_eq!(freeze[0].transition, Transition::Escalated);
    assert_eq!(freeze[0].severity, Severity::Critical);
    // 0.5 °C below −0.5 °C for 5 h = 2.5 °C·h.
    assert_eq!(freeze[0].centi_degree_hours, 250);
}

#[test]
fn excursion_opens_on_first_out_of_range_reading_and_closes_when_back() {
    let p = Profile::vaccine_2_8();
    let readings = [
        Reading::new(T0, 500),
        Reading::new(T0 + TEN_MIN, 801),
        Reading::new(T0 + 2 * TEN_MIN, 1_100),
        Reading::new(T0 + 3 * TEN_MIN, 800),
        Reading::new(T0 + 4 * TEN_MIN, 199),
        Reading::new(T0 + 5 * TEN_MIN, 200),
    ];
    let ev = of_kind(&run_fresh(&p, &readings), AlarmKind::Excursion);
    let got: Vec<_> = ev.iter().map(|e| (e.transition, e.at_ms)).collect();
    assert_eq!(
        got,
        [
            (Transition::Opened, T0 + TEN_MIN),
            (Transition::Closed, T0 + 3 * TEN_MIN),
            (Transition::Opened, T0 + 4 * TEN_MIN),
            (Transition::Closed, T0 + 5 * TEN_MIN),
        ]
    );
    let closed = ev[1];
    assert_eq!(closed.severity, Severity::Warning);
    assert_eq!(closed.start_ms, T0 + TEN_MIN);
    assert_eq!((closed.min_centi, closed.max_centi), (Some(801), Some(1_100)));
    assert_eq!(closed.past_ms, TEN_MIN);
    // Trapezoid of 0.01 and 3.00 °C over 10 min = 0.25 °C·h, floored to hundredths.
    assert_eq!(closed.centi_degree_hours, 25);
}

#[test]
fn power_out_opens_after_longer_than_the_limit_and_closes_on_mains() {
    let p = Profile::vaccine_2_8(); // 60 min
    let mut readings: Vec<Reading> = (0..7).map(|i| Reading::new(T0 + i * TEN_MIN, 500).with_power(false)).collect(); // off for exactly 60 min: not longer than
    // A reading without power information neither extends nor resets the run.
    readings.push(Reading::new(T0 + 65 * MINUTE_MS, 500));
    let mut st = State::new();
    let ev = feed(&p, &mut st, &readings);
    assert!(of_kind(&ev, AlarmKind::PowerOut).is_empty());
    let ev = feed(
        &p,
        &mut st,
        &[
            Reading::new(T0 + 70 * MINUTE_MS, 600).with_power(false),
            Reading::new(T0 + 80 * MINUTE_MS, 600).with_power(true),
        ],
    );
    let power = of_kind(&ev, AlarmKind::PowerOut);
    assert_eq!(power.len(), 2);
    assert_eq!((power[0].transition, power[0].at_ms), (Transition::Opened, T0 + 70 * MINUTE_MS));
    assert_eq!(power[0].start_ms, T0);
    assert_eq!(power[0].severity, Severity::Alarm);
    assert_eq!((power[0].min_centi, power[0].max_centi), (Some(500), Some(600)));
    assert_eq!((power[1].transition, power[1].at_ms), (Transition::Closed, T0 + 80 * MINUTE_MS));
}

#[test]
fn power_out_limit_is_configurable() {
    let p = Profile::vaccine_2_8().with_power_out_ms(15 * MINUTE_MS);
    let readings: Vec<Reading> = (0..3).map(|i| Reading::new(T0 + i * TEN_MIN, 500).with_power(false)).collect();
    let ev = run_fresh(&p, &readings);
    assert_eq!(transitions(&ev, AlarmKind::PowerOut), [(Transition::Opened, T0 + 2 * TEN_MIN)]);
}

#[test]
fn sensor_fault_flag_and_sentinels_raise_sensor_fault() {
    let p = Profile::vaccine_2_8();
    for bad in [
        Reading::new(T0 + TEN_MIN, 500).with_sensor_fault(true),
        Reading::new(T0 + TEN_MIN, DS18B20_POWER_ON_RESET_CENTI),
        Reading::new(T0 + TEN_MIN, DS18B20_DISCONNECTED_CENTI),
        Reading::from_celsius(T0 + TEN_MIN, f64::NAN),
    ] {
        let readings = [Reading::new(T0, 500), bad, Reading::new(T0 + 2 * TEN_MIN, 500)];
        let ev = run_fresh(&p, &readings);
        assert_eq!(
            transitions(&ev, AlarmKind::SensorFault),
            [(Transition::Opened, T0 + TEN_MIN), (Transition::Closed, T0 + 2 * TEN_MIN)],
            "{bad:?}"
        );
        // The fault reading's temperature is not an excursion.
        assert!(of_kind(&ev, AlarmKind::Excursion).is_empty(), "{bad:?}");
    }
    // Without sentinels, 85 °C is just a (very) hot reading.
    let mut plain = p;
    plain.sensor_sentinels = [None, None];
    let ev = run_fresh(&plain, &[Reading::new(T0, DS18B20_POWER_ON_RESET_CENTI)]);
    assert!(of_kind(&ev, AlarmKind::SensorFault).is_empty());
    assert_eq!(of_kind(&ev, AlarmKind::Excursion).len(), 1);
}

#[test]
fn fault_readings_neither_extend_nor_reset_a_heat_run() {
    let p = Profile::vaccine_2_8();
    let mut readings = series(T0, TEN_MIN, 61, 900);
    readings[30] = Reading::new(T0 + 5 * HOUR_MS, 0).with_sensor_fault(true);
    let ev = run_fresh(&p, &readings);
    assert_eq!(transitions(&ev, AlarmKind::Heat), [(Transition::Opened, T0 + 10 * HOUR_MS)]);
}

#[test]
fn out_of_order_and_duplicate_readings_are_rejected_without_state_change() {
    let p = Profile::vaccine_2_8();
    let mut st = State::new();
    evaluate(&p, &mut st, Reading::new(T0, 900)).unwrap();
    let before = st;
    assert_eq!(
        evaluate(&p, &mut st, Reading::new(T0 - 1, 100)),
        Err(EvalError::OutOfOrder { last_ms: T0, time_ms: T0 - 1 })
    );
    assert_eq!(evaluate(&p, &mut st, Reading::new(T0, 100)), Err(EvalError::Duplicate { time_ms: T0 }));
    assert_eq!(st, before);
    assert_eq!(st.last_reading_ms(), Some(T0));
}

#[test]
fn check_no_data_opens_after_the_limit_and_the_next_reading_closes_it() {
    let p = Profile::vaccine_2_8().with_expected_interval_ms(5 * MINUTE_MS); // 15 min
    assert_eq!(p.no_data_ms, 15 * MINUTE_MS);
    let mut st = State::new();
    assert_eq!(check_no_data(&p, &mut st, T0), None);
    evaluate(&p, &mut st, Reading::new(T0, 500)).unwrap();
    assert_eq!(check_no_data(&p, &mut st, T0 + 15 * MINUTE_MS), None);
    let opened = check_no_data(&p, &mut st, T0 + 15 * MINUTE_MS + 1).unwrap();
    assert_eq!(opened.kind, AlarmKind::NoData);
    assert_eq!(opened.transition, Transition::Opened);
    assert_eq!((opened.start_ms, opened.at_ms), (T0, T0 + 15 * MINUTE_MS));
    assert!(st.is_open(&p, AlarmKind::NoData));
    assert_eq!(check_no_data(&p, &mut st, T0 + HOUR_MS), None, "already open");
    let ev = evaluate(&p, &mut st, Reading::new(T0 + HOUR_MS, 500)).unwrap();
    assert_eq!(transitions(&ev, AlarmKind::NoData), [(Transition::Closed, T0 + HOUR_MS)]);
    assert!(!st.is_open(&p, AlarmKind::NoData));
}

#[test]
fn buffered_upload_closes_no_data_opened_by_the_clock() {
    let p = Profile::vaccine_2_8();
    let mut st = State::new();
    evaluate(&p, &mut st, Reading::new(T0, 500)).unwrap();
    assert!(check_no_data(&p, &mut st, T0 + HOUR_MS).is_some());
    // The logger had a reading 10 min later all along; it arrives late but still closes NoData.
    let ev = evaluate(&p, &mut st, Reading::new(T0 + TEN_MIN, 500)).unwrap();
    assert_eq!(transitions(&ev, AlarmKind::NoData), [(Transition::Closed, T0 + TEN_MIN)]);
}

#[test]
fn cumulative_rule_adds_up_separate_runs_within_the_window() {
    let rule = Rule::cumulative(AlarmKind::Heat, Comparison::Above, 800, HOUR_MS, 24 * HOUR_MS, Severity::Alarm)
        .escalate_after(2 * HOUR_MS, Severity::Critical);
    let p = Profile::vaccine_2_8().with_rule(0, None).with_rule(1, None).with_rule(2, Some(rule));
    let step = 5 * MINUTE_MS;
    // Three 25-min runs (6 readings each, 5 min apart) separated by in-range readings.
    let mut readings = Vec::new();
    let mut t = T0;
    for _ in 0..3 {
        readings.extend(series(t, step, 6, 900));
        readings.push(Reading::new(t + 6 * step, 500));
        t += 2 * HOUR_MS;
    }
    let ev = run_fresh(&p, &readings);
    let heat = of_kind(&ev, AlarmKind::Heat);
    assert_eq!(heat.len(), 1, "{heat:?}");
    // 25 + 25 + 10 min: opens at the third run's third reading.
    assert_eq!(heat[0].transition, Transition::Opened);
    assert_eq!(heat[0].at_ms, T0 + 4 * HOUR_MS + 2 * step);
    assert_eq!(heat[0].past_ms, HOUR_MS);
    assert_eq!(heat[0].start_ms, T0);
    assert_eq!(heat[0].rule, Some(2));

    // Once the first runs slide out of the window the alarm closes.
    let mut st = State::new();
    feed(&p, &mut st, &readings);
    let later = feed(&p, &mut st, &series(T0 + 30 * HOUR_MS, HOUR_MS / 4, 4, 500));
    let closed = of_kind(&later, AlarmKind::Heat);
    assert_eq!(closed.len(), 1);
    assert_eq!(closed[0].transition, Transition::Closed);
    assert!(closed[0].past_ms < HOUR_MS);
}

#[test]
fn cumulative_rule_escalates_on_the_window_total() {
    let rule = Rule::cumulative(AlarmKind::Heat, Comparison::Above, 800, HOUR_MS, 24 * HOUR_MS, Severity::Alarm)
        .escalate_after(2 * HOUR_MS, Severity::Critical);
    let p = Profile::vaccine_2_8().with_rule(0, Some(rule));
    let ev = run_fresh(&p, &series(T0, TEN_MIN, 13, 900));
    assert_eq!(
        transitions(&ev, AlarmKind::Heat),
        [(Transition::Opened, T0 + HOUR_MS), (Transition::Escalated, T0 + 2 * HOUR_MS)]
    );
}

#[test]
fn freezer_profile_rules() {
    let p = Profile::freezer();
    let ev = run_fresh(&p, &series(T0, TEN_MIN, 7, -1_400));
    assert_eq!(transitions(&ev, AlarmKind::Heat), [(Transition::Opened, T0 + HOUR_MS)]);
    let ev = run_fresh(&p, &series(T0, TEN_MIN, 61, -1_500));
    assert!(ev.is_empty(), "−15.0 °C is in range");
    let ev = run_fresh(&p, &series(T0, TEN_MIN, 61, -2_600));
    assert_eq!(transitions(&ev, AlarmKind::Freeze), [(Transition::Opened, T0 + 10 * HOUR_MS)]);
}

#[test]
fn ultra_low_profile_rules() {
    let p = Profile::ultra_low();
    let ev = run_fresh(&p, &series(T0, TEN_MIN, 4, -5_900));
    let heat = of_kind(&ev, AlarmKind::Heat);
    assert_eq!(heat.len(), 1);
    assert_eq!((heat[0].rule, heat[0].at_ms), (Some(0), T0 + 30 * MINUTE_MS));
    // Door openings: 20 min warm every 2 h never trip the continuous rule but add up.
    let mut readings = Vec::new();
    for k in 0..4 {
        let t = T0 + k * 2 * HOUR_MS;
        readings.extend(series(t, TEN_MIN, 3, -5_500));
        readings.push(Reading::new(t + 3 * TEN_MIN, -8_000));
    }
    let ev = run_fresh(&p, &readings);
    let heat = of_kind(&ev, AlarmKind::Heat);
    assert_eq!(heat.len(), 1, "{heat:?}");
    assert_eq!((heat[0].rule, heat[0].at_ms), (Some(1), T0 + 4 * HOUR_MS + 2 * TEN_MIN));
    let ev = run_fresh(&p, &series(T0, TEN_MIN, 13, -9_100));
    assert_eq!(transitions(&ev, AlarmKind::Freeze), [(Transition::Opened, T0 + 2 * HOUR_MS)]);
}

#[test]
fn celsius_conversion_rounds_to_nearest_centi_degree() {
    assert_eq!(centi_from_celsius(8.0), Some(800));
    assert_eq!(centi_from_celsius(-0.5), Some(-50));
    assert_eq!(centi_from_celsius(2.004), Some(200));
    assert_eq!(centi_from_celsius(2.006), Some(201));
    assert_eq!(centi_from_celsius(-0.125), Some(-13));
    assert_eq!(centi_from_celsius(0.125), Some(13));
    assert_eq!(centi_from_celsius(-0.0), Some(0));
    assert_eq!(centi_from_celsius(1e300), Some(i32::MAX));
    assert_eq!(centi_from_celsius(-1e300), Some(i32::MIN));
    assert_eq!(centi_from_celsius(f64::NAN), None);
    assert_eq!(centi_from_celsius(f64::INFINITY), None);
    assert_eq!(Reading::from_celsius(T0, 8.0), Reading::new(T0, 800));
    assert!(Reading::from_celsius(T0, f64::NEG_INFINITY).sensor_fault);
}

#[test]
fn state_encoding_is_versioned_and_checked() {
    assert_eq!(STATE_BYTES, 601);
    let p = Profile::vaccine_2_8();
    let mut st = State::new();
    feed(&p, &mut st, &series(T0, TEN_MIN, 70, 900));
    let bytes = st.to_bytes();
    assert_eq!(bytes[0], STATE_VERSION);
    assert_eq!(State::from_bytes(&bytes), Ok(st));
    assert_eq!(State::from_bytes(&bytes[..10]), Err(DecodeError::Length { expected: STATE_BYTES, actual: 10 }));
    let mut bad = bytes;
    bad[0] = 2;
    assert_eq!(State::from_bytes(&bad), Err(DecodeError::Version(2)));
    let mut bad = bytes;
    bad[1] = 0x80;
    assert_eq!(State::from_bytes(&bad), Err(DecodeError::Corrupt { offset: 1 }));
    assert_eq!(State::from_bytes(&State::new().to_bytes()), Ok(State::new()));
    assert_eq!(State::default(), State::new());
}

#[test]
fn events_collection_iterates_in_order() {
    let p = Profile::vaccine_2_8();
    let mut st = State::new();
    evaluate(&p, &mut st, Reading::new(T0, 900)).unwrap();
    let ev = evaluate(&p, &mut st, Reading::new(T0 + HOUR_MS, DS18B20_DISCONNECTED_CENTI)).unwrap();
    let kinds: Vec<_> = ev.into_iter().map(|e| e.kind).collect();
    assert_eq!(kinds, [AlarmKind::NoData, AlarmKind::NoData, AlarmKind::SensorFault]);
    assert_eq!(ev.len(), 3);
    assert_eq!((&ev).into_iter().count(), 3);
    assert!(Events::new().is_empty());
}
