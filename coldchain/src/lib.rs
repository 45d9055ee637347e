//! Vaccine cold-chain alarm rules (WHO 2–8 °C practice, freezers, ultra-low units).
//!
//! `#![no_std]`, no I/O, no clock, no floats in comparisons: the same code raises the local alarm
//! in the telemetry agent and the authoritative alerts on the server.
//!
//! # Contract
//! * Temperatures are integer centi-°C (`8.0 °C = 800`); time is ms since the Unix epoch (UTC),
//!   the time the reading was *taken*.
//! * [`evaluate`] must see a unit's readings in strictly increasing time. Older readings return
//!   [`EvalError::OutOfOrder`], same-time ones [`EvalError::Duplicate`] (safe to ignore); the state is
//!   unchanged. To ingest late data, replay the unit's history from [`State::new`] after a stable
//!   sort by time keeping the first reading of each time (`evaluate_all`, feature `alloc`).
//! * "Continuously" = every reading from the first one past the threshold up to the current one is
//!   past it. Run duration = current reading time − first reading time; rules open at `>=` their
//!   duration (power-out at `>` its limit). An in-range reading resets the run; a silence longer
//!   than `Profile::no_data_ms` (`>`) between consecutive samples breaks it: an open alarm is
//!   `Closed` at the reading after the gap, and a new run starts there if it is still past.
//! * Sensor faults: `Reading::sensor_fault`, or a temperature equal to one of
//!   `Profile::sensor_sentinels` (built-in profiles: DS18B20 85.00 °C power-on reset and −127.00 °C
//!   disconnected). A fault reading raises SensorFault (closed by the next non-fault reading) and is
//!   invisible to the temperature rules: it neither extends nor resets a run, and gaps for those
//!   rules are measured between valid temperatures. Readings with `power_on: None` are likewise
//!   invisible to the power-out rule.
//! * Degree-hours: trapezoid integral of the distance past the threshold (heat: temp − threshold;
//!   cold: threshold − temp; excursion: distance outside the range) between consecutive past
//!   readings of the run, reported in hundredths of °C·h.
//!
//! # State encoding (`State::to_bytes`, version 1, little-endian, `STATE_BYTES` = 601)
//! `version u8 | flags u8 (bit0 last, bit1 last_temp, bit2 last_power, bit3 no_data_open)`
//! `| last_ms i64 | last_temp_ms i64 | last_power_ms i64` (0 when absent), then runs for
//! sensor-fault, power, excursion, then per rule slot (4): run, `window_head i64`, `16 × u32` buckets.
//! A run is `flags u8 (bit0 active, bit1 has_temp, bits2-3 open severity 0 none/1 warning/2 alarm/3 critical)
//! | start_ms i64 | last_ms i64 | last_excess i64 | min i32 | max i32 | degree_centi_ms i64` (41 bytes).
#![no_std]

#[cfg(any(test, feature = "alloc"))]
extern crate alloc;
#[cfg(test)]
extern crate std;

mod eval;
mod events;
mod profile;
mod reading;
mod state;

#[cfg(test)]
mod proptests;
#[cfg(test)]
mod tests;

#[cfg(any(test, feature = "alloc"))]
pub use eval::evaluate_all;
pub use eval::{EvalError, check_no_data, evaluate};
pub use events::{AlarmEvent, AlarmKind, Events, EventsIntoIter, MAX_EVENTS, Severity, Transition};
pub use profile::{
    Accumulation, Comparison, DEFAULT_EXPECTED_INTERVAL_MS, Escalation, HOUR_MS, MAX_RULES, MINUTE_MS, Profile, Rule,
};
pub use reading::{
    CENTI_PER_DEGREE, DS18B20_DISCONNECTED_CENTI, DS18B20_POWER_ON_RESET_CENTI, Reading, centi_from_celsius,
};
pub use state::{DecodeError, STATE_BYTES, STATE_VERSION, State};
