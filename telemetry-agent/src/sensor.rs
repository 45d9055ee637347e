//! Sensor sources: the simulator, DS18B20 over sysfs, a file, a command.
//!
//! A source never stops the agent: a failed read becomes a reading with `sensor_fault = true`
//! (the server then opens a SENSOR_FAULT alert) and a log line when the probe changes state.

use std::f64::consts::PI;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::config::{Scenario, SourceConfig};

const HOUR_MS: f64 = 3_600_000.0;
const DAY_MS: i64 = 86_400_000;
/// The server rejects temperatures outside −100..+100 °C; treat them as a probe fault here.
const VALID_RANGE_C: std::ops::RangeInclusive<f64> = -100.0..=100.0;

/// One probe's measurement at one sample.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Measurement {
    /// Temperature in °C.
    pub temp_c: f64,
    /// Mains power state, when the source knows it.
    pub power_on: Option<bool>,
    /// Door state, when the source knows it.
    pub door_open: Option<bool>,
}

impl Measurement {
    fn temp(temp_c: f64) -> Self {
        Self { temp_c, power_on: None, door_open: None }
    }
}

/// Why a probe could not be read; the text is what operators see in the log.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
#[error("{0}")]
pub struct SensorError(pub String);

/// A configured, ready-to-read temperature source.
#[derive(Debug, Clone)]
pub enum Source {
    /// The deterministic simulator.
    Simulator {
        /// Behaviour.
        scenario: Scenario,
        /// Noise seed (already mixed with the probe index).
        seed: u64,
    },
    /// A DS18B20 `temperature` or `w1_slave` file.
    Ds18b20 {
        /// The file to read.
        path: PathBuf,
    },
    /// A file whose last line is the temperature.
    File {
        /// The file.
        path: PathBuf,
    },
    /// A command printing the temperature.
    Command {
        /// Program and arguments.
        argv: Vec<String>,
        /// Kill it after this long.
        timeout: Duration,
    },
}

/// Base directory of the Linux w1 bus in sysfs.
pub const W1_DEVICES: &str = "/sys/bus/w1/devices";

impl Source {
    /// Builds a source from its config; `seed` and `probe` feed the simulator's noise.
    pub fn from_config(config: &SourceConfig, seed: u64, probe: u32) -> Self {
        match config {
            SourceConfig::Simulator { scenario } => {
                Self::Simulator { scenario: *scenario, seed: splitmix64(seed ^ u64::from(probe).wrapping_mul(0x9E37)) }
            }
            SourceConfig::Ds18b20 { sensor_id, path } => {
                let path = path.clone().unwrap_or_else(|| ds18b20_path(Path::new(W1_DEVICES), sensor_id.as_deref()));
                Self::Ds18b20 { path }
            }
            SourceConfig::File { path } => Self::File { path: path.clone() },
            SourceConfig::Command { command, timeout } => Self::Command { argv: command.clone(), timeout: timeout.0 },
        }
    }

    /// Whether this is the simulator (the agent then runs on the simulated clock).
    pub fn is_simulated(&self) -> bool {
        matches!(self, Self::Simulator { .. })
    }

    /// Reads one measurement. `elapsed_ms` (since the simulated start) and `n` (sample number)
    /// drive the simulator; real sources ignore them.
    pub async fn read(&self, elapsed_ms: i64, n: u64) -> Result<Measurement, SensorError> {
        let m = match self {
            Self::Simulator { scenario, seed } => simulate(*scenario, *seed, elapsed_ms, n),
            Self::Ds18b20 { path } => read_ds18b20(path)?,
            Self::File { path } => {
                let text = std::fs::read_to_string(path)
                    .map_err(|e| SensorError(format!("cannot read {}: {e}", path.display())))?;
                let line = text.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or("");
                Measurement::temp(parse_celsius(line, &path.display().to_string())?)
            }
            Self::Command { argv, timeout } => Measurement::temp(run_command(argv, *timeout).await?),
        };
        if !VALID_RANGE_C.contains(&m.temp_c) {
            return Err(SensorError(format!("temperature {:.2} °C is outside −100..100 °C", m.temp_c)));
        }
        Ok(m)
    }
}

/// Where a DS18B20 with this id appears: `temperature` when the kernel offers it (≥ 5.x), else `w1_slave`.
pub fn ds18b20_path(base: &Path, sensor_id: Option<&str>) -> PathBuf {
    let dir = base.join(sensor_id.unwrap_or_default());
    let temperature = dir.join("temperature");
    if temperature.exists() { temperature } else { dir.join("w1_slave") }
}

fn read_ds18b20(path: &Path) -> Result<Measurement, SensorError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| SensorError(format!("cannot read DS18B20 at {}: {e} (is w1-therm loaded?)", path.display())))?;
    let milli = parse_ds18b20(&text).map_err(|e| SensorError(format!("DS18B20 at {}: {e}", path.display())))?;
    // The driver's "not ready" (85 °C power-on reset) and "disconnected" (−127 °C) values.
    if milli == 85_000 || milli == -127_000 {
        return Err(SensorError(format!(
            "DS18B20 at {} returned the sentinel {} °C (power-on reset or disconnected)",
            path.display(),
            milli / 1000
        )));
    }
    Ok(Measurement::temp(milli as f64 / 1000.0))
}

/// Parses a `temperature` file (milli-°C) or the two-line `w1_slave` format (`... YES` / `... t=4562`).
pub fn parse_ds18b20(text: &str) -> Result<i64, String> {
    let trimmed = text.trim();
    if let Ok(milli) = trimmed.parse::<i64>() {
        return Ok(milli);
    }
    let mut lines = trimmed.lines();
    let crc_line = lines.next().unwrap_or("");
    if !crc_line.trim_end().ends_with("YES") {
        return Err("CRC check failed (bad wiring or interference)".to_owned());
    }
    let data = lines.next().unwrap_or("");
    let value = data.rsplit_once("t=").map(|(_, v)| v.trim()).ok_or("no t= value in w1_slave")?;
    value.parse::<i64>().map_err(|_| format!("bad t= value {value:?}"))
}

fn parse_celsius(line: &str, what: &str) -> Result<f64, SensorError> {
    let t = line.trim();
    t.parse::<f64>()
        .ok()
        .filter(|v| v.is_finite())
        .ok_or_else(|| SensorError(format!("{what}: expected a temperature in °C, got {t:?}")))
}

async fn run_command(argv: &[String], timeout: Duration) -> Result<f64, SensorError> {
    let Some((program, args)) = argv.split_first() else {
        return Err(SensorError("empty command".to_owned()));
    };
    let child =
        tokio::process::Command::new(program).args(args).stdin(std::process::Stdio::null()).kill_on_drop(true).output();
    let output = tokio::time::timeout(timeout, child)
        .await
        .map_err(|_| SensorError(format!("{program}: no answer within {timeout:?}")))?
        .map_err(|e| SensorError(format!("cannot run {program}: {e}")))?;
    if !output.status.success() {
        let err = String::from_utf8_lossy(&output.stderr);
        return Err(SensorError(format!("{program} failed ({}): {}", output.status, err.lines().next().unwrap_or(""))));
    }
    let out = String::from_utf8_lossy(&output.stdout);
    parse_celsius(out.lines().next().unwrap_or(""), program)
}

/// A 64-bit mixer (SplitMix64); the simulator's noise is a pure function of (seed, n), so a
/// restarted agent regenerates exactly the readings it would have produced.
pub fn splitmix64(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

/// The simulated fridge at `elapsed_ms` after the simulated start (sample `n`).
pub fn simulate(scenario: Scenario, seed: u64, elapsed_ms: i64, n: u64) -> Measurement {
    let noise = (splitmix64(seed ^ n) >> 11) as f64 / (1u64 << 53) as f64 * 0.2 - 0.1;
    let h = elapsed_ms.rem_euclid(DAY_MS) as f64 / HOUR_MS;
    // Compressor cycling, 40 min period.
    let cycle = 1.2 * (2.0 * PI * elapsed_ms as f64 / (40.0 * 60_000.0)).sin();
    let base = 5.0 + cycle;
    let approach = |from: f64, to: f64, hours: f64, tau: f64| to + (from - to) * (-hours / tau).exp();
    let (temp, power_on, door_open) = match scenario {
        Scenario::Stable => (base, Some(true), None),
        Scenario::WarmDrift => ((5.0 + 0.5 * h).min(15.0) + 0.3 * cycle, Some(true), None),
        Scenario::DoorOpen => {
            let open = (2.0..5.0).contains(&h);
            let t = if open {
                approach(base, 15.0, h - 2.0, 0.7)
            } else if h >= 5.0 {
                approach(approach(5.0, 15.0, 3.0, 0.7), base, h - 5.0, 0.5)
            } else {
                base
            };
            (t, Some(true), Some(open))
        }
        Scenario::PowerCut => {
            let cut = (6.0..18.0).contains(&h);
            let t = if cut {
                approach(5.0, 28.0, h - 6.0, 8.0)
            } else if h >= 18.0 {
                approach(approach(5.0, 28.0, 12.0, 8.0), base, h - 18.0, 1.0)
            } else {
                base
            };
            (t, Some(!cut), None)
        }
        Scenario::Freeze => {
            let t = if (4.0..10.0).contains(&h) {
                approach(base, -3.0, h - 4.0, 0.5)
            } else if h >= 10.0 {
                approach(-3.0, base, h - 10.0, 0.7)
            } else {
                base
            };
            (t, Some(true), None)
        }
    };
    Measurement { temp_c: ((temp + noise) * 100.0).round() / 100.0, power_on, door_open }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn temps(s: Scenario, hours: std::ops::Range<i64>) -> Vec<f64> {
        hours.map(|h| simulate(s, 7, h * 3_600_000, h as u64).temp_c).collect()
    }

    #[test]
    fn simulator_is_deterministic_per_seed_and_sample() {
        assert_eq!(simulate(Scenario::Stable, 1, 60_000, 1), simulate(Scenario::Stable, 1, 60_000, 1));
        assert_ne!(simulate(Scenario::Stable, 1, 60_000, 1), simulate(Scenario::Stable, 2, 60_000, 1));
    }

    #[test]
    fn scenarios_do_what_their_names_say() {
        assert!(temps(Scenario::Stable, 0..48).iter().all(|t| (2.0..=8.0).contains(t)));
        let drift = temps(Scenario::WarmDrift, 0..24);
        assert!(drift[0] < 6.5 && drift[20] > 12.0, "{drift:?}");
        let door = simulate(Scenario::DoorOpen, 7, 4 * 3_600_000, 1);
        assert!(door.temp_c > 10.0 && door.door_open == Some(true), "{door:?}");
        let cut = simulate(Scenario::PowerCut, 7, 17 * 3_600_000, 1);
        assert!(cut.temp_c > 15.0 && cut.power_on == Some(false), "{cut:?}");
        assert!(temps(Scenario::Freeze, 6..9).iter().all(|t| *t < -0.5));
    }

    #[test]
    fn ds18b20_formats_parse_and_crc_failures_are_errors() {
        assert_eq!(parse_ds18b20("4562\n").unwrap(), 4562);
        let ok = "72 01 4b 46 7f ff 0e 10 57 : crc=57 YES\n72 01 4b 46 7f ff 0e 10 57 t=-1250\n";
        assert_eq!(parse_ds18b20(ok).unwrap(), -1250);
        let bad = "72 01 4b 46 7f ff 0e 10 57 : crc=57 NO\n72 01 4b 46 7f ff 0e 10 57 t=23125\n";
        assert!(parse_ds18b20(bad).unwrap_err().contains("CRC"));
    }

    #[tokio::test]
    async fn real_sources_read_or_report_a_clear_fault() {
        let dir = tempfile::tempdir().unwrap();
        let w1 = dir.path().join("28-00000abc");
        std::fs::create_dir_all(&w1).unwrap();
        std::fs::write(w1.join("w1_slave"), "aa : crc=1 YES\naa t=4375\n").unwrap();
        let ds = Source::Ds18b20 { path: ds18b20_path(dir.path(), Some("28-00000abc")) };
        assert_eq!(ds.read(0, 0).await.unwrap().temp_c, 4.375);
        std::fs::write(w1.join("w1_slave"), "aa : crc=1 YES\naa t=85000\n").unwrap();
        assert!(ds.read(0, 0).await.unwrap_err().0.contains("sentinel"));

        let file = dir.path().join("t.txt");
        std::fs::write(&file, "3.5\n4.5\n\n").unwrap();
        assert_eq!(Source::File { path: file.clone() }.read(0, 0).await.unwrap().temp_c, 4.5);
        std::fs::write(&file, "warm\n").unwrap();
        assert!(Source::File { path: file }.read(0, 0).await.unwrap_err().0.contains("expected a temperature"));
        let missing = Source::File { path: dir.path().join("nope") };
        assert!(missing.read(0, 0).await.unwrap_err().0.contains("cannot read"));

        let cmd = |s: &str| Source::Command {
            argv: vec!["sh".into(), "-c".into(), s.into()],
            timeout: Duration::from_secs(20),
        };
        assert_eq!(cmd("echo 6.25").read(0, 0).await.unwrap().temp_c, 6.25);
        assert!(cmd("echo 150").read(0, 0).await.unwrap_err().0.contains("outside"));
        assert!(cmd("echo oops >&2; exit 3").read(0, 0).await.unwrap_err().0.contains("oops"));
    }
}
