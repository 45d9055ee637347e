//! Per-storage-unit alarm thresholds: an operator's changes to the rules of the unit's
//! temperature profile (a fridge holding a product with a wider label range, a freezer whose
//! alarm should fire sooner). Unset values fall back to the profile's.
//!
//! The overrides name the values the built-in profiles are made of, not rule slots: the range,
//! the continuous heat and freeze alarms (threshold, duration, critical escalation), the no-data
//! and power-out limits. Rules whose threshold sits at an edge of the profile's range (every heat
//! rule at the range high; the freezer and ultra-low cold rules at the range low) move with that
//! edge, so an override of the range keeps the rules consistent with it.

use serde::{Deserialize, Serialize};
use vaxtrace_coldchain as cc;

use super::facility::TemperatureProfile;
use crate::error::{Error, Result};

/// The lowest temperature an override may name, °C (below any ultra-low freezer).
pub const MIN_TEMP_C: f64 = -100.0;
/// The highest temperature an override may name, °C.
pub const MAX_TEMP_C: f64 = 80.0;
/// The longest duration an override may name: 31 days, in seconds.
pub const MAX_DURATION_SECS: i64 = 31 * 24 * 3600;

/// The API names of the overridable values, in wire order; update masks name them as
/// `alarm_overrides.<name>`.
pub const FIELDS: [&str; 9] = [
    "range_low_c",
    "range_high_c",
    "heat_alarm_after",
    "heat_critical_after",
    "freeze_threshold_c",
    "freeze_alarm_after",
    "freeze_critical_after",
    "no_data_after",
    "power_out_after",
];

/// The error field name of an override value (`storage_unit.alarm_overrides.<name>`).
fn field(name: &str) -> String {
    format!("storage_unit.alarm_overrides.{name}")
}

/// The built-in rules of a temperature profile, before any override.
pub fn base_profile(profile: TemperatureProfile) -> cc::Profile {
    match profile {
        TemperatureProfile::Refrigerated => cc::Profile::vaccine_2_8(),
        TemperatureProfile::Frozen => cc::Profile::freezer(),
        TemperatureProfile::UltraLow => cc::Profile::ultra_low(),
    }
}

/// Raw override values as they come from any transport; `None` = keep the profile's value.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct AlarmOverridesInput {
    /// Lowest acceptable temperature, °C.
    pub range_low_c: Option<f64>,
    /// Highest acceptable temperature, °C.
    pub range_high_c: Option<f64>,
    /// Heat alarm duration, seconds.
    pub heat_alarm_secs: Option<i64>,
    /// Heat critical escalation, seconds.
    pub heat_critical_secs: Option<i64>,
    /// Freeze threshold, °C.
    pub freeze_threshold_c: Option<f64>,
    /// Freeze alarm duration, seconds.
    pub freeze_alarm_secs: Option<i64>,
    /// Freeze critical escalation, seconds.
    pub freeze_critical_secs: Option<i64>,
    /// No-data limit, seconds.
    pub no_data_secs: Option<i64>,
    /// Power-out limit, seconds.
    pub power_out_secs: Option<i64>,
}

/// One unit's validated changes to its profile's alarm rules; `None` keeps the profile's value.
/// Temperatures are integer centi-°C like the rules compare them; durations are whole seconds.
/// Stored as JSON, so every field defaults when absent.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(default)]
pub struct AlarmOverrides {
    /// Lowest acceptable temperature (excursion warning below it); cold rules at the profile's
    /// range low follow it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub range_low_centi: Option<i32>,
    /// Highest acceptable temperature; every heat rule at the profile's range high follows it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub range_high_centi: Option<i32>,
    /// Continuous time above the range at which the heat alarm opens.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub heat_alarm_secs: Option<i64>,
    /// Continuous time above the range at which the heat alarm becomes critical.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub heat_critical_secs: Option<i64>,
    /// Threshold of the freeze (cold) rules, compared as the profile compares it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub freeze_threshold_centi: Option<i32>,
    /// Continuous time past the freeze threshold at which the freeze alarm opens.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub freeze_alarm_secs: Option<i64>,
    /// Continuous time past the freeze threshold at which the freeze alarm becomes critical.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub freeze_critical_secs: Option<i64>,
    /// Silence after which NO_DATA opens (instead of 3 × the logger's interval).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub no_data_secs: Option<i64>,
    /// Time with mains off after which POWER_OUT opens.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub power_out_secs: Option<i64>,
}

fn temperature(name: &str, v: Option<f64>) -> Result<Option<i32>> {
    let Some(c) = v else { return Ok(None) };
    if !c.is_finite() || !(MIN_TEMP_C..=MAX_TEMP_C).contains(&c) {
        return Err(Error::invalid(field(name), format!("must be within {MIN_TEMP_C}..{MAX_TEMP_C} °C")));
    }
    // In range and finite, so the conversion cannot fail; the error only keeps this total.
    cc::centi_from_celsius(c).map(Some).ok_or_else(|| Error::invalid(field(name), "must be a number"))
}

fn duration(name: &str, v: Option<i64>) -> Result<Option<i64>> {
    match v {
        Some(s) if s <= 0 => Err(Error::invalid(field(name), "must be longer than zero")),
        Some(s) if s > MAX_DURATION_SECS => Err(Error::invalid(field(name), "must be at most 31 days")),
        other => Ok(other),
    }
}

/// °C for messages: two decimals, a trailing zero dropped (`12.0`, `-0.5`, `8.25`).
pub fn celsius(centi: i32) -> String {
    let s = format!("{:.2}", f64::from(centi) / 100.0);
    s.strip_suffix('0').map_or_else(|| s.clone(), str::to_owned)
}

/// A duration for messages in the largest whole unit (`10 h`, `90 min`, `45 s`).
pub fn span(ms: i64) -> String {
    if ms % cc::HOUR_MS == 0 {
        format!("{} h", ms / cc::HOUR_MS)
    } else if ms % cc::MINUTE_MS == 0 {
        format!("{} min", ms / cc::MINUTE_MS)
    } else {
        format!("{} s", ms / 1000)
    }
}

/// The first continuous rule of `kind`: the one the alarm/critical durations name (the
/// ultra-low profile's cumulative heat rule keeps its own total and window).
fn main_rule(p: &cc::Profile, kind: cc::AlarmKind) -> Option<&cc::Rule> {
    p.rules.iter().flatten().find(|r| r.kind == kind && r.accumulation == cc::Accumulation::Continuous)
}

impl AlarmOverrides {
    /// Validates every value of `input` on its own (ranges, signs); how the values fit together
    /// with the unit's profile is [`AlarmOverrides::check`]'s job.
    pub fn parse(input: &AlarmOverridesInput) -> Result<Self> {
        let mut o = AlarmOverrides::default();
        for name in FIELDS {
            o.parse_field(input, name)?;
        }
        Ok(o)
    }

    /// Validates the value `name` (an entry of [`FIELDS`]) of `input` into `self`; an unset value
    /// clears the override.
    pub fn parse_field(&mut self, input: &AlarmOverridesInput, name: &str) -> Result<()> {
        let i = input;
        match name {
            "range_low_c" => self.range_low_centi = temperature(name, i.range_low_c)?,
            "range_high_c" => self.range_high_centi = temperature(name, i.range_high_c)?,
            "heat_alarm_after" => self.heat_alarm_secs = duration(name, i.heat_alarm_secs)?,
            "heat_critical_after" => self.heat_critical_secs = duration(name, i.heat_critical_secs)?,
            "freeze_threshold_c" => self.freeze_threshold_centi = temperature(name, i.freeze_threshold_c)?,
            "freeze_alarm_after" => self.freeze_alarm_secs = duration(name, i.freeze_alarm_secs)?,
            "freeze_critical_after" => self.freeze_critical_secs = duration(name, i.freeze_critical_secs)?,
            "no_data_after" => self.no_data_secs = duration(name, i.no_data_secs)?,
            "power_out_after" => self.power_out_secs = duration(name, i.power_out_secs)?,
            _ => return Err(Error::invalid("update_mask", format!("unknown alarm override '{name}'"))),
        }
        Ok(())
    }

    /// True when nothing is overridden (stored as NULL).
    pub fn is_empty(&self) -> bool {
        *self == AlarmOverrides::default()
    }

    /// The rules of `base` with these overrides applied. Values are assumed checked; the
    /// no-data limit replaces whatever `base` had (3 × a logger's interval on the server).
    pub fn apply(&self, base: cc::Profile) -> cc::Profile {
        let ms = |s: i64| s.saturating_mul(1000);
        let mut p = base;
        let low = self.range_low_centi.unwrap_or(base.range_low_centi);
        let high = self.range_high_centi.unwrap_or(base.range_high_centi);
        p.range_low_centi = low;
        p.range_high_centi = high;
        let (mut heat_seen, mut freeze_seen) = (false, false);
        for rule in p.rules.iter_mut().flatten() {
            let continuous = rule.accumulation == cc::Accumulation::Continuous;
            let (alarm, critical) = match rule.kind {
                cc::AlarmKind::Heat => {
                    if rule.threshold_centi == base.range_high_centi {
                        rule.threshold_centi = high;
                    }
                    let main = continuous && !heat_seen;
                    heat_seen |= main;
                    if !main {
                        continue;
                    }
                    (self.heat_alarm_secs, self.heat_critical_secs)
                }
                cc::AlarmKind::Freeze => {
                    match self.freeze_threshold_centi {
                        Some(t) => rule.threshold_centi = t,
                        None if rule.threshold_centi == base.range_low_centi => rule.threshold_centi = low,
                        None => {}
                    }
                    let main = continuous && !freeze_seen;
                    freeze_seen |= main;
                    if !main {
                        continue;
                    }
                    (self.freeze_alarm_secs, self.freeze_critical_secs)
                }
                _ => continue,
            };
            if let Some(s) = alarm {
                rule.duration_ms = ms(s);
            }
            if let Some(s) = critical {
                rule.escalation = Some(cc::Escalation { after_ms: ms(s), severity: cc::Severity::Critical });
            }
        }
        if let Some(s) = self.no_data_secs {
            p.no_data_ms = ms(s);
        }
        if let Some(s) = self.power_out_secs {
            p.power_out_ms = ms(s);
        }
        p
    }

    /// The values `profile` actually uses, every field that the profile has set: what a unit's
    /// alarms run with once merged (`no_data_secs` is whatever the profile holds).
    pub fn of_profile(p: &cc::Profile) -> Self {
        let secs = |ms: i64| ms / 1000;
        let heat = main_rule(p, cc::AlarmKind::Heat);
        let freeze = main_rule(p, cc::AlarmKind::Freeze);
        AlarmOverrides {
            range_low_centi: Some(p.range_low_centi),
            range_high_centi: Some(p.range_high_centi),
            heat_alarm_secs: heat.map(|r| secs(r.duration_ms)),
            heat_critical_secs: heat.and_then(|r| r.escalation).map(|e| secs(e.after_ms)),
            freeze_threshold_centi: freeze.map(|r| r.threshold_centi),
            freeze_alarm_secs: freeze.map(|r| secs(r.duration_ms)),
            freeze_critical_secs: freeze.and_then(|r| r.escalation).map(|e| secs(e.after_ms)),
            no_data_secs: Some(secs(p.no_data_ms)),
            power_out_secs: Some(secs(p.power_out_ms)),
        }
    }

    /// Checks that these overrides, merged with `profile`'s rules, make sense together: the
    /// range low below its high, no temperature inside the range counting as freezing, a
    /// critical escalation later than its alarm. The error names an overridden field.
    pub fn check(&self, profile: TemperatureProfile) -> Result<()> {
        let merged = self.apply(base_profile(profile));
        let (low, high) = (merged.range_low_centi, merged.range_high_centi);
        if low >= high {
            return Err(if self.range_high_centi.is_some() {
                Error::invalid(field("range_high_c"), format!("must be above the range low ({} °C)", celsius(low)))
            } else {
                Error::invalid(field("range_low_c"), format!("must be below the range high ({} °C)", celsius(high)))
            });
        }
        for rule in merged.rules.iter().flatten().filter(|r| r.kind == cc::AlarmKind::Freeze) {
            // A reading at the range low is acceptable, so it must not count as freezing.
            if rule.comparison.matches(low, rule.threshold_centi) {
                return Err(if self.freeze_threshold_centi.is_some() {
                    Error::invalid(
                        field("freeze_threshold_c"),
                        format!("must be below the range low ({} °C)", celsius(low)),
                    )
                } else {
                    Error::invalid(
                        field("range_low_c"),
                        format!("must be above the freeze threshold ({} °C)", celsius(rule.threshold_centi)),
                    )
                });
            }
        }
        let pairs = [
            (cc::AlarmKind::Heat, "heat", self.heat_critical_secs.is_some()),
            (cc::AlarmKind::Freeze, "freeze", self.freeze_critical_secs.is_some()),
        ];
        for (kind, name, critical_set) in pairs {
            let Some(rule) = main_rule(&merged, kind) else { continue };
            let Some(esc) = rule.escalation else { continue };
            if esc.after_ms <= rule.duration_ms {
                return Err(if critical_set {
                    Error::invalid(
                        field(&format!("{name}_critical_after")),
                        format!("must be longer than the {name} alarm duration ({})", span(rule.duration_ms)),
                    )
                } else {
                    Error::invalid(
                        field(&format!("{name}_alarm_after")),
                        format!("must be shorter than the {name} critical duration ({})", span(esc.after_ms)),
                    )
                });
            }
        }
        Ok(())
    }

    /// Copies the value `name` (an entry of [`FIELDS`]) from `from`, for field-level update masks.
    pub fn take(&mut self, from: &AlarmOverrides, name: &str) {
        match name {
            "range_low_c" => self.range_low_centi = from.range_low_centi,
            "range_high_c" => self.range_high_centi = from.range_high_centi,
            "heat_alarm_after" => self.heat_alarm_secs = from.heat_alarm_secs,
            "heat_critical_after" => self.heat_critical_secs = from.heat_critical_secs,
            "freeze_threshold_c" => self.freeze_threshold_centi = from.freeze_threshold_centi,
            "freeze_alarm_after" => self.freeze_alarm_secs = from.freeze_alarm_secs,
            "freeze_critical_after" => self.freeze_critical_secs = from.freeze_critical_secs,
            "no_data_after" => self.no_data_secs = from.no_data_secs,
            "power_out_after" => self.power_out_secs = from.power_out_secs,
            _ => {}
        }
    }
}

/// The limit an alarm event was measured against, for the alert text: `above 12.0 °C for 1 h,
/// critical at 2 h`, `range 2.0..8.0 °C`, `limit 30 min`; "" when the event has none.
pub fn limit_text(e: &cc::AlarmEvent, p: &cc::Profile) -> String {
    let rule = e.rule.and_then(|i| p.rules.get(usize::from(i))).copied().flatten();
    match (e.kind, rule) {
        (_, Some(r)) => {
            let cmp = match r.comparison {
                cc::Comparison::Above => "above",
                cc::Comparison::AtOrAbove => "at or above",
                cc::Comparison::Below => "below",
                cc::Comparison::AtOrBelow => "at or below",
            };
            let mut s = match r.accumulation {
                cc::Accumulation::Continuous => {
                    format!("{cmp} {} °C for {}", celsius(r.threshold_centi), span(r.duration_ms))
                }
                cc::Accumulation::Cumulative { window_ms } => format!(
                    "{cmp} {} °C for {} in {}",
                    celsius(r.threshold_centi),
                    span(r.duration_ms),
                    span(window_ms)
                ),
            };
            if let Some(esc) = r.escalation {
                s.push_str(&format!(", critical at {}", span(esc.after_ms)));
            }
            s
        }
        (cc::AlarmKind::Excursion, None) => {
            format!("range {}..{} °C", celsius(p.range_low_centi), celsius(p.range_high_centi))
        }
        (cc::AlarmKind::NoData, None) => format!("limit {}", span(p.no_data_ms)),
        (cc::AlarmKind::PowerOut, None) => format!("limit {}", span(p.power_out_ms)),
        _ => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn overrides(f: impl FnOnce(&mut AlarmOverridesInput)) -> Result<AlarmOverrides> {
        let mut i = AlarmOverridesInput::default();
        f(&mut i);
        AlarmOverrides::parse(&i)
    }

    /// The field an INVALID_ARGUMENT names, or "" for anything else.
    fn bad_field<T: std::fmt::Debug>(r: Result<T>) -> String {
        match r {
            Err(Error::InvalidArgument { field, .. }) => field,
            other => format!("not an invalid argument: {other:?}"),
        }
    }

    #[test]
    fn no_overrides_is_the_profile() {
        for p in [TemperatureProfile::Refrigerated, TemperatureProfile::Frozen, TemperatureProfile::UltraLow] {
            assert_eq!(AlarmOverrides::default().apply(base_profile(p)), base_profile(p));
            assert!(AlarmOverrides::default().check(p).is_ok());
        }
        assert!(AlarmOverrides::default().is_empty());
    }

    #[test]
    fn values_are_checked_one_by_one() {
        let f = |r| bad_field(r);
        assert_eq!(f(overrides(|i| i.range_high_c = Some(80.5))), "storage_unit.alarm_overrides.range_high_c");
        assert_eq!(f(overrides(|i| i.range_low_c = Some(-100.01))), "storage_unit.alarm_overrides.range_low_c");
        assert_eq!(f(overrides(|i| i.range_low_c = Some(f64::NAN))), "storage_unit.alarm_overrides.range_low_c");
        assert_eq!(
            f(overrides(|i| i.freeze_threshold_c = Some(f64::INFINITY))),
            "storage_unit.alarm_overrides.freeze_threshold_c"
        );
        assert_eq!(f(overrides(|i| i.heat_alarm_secs = Some(0))), "storage_unit.alarm_overrides.heat_alarm_after");
        assert_eq!(f(overrides(|i| i.no_data_secs = Some(-60))), "storage_unit.alarm_overrides.no_data_after");
        assert_eq!(
            f(overrides(|i| i.power_out_secs = Some(MAX_DURATION_SECS + 1))),
            "storage_unit.alarm_overrides.power_out_after"
        );
        // The edges themselves are allowed.
        let ok = overrides(|i| {
            i.range_low_c = Some(-100.0);
            i.range_high_c = Some(80.0);
            i.heat_alarm_secs = Some(1);
            i.no_data_secs = Some(MAX_DURATION_SECS);
        });
        assert_eq!(ok.map(|o| (o.range_low_centi, o.range_high_centi)).ok(), Some((Some(-10_000), Some(8_000))));
        // Temperatures are rounded to hundredths of a degree, as readings are.
        assert_eq!(overrides(|i| i.range_high_c = Some(12.004)).ok().and_then(|o| o.range_high_centi), Some(1200));
    }

    #[test]
    fn values_must_fit_the_profile_together() {
        let check = |p, f: fn(&mut AlarmOverridesInput)| bad_field(overrides(f).and_then(|o| o.check(p)));
        let r = TemperatureProfile::Refrigerated;
        let field = |n: &str| format!("storage_unit.alarm_overrides.{n}");
        // High at or below the profile's low; low at or above the profile's high.
        assert_eq!(check(r, |i| i.range_high_c = Some(2.0)), field("range_high_c"));
        assert_eq!(check(r, |i| i.range_low_c = Some(9.0)), field("range_low_c"));
        assert_eq!(
            check(r, |i| {
                i.range_low_c = Some(5.0);
                i.range_high_c = Some(4.0);
            }),
            field("range_high_c")
        );
        // The 2–8 freeze rule counts −0.5 °C itself as freezing: the range must stay above it.
        assert_eq!(check(r, |i| i.range_low_c = Some(-0.5)), field("range_low_c"));
        assert_eq!(check(r, |i| i.freeze_threshold_c = Some(2.0)), field("freeze_threshold_c"));
        assert!(overrides(|i| i.freeze_threshold_c = Some(1.99)).and_then(|o| o.check(r)).is_ok());
        // The freezer's cold rule is "below −25 °C": a threshold at the range low is fine.
        let fz = TemperatureProfile::Frozen;
        assert!(overrides(|i| i.freeze_threshold_c = Some(-25.0)).and_then(|o| o.check(fz)).is_ok());
        assert_eq!(check(fz, |i| i.freeze_threshold_c = Some(-24.99)), field("freeze_threshold_c"));
        // Critical after the alarm: the field named is the overridden one.
        assert_eq!(check(r, |i| i.heat_critical_secs = Some(10 * 3600)), field("heat_critical_after"));
        assert_eq!(check(r, |i| i.heat_alarm_secs = Some(20 * 3600)), field("heat_alarm_after"));
        assert_eq!(check(r, |i| i.freeze_alarm_secs = Some(6 * 3600)), field("freeze_alarm_after"));
        // The freezer's cold rule has no escalation, so a long alarm is fine until one is added.
        assert!(overrides(|i| i.freeze_alarm_secs = Some(20 * 3600)).and_then(|o| o.check(fz)).is_ok());
        assert_eq!(
            check(fz, |i| {
                i.freeze_alarm_secs = Some(20 * 3600);
                i.freeze_critical_secs = Some(19 * 3600);
            }),
            field("freeze_critical_after")
        );
    }

    #[test]
    fn the_merged_profile_moves_rules_with_the_range() {
        let o = overrides(|i| {
            i.range_high_c = Some(12.0);
            i.heat_alarm_secs = Some(3600);
            i.freeze_threshold_c = Some(-1.0);
            i.freeze_critical_secs = Some(7200);
            i.no_data_secs = Some(900);
            i.power_out_secs = Some(300);
        })
        .expect("valid overrides");
        assert!(o.check(TemperatureProfile::Refrigerated).is_ok());
        let p = o.apply(cc::Profile::vaccine_2_8());
        assert_eq!((p.range_low_centi, p.range_high_centi), (200, 1200));
        let heat = p.rules[0].expect("the 2–8 profile has a heat rule");
        assert_eq!((heat.threshold_centi, heat.duration_ms), (1200, cc::HOUR_MS));
        // Not overridden: the profile's 20 h escalation stays.
        assert_eq!(heat.escalation.map(|e| e.after_ms), Some(20 * cc::HOUR_MS));
        let freeze = p.rules[1].expect("the 2–8 profile has a freeze rule");
        assert_eq!((freeze.threshold_centi, freeze.duration_ms), (-100, 60 * cc::MINUTE_MS));
        assert_eq!(
            freeze.escalation.map(|e| (e.after_ms, e.severity)),
            Some((2 * cc::HOUR_MS, cc::Severity::Critical))
        );
        assert_eq!((p.no_data_ms, p.power_out_ms), (15 * cc::MINUTE_MS, 5 * cc::MINUTE_MS));

        // Ultra-low: both heat rules follow the high; only the continuous one takes the duration.
        // The cold rule sat at the range low and follows it.
        let o = overrides(|i| {
            i.range_low_c = Some(-85.0);
            i.range_high_c = Some(-65.0);
            i.heat_alarm_secs = Some(600);
        })
        .expect("valid overrides");
        assert!(o.check(TemperatureProfile::UltraLow).is_ok());
        let p = o.apply(cc::Profile::ultra_low());
        let rules: Vec<_> = p.rules.iter().flatten().map(|r| (r.kind, r.threshold_centi, r.duration_ms)).collect();
        assert_eq!(
            rules,
            [
                (cc::AlarmKind::Heat, -6_500, 10 * cc::MINUTE_MS),
                (cc::AlarmKind::Heat, -6_500, cc::HOUR_MS),
                (cc::AlarmKind::Freeze, -8_500, 2 * cc::HOUR_MS),
            ]
        );
        let eff = AlarmOverrides::of_profile(&p);
        assert_eq!(
            (eff.freeze_threshold_centi, eff.heat_alarm_secs, eff.freeze_critical_secs),
            (Some(-8_500), Some(600), None)
        );
    }

    #[test]
    fn the_merged_profile_alarms_at_the_overridden_limits() {
        let o = overrides(|i| {
            i.range_high_c = Some(12.0);
            i.heat_alarm_secs = Some(3600);
        })
        .expect("valid overrides");
        let p = o.apply(cc::Profile::vaccine_2_8());
        let heat_opened = |temp: f64, minutes: i64| {
            let mut st = cc::State::new();
            let mut opened = false;
            for m in 0..=minutes {
                let evs = cc::evaluate(&p, &mut st, cc::Reading::from_celsius(m * cc::MINUTE_MS, temp));
                opened |= evs.is_ok_and(|e| {
                    e.as_slice().iter().any(|e| e.kind == cc::AlarmKind::Heat && e.transition == cc::Transition::Opened)
                });
            }
            opened
        };
        assert!(!heat_opened(10.0, 600), "10 °C is inside the widened range");
        assert!(!heat_opened(13.0, 59), "one minute short");
        assert!(heat_opened(13.0, 60), "exactly the overridden hour");
    }

    #[test]
    fn messages_show_the_limits() {
        assert_eq!(
            (celsius(1200), celsius(-50), celsius(825), celsius(-2500)),
            ("12.0".into(), "-0.5".into(), "8.25".into(), "-25.0".into())
        );
        assert_eq!(
            (span(cc::HOUR_MS), span(90 * cc::MINUTE_MS), span(45_000)),
            ("1 h".into(), "90 min".into(), "45 s".into())
        );
        let p = cc::Profile::vaccine_2_8();
        let e = cc::AlarmEvent {
            kind: cc::AlarmKind::Heat,
            transition: cc::Transition::Opened,
            severity: cc::Severity::Alarm,
            rule: Some(0),
            start_ms: 0,
            at_ms: 0,
            min_centi: None,
            max_centi: None,
            past_ms: 0,
            minutes_past_threshold: 0,
            centi_degree_hours: 0,
        };
        assert_eq!(limit_text(&e, &p), "above 8.0 °C for 10 h, critical at 20 h");
        let x = cc::AlarmEvent { kind: cc::AlarmKind::Excursion, rule: None, ..e };
        assert_eq!(limit_text(&x, &p), "range 2.0..8.0 °C");
        let n = cc::AlarmEvent { kind: cc::AlarmKind::NoData, rule: None, ..e };
        assert_eq!(limit_text(&n, &p), "limit 30 min");
    }
}
