//! Temperature readings in integer centi-degrees.

/// Centi-degrees Celsius per degree Celsius.
pub const CENTI_PER_DEGREE: i32 = 100;

/// DS18B20 power-on-reset register value (85.00 °C): the sensor was read before a conversion finished.
pub const DS18B20_POWER_ON_RESET_CENTI: i32 = 8_500;

/// DS18B20 "device disconnected" value reported by common drivers (−127.00 °C).
pub const DS18B20_DISCONNECTED_CENTI: i32 = -12_700;

/// One logger sample: when it was taken, what it measured and what the logger reported about itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Reading {
    /// Time the reading was taken, milliseconds since the Unix epoch (UTC).
    pub time_ms: i64,
    /// Temperature in centi-degrees Celsius (8.0 °C = 800, −0.5 °C = −50).
    pub centi_c: i32,
    /// Mains power state as reported by the logger; `None` when the device does not report it.
    pub power_on: Option<bool>,
    /// The logger flagged the sensor as faulty; the temperature is then ignored.
    pub sensor_fault: bool,
}

impl Reading {
    /// A healthy reading with no power information.
    pub const fn new(time_ms: i64, centi_c: i32) -> Self {
        Self { time_ms, centi_c, power_on: None, sensor_fault: false }
    }

    /// A reading from °C; a NaN or infinite temperature becomes a sensor-fault reading (temperature 0).
    pub fn from_celsius(time_ms: i64, celsius: f64) -> Self {
        match centi_from_celsius(celsius) {
            Some(centi_c) => Self::new(time_ms, centi_c),
            None => Self::new(time_ms, 0).with_sensor_fault(true),
        }
    }

    /// The same reading with the mains power state set.
    pub const fn with_power(mut self, on: bool) -> Self {
        self.power_on = Some(on);
        self
    }

    /// The same reading with the sensor-fault flag set.
    pub const fn with_sensor_fault(mut self, fault: bool) -> Self {
        self.sensor_fault = fault;
        self
    }
}

/// Converts °C to centi-degrees, rounding the f64 product `celsius * 100` to nearest (ties away from zero).
///
/// Returns `None` for NaN and infinities; finite values beyond the `i32` range saturate.
/// `core` has no `f64::round` without `std`, hence the manual rounding.
pub fn centi_from_celsius(celsius: f64) -> Option<i32> {
    if !celsius.is_finite() {
        return None;
    }
    let scaled = celsius * f64::from(CENTI_PER_DEGREE);
    if scaled >= f64::from(i32::MAX) {
        return Some(i32::MAX);
    }
    if scaled <= f64::from(i32::MIN) {
        return Some(i32::MIN);
    }
    // `as` truncates toward zero; the remainder is exact because |scaled| < 2^31.
    let whole = scaled as i32;
    let frac = scaled - f64::from(whole);
    Some(if frac >= 0.5 {
        whole.saturating_add(1)
    } else if frac <= -0.5 {
        whole.saturating_sub(1)
    } else {
        whole
    })
}
