//! Alarm rules and per-product profiles (plain data the caller may build or override).

use crate::events::{AlarmKind, Severity};
use crate::reading::{DS18B20_DISCONNECTED_CENTI, DS18B20_POWER_ON_RESET_CENTI, Reading};

/// One minute in milliseconds.
pub const MINUTE_MS: i64 = 60_000;
/// One hour in milliseconds.
pub const HOUR_MS: i64 = 60 * MINUTE_MS;
/// Recording interval assumed by the built-in profiles (30-day recorders log every ≤10 min).
pub const DEFAULT_EXPECTED_INTERVAL_MS: i64 = 10 * MINUTE_MS;
/// Rule slots in a profile; fixed so that `State` has a fixed size.
pub const MAX_RULES: usize = 4;

/// How a temperature is compared with a rule's threshold.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Comparison {
    /// `temp > threshold`
    Above,
    /// `temp >= threshold`
    AtOrAbove,
    /// `temp < threshold`
    Below,
    /// `temp <= threshold`
    AtOrBelow,
}

impl Comparison {
    /// Whether `centi_c` is past `threshold` under this comparison.
    pub const fn matches(self, centi_c: i32, threshold: i32) -> bool {
        match self {
            Self::Above => centi_c > threshold,
            Self::AtOrAbove => centi_c >= threshold,
            Self::Below => centi_c < threshold,
            Self::AtOrBelow => centi_c <= threshold,
        }
    }

    /// Distance past the threshold in centi-degrees, clamped at 0 (the sign follows the direction).
    pub const fn excess(self, centi_c: i32, threshold: i32) -> i64 {
        // i64 because the difference of two i32 can exceed i32.
        let d = centi_c as i64 - threshold as i64;
        let d = match self {
            Self::Above | Self::AtOrAbove => d,
            Self::Below | Self::AtOrBelow => -d,
        };
        if d < 0 { 0 } else { d }
    }
}

/// Whether the time past the threshold must be one unbroken run or may add up within a window.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Accumulation {
    /// Every reading from the first past the threshold to the current one is past it.
    Continuous,
    /// Total time past the threshold within a sliding window of `window_ms`.
    ///
    /// State is bounded: the window is kept in 16 buckets of `ceil(window_ms / 15)`, so the total
    /// may include up to one bucket of time older than the window (alarms open early, not late).
    Cumulative {
        /// Length of the sliding window in ms.
        window_ms: i64,
    },
}

/// A higher severity an open alarm moves to once its measure reaches `after_ms`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Escalation {
    /// Time past the threshold (same measure as the rule) at which to escalate.
    pub after_ms: i64,
    /// Severity after escalating.
    pub severity: Severity,
}

/// A threshold rule: opens when the time past `threshold_centi` reaches `duration_ms`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Rule {
    /// Kind reported in events (usually `Heat` or `Freeze`).
    pub kind: AlarmKind,
    /// Threshold in centi-°C.
    pub threshold_centi: i32,
    /// How readings are compared with the threshold.
    pub comparison: Comparison,
    /// Time past the threshold at which the alarm opens (`>=`).
    pub duration_ms: i64,
    /// Continuous run or cumulative within a window.
    pub accumulation: Accumulation,
    /// Severity when opened.
    pub severity: Severity,
    /// Optional escalation while open.
    pub escalation: Option<Escalation>,
}

impl Rule {
    /// A continuous rule without escalation.
    pub const fn continuous(
        kind: AlarmKind,
        comparison: Comparison,
        threshold_centi: i32,
        duration_ms: i64,
        severity: Severity,
    ) -> Self {
        Self {
            kind,
            threshold_centi,
            comparison,
            duration_ms,
            accumulation: Accumulation::Continuous,
            severity,
            escalation: None,
        }
    }

    /// A cumulative rule: `total_ms` past the threshold within `window_ms`.
    pub const fn cumulative(
        kind: AlarmKind,
        comparison: Comparison,
        threshold_centi: i32,
        total_ms: i64,
        window_ms: i64,
        severity: Severity,
    ) -> Self {
        Self {
            kind,
            threshold_centi,
            comparison,
            duration_ms: total_ms,
            accumulation: Accumulation::Cumulative { window_ms },
            severity,
            escalation: None,
        }
    }

    /// The same rule escalating to `severity` once its measure reaches `after_ms`.
    pub const fn escalate_after(mut self, after_ms: i64, severity: Severity) -> Self {
        self.escalation = Some(Escalation { after_ms, severity });
        self
    }
}

/// Alarm configuration for one storage unit: acceptable range, rules and limits.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Profile {
    /// Lowest acceptable temperature (inclusive) for the excursion warning, centi-°C.
    pub range_low_centi: i32,
    /// Highest acceptable temperature (inclusive) for the excursion warning, centi-°C.
    pub range_high_centi: i32,
    /// Threshold rules; `None` slots are skipped. Slot index is reported as `AlarmEvent::rule`.
    pub rules: [Option<Rule>; MAX_RULES],
    /// Silence longer than this (`>`) raises NoData and breaks every run.
    pub no_data_ms: i64,
    /// Mains reported off for longer than this (`>`) raises PowerOut.
    pub power_out_ms: i64,
    /// Temperatures treated as a sensor fault, in addition to the reading's own flag.
    pub sensor_sentinels: [Option<i32>; 2],
}

const DS18B20_SENTINELS: [Option<i32>; 2] = [Some(DS18B20_POWER_ON_RESET_CENTI), Some(DS18B20_DISCONNECTED_CENTI)];

impl Profile {
    /// WHO 2–8 °C vaccines: heat >8.0 °C 10 h (critical 20 h), freeze ≤−0.5 °C 60 min (critical 5 h).
    pub const fn vaccine_2_8() -> Self {
        Self {
            range_low_centi: 200,
            range_high_centi: 800,
            rules: [
                Some(
                    Rule::continuous(AlarmKind::Heat, Comparison::Above, 800, 10 * HOUR_MS, Severity::Alarm)
                        .escalate_after(20 * HOUR_MS, Severity::Critical),
                ),
                Some(
                    Rule::continuous(AlarmKind::Freeze, Comparison::AtOrBelow, -50, 60 * MINUTE_MS, Severity::Alarm)
                        .escalate_after(5 * HOUR_MS, Severity::Critical),
                ),
                None,
                None,
            ],
            no_data_ms: 3 * DEFAULT_EXPECTED_INTERVAL_MS,
            power_out_ms: 60 * MINUTE_MS,
            sensor_sentinels: DS18B20_SENTINELS,
        }
    }

    /// Freezers −25..−15 °C: heat >−15 °C 60 min (critical 10 h); cold <−25 °C 10 h (alarm only).
    pub const fn freezer() -> Self {
        Self {
            range_low_centi: -2_500,
            range_high_centi: -1_500,
            rules: [
                Some(
                    Rule::continuous(AlarmKind::Heat, Comparison::Above, -1_500, 60 * MINUTE_MS, Severity::Alarm)
                        .escalate_after(10 * HOUR_MS, Severity::Critical),
                ),
                // Colder than −25 °C rarely harms frozen vaccines; a long run points at a stuck thermostat.
                Some(Rule::continuous(AlarmKind::Freeze, Comparison::Below, -2_500, 10 * HOUR_MS, Severity::Alarm)),
                None,
                None,
            ],
            no_data_ms: 3 * DEFAULT_EXPECTED_INTERVAL_MS,
            power_out_ms: 60 * MINUTE_MS,
            sensor_sentinels: DS18B20_SENTINELS,
        }
    }

    /// Ultra-low −90..−60 °C: heat >−60 °C 30 min (critical 2 h) or 60 min total in 24 h; cold <−90 °C 2 h.
    pub const fn ultra_low() -> Self {
        Self {
            range_low_centi: -9_000,
            range_high_centi: -6_000,
            rules: [
                Some(
                    Rule::continuous(AlarmKind::Heat, Comparison::Above, -6_000, 30 * MINUTE_MS, Severity::Alarm)
                        .escalate_after(2 * HOUR_MS, Severity::Critical),
                ),
                // Repeated short door openings warm mRNA products without any single long run.
                Some(Rule::cumulative(
                    AlarmKind::Heat,
                    Comparison::Above,
                    -6_000,
                    60 * MINUTE_MS,
                    24 * HOUR_MS,
                    Severity::Alarm,
                )),
                Some(Rule::continuous(AlarmKind::Freeze, Comparison::Below, -9_000, 2 * HOUR_MS, Severity::Alarm)),
                None,
            ],
            no_data_ms: 3 * DEFAULT_EXPECTED_INTERVAL_MS,
            // Ultra-low units warm quickly once the compressor stops.
            power_out_ms: 30 * MINUTE_MS,
            sensor_sentinels: DS18B20_SENTINELS,
        }
    }

    /// Sets the no-data limit to 3 × the device's expected recording interval.
    pub const fn with_expected_interval_ms(mut self, interval_ms: i64) -> Self {
        self.no_data_ms = interval_ms.saturating_mul(3);
        self
    }

    /// Sets the no-data limit directly.
    pub const fn with_no_data_ms(mut self, no_data_ms: i64) -> Self {
        self.no_data_ms = no_data_ms;
        self
    }

    /// Sets the power-out limit.
    pub const fn with_power_out_ms(mut self, power_out_ms: i64) -> Self {
        self.power_out_ms = power_out_ms;
        self
    }

    /// Replaces rule slot `index` (ignored if out of range).
    pub const fn with_rule(mut self, index: usize, rule: Option<Rule>) -> Self {
        if index < MAX_RULES {
            self.rules[index] = rule;
        }
        self
    }

    /// Whether the reading is flagged faulty or carries one of the sentinel temperatures.
    pub fn is_sensor_fault(&self, reading: &Reading) -> bool {
        reading.sensor_fault || self.sensor_sentinels.contains(&Some(reading.centi_c))
    }
}

impl Default for Profile {
    fn default() -> Self {
        Self::vaccine_2_8()
    }
}
