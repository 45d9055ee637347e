//! Local alarm: the server's rules (vaxtrace-coldchain) evaluated on the device, so a fridge
//! warming up is signalled on site even when the link has been down for days.
//!
//! Signals: a log line per transition (WARN on open/escalate, INFO on close), an optional hook
//! command (buzzer, LED, SMS modem script) and retained JSON on `.../status/alarm`:
//! `{"device_id":"d","time":"<reading time>","highest":"alarm"|null,
//!   "probes":[{"probe":0,"open":["heat"],"severity":"alarm"}]}`.
//! Each probe's alarm state is saved in `data_dir/alarm-<probe>.state` so open alarms and running
//! timers survive restarts.

use std::path::{Path, PathBuf};
use std::time::Duration;

use tracing::{debug, info, warn};
use vaxtrace_coldchain::{AlarmEvent, AlarmKind, EvalError, Profile, Severity, State, Transition};

/// Everything an alarm transition tells the outside world.
#[derive(Debug, Clone, PartialEq)]
pub struct Signal {
    /// Probe index.
    pub probe: u32,
    /// The coldchain event.
    pub event: AlarmEvent,
}

#[derive(Debug)]
struct ProbeAlarm {
    probe: u32,
    profile: Profile,
    state: State,
    path: PathBuf,
}

/// Per-probe alarm state machines plus the hook.
#[derive(Debug)]
pub struct LocalAlarm {
    device_id: String,
    probes: Vec<ProbeAlarm>,
    hook: Vec<String>,
    last_time_ms: i64,
}

const KINDS: [AlarmKind; 6] = [
    AlarmKind::Heat,
    AlarmKind::Freeze,
    AlarmKind::Excursion,
    AlarmKind::PowerOut,
    AlarmKind::SensorFault,
    AlarmKind::NoData,
];

/// Lowercase name of an alarm kind, as used in JSON and hook variables.
pub fn kind_name(kind: AlarmKind) -> &'static str {
    match kind {
        AlarmKind::Excursion => "excursion",
        AlarmKind::Heat => "heat",
        AlarmKind::Freeze => "freeze",
        AlarmKind::NoData => "no_data",
        AlarmKind::PowerOut => "power_out",
        AlarmKind::SensorFault => "sensor_fault",
    }
}

/// Lowercase name of a severity.
pub fn severity_name(s: Severity) -> &'static str {
    match s {
        Severity::Warning => "warning",
        Severity::Alarm => "alarm",
        Severity::Critical => "critical",
    }
}

fn transition_name(t: Transition) -> &'static str {
    match t {
        Transition::Opened => "opened",
        Transition::Escalated => "escalated",
        Transition::Closed => "closed",
    }
}

impl LocalAlarm {
    /// Loads saved state from `data_dir` for each `(probe, profile)`; unreadable state starts fresh.
    pub fn new(device_id: &str, data_dir: &Path, probes: &[(u32, Profile)], hook: Vec<String>) -> Self {
        let probes = probes
            .iter()
            .map(|&(probe, profile)| {
                let path = data_dir.join(format!("alarm-{probe}.state"));
                let state = match std::fs::read(&path) {
                    Ok(bytes) => State::from_bytes(&bytes).unwrap_or_else(|e| {
                        warn!(probe, error = %e, "saved alarm state unusable; starting fresh");
                        State::new()
                    }),
                    Err(_) => State::new(),
                };
                ProbeAlarm { probe, profile, state, path }
            })
            .collect();
        Self { device_id: device_id.to_owned(), probes, hook, last_time_ms: 0 }
    }

    /// Evaluates one reading of `probe`; logs, runs the hook and returns the transitions.
    pub fn observe(&mut self, probe: u32, reading: vaxtrace_coldchain::Reading) -> Vec<Signal> {
        let Some(p) = self.probes.iter_mut().find(|p| p.probe == probe) else { return Vec::new() };
        self.last_time_ms = self.last_time_ms.max(reading.time_ms);
        let events = match vaxtrace_coldchain::evaluate(&p.profile, &mut p.state, reading) {
            Ok(events) => events,
            // After an unclean restart the sampler may repeat a reading the state already saw.
            Err(e @ (EvalError::Duplicate { .. } | EvalError::OutOfOrder { .. })) => {
                debug!(probe, error = %e, "reading already evaluated");
                return Vec::new();
            }
        };
        if !events.is_empty() {
            save_state(&p.path, &p.state);
        }
        let signals: Vec<Signal> = events.iter().map(|e| Signal { probe, event: *e }).collect();
        let highest = self.highest();
        for s in &signals {
            self.signal(s, highest);
        }
        signals
    }

    /// Saves every probe's state (call on shutdown; transitions are saved as they happen).
    pub fn save_all(&self) {
        for p in &self.probes {
            save_state(&p.path, &p.state);
        }
    }

    /// Highest open severity across probes.
    pub fn highest(&self) -> Option<Severity> {
        self.probes.iter().filter_map(|p| p.state.highest_open_severity()).max()
    }

    /// The retained status JSON (see the module docs).
    pub fn status_json(&self) -> String {
        let probes: Vec<serde_json::Value> = self
            .probes
            .iter()
            .map(|p| {
                let open: Vec<&str> =
                    KINDS.iter().filter(|k| p.state.is_open(&p.profile, **k)).map(|k| kind_name(*k)).collect();
                serde_json::json!({
                    "probe": p.probe,
                    "open": open,
                    "severity": p.state.highest_open_severity().map(severity_name),
                })
            })
            .collect();
        serde_json::json!({
            "device_id": self.device_id,
            "time": rfc3339(self.last_time_ms),
            "highest": self.highest().map(severity_name),
            "probes": probes,
        })
        .to_string()
    }

    fn signal(&self, s: &Signal, highest: Option<Severity>) {
        let e = &s.event;
        let kind = kind_name(e.kind);
        let transition = transition_name(e.transition);
        let severity = severity_name(e.severity);
        let min = e.min_centi.map(|c| f64::from(c) / 100.0);
        let max = e.max_centi.map(|c| f64::from(c) / 100.0);
        match e.transition {
            Transition::Closed => info!(
                probe = s.probe, kind, severity, since = %rfc3339(e.start_ms), at = %rfc3339(e.at_ms),
                minutes = e.minutes_past_threshold, "ALARM closed"
            ),
            _ => warn!(
                probe = s.probe, kind, transition, severity, since = %rfc3339(e.start_ms), at = %rfc3339(e.at_ms),
                minutes = e.minutes_past_threshold, min_c = ?min, max_c = ?max, "ALARM {transition}"
            ),
        }
        let Some((program, args)) = self.hook.split_first() else { return };
        let spawned = tokio::process::Command::new(program)
            .args(args)
            .env("VAXTRACE_DEVICE_ID", &self.device_id)
            .env("VAXTRACE_PROBE", s.probe.to_string())
            .env("VAXTRACE_ALARM_KIND", kind)
            .env("VAXTRACE_ALARM_TRANSITION", transition)
            .env("VAXTRACE_ALARM_SEVERITY", severity)
            .env("VAXTRACE_ALARM_SINCE", rfc3339(e.start_ms))
            .env("VAXTRACE_ALARM_TIME", rfc3339(e.at_ms))
            .env("VAXTRACE_ALARM_HIGHEST", highest.map_or("none", severity_name))
            .stdin(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn();
        match spawned {
            Ok(mut child) => {
                let program = program.clone();
                // Reap it, and never let a stuck hook pile up processes.
                tokio::spawn(async move {
                    match tokio::time::timeout(Duration::from_secs(60), child.wait()).await {
                        Ok(Ok(status)) if !status.success() => warn!(%program, %status, "alarm hook failed"),
                        Ok(Err(e)) => warn!(%program, error = %e, "alarm hook failed"),
                        Err(_) => warn!(%program, "alarm hook still running after 60s; killing it"),
                        Ok(Ok(_)) => {}
                    }
                });
            }
            Err(e) => warn!(%program, error = %e, "cannot run the alarm hook"),
        }
    }
}

fn save_state(path: &Path, state: &State) {
    // No fsync: losing the last transition in a power cut only re-raises it; the readings
    // themselves are durable in the buffer.
    let tmp = path.with_extension("tmp");
    let result = std::fs::write(&tmp, state.to_bytes()).and_then(|()| std::fs::rename(&tmp, path));
    if let Err(e) = result {
        warn!(path = %path.display(), error = %e, "cannot save alarm state");
    }
}

/// RFC 3339 UTC text of ms since the epoch.
pub fn rfc3339(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use vaxtrace_coldchain::Reading;

    #[tokio::test]
    async fn heat_alarm_opens_runs_the_hook_and_survives_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let marker = dir.path().join("hook.out");
        let hook = vec![
            "sh".to_owned(),
            "-c".to_owned(),
            format!("echo \"$VAXTRACE_ALARM_KIND $VAXTRACE_ALARM_TRANSITION $VAXTRACE_PROBE\" >> {}", marker.display()),
        ];
        let profile = Profile::vaccine_2_8();
        let mut alarm = LocalAlarm::new("dev-1", dir.path(), &[(3, profile)], hook.clone());
        let minute = 60_000;
        let mut opened = Vec::new();
        for i in 0..=(11 * 60) {
            opened.extend(alarm.observe(3, Reading::new(i * 10 * minute / 10, 1200)));
        }
        assert!(
            opened.iter().any(|s| s.event.kind == AlarmKind::Heat && s.event.transition == Transition::Opened),
            "{opened:?}"
        );
        assert_eq!(alarm.highest(), Some(Severity::Alarm));
        let json: serde_json::Value = serde_json::from_str(&alarm.status_json()).unwrap();
        assert_eq!(json["probes"][0]["open"], serde_json::json!(["heat", "excursion"]));
        alarm.save_all();

        let mut again = LocalAlarm::new("dev-1", dir.path(), &[(3, profile)], hook);
        assert_eq!(again.highest(), Some(Severity::Alarm), "open alarm restored from disk");
        let closed = again.observe(3, Reading::new(12 * 60 * minute, 500));
        assert!(closed.iter().any(|s| s.event.kind == AlarmKind::Heat && s.event.transition == Transition::Closed));
        assert_eq!(again.highest(), None);

        // The hook runs asynchronously; wait for both lines (generous hang guard, not a timing assertion).
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            let text = std::fs::read_to_string(&marker).unwrap_or_default();
            if text.contains("heat opened 3") && text.contains("heat closed 3") {
                break;
            }
            assert!(std::time::Instant::now() < deadline, "hook output: {text:?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}
