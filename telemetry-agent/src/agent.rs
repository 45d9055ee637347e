//! The running agent: a sampler task feeding the core loop, which owns the buffer, the uplink
//! state machine and the local alarm, and talks to the MQTT event-loop task through channels.
//!
//! ```text
//! sampler task --Sample--> core: append to buffer (fsync) -> local alarm -> uplink.pump -> Link.try_publish
//! mqtt task ---LinkEvent-> core: Connected / Disconnected / Ack -> buffer.ack -> pump
//! ```
//! The core never awaits the network, so sensing continues whatever the link does.

use std::collections::VecDeque;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context;
use prost_types::Timestamp;
use tokio::sync::mpsc;
use tracing::{error, info, warn};
use vaxtrace_proto::v1::Reading;

use crate::alarm::LocalAlarm;
use crate::buffer::{Buffer, BufferError, DropReason, DroppedRange};
use crate::config::{Config, resolve_start};
use crate::mqtt::{BatchPublisher, Link, LinkEvent};
use crate::sensor::Source;
use crate::uplink::{Uplink, UplinkSettings};
use crate::wire;

/// The buffer lives in this subdirectory of `data_dir`.
pub const BUFFER_DIR: &str = "buffer";
/// The simulated clock's start (ms since the epoch, text) is kept in this file of `data_dir`.
pub const SIM_START_FILE: &str = "sim-start";
/// Readings kept in memory while the disk refuses writes (full disk); beyond it the oldest go.
const MAX_PENDING_READINGS: usize = 10_000;

/// One sample: a reading of every probe taken at the same time.
#[derive(Debug, Clone)]
pub struct Sample {
    /// Sample number (0-based, continues across restarts on the simulated clock).
    pub n: u64,
    /// Readings, one per probe, `seq` still 0.
    pub readings: Vec<Reading>,
}

/// A configured probe.
#[derive(Debug, Clone)]
pub struct Probe {
    /// `Reading.probe`.
    pub index: u32,
    /// Config label.
    pub label: String,
    /// Where it reads from.
    pub source: Source,
}

/// Builds the probes of a config.
pub fn probes(config: &Config) -> Vec<Probe> {
    config
        .probes
        .iter()
        .zip(config.probe_indexes())
        .map(|(p, index)| Probe {
            index,
            label: p.label.clone(),
            source: Source::from_config(&p.source, config.simulator.seed, index),
        })
        .collect()
}

/// Milliseconds since the Unix epoch, now.
pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// A protobuf timestamp from ms since the epoch.
pub fn timestamp(ms: i64) -> Timestamp {
    Timestamp { seconds: ms.div_euclid(1000), nanos: (ms.rem_euclid(1000) * 1_000_000) as i32 }
}

/// ms since the epoch from a protobuf timestamp.
pub fn timestamp_ms(ts: &Timestamp) -> i64 {
    ts.seconds.saturating_mul(1000).saturating_add(i64::from(ts.nanos) / 1_000_000)
}

/// Reads every probe once; a failure becomes a fault reading and is returned beside it.
pub async fn read_probes(probes: &[Probe], time_ms: i64, elapsed_ms: i64, n: u64) -> Vec<(Reading, Option<String>)> {
    let mut out = Vec::with_capacity(probes.len());
    for p in probes {
        let base = Reading { seq: 0, time: Some(timestamp(time_ms)), probe: p.index, ..Default::default() };
        out.push(match p.source.read(elapsed_ms, n).await {
            Ok(m) => (Reading { temp_c: m.temp_c, power_on: m.power_on, door_open: m.door_open, ..base }, None),
            Err(e) => (Reading { sensor_fault: Some(true), ..base }, Some(e.0)),
        });
    }
    out
}

/// The simulated clock: sample `n` is taken at `start_ms + n × interval`.
#[derive(Debug, Clone, Copy)]
pub struct SimClock {
    /// Time of sample 0.
    pub start_ms: i64,
    /// Simulated seconds per real second.
    pub speed: f64,
}

/// Loads the saved simulated start, or resolves `spec` and saves it (first run).
pub fn load_or_init_sim_start(data_dir: &Path, spec: &str) -> anyhow::Result<i64> {
    let path = data_dir.join(SIM_START_FILE);
    if let Ok(text) = std::fs::read_to_string(&path) {
        return text
            .trim()
            .parse()
            .with_context(|| format!("{} is corrupt; delete it to restart the timeline", path.display()));
    }
    let start = resolve_start(spec, now_ms()).map_err(anyhow::Error::msg)?;
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, start.to_string())
        .and_then(|()| std::fs::File::open(&tmp)?.sync_all())
        .and_then(|()| std::fs::rename(&tmp, &path))
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(start)
}

/// Produces samples forever (or until `max_samples`), paced by the real or the simulated clock.
#[derive(Debug)]
pub struct Sampler {
    /// The probes.
    pub probes: Vec<Probe>,
    /// Time between samples.
    pub interval: Duration,
    /// Present when any probe is simulated: every probe then uses the simulated clock.
    pub sim: Option<SimClock>,
    /// First sample number to produce.
    pub first_n: u64,
    /// Stop before this sample number.
    pub max_samples: Option<u64>,
}

impl Sampler {
    /// Runs until `max_samples` or until the receiver is gone.
    pub async fn run(self, tx: mpsc::Sender<Sample>) {
        let started = tokio::time::Instant::now();
        let interval_ms = i64::try_from(self.interval.as_millis()).unwrap_or(i64::MAX);
        let mut ticker = tokio::time::interval(self.interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut faults: Vec<Option<String>> = vec![None; self.probes.len()];
        let mut n = self.first_n;
        loop {
            if self.max_samples.is_some_and(|max| n >= max) {
                info!(samples = n, "max_readings reached; sampling stopped (the uplink keeps running)");
                return;
            }
            let (time_ms, elapsed_ms) = match self.sim {
                Some(clock) => {
                    let elapsed = (n as i64).saturating_mul(interval_ms);
                    let due = self.interval.mul_f64((n - self.first_n) as f64 / clock.speed);
                    tokio::time::sleep_until(started + due).await;
                    let time = clock.start_ms.saturating_add(elapsed);
                    // Never stamp a reading in the future: once caught up, run in real time.
                    let ahead = time - now_ms();
                    if ahead > 0 {
                        tokio::time::sleep(Duration::from_millis(ahead as u64)).await;
                    }
                    (time, elapsed)
                }
                None => {
                    ticker.tick().await;
                    (now_ms(), 0)
                }
            };
            let results = read_probes(&self.probes, time_ms, elapsed_ms, n).await;
            let mut readings = Vec::with_capacity(results.len());
            for ((reading, fault), (last, probe)) in results.into_iter().zip(faults.iter_mut().zip(&self.probes)) {
                if fault != *last {
                    match &fault {
                        Some(msg) => warn!(probe = probe.index, label = %probe.label, error = %msg, "sensor fault"),
                        None => info!(probe = probe.index, label = %probe.label, "sensor recovered"),
                    }
                    *last = fault;
                }
                readings.push(reading);
            }
            if tx.send(Sample { n, readings }).await.is_err() {
                return;
            }
            n += 1;
        }
    }
}

/// Runs the agent until `shutdown` resolves.
pub async fn run(config: Config, shutdown: impl std::future::Future<Output = ()>) -> anyhow::Result<()> {
    config.check_files()?;
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("cannot create data_dir {}", config.data_dir.display()))?;
    let buffer = Buffer::open(&config.data_dir.join(BUFFER_DIR), config.buffer.buffer_config())
        .with_context(|| format!("cannot open the buffer in {}", config.data_dir.display()))?;
    let probes = probes(&config);
    let per_sample = probes.len() as u64;
    let sim = if probes.iter().any(|p| p.source.is_simulated()) {
        let start_ms = load_or_init_sim_start(&config.data_dir, &config.simulator.start)?;
        Some(SimClock { start_ms, speed: config.simulator.speed })
    } else {
        None
    };
    // Every sample is appended as one batch, so the next sample number follows from the next seq;
    // a sample cut short by a crash is not repeated (its seqs may already be on the wire).
    let first_n = (buffer.next_seq() - 1).div_ceil(per_sample);
    let max_samples = (config.simulator.max_readings > 0).then(|| config.simulator.max_readings / per_sample);
    let interval = config.interval.0;
    let alarm_probes: Vec<_> =
        config.probes.iter().zip(config.probe_indexes()).map(|(p, i)| (i, p.profile.profile(interval))).collect();
    let mut alarm = LocalAlarm::new(&config.device_id, &config.data_dir, &alarm_probes, config.alarm.hook.clone());

    let (sample_tx, mut sample_rx) = mpsc::channel::<Sample>(64);
    let sampler = Sampler { probes, interval, sim, first_n, max_samples };
    let sampler_task = tokio::spawn(sampler.run(sample_tx));

    let (link_tx, mut link_rx) = mpsc::channel::<LinkEvent>(256);
    let (link, link_task) = Link::start(&config, link_tx)?;
    let key = config.signing_key()?;
    if key.is_none() {
        warn!("no uplink key configured: batches are unsigned and the server rejects them unless unsigned_allowed");
    }
    let mut uplink = Uplink::new(UplinkSettings {
        device_id: config.device_id.clone(),
        batch_size: config.uplink.batch_size,
        max_inflight_batches: config.uplink.max_inflight_batches,
        ack_timeout: config.uplink.ack_timeout.0,
        key: key.clone(),
        key_version: config.uplink.key_version,
    });

    let mut core = Core {
        buffer,
        pending: VecDeque::new(),
        dropped: Vec::new(),
        alarm_dirty: false,
        connected: false,
        key,
        device_id: config.device_id.clone(),
        publish_alarm: config.alarm.publish,
    };
    core.collect_dropped();
    info!(
        device_id = %config.device_id, probes = per_sample, next_seq = core.buffer.next_seq(),
        unacked = core.buffer.unacked_count(), simulated = sim.is_some(), "agent started"
    );

    let tick_every = (config.uplink.ack_timeout.0 / 4).clamp(Duration::from_millis(50), Duration::from_secs(1));
    let mut tick = tokio::time::interval(tick_every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut sampling = true;
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            sample = sample_rx.recv(), if sampling => match sample {
                Some(s) => core.on_sample(s, &mut alarm),
                None => sampling = false,
            },
            Some(event) = link_rx.recv() => core.on_link(event, &mut uplink)?,
            _ = tick.tick() => {
                uplink.on_tick(&core.buffer, Instant::now());
                core.store_pending();
            }
            () = &mut shutdown => break,
        }
        // Take whatever else is ready so acks and samples are applied in bulk.
        while let Ok(event) = link_rx.try_recv() {
            core.on_link(event, &mut uplink)?;
        }
        while let Ok(sample) = sample_rx.try_recv() {
            core.on_sample(sample, &mut alarm);
        }
        if let Err(e) = uplink.pump(&core.buffer, &mut BatchPublisher(&link), Instant::now()) {
            error!(error = %e, "uplink cannot read the buffer; retrying");
        }
        core.publish_side_topics(&link, &alarm);
    }

    info!("shutting down");
    sampler_task.abort();
    while let Ok(sample) = sample_rx.try_recv() {
        core.on_sample(sample, &mut alarm);
    }
    alarm.save_all();
    link.shutdown();
    // Let the event loop flush `offline` and the DISCONNECT, but never hang on a dead link.
    let _ = tokio::time::timeout(Duration::from_secs(2), link_task).await;
    if !core.pending.is_empty() {
        error!(readings = core.pending.len(), "readings could not be stored (disk full?) and are lost");
    }
    Ok(())
}

struct Core {
    buffer: Buffer,
    /// Readings the disk refused, oldest first, retried on every tick.
    pending: VecDeque<Reading>,
    dropped: Vec<DroppedRange>,
    alarm_dirty: bool,
    connected: bool,
    key: Option<Vec<u8>>,
    device_id: String,
    publish_alarm: bool,
}

impl Core {
    fn on_sample(&mut self, sample: Sample, alarm: &mut LocalAlarm) {
        for r in &sample.readings {
            let time_ms = r.time.as_ref().map_or(0, timestamp_ms);
            let mut reading = vaxtrace_coldchain::Reading::from_celsius(time_ms, r.temp_c);
            reading.power_on = r.power_on;
            reading.sensor_fault |= r.sensor_fault == Some(true);
            if !alarm.observe(r.probe, reading).is_empty() {
                self.alarm_dirty = true;
            }
        }
        if self.pending.len() + sample.readings.len() > MAX_PENDING_READINGS {
            let excess = self.pending.len() + sample.readings.len() - MAX_PENDING_READINGS;
            self.pending.drain(..excess.min(self.pending.len()));
            error!(readings = excess, "disk refuses writes for too long; oldest unsaved readings dropped");
        }
        self.pending.extend(sample.readings);
        self.store_pending();
    }

    /// Appends pending readings, one sample's worth per record batch, oldest first.
    fn store_pending(&mut self) {
        while !self.pending.is_empty() {
            let records: Vec<Vec<u8>> = self.pending.iter().map(wire::encode_record).collect();
            match self.buffer.append_batch(&records) {
                Ok(_) => self.pending.clear(),
                Err(e @ (BufferError::Io { .. } | BufferError::Full { .. })) => {
                    // Kept in memory and retried each tick; sensing goes on.
                    warn!(error = %e, waiting = self.pending.len(), "cannot store readings yet");
                    break;
                }
                Err(e) => {
                    error!(error = %e, readings = self.pending.len(), "readings cannot be stored and are lost");
                    self.pending.clear();
                }
            }
        }
        self.collect_dropped();
    }

    fn collect_dropped(&mut self) {
        for range in self.buffer.take_dropped() {
            warn!(
                first_seq = range.first_seq, last_seq = range.last_seq, count = range.count(),
                reason = ?range.reason, "readings lost for good; notifying the server on status/dropped"
            );
            self.dropped.push(range);
        }
    }

    fn on_link(&mut self, event: LinkEvent, uplink: &mut Uplink) -> anyhow::Result<()> {
        match event {
            LinkEvent::Connected => {
                self.connected = true;
                self.alarm_dirty = true;
                uplink.on_connected(&self.buffer);
            }
            LinkEvent::Disconnected => {
                self.connected = false;
                uplink.on_disconnected();
            }
            LinkEvent::Ack(ack) => {
                if let Err(e) = uplink.on_ack(&mut self.buffer, &ack) {
                    // A failed ack write leaves the records in place; the next ack retries.
                    error!(error = %e, "cannot record the server's ack");
                }
            }
        }
        Ok(())
    }

    fn publish_side_topics(&mut self, link: &Link, alarm: &LocalAlarm) {
        if !self.connected {
            return;
        }
        if self.alarm_dirty && self.publish_alarm {
            let topic = link.topics().alarm.clone();
            if link.try_publish(&topic, true, alarm.status_json().into_bytes()).is_ok() {
                self.alarm_dirty = false;
            }
        }
        if !self.dropped.is_empty() {
            let payload = dropped_notice(&self.device_id, &self.dropped, self.key.as_deref());
            if link.try_publish(&link.topics().dropped, false, payload.into_bytes()).is_ok() {
                self.dropped.clear();
            }
        }
    }
}

/// The `.../status/dropped` notice: `{"device_id":..,"ranges":[{"first_seq","last_seq","count",
/// "reason"}],"signature":"<hex>"}`; the signature is HMAC-SHA256 over the exact bytes of the
/// `ranges` array, as for JSON reading batches. The server should count these seqs as lost so its
/// contiguous ack can move past them.
pub fn dropped_notice(device_id: &str, ranges: &[DroppedRange], key: Option<&[u8]>) -> String {
    let ranges: Vec<serde_json::Value> = ranges
        .iter()
        .map(|r| {
            serde_json::json!({
                "first_seq": r.first_seq,
                "last_seq": r.last_seq,
                "count": r.count(),
                "reason": match r.reason { DropReason::SizeCap => "size_cap", DropReason::Unrecoverable => "unrecoverable" },
            })
        })
        .collect();
    let ranges = serde_json::Value::Array(ranges).to_string();
    let device = serde_json::Value::String(device_id.to_owned()).to_string();
    match key.and_then(|k| wire::hmac_sha256(k, ranges.as_bytes()).ok()) {
        Some(sig) => format!("{{\"device_id\":{device},\"ranges\":{ranges},\"signature\":\"{}\"}}", wire::to_hex(&sig)),
        None => format!("{{\"device_id\":{device},\"ranges\":{ranges}}}"),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn dropped_notice_is_json_signed_over_the_ranges_bytes() {
        let r = [DroppedRange { first_seq: 5, last_seq: 9, reason: DropReason::SizeCap }];
        let text = dropped_notice("dev-1", &r, Some(b"k"));
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["ranges"][0]["count"], 5);
        assert_eq!(v["ranges"][0]["reason"], "size_cap");
        let start = text.find("\"ranges\":").unwrap() + "\"ranges\":".len();
        let end = text.find(",\"signature\"").unwrap();
        let sig = wire::to_hex(&wire::hmac_sha256(b"k", &text.as_bytes()[start..end]).unwrap());
        assert_eq!(v["signature"], sig);
    }

    #[test]
    fn sim_start_is_resolved_once_and_then_kept() {
        let dir = tempfile::tempdir().unwrap();
        let first = load_or_init_sim_start(dir.path(), "now - 30d").unwrap();
        assert!((now_ms() - 30 * 86_400_000 - first).abs() < 60_000);
        assert_eq!(load_or_init_sim_start(dir.path(), "now").unwrap(), first, "restarts continue the timeline");
    }

    #[tokio::test(start_paused = true)]
    async fn simulated_clock_stamps_consecutive_intervals_and_stops_at_the_limit() {
        let probes = vec![
            Probe {
                index: 0,
                label: String::new(),
                source: Source::Simulator { scenario: Default::default(), seed: 1 },
            },
            Probe { index: 4, label: String::new(), source: Source::File { path: "/nonexistent/t".into() } },
        ];
        let start_ms = now_ms() - 3_600_000;
        let sampler = Sampler {
            probes,
            interval: Duration::from_secs(60),
            sim: Some(SimClock { start_ms, speed: 3600.0 }),
            first_n: 7,
            max_samples: Some(10),
        };
        let (tx, mut rx) = mpsc::channel(16);
        sampler.run(tx).await;
        let mut got = Vec::new();
        while let Ok(s) = rx.try_recv() {
            got.push(s);
        }
        assert_eq!(got.iter().map(|s| s.n).collect::<Vec<_>>(), vec![7, 8, 9]);
        let s = &got[1];
        assert_eq!(s.readings[0].time, Some(timestamp(start_ms + 8 * 60_000)));
        assert_eq!((s.readings[1].probe, s.readings[1].sensor_fault), (4, Some(true)), "a dead probe is a fault");
        assert_eq!(s.readings[0].sensor_fault, None);
    }
}
