//! The agent's single TOML configuration file (`agent.example.toml` documents every key).

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::buffer::{BufferConfig, FullPolicy};

/// Highest probe index the server accepts (`Probe.index` is 0..15).
pub const MAX_PROBE_INDEX: u32 = 15;
/// Largest batch the server accepts (`ReadingBatch.readings` is 1..1000).
pub const MAX_BATCH_SIZE: usize = 1000;

/// Why a configuration was refused; the message names the key and what is wrong.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The file is not valid TOML or has unknown or mistyped keys.
    #[error("invalid config file {path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The parser's description, with line and column.
        message: String,
    },
    /// A value is out of range or inconsistent with another.
    #[error("invalid config: {0}")]
    Invalid(String),
}

fn invalid(msg: impl Into<String>) -> ConfigError {
    ConfigError::Invalid(msg.into())
}

/// A secret string whose `Debug` output is redacted, so configs can be logged.
#[derive(Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(transparent)]
pub struct Secret(pub String);

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.0.is_empty() { "\"\"" } else { "\"<redacted>\"" })
    }
}

/// A duration written as `"500ms"`, `"30s"`, `"5m"`, `"2h"` or `"30d"`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct HumanDuration(pub Duration);

impl<'de> Deserialize<'de> for HumanDuration {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        parse_duration(&s).map(HumanDuration).map_err(serde::de::Error::custom)
    }
}

/// Parses `"<number><unit>"` with unit ms, s, m, h or d (e.g. `"30s"`, `"1.5h"`).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    let split = t.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let value: f64 = num.parse().map_err(|_| format!("invalid duration {s:?} (expected e.g. \"30s\", \"5m\")"))?;
    let unit_secs = match unit.trim() {
        "ms" => 0.001,
        "s" => 1.0,
        "m" | "min" => 60.0,
        "h" => 3600.0,
        "d" => 86_400.0,
        _ => return Err(format!("invalid duration unit in {s:?} (use ms, s, m, h or d)")),
    };
    Duration::try_from_secs_f64(value * unit_secs).map_err(|_| format!("duration {s:?} is out of range"))
}

/// The whole configuration file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The device id assigned at registration: MQTT client id, default username, topic segment.
    pub device_id: String,
    /// Directory for the reading buffer and small state files (simulator clock, alarm state).
    pub data_dir: PathBuf,
    /// Time between samples (every probe is read once per sample).
    #[serde(default = "default_interval")]
    pub interval: HumanDuration,
    /// Broker connection.
    pub mqtt: MqttConfig,
    /// Batching, acks and signing.
    #[serde(default)]
    pub uplink: UplinkConfig,
    /// On-disk buffer limits.
    #[serde(default)]
    pub buffer: BufferSection,
    /// Simulator settings (used by probes whose source is `simulator`).
    #[serde(default)]
    pub simulator: SimulatorConfig,
    /// Local alarm signalling.
    #[serde(default)]
    pub alarm: AlarmConfig,
    /// The probes, one `[[probes]]` table each (1..16).
    pub probes: Vec<ProbeConfig>,
}

fn default_interval() -> HumanDuration {
    HumanDuration(Duration::from_secs(60))
}

/// `[mqtt]`: where and how to connect.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MqttConfig {
    /// `mqtt://host[:port]` (plain, default port 1883) or `mqtts://host[:port]` (TLS, default 8883).
    pub url: String,
    /// Username; defaults to the device id (the server expects that).
    pub username: Option<String>,
    /// Password (the device token). Prefer `password_file` so the config can be world-readable.
    pub password: Option<Secret>,
    /// File holding the password (trailing whitespace ignored).
    pub password_file: Option<PathBuf>,
    /// Force TLS even for an `mqtt://` URL.
    #[serde(default)]
    pub tls: bool,
    /// PEM file of CA certificates to trust; required for TLS (no OS trust store is read).
    pub ca_file: Option<PathBuf>,
    /// MQTT keep-alive.
    #[serde(default = "default_keep_alive")]
    pub keep_alive: HumanDuration,
    /// First reconnect delay; doubles per failure up to `reconnect_max`, with ±50 % jitter.
    #[serde(default = "default_reconnect_min")]
    pub reconnect_min: HumanDuration,
    /// Longest reconnect delay.
    #[serde(default = "default_reconnect_max")]
    pub reconnect_max: HumanDuration,
}

fn default_keep_alive() -> HumanDuration {
    HumanDuration(Duration::from_secs(60))
}
fn default_reconnect_min() -> HumanDuration {
    HumanDuration(Duration::from_secs(1))
}
fn default_reconnect_max() -> HumanDuration {
    HumanDuration(Duration::from_secs(300))
}

/// `[uplink]`: batching, the end-to-end ack and signing.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UplinkConfig {
    /// Most readings per published batch (1..1000).
    #[serde(default = "default_batch_size")]
    pub batch_size: usize,
    /// Batches published but not yet acked end to end, at most (the send window).
    #[serde(default = "default_max_inflight")]
    pub max_inflight_batches: usize,
    /// Readings with no server ack this long after sending are sent again, even on a healthy link.
    #[serde(default = "default_ack_timeout")]
    pub ack_timeout: HumanDuration,
    /// HMAC-SHA256 device key as hex (64 hex digits for the server's 32-byte keys).
    pub key_hex: Option<Secret>,
    /// File holding the key as hex (whitespace ignored).
    pub key_file: Option<PathBuf>,
    /// `ReadingBatch.key_version`; 0 = the current key.
    #[serde(default)]
    pub key_version: u32,
}

fn default_batch_size() -> usize {
    60
}
fn default_max_inflight() -> usize {
    8
}
fn default_ack_timeout() -> HumanDuration {
    HumanDuration(Duration::from_secs(30))
}

impl Default for UplinkConfig {
    fn default() -> Self {
        Self {
            batch_size: default_batch_size(),
            max_inflight_batches: default_max_inflight(),
            ack_timeout: default_ack_timeout(),
            key_hex: None,
            key_file: None,
            key_version: 0,
        }
    }
}

/// `[buffer]`: disk limits of the store-and-forward buffer.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BufferSection {
    /// Cap on the buffer's disk use in MiB (64 MiB holds ~1.5 million readings).
    #[serde(default = "default_max_mib")]
    pub max_mib: u64,
    /// Segment file size in KiB.
    #[serde(default = "default_segment_kib")]
    pub segment_kib: u64,
    /// `drop_oldest` (default: keep sensing, lose the oldest unsent readings, report them) or
    /// `reject_new` (keep the oldest, readings wait in memory and are lost if the agent stops).
    #[serde(default)]
    pub full_policy: FullPolicyName,
}

fn default_max_mib() -> u64 {
    64
}
fn default_segment_kib() -> u64 {
    1024
}

impl Default for BufferSection {
    fn default() -> Self {
        Self { max_mib: default_max_mib(), segment_kib: default_segment_kib(), full_policy: FullPolicyName::default() }
    }
}

/// Config spelling of [`FullPolicy`].
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum FullPolicyName {
    /// [`FullPolicy::DropOldest`].
    #[default]
    DropOldest,
    /// [`FullPolicy::RejectNew`].
    RejectNew,
}

impl BufferSection {
    /// The buffer tuning this section describes.
    pub fn buffer_config(&self) -> BufferConfig {
        BufferConfig {
            segment_bytes: self.segment_kib.saturating_mul(1024),
            max_bytes: self.max_mib.saturating_mul(1024 * 1024),
            full_policy: match self.full_policy {
                FullPolicyName::DropOldest => FullPolicy::DropOldest,
                FullPolicyName::RejectNew => FullPolicy::RejectNew,
            },
        }
    }
}

/// `[simulator]`: the simulated clock shared by all simulator probes.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SimulatorConfig {
    /// Seed of the deterministic noise.
    #[serde(default)]
    pub seed: u64,
    /// Simulated seconds per real second (3600 = an hour of readings per second). The simulated
    /// clock never passes the real one: once caught up it continues in real time.
    #[serde(default = "default_speed")]
    pub speed: f64,
    /// Time of the first reading: `"now"`, `"now - 30d"` or an RFC 3339 time. Resolved on the first
    /// run and saved in `data_dir/sim-start`, so restarts continue the same timeline.
    #[serde(default = "default_start")]
    pub start: String,
    /// Stop sampling once this many readings (seqs) exist in total; 0 = no limit.
    #[serde(default)]
    pub max_readings: u64,
}

fn default_speed() -> f64 {
    1.0
}
fn default_start() -> String {
    "now".to_owned()
}

impl Default for SimulatorConfig {
    fn default() -> Self {
        Self { seed: 0, speed: default_speed(), start: default_start(), max_readings: 0 }
    }
}

/// Resolves a `start` value (`"now"`, `"now - 30d"`, RFC 3339) against `now_ms`.
pub fn resolve_start(spec: &str, now_ms: i64) -> Result<i64, String> {
    let s = spec.trim();
    if let Some(rest) = s.strip_prefix("now") {
        let rest = rest.trim();
        if rest.is_empty() {
            return Ok(now_ms);
        }
        let Some(ago) = rest.strip_prefix('-') else {
            return Err(format!("simulator.start {spec:?}: only \"now - <duration>\" is allowed (never the future)"));
        };
        let d = parse_duration(ago)?;
        let ms = i64::try_from(d.as_millis()).map_err(|_| format!("simulator.start {spec:?} is too far back"))?;
        return Ok(now_ms.saturating_sub(ms));
    }
    let t = chrono::DateTime::parse_from_rfc3339(s)
        .map_err(|e| format!("simulator.start {spec:?}: expected \"now\", \"now - 30d\" or RFC 3339 ({e})"))?;
    Ok(t.timestamp_millis())
}

/// `[alarm]`: how local alarms are signalled besides the log line.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlarmConfig {
    /// Program (and arguments) run on every alarm transition, with `VAXTRACE_ALARM_*` variables set.
    #[serde(default)]
    pub hook: Vec<String>,
    /// Publish the alarm state as retained JSON on `.../status/alarm` (default true).
    #[serde(default = "default_true")]
    pub publish: bool,
}

fn default_true() -> bool {
    true
}

/// One `[[probes]]` table.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProbeConfig {
    /// `Reading.probe`, 0..15, unique; defaults to the table's position.
    pub index: Option<u32>,
    /// Free text for logs.
    #[serde(default)]
    pub label: String,
    /// Alarm profile: `vaccine_2_8` (default), `freezer` or `ultra_low`.
    #[serde(default)]
    pub profile: ProfileName,
    /// Where the temperature comes from.
    pub source: SourceConfig,
}

/// Built-in alarm profiles of the coldchain crate.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum ProfileName {
    /// WHO 2–8 °C.
    #[default]
    #[serde(rename = "vaccine_2_8")]
    Vaccine28,
    /// −25..−15 °C.
    Freezer,
    /// −90..−60 °C.
    UltraLow,
}

impl ProfileName {
    /// The coldchain profile, with its no-data limit set from the sampling interval.
    pub fn profile(self, interval: Duration) -> vaxtrace_coldchain::Profile {
        let p = match self {
            Self::Vaccine28 => vaxtrace_coldchain::Profile::vaccine_2_8(),
            Self::Freezer => vaxtrace_coldchain::Profile::freezer(),
            Self::UltraLow => vaxtrace_coldchain::Profile::ultra_low(),
        };
        let ms = i64::try_from(interval.as_millis()).unwrap_or(i64::MAX);
        // Never tighter than the built-in default: the server uses the device's expected interval.
        p.with_no_data_ms(p.no_data_ms.max(ms.saturating_mul(3)))
    }
}

/// A probe's source (`source = { kind = "...", ... }`).
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum SourceConfig {
    /// Simulated fridge (deterministic from `[simulator].seed`).
    Simulator {
        /// What the simulated fridge does.
        #[serde(default)]
        scenario: Scenario,
    },
    /// A 1-Wire DS18B20 through the w1-therm sysfs driver.
    Ds18b20 {
        /// Sensor id like `28-0316a2795aff`; `path` overrides it.
        sensor_id: Option<String>,
        /// Explicit path of a `temperature` (milli-°C) or `w1_slave` file.
        path: Option<PathBuf>,
    },
    /// A file whose last non-empty line is the current temperature in °C.
    File {
        /// The file.
        path: PathBuf,
    },
    /// A program run once per sample whose first stdout line is the temperature in °C.
    Command {
        /// Program and arguments (no shell).
        command: Vec<String>,
        /// Kill the program and report a sensor fault after this long.
        #[serde(default = "default_command_timeout")]
        timeout: HumanDuration,
    },
}

fn default_command_timeout() -> HumanDuration {
    HumanDuration(Duration::from_secs(10))
}

/// Behaviours of the simulated fridge; all repeat every 24 simulated hours.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Scenario {
    /// 2–8 °C with compressor cycling.
    #[default]
    Stable,
    /// Failing thermostat: warms ~0.5 °C/h from 5 °C up to 15 °C (heat alarm after ~16 h).
    WarmDrift,
    /// Door left open for 3 h each day: rises towards 15 °C, door_open = true.
    DoorOpen,
    /// Mains off for 12 h each day: power_on = false, warms towards 28 °C.
    PowerCut,
    /// Thermostat stuck on: cools to −3 °C for 6 h each day (freeze alarm).
    Freeze,
}

impl Config {
    /// Reads, parses and validates a config file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text =
            std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.to_path_buf(), source })?;
        Self::parse(&text).map_err(|e| match e {
            ConfigError::Parse { message, .. } => ConfigError::Parse { path: path.to_path_buf(), message },
            other => other,
        })
    }

    /// Parses and validates config text.
    pub fn parse(text: &str) -> Result<Self, ConfigError> {
        let config: Config =
            toml::from_str(text).map_err(|e| ConfigError::Parse { path: PathBuf::new(), message: e.to_string() })?;
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let id = &self.device_id;
        if id.is_empty() || id.len() > 64 || id.chars().any(|c| c.is_control() || "+#/ ".contains(c)) {
            return Err(invalid(format!(
                "device_id {id:?} must be 1..64 characters without spaces, '/', '+' or '#' (it is an MQTT topic segment)"
            )));
        }
        if self.interval.0 < Duration::from_millis(100) {
            return Err(invalid("interval must be at least 100ms"));
        }
        self.mqtt_endpoint()?;
        if self.mqtt.password.is_some() && self.mqtt.password_file.is_some() {
            return Err(invalid("set mqtt.password or mqtt.password_file, not both"));
        }
        if self.mqtt.reconnect_min.0.is_zero() || self.mqtt.reconnect_min > self.mqtt.reconnect_max {
            return Err(invalid("mqtt.reconnect_min must be > 0 and ≤ mqtt.reconnect_max"));
        }
        if self.mqtt.keep_alive.0 < Duration::from_secs(1) {
            return Err(invalid("mqtt.keep_alive must be at least 1s"));
        }
        let u = &self.uplink;
        if u.batch_size == 0 || u.batch_size > MAX_BATCH_SIZE {
            return Err(invalid(format!("uplink.batch_size must be 1..{MAX_BATCH_SIZE}")));
        }
        if u.max_inflight_batches == 0 || u.max_inflight_batches > 100 {
            return Err(invalid("uplink.max_inflight_batches must be 1..100"));
        }
        if u.ack_timeout.0 < Duration::from_millis(100) {
            return Err(invalid("uplink.ack_timeout must be at least 100ms"));
        }
        if u.key_hex.is_some() && u.key_file.is_some() {
            return Err(invalid("set uplink.key_hex or uplink.key_file, not both"));
        }
        if let Some(k) = &u.key_hex {
            decode_hex(&k.0).map_err(|e| invalid(format!("uplink.key_hex: {e}")))?;
        }
        let b = &self.buffer;
        if b.segment_kib < 4 || b.max_mib == 0 || b.max_mib.saturating_mul(1024) < b.segment_kib {
            return Err(invalid("buffer: segment_kib must be ≥ 4 and max_mib ≥ 1 and ≥ one segment"));
        }
        let s = &self.simulator;
        if !(s.speed.is_finite() && s.speed > 0.0) {
            return Err(invalid("simulator.speed must be a positive number"));
        }
        resolve_start(&s.start, 0).map_err(invalid)?;
        if self.probes.is_empty() || self.probes.len() > 16 {
            return Err(invalid("probes: configure 1..16 [[probes]] tables"));
        }
        let mut seen = [false; 16];
        for (pos, probe) in self.probes.iter().enumerate() {
            let index = probe.index.unwrap_or(pos as u32);
            let Some(slot) = seen.get_mut(index as usize) else {
                return Err(invalid(format!("probes[{pos}].index {index} is out of range 0..{MAX_PROBE_INDEX}")));
            };
            if std::mem::replace(slot, true) {
                return Err(invalid(format!("probes[{pos}].index {index} is used twice")));
            }
            match &probe.source {
                SourceConfig::Command { command, timeout } => {
                    if command.is_empty() {
                        return Err(invalid(format!("probes[{pos}].source.command must name a program")));
                    }
                    if timeout.0.is_zero() {
                        return Err(invalid(format!("probes[{pos}].source.timeout must be > 0")));
                    }
                }
                SourceConfig::Ds18b20 { sensor_id: None, path: None } => {
                    return Err(invalid(format!("probes[{pos}].source: ds18b20 needs sensor_id or path")));
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// Probe indexes in configuration order.
    pub fn probe_indexes(&self) -> Vec<u32> {
        self.probes.iter().enumerate().map(|(pos, p)| p.index.unwrap_or(pos as u32)).collect()
    }

    /// Broker host, port and whether to use TLS, from `mqtt.url` and `mqtt.tls`.
    pub fn mqtt_endpoint(&self) -> Result<Endpoint, ConfigError> {
        let url = self.mqtt.url.trim();
        let (tls, rest, default_port) = if let Some(r) = url.strip_prefix("mqtts://") {
            (true, r, 8883)
        } else if let Some(r) = url.strip_prefix("mqtt://") {
            (self.mqtt.tls, r, if self.mqtt.tls { 8883 } else { 1883 })
        } else {
            return Err(invalid(format!("mqtt.url {url:?} must start with mqtt:// or mqtts://")));
        };
        let rest = rest.trim_end_matches('/');
        if rest.is_empty() || rest.contains('/') || rest.contains('@') {
            return Err(invalid(format!("mqtt.url {url:?} must be scheme://host[:port] (credentials go in [mqtt])")));
        }
        let (host, port) = match rest.rsplit_once(':') {
            Some((h, p)) if !h.ends_with(']') || h.starts_with('[') => {
                let port = p.parse::<u16>().map_err(|_| invalid(format!("mqtt.url {url:?} has an invalid port")))?;
                (h.trim_start_matches('[').trim_end_matches(']'), port)
            }
            _ => (rest, default_port),
        };
        if host.is_empty() || port == 0 {
            return Err(invalid(format!("mqtt.url {url:?} needs a host and a non-zero port")));
        }
        if tls && self.mqtt.ca_file.is_none() {
            return Err(invalid("TLS needs mqtt.ca_file (a PEM file of CA certificates)"));
        }
        Ok(Endpoint { host: host.to_owned(), port, tls })
    }

    /// The MQTT password, from `password` or `password_file`.
    pub fn mqtt_password(&self) -> Result<Option<Secret>, ConfigError> {
        if let Some(path) = &self.mqtt.password_file {
            let text = std::fs::read_to_string(path)
                .map_err(|e| invalid(format!("mqtt.password_file {}: {e}", path.display())))?;
            return Ok(Some(Secret(text.trim_end().to_owned())));
        }
        Ok(self.mqtt.password.clone())
    }

    /// The HMAC key bytes, from `key_hex` or `key_file`; `None` sends unsigned batches.
    pub fn signing_key(&self) -> Result<Option<Vec<u8>>, ConfigError> {
        if let Some(path) = &self.uplink.key_file {
            let text = std::fs::read_to_string(path)
                .map_err(|e| invalid(format!("uplink.key_file {}: {e}", path.display())))?;
            return decode_hex(&text)
                .map(Some)
                .map_err(|e| invalid(format!("uplink.key_file {}: {e}", path.display())));
        }
        match &self.uplink.key_hex {
            Some(k) => decode_hex(&k.0).map(Some).map_err(|e| invalid(format!("uplink.key_hex: {e}"))),
            None => Ok(None),
        }
    }

    /// Checks what only the filesystem can tell (files exist and are readable); used by
    /// `check-config` and at startup so a missing key or CA fails loudly before running.
    pub fn check_files(&self) -> Result<(), ConfigError> {
        self.mqtt_password()?;
        self.signing_key()?;
        if let Some(ca) = &self.mqtt.ca_file {
            std::fs::metadata(ca).map_err(|e| invalid(format!("mqtt.ca_file {}: {e}", ca.display())))?;
        }
        Ok(())
    }
}

/// Where the broker is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// Host name or address.
    pub host: String,
    /// TCP port.
    pub port: u16,
    /// Whether to speak TLS.
    pub tls: bool,
}

/// Decodes hex, ignoring whitespace; refuses an empty or odd-length string.
pub fn decode_hex(text: &str) -> Result<Vec<u8>, String> {
    let digits: Vec<u8> = text.bytes().filter(|b| !b.is_ascii_whitespace()).collect();
    if digits.is_empty() || !digits.len().is_multiple_of(2) {
        return Err("expected an even number of hex digits".to_owned());
    }
    digits
        .chunks(2)
        .map(|pair| {
            let hi = (pair[0] as char).to_digit(16);
            let lo = (pair[1] as char).to_digit(16);
            match (hi, lo) {
                (Some(h), Some(l)) => Ok((h * 16 + l) as u8),
                _ => Err("not a hex string".to_owned()),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    const MINIMAL: &str = r#"
device_id = "dev-1"
data_dir = "/tmp/x"
[mqtt]
url = "mqtt://127.0.0.1:1884"
[[probes]]
source = { kind = "simulator" }
"#;

    #[test]
    fn minimal_config_gets_documented_defaults() {
        let c = Config::parse(MINIMAL).unwrap();
        assert_eq!(c.interval.0, Duration::from_secs(60));
        assert_eq!(c.uplink.batch_size, 60);
        assert_eq!(c.uplink.ack_timeout.0, Duration::from_secs(30));
        assert_eq!(c.mqtt_endpoint().unwrap(), Endpoint { host: "127.0.0.1".into(), port: 1884, tls: false });
        assert_eq!(c.probe_indexes(), vec![0]);
        assert!(matches!(c.probes[0].source, SourceConfig::Simulator { scenario: Scenario::Stable }));
    }

    #[test]
    fn durations_parse_with_units_and_reject_garbage() {
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("1.5h").unwrap(), Duration::from_secs(5400));
        assert_eq!(parse_duration("30d").unwrap(), Duration::from_secs(30 * 86_400));
        assert!(parse_duration("30").is_err());
        assert!(parse_duration("fast").is_err());
    }

    #[test]
    fn start_resolves_relative_and_absolute_and_refuses_the_future() {
        assert_eq!(resolve_start("now", 1_000_000).unwrap(), 1_000_000);
        assert_eq!(resolve_start("now - 1h", 10 * 3_600_000).unwrap(), 9 * 3_600_000);
        assert_eq!(resolve_start("1970-01-01T00:00:01Z", 0).unwrap(), 1000);
        assert!(resolve_start("now + 1h", 0).is_err());
    }

    #[test]
    fn errors_name_the_offending_key() {
        let cases = [
            (MINIMAL.replace("mqtt://127.0.0.1:1884", "http://x"), "mqtt.url"),
            (MINIMAL.replace("dev-1", "a/b"), "device_id"),
            (MINIMAL.to_owned() + "[uplink]\nbatch_size = 5000\n", "uplink.batch_size"),
            (MINIMAL.to_owned() + "[[probes]]\nindex = 0\nsource = { kind = \"simulator\" }\n", "used twice"),
            (MINIMAL.replace("mqtt://", "mqtts://"), "ca_file"),
            (MINIMAL.to_owned() + "[uplink]\nkey_hex = \"zz\"\n", "key_hex"),
            (MINIMAL.replace("[mqtt]", "colour = 1\n[mqtt]"), "unknown field"),
            (MINIMAL.replace("simulator\" }", "ds18b20\" }"), "sensor_id"),
            (MINIMAL.replace("[[probes]]", "[[probes]]\nprofile = \"vaccine28\""), "vaccine_2_8"),
        ];
        for (text, needle) in cases {
            let err = Config::parse(&text).unwrap_err().to_string();
            assert!(err.contains(needle), "{err:?} should mention {needle:?}");
        }
    }

    #[test]
    fn secrets_are_redacted_in_debug_output() {
        let text = MINIMAL.replace("[mqtt]", "[mqtt]\npassword = \"hunter2\"")
            + "[uplink]\nkey_hex = \"00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff\"\n";
        let c = Config::parse(&text).unwrap();
        let dbg = format!("{c:?}");
        assert!(!dbg.contains("hunter2") && !dbg.contains("aabbcc"), "{dbg}");
        assert_eq!(c.signing_key().unwrap().unwrap().len(), 32);
    }
}
