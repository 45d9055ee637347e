//! Cold-chain ingest throughput and alert latency: devices publish signed `ReadingBatch`es over
//! MQTT to the server's ingest (in-process, as `serve` starts it) and count what comes back
//! acked, i.e. committed; beside it, in the same run, the raw broker (the same publishers and
//! messages, a plain subscriber that only counts) and a raw PostgreSQL COPY of as many rows into
//! a copy of the readings table. Results go to stdout; BENCHMARKS.md records a run.
//!
//! ```sh
//! VAXTRACE_BENCH_POSTGRES_URL=postgres://postgres@127.0.0.1:5432/test \
//!   cargo bench -p vaxtrace-tests --bench ingest_bench
//! ```
//!
//! Scenarios, per broker (the embedded rumqttd always; Mosquitto when `VAXTRACE_BENCH_MQTT_URL`
//! is set) and per engine (SQLite file in WAL mode; PostgreSQL in a fresh schema):
//! - ingest, 1 reading per message and `VAXTRACE_BENCH_BATCH` (60) per message: every device
//!   keeps a window of unacked batches (like the agent's `max_inflight_batches`) for
//!   `VAXTRACE_BENCH_SECS`, then drains; rate = acked readings from the first publish to the last
//!   ack. A device re-sends what stays unacked for 5 s, as the agent does.
//! - alert latency: background load at `VAXTRACE_BENCH_ALERT_LOAD` readings/s in range, while
//!   other devices, one trial at a time, publish the reading that opens an EXCURSION (the first
//!   reading outside +2..+8 °C) and time the publish → the OPENED event on `WatchAlerts`; then
//!   the same at `VAXTRACE_BENCH_ALERT_LIGHT_LOAD` readings/s (a diagnostic: the path without
//!   queueing).
//! - where the time goes: the steps of `App::ingest` timed one by one (no MQTT), on a fresh
//!   device, on a load device after the runs and on one with 43,200 readings (a month at one a
//!   minute); on PostgreSQL once more after `ANALYZE readings`.
//! - raw broker, before and after the ingest runs (no server subscribed then): the same
//!   publishers, window and messages at QoS 1, to a plain subscriber that only counts; each
//!   arrival moves its device's window in-process, as an ack would; rate = messages arrived from
//!   the first publish to the last arrival.
//! - raw COPY (PostgreSQL): `COPY … FROM STDIN` of as many rows as the batch scenario stored into a
//!   table made `LIKE readings INCLUDING ALL` with the same foreign keys, in a scratch schema;
//!   then the same without the foreign keys (a diagnostic).
//!
//! Environment: `VAXTRACE_BENCH_POSTGRES_URL` (default `postgres://postgres@127.0.0.1:5432/test`,
//! empty = skip PostgreSQL), `VAXTRACE_BENCH_ENGINES` (`postgres,sqlite`),
//! `VAXTRACE_BENCH_MQTT_URL` (unset = embedded broker only), `VAXTRACE_BENCH_DEVICES` (50),
//! `VAXTRACE_BENCH_WINDOW` (8 batches per device), `VAXTRACE_BENCH_SECS` (10 per scenario),
//! `VAXTRACE_BENCH_BATCH` (60), `VAXTRACE_BENCH_INGEST_WORKERS` (4, as `serve`),
//! `VAXTRACE_BENCH_ALERT_TRIALS` (200, at most), `VAXTRACE_BENCH_ALERT_SECS` (30, at most),
//! `VAXTRACE_BENCH_ALERT_LOAD` (10000 readings/s), `VAXTRACE_BENCH_ALERT_LIGHT_LOAD` (2000; 0 =
//! skip), `VAXTRACE_BENCH_ALERT_LOAD_BATCH` (60), `VAXTRACE_BENCH_LOG` (`warn,rumqttd=off`).
//!
//! Run as a test target (`cargo test --benches`, no `--bench` argument) it only prints a note.

use std::collections::{HashMap, VecDeque};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use prost::Message as _;
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use tokio::sync::{mpsc, oneshot, watch};
use tonic::transport::Channel;
use vaxtrace_proto::signing::encode_signed;
use vaxtrace_proto::v1 as pb;
use vaxtrace_proto::v1::alert_service_client::AlertServiceClient;
use vaxtrace_proto::v1::facility_service_client::FacilityServiceClient;
use vaxtrace_proto::v1::telemetry_service_client::TelemetryServiceClient;
use vaxtrace_server::ingest::IngestConfig;
use vaxtrace_tests::authed;

/// Linux's USER_HZ: /proc reports CPU times in these ticks.
const TICKS_PER_SEC: f64 = 100.0;
/// How long a device waits for an ack before re-sending what is unacked (the agent's
/// `ack_timeout` is 30 s; a benchmark cannot wait that long for a lost ack).
const ACK_TIMEOUT: Duration = Duration::from_secs(5);
/// Give up on a scenario this long after its publishing stopped.
const DRAIN_LIMIT: Duration = Duration::from_secs(120);
/// Alert devices, taking turns for the trials.
const ALERT_DEVICES: usize = 10;

#[derive(Debug, Clone)]
struct Config {
    devices: usize,
    window: u64,
    secs: u64,
    batch: u64,
    workers: usize,
    alert_trials: usize,
    alert_secs: u64,
    alert_load: f64,
    alert_light_load: f64,
    alert_load_batch: u64,
    pg_url: Option<String>,
    sqlite: bool,
    mqtt_url: Option<String>,
}

impl Config {
    fn from_env() -> Config {
        let num = |k: &str, d: u64| std::env::var(k).ok().and_then(|v| v.parse().ok()).unwrap_or(d);
        let engines = std::env::var("VAXTRACE_BENCH_ENGINES").unwrap_or_else(|_| "postgres,sqlite".into());
        let pg_url = std::env::var("VAXTRACE_BENCH_POSTGRES_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
        let mqtt_url = std::env::var("VAXTRACE_BENCH_MQTT_URL").ok().filter(|u| !u.is_empty());
        let to_usize = |v: u64| usize::try_from(v).unwrap_or(usize::MAX);
        Config {
            devices: to_usize(num("VAXTRACE_BENCH_DEVICES", 50)).max(1),
            window: num("VAXTRACE_BENCH_WINDOW", 8).max(1),
            secs: num("VAXTRACE_BENCH_SECS", 10).max(1),
            batch: num("VAXTRACE_BENCH_BATCH", 60).clamp(1, 1000),
            workers: to_usize(num("VAXTRACE_BENCH_INGEST_WORKERS", 4)).max(1),
            alert_trials: to_usize(num("VAXTRACE_BENCH_ALERT_TRIALS", 200)),
            alert_secs: num("VAXTRACE_BENCH_ALERT_SECS", 30).max(1),
            alert_load: num("VAXTRACE_BENCH_ALERT_LOAD", 10_000) as f64,
            alert_light_load: num("VAXTRACE_BENCH_ALERT_LIGHT_LOAD", 2_000) as f64,
            alert_load_batch: num("VAXTRACE_BENCH_ALERT_LOAD_BATCH", 60).clamp(1, 1000),
            pg_url: (engines.contains("postgres") && !pg_url.is_empty()).then_some(pg_url),
            sqlite: engines.contains("sqlite"),
            mqtt_url,
        }
    }
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        println!("ingest_bench: not run as a test; use `cargo bench -p vaxtrace-tests --bench ingest_bench`");
        return;
    }
    let _ = tracing_subscriber::fmt()
        .with_env_filter(std::env::var("VAXTRACE_BENCH_LOG").unwrap_or_else(|_| "warn,rumqttd=off".into()))
        .try_init();
    let cfg = Config::from_env();
    // Two runtimes with named threads, so the CPU each side burns can be told apart in /proc:
    // the server (gRPC, ingest, its database driver) and the benchmark's devices and watchers.
    let server_rt = tokio::runtime::Builder::new_multi_thread()
        .thread_name("server-rt")
        .enable_all()
        .build()
        .expect("server runtime");
    let client_rt = tokio::runtime::Builder::new_multi_thread()
        .thread_name("bench-client")
        .enable_all()
        .build()
        .expect("client runtime");
    let clients = client_rt.handle().clone();
    server_rt.block_on(run(cfg, clients));
}

// ---------------------------------------------------------------------------------------------
// CPU accounting from /proc (Linux only; zeros elsewhere).

/// CPU seconds by where they were spent.
#[derive(Debug, Clone, Copy, Default)]
struct Cpu {
    /// This process's server threads (runtime `server-rt`, SQLite's worker threads).
    server: f64,
    /// This process's device and watcher threads (runtime `bench-client`).
    clients: f64,
    /// The embedded broker's threads, or a `mosquitto` process.
    broker: f64,
    /// Every `postgres` process (other sessions' queries included).
    postgres: f64,
    machine_busy: f64,
    machine_total: f64,
}

fn stat_fields(path: &Path) -> Option<(String, Vec<u64>)> {
    let s = std::fs::read_to_string(path).ok()?;
    let open = s.find('(')?;
    let close = s.rfind(')')?;
    let comm = s[open + 1..close].to_owned();
    // Fields after the comm start at field 3 (state); keep numbers only, state becomes 0.
    let rest = s[close + 1..].split_whitespace().map(|f| f.parse().unwrap_or(0)).collect();
    Some((comm, rest))
}

fn cpu_now() -> Cpu {
    let secs = |t: u64| t as f64 / TICKS_PER_SEC;
    let mut c = Cpu::default();
    // rest[0] is field 3, so utime (14) = rest[11], stime = rest[12], cutime = rest[13], cstime = rest[14].
    if let Ok(dir) = std::fs::read_dir("/proc/self/task") {
        for e in dir.flatten() {
            if let Some((comm, f)) = stat_fields(&e.path().join("stat"))
                && f.len() > 12
            {
                let t = secs(f[11] + f[12]);
                if comm.starts_with("bench-client") {
                    c.clients += t;
                } else if comm.starts_with("server-rt") || comm.starts_with("sqlx-sqlite") {
                    c.server += t;
                } else if comm == "v4" || comm.starts_with("router-") || comm == "timer" || comm == "mqtt-broker" {
                    c.broker += t;
                }
            }
        }
    }
    if let Ok(dir) = std::fs::read_dir("/proc") {
        for e in dir.flatten() {
            if !e.file_name().to_string_lossy().bytes().all(|b| b.is_ascii_digit()) {
                continue;
            }
            if let Some((comm, f)) = stat_fields(&e.path().join("stat"))
                && f.len() > 14
            {
                let t = secs(f[11] + f[12] + f[13] + f[14]);
                match comm.as_str() {
                    "postgres" => c.postgres += t,
                    "mosquitto" => c.broker += t,
                    _ => {}
                }
            }
        }
    }
    if let Ok(s) = std::fs::read_to_string("/proc/stat")
        && let Some(line) = s.lines().next()
    {
        let v: Vec<u64> = line.split_whitespace().skip(1).filter_map(|x| x.parse().ok()).collect();
        let total: u64 = v.iter().take(8).sum();
        let idle = v.get(3).copied().unwrap_or(0) + v.get(4).copied().unwrap_or(0);
        c.machine_total = secs(total);
        c.machine_busy = secs(total - idle);
    }
    c
}

impl std::ops::Sub for Cpu {
    type Output = Cpu;
    fn sub(self, o: Cpu) -> Cpu {
        // A thread that ended in between (a closed pool's SQLite worker) takes its time with
        // it, so a per-thread sum can shrink: count that as nothing rather than negative.
        Cpu {
            server: (self.server - o.server).max(0.0),
            clients: (self.clients - o.clients).max(0.0),
            broker: (self.broker - o.broker).max(0.0),
            postgres: self.postgres - o.postgres,
            machine_busy: self.machine_busy - o.machine_busy,
            machine_total: self.machine_total - o.machine_total,
        }
    }
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into())
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i]
}

// ---------------------------------------------------------------------------------------------
// Results.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Raw,
    Ingest,
    Copy,
    Alert,
}

#[derive(Debug, Clone)]
struct Row {
    broker: String,
    engine: &'static str,
    kind: Kind,
    scenario: String,
    /// Readings per message (0 for COPY rows and alert trials).
    per_msg: u64,
    msgs_per_s: f64,
    readings_per_s: f64,
    /// Per message: publish → ack (ingest), publish → alert event (alert); ms.
    p50_ms: f64,
    p99_ms: f64,
    /// Messages re-sent after ACK_TIMEOUT (ingest), lost (raw), missed alerts (alert).
    trouble: u64,
    readings: u64,
    cpu: Cpu,
    load: String,
}

impl Row {
    /// CPU µs per reading (per message for alert trials: the load dominates anyway).
    fn per_reading(&self, secs: f64) -> f64 {
        if self.readings == 0 { f64::NAN } else { secs * 1e6 / self.readings as f64 }
    }

    fn print_line(&self) {
        println!(
            "  {:<9} {:<8} {:<44} {:>9.0} msg/s {:>9.0} readings/s  p50 {:>7.2} ms  p99 {:>7.2} ms  {} {}  load {}",
            self.broker,
            self.engine,
            self.scenario,
            self.msgs_per_s,
            self.readings_per_s,
            self.p50_ms,
            self.p99_ms,
            match self.kind {
                Kind::Ingest => "re-sent",
                Kind::Raw => "lost",
                Kind::Alert => "missed",
                Kind::Copy => "-",
            },
            self.trouble,
            self.load
        );
    }
}

fn fmt_ms(v: f64) -> String {
    if v.is_nan() { "—".into() } else { format!("{v:.2}") }
}

fn fmt_us(v: f64) -> String {
    if v.is_nan() { "—".into() } else { format!("{v:.1}") }
}

fn print_table(rows: &[Row]) {
    println!();
    println!(
        "| broker | engine | scenario | msg/s | readings/s | vs raw broker (msg/s) | p50 ms | p99 ms | re-sent / lost / missed | server µs/reading | broker µs/reading | clients µs/reading | postgres µs/reading | machine busy | load avg |"
    );
    println!("|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|");
    for r in rows {
        let raw = raw_rate(rows, &r.broker, r.per_msg);
        let ratio = match (r.kind, raw) {
            (Kind::Ingest, Some(raw)) if raw > 0.0 => format!("{:.1} %", 100.0 * r.msgs_per_s / raw),
            _ => "—".into(),
        };
        let msgs = if r.kind == Kind::Copy { "—".into() } else { format!("{:.0}", r.msgs_per_s) };
        let readings = if r.kind == Kind::Alert {
            format!("{:.0} (load)", r.readings_per_s)
        } else {
            format!("{:.0}", r.readings_per_s)
        };
        println!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {:.0} % | {} |",
            r.broker,
            r.engine,
            r.scenario,
            msgs,
            readings,
            ratio,
            fmt_ms(r.p50_ms),
            fmt_ms(r.p99_ms),
            r.trouble,
            fmt_us(r.per_reading(r.cpu.server)),
            fmt_us(r.per_reading(r.cpu.broker)),
            fmt_us(r.per_reading(r.cpu.clients)),
            if r.engine == "sqlite" { "—".into() } else { fmt_us(r.per_reading(r.cpu.postgres)) },
            100.0 * r.cpu.machine_busy / r.cpu.machine_total.max(1e-9),
            r.load
        );
    }
    println!();
}

/// The raw broker's mean message rate (runs before and after) for messages of `per_msg` readings.
fn raw_rate(rows: &[Row], broker: &str, per_msg: u64) -> Option<f64> {
    let v: Vec<f64> = rows
        .iter()
        .filter(|r| r.kind == Kind::Raw && r.broker == broker && r.per_msg == per_msg)
        .map(|r| r.msgs_per_s)
        .collect();
    (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64)
}

// ---------------------------------------------------------------------------------------------
// Devices: an MQTT client each, publishing signed batches and following their acks.

/// Readings are one second apart from here, far enough back that no device runs into the
/// future (5 min ahead is refused) even after millions of readings.
fn reading_base_secs() -> i64 {
    chrono::Utc::now().timestamp() - 30 * 86_400
}

struct Device {
    id: String,
    key: Vec<u8>,
    topic: String,
    client: AsyncClient,
    /// The highest acked seq (from acks without an error) and when it arrived.
    acked: watch::Receiver<(u64, Instant)>,
    /// The next seq to publish.
    next_seq: u64,
    base_secs: i64,
}

/// In range (+3.0..+6.9 °C), varying so that rows are not all alike.
fn in_range_temp(seq: u64) -> f64 {
    3.0 + (seq % 40) as f64 * 0.1
}

impl Device {
    /// Connects; with `subscribe_acks` the device follows the server's acks on its ack topic,
    /// otherwise the caller moves `acked` forward through the returned sender.
    async fn connect(
        host: &str,
        port: u16,
        id: String,
        key: Vec<u8>,
        inflight: u16,
        subscribe_acks: bool,
    ) -> (Device, Arc<watch::Sender<(u64, Instant)>>) {
        let mut opts = MqttOptions::new(format!("bench-{}", uuid::Uuid::now_v7().simple()), host, port);
        opts.set_keep_alive(Duration::from_secs(30));
        opts.set_inflight(inflight);
        opts.set_max_packet_size(1 << 20, 1 << 20);
        let (client, mut el) = AsyncClient::new(opts, usize::from(inflight) + 16);
        // As the agent and the server do (see telemetry-agent/src/mqtt.rs).
        let mut net = el.network_options();
        net.set_tcp_nodelay(true);
        el.set_network_options(net);
        let (acked_tx, acked) = watch::channel((0u64, Instant::now()));
        let acked_tx = Arc::new(acked_tx);
        let ack_source = acked_tx.clone();
        let (ready_tx, ready) = oneshot::channel();
        let mut ready_tx = Some(ready_tx);
        let want_ack = subscribe_acks;
        tokio::spawn(async move {
            loop {
                match el.poll().await {
                    Ok(Event::Incoming(Packet::ConnAck(_))) if !want_ack => {
                        if let Some(r) = ready_tx.take() {
                            let _ = r.send(());
                        }
                    }
                    Ok(Event::Incoming(Packet::SubAck(_))) => {
                        if let Some(r) = ready_tx.take() {
                            let _ = r.send(());
                        }
                    }
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        let at = Instant::now();
                        // On a shared external broker other servers may answer too (with
                        // DEVICE_NOT_REGISTERED): only an ack without an error counts.
                        if let Ok(a) = pb::ReadingAck::decode(p.payload.as_ref())
                            && a.error.is_empty()
                        {
                            acked_tx.send_if_modified(|v| {
                                let newer = a.acked_seq > v.0;
                                if newer {
                                    *v = (a.acked_seq, at);
                                }
                                newer
                            });
                        }
                    }
                    Ok(_) => {}
                    Err(_) => {
                        // The device is gone (or the broker is): stop once nobody listens.
                        if acked_tx.is_closed() {
                            return;
                        }
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                }
            }
        });
        if subscribe_acks {
            client
                .subscribe(format!("vaxtrace/v1/devices/{id}/ack"), QoS::AtLeastOnce)
                .await
                .expect("subscribe to acks");
        }
        tokio::time::timeout(Duration::from_secs(10), ready)
            .await
            .expect("the broker answers within 10 s")
            .expect("device connection task");
        let topic = format!("vaxtrace/v1/devices/{id}/readings");
        (Device { id, key, topic, client, acked, next_seq: 1, base_secs: reading_base_secs() }, ack_source)
    }

    /// The signed batch of seqs `first..first + n`, in range, one second apart.
    fn batch(&self, first: u64, n: u64) -> Vec<u8> {
        batch_bytes(&self.id, &self.key, first, n, self.base_secs)
    }

    /// Something that signs batches for a device without a connection.
    fn signing_only<'a>(id: &'a str, key: &'a [u8]) -> Signer<'a> {
        Signer { id, key }
    }

    fn signed(&self, readings: Vec<pb::Reading>) -> Vec<u8> {
        signed_bytes(&self.id, &self.key, readings)
    }

    async fn send(&self, payload: Vec<u8>) {
        self.client.publish(self.topic.clone(), QoS::AtLeastOnce, false, payload).await.expect("publish");
    }

    async fn disconnect(self) {
        let _ = self.client.disconnect().await;
    }
}

struct Signer<'a> {
    id: &'a str,
    key: &'a [u8],
}

impl Signer<'_> {
    fn batch_at(&self, first: u64, n: u64, base_secs: i64) -> Vec<u8> {
        batch_bytes(self.id, self.key, first, n, base_secs)
    }
}

/// The signed batch of seqs `first..first + n`, in range, one second apart from `base_secs`.
fn batch_bytes(id: &str, key: &[u8], first: u64, n: u64, base_secs: i64) -> Vec<u8> {
    let readings = (first..first + n)
        .map(|seq| pb::Reading {
            seq,
            time: Some(prost_types::Timestamp { seconds: base_secs + seq as i64, nanos: 0 }),
            probe: 0,
            temp_c: in_range_temp(seq),
            ..Default::default()
        })
        .collect();
    signed_bytes(id, key, readings)
}

fn signed_bytes(id: &str, key: &[u8], readings: Vec<pb::Reading>) -> Vec<u8> {
    let batch = pb::ReadingBatch { device_id: id.to_owned(), readings, key_version: 0, signature: Vec::new() };
    encode_signed(&batch, Some(key)).expect("sign a batch")
}

/// What one device did in a windowed run.
#[derive(Debug, Default)]
struct DeviceRun {
    first_publish: Option<Instant>,
    last_ack: Option<Instant>,
    readings: u64,
    messages: u64,
    resent: u64,
    /// publish → ack per batch, ms.
    latencies: Vec<f64>,
    incomplete: bool,
}

/// Publishes batches of `per_msg` readings while fewer than `window` are unacked, until
/// `stop` (then waits for the rest). With `pace`, at most one batch per `pace`.
async fn windowed(
    dev: &mut Device,
    per_msg: u64,
    window: u64,
    mut stop: watch::Receiver<bool>,
    pace: Option<Duration>,
) -> DeviceRun {
    let mut run = DeviceRun::default();
    let start_seq = dev.next_seq;
    let mut sent_to = start_seq - 1;
    let mut pending: VecDeque<(u64, Instant)> = VecDeque::new();
    let mut last_progress = Instant::now();
    let mut acked_seen = dev.acked.borrow().0.max(start_seq - 1);
    // Paced devices start spread over one interval, so their batches do not all land at once.
    let mut next_slot = Instant::now() + pace.map_or(Duration::ZERO, |p| p.mul_f64(spread(&dev.id)));
    let mut stop_at: Option<Instant> = None;
    loop {
        let (acked, at) = *dev.acked.borrow_and_update();
        if acked > acked_seen {
            acked_seen = acked;
            last_progress = Instant::now();
            run.last_ack = Some(at);
            while let Some(&(last, t)) = pending.front() {
                if last > acked {
                    break;
                }
                run.latencies.push((at.saturating_duration_since(t)).as_secs_f64() * 1e3);
                pending.pop_front();
            }
        }
        let stopping = *stop.borrow();
        if stopping && stop_at.is_none() {
            stop_at = Some(Instant::now());
        }
        if !stopping {
            while sent_to - acked_seen < window * per_msg && pace.is_none_or(|_| Instant::now() >= next_slot) {
                let t = Instant::now();
                dev.send(dev.batch(sent_to + 1, per_msg)).await;
                run.first_publish.get_or_insert(t);
                sent_to += per_msg;
                run.messages += 1;
                pending.push_back((sent_to, t));
                if let Some(p) = pace {
                    next_slot += p;
                    // A slot missed entirely (the window was full) is skipped, not made up in a burst.
                    if next_slot < Instant::now() {
                        next_slot = Instant::now() + p;
                    }
                }
            }
        } else if acked_seen >= sent_to {
            break;
        }
        if stop_at.is_some_and(|s| s.elapsed() > DRAIN_LIMIT) {
            run.incomplete = true;
            break;
        }
        let wait = match pace {
            Some(_) if !stopping => next_slot.saturating_duration_since(Instant::now()).min(ACK_TIMEOUT),
            _ => ACK_TIMEOUT,
        };
        tokio::select! {
            r = dev.acked.changed() => {
                if r.is_err() {
                    run.incomplete = true;
                    break;
                }
            }
            _ = stop.changed(), if !stopping => {}
            () = tokio::time::sleep(wait) => {}
        }
        if sent_to > acked_seen && last_progress.elapsed() >= ACK_TIMEOUT {
            // A lost message or ack: re-send everything unacked, as the agent does.
            let mut seq = acked_seen + 1;
            while seq <= sent_to {
                let n = per_msg.min(sent_to - seq + 1);
                dev.send(dev.batch(seq, n)).await;
                run.resent += 1;
                seq += n;
            }
            last_progress = Instant::now();
        }
    }
    dev.next_seq = sent_to + 1;
    run.readings = acked_seen.saturating_sub(start_seq - 1);
    run
}

/// A fraction in 0..1 fixed per device.
fn spread(id: &str) -> f64 {
    use std::hash::{Hash as _, Hasher as _};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    id.hash(&mut h);
    (h.finish() % 1000) as f64 / 1000.0
}

/// Runs every device windowed for `secs` (or until `stop` fires) and sums up.
async fn run_devices(
    devices: Vec<Device>,
    per_msg: u64,
    window: u64,
    stop: watch::Receiver<bool>,
    pace: Option<Duration>,
) -> (Vec<Device>, Vec<DeviceRun>) {
    let mut tasks = Vec::new();
    for mut d in devices {
        let stop = stop.clone();
        tasks.push(tokio::spawn(async move {
            let r = windowed(&mut d, per_msg, window, stop, pace).await;
            (d, r)
        }));
    }
    let mut devs = Vec::new();
    let mut runs = Vec::new();
    for t in tasks {
        let (d, r) = t.await.expect("device task");
        devs.push(d);
        runs.push(r);
    }
    (devs, runs)
}

struct Totals {
    readings: u64,
    messages: u64,
    resent: u64,
    secs: f64,
    latencies: Vec<f64>,
    incomplete: usize,
}

fn totals(runs: &[DeviceRun]) -> Totals {
    let first = runs.iter().filter_map(|r| r.first_publish).min();
    let last = runs.iter().filter_map(|r| r.last_ack).max();
    let mut latencies: Vec<f64> = runs.iter().flat_map(|r| r.latencies.iter().copied()).collect();
    latencies.sort_by(f64::total_cmp);
    Totals {
        readings: runs.iter().map(|r| r.readings).sum(),
        messages: runs.iter().map(|r| r.messages).sum(),
        resent: runs.iter().map(|r| r.resent).sum(),
        secs: match (first, last) {
            (Some(f), Some(l)) => l.saturating_duration_since(f).as_secs_f64().max(1e-9),
            _ => f64::NAN,
        },
        latencies,
        incomplete: runs.iter().filter(|r| r.incomplete).count(),
    }
}

/// A watch channel that turns true after `secs`.
fn stop_after(secs: u64) -> watch::Receiver<bool> {
    let (tx, rx) = watch::channel(false);
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs(secs)).await;
        let _ = tx.send(true);
    });
    rx
}

// ---------------------------------------------------------------------------------------------
// The raw broker: the same publishers and messages, a subscriber that only counts.

async fn raw_broker(cfg: &Config, broker: &Broker, per_msg: u64, label: &str, clients: &tokio::runtime::Handle) -> Row {
    let (cfg, host, port) = (cfg.clone(), broker.host.clone(), broker.port);
    let label_c = label.to_owned();
    let cpu0 = cpu_now();
    let (t, lost) = clients
        .spawn(async move {
            // Fake ids and keys: nobody checks them here, and the messages are the same size.
            let mut devices = Vec::new();
            let mut arrivals = HashMap::new();
            for _ in 0..cfg.devices {
                let id = uuid::Uuid::now_v7().to_string();
                let (d, acked) = Device::connect(&host, port, id, vec![7u8; 32], 100, false).await;
                arrivals.insert(d.topic.clone(), (acked, 0u64));
                devices.push(d);
            }
            // The subscriber stands in for the server's acks: each arrival moves its device's
            // window (in-process, no MQTT traffic), so the publishers run exactly as in the
            // ingest scenarios. Without a window, publishers outrun the subscriber and rumqttd
            // drops what falls out of its in-memory log (max_segment_count × max_segment_size).
            let mut opts = MqttOptions::new(format!("bench-raw-{}", uuid::Uuid::now_v7().simple()), &host, port);
            opts.set_keep_alive(Duration::from_secs(30));
            opts.set_max_packet_size(1 << 20, 1 << 20);
            opts.set_inflight(100);
            let (sub, mut el) = AsyncClient::new(opts, 64);
            let mut net = el.network_options();
            net.set_tcp_nodelay(true);
            el.set_network_options(net);
            let (ready_tx, ready) = oneshot::channel();
            let total = Arc::new(AtomicU64::new(0));
            let seen = total.clone();
            let sub_task = tokio::spawn(async move {
                let mut ready_tx = Some(ready_tx);
                loop {
                    match el.poll().await {
                        Ok(Event::Incoming(Packet::SubAck(_))) => {
                            if let Some(r) = ready_tx.take() {
                                let _ = r.send(());
                            }
                        }
                        Ok(Event::Incoming(Packet::Publish(p))) => {
                            let at = Instant::now();
                            seen.fetch_add(1, Ordering::Relaxed);
                            if let Some((acked, n)) = arrivals.get_mut(p.topic.as_str()) {
                                *n += 1;
                                acked.send_replace((*n * per_msg, at));
                            }
                        }
                        Ok(_) => {}
                        // The end of the run (our own DISCONNECT) or a lost broker: either way done.
                        Err(_) => return,
                    }
                }
            });
            sub.subscribe("vaxtrace/v1/devices/+/readings", QoS::AtLeastOnce).await.expect("subscribe");
            tokio::time::timeout(Duration::from_secs(10), ready).await.expect("SUBACK").expect("subscriber");
            let stop = stop_after(cfg.secs);
            let (devices, runs) = run_devices(devices, per_msg, cfg.window, stop, None).await;
            let t = totals(&runs);
            let sent = t.messages + t.resent;
            let arrived = total.load(Ordering::Relaxed);
            for d in devices {
                d.disconnect().await;
            }
            let _ = sub.disconnect().await;
            tokio::time::sleep(Duration::from_millis(100)).await;
            sub_task.abort();
            if arrived < sent || t.incomplete > 0 {
                eprintln!("  raw {label_c}: {arrived} of {sent} messages arrived, {} devices incomplete", t.incomplete);
            }
            (t, sent.saturating_sub(arrived))
        })
        .await
        .expect("raw broker run");
    let cpu = cpu_now() - cpu0;
    let row = Row {
        broker: broker.name.clone(),
        engine: "—",
        kind: Kind::Raw,
        scenario: format!(
            "raw broker, {per_msg} reading(s)/msg, window {}/device, plain subscriber ({label})",
            cfg.window
        ),
        per_msg,
        msgs_per_s: t.readings as f64 / per_msg as f64 / t.secs,
        readings_per_s: t.readings as f64 / t.secs,
        p50_ms: percentile(&t.latencies, 0.50),
        p99_ms: percentile(&t.latencies, 0.99),
        trouble: lost + t.resent,
        readings: t.readings,
        cpu,
        load: loadavg(),
    };
    row.print_line();
    row
}

// ---------------------------------------------------------------------------------------------
// The server, its world and its devices.

#[derive(Clone)]
struct Broker {
    name: String,
    host: String,
    port: u16,
    /// The embedded broker, whose ingest goes over an in-process link as `serve`'s does.
    embedded: Option<Arc<vaxtrace_server::broker::Embedded>>,
}

struct Server {
    addr: std::net::SocketAddr,
    token: String,
    app: vaxtrace_server::App,
    ingest: tokio::task::JoinHandle<()>,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

/// Opens the database and starts gRPC and ingest as `serve` does (without the periodic stock
/// and no-data sweeps, which would only add noise).
async fn start_server(url: &str, broker: &Broker, workers: usize) -> Server {
    let app = vaxtrace_server::open(url).await.expect("open the benchmark database");
    let admin = app.bootstrap_admin().await.expect("bootstrap").expect("fresh database has no token");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind ephemeral port");
    let addr = listener.local_addr().expect("local addr");
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(vaxtrace_server::serve(app.clone(), listener, async move {
        let _ = stopped.await;
    }));
    // A group of our own: on a shared external broker, other servers' groups get copies but
    // never our share.
    let group = format!("vt-bench-{}", uuid::Uuid::now_v7().simple());
    let ingest = match &broker.embedded {
        Some(embedded) => vaxtrace_server::ingest::spawn_embedded(app.clone(), embedded.clone(), workers, &group),
        None => vaxtrace_server::ingest::spawn(
            app.clone(),
            IngestConfig {
                host: broker.host.clone(),
                port: broker.port,
                client_id: format!("vaxtrace-server-{}", uuid::Uuid::now_v7().simple()),
                username: None,
                password: None,
                workers,
                share_group: group,
                tls: None,
            },
        ),
    };
    Server { addr, token: admin.secret, app, ingest, stop: Some(stop), task }
}

impl Server {
    async fn channel(&self) -> Channel {
        Channel::from_shared(format!("http://{}", self.addr))
            .expect("valid uri")
            .connect()
            .await
            .expect("connect to the server")
    }

    async fn stop(mut self) {
        self.ingest.abort();
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        self.task.await.expect("server task").expect("server exits cleanly");
    }
}

/// The national store, where every device and unit of the benchmark is.
async fn national_store(srv: &Server) -> String {
    let f = pb::Facility {
        kind: pb::FacilityKind::NationalStore as i32,
        code: "N".into(),
        name: "National store".into(),
        ..Default::default()
    };
    FacilityServiceClient::new(srv.channel().await)
        .create_facility(authed(&srv.token, pb::CreateFacilityRequest { facility: Some(f), request_id: String::new() }))
        .await
        .expect("create facility")
        .into_inner()
        .id
}

/// One storage unit (+2..+8 °C) per device at facility `n`, each device with one probe in its
/// unit. Returns (device id, key, unit id) per device.
async fn register_devices(srv: &Server, n: &str, count: usize, tag: &str) -> Vec<(String, Vec<u8>, String)> {
    let ch = srv.channel().await;
    let tok = srv.token.clone();
    let mut fac = FacilityServiceClient::new(ch.clone());
    let mut tel = TelemetryServiceClient::new(ch);
    let n = n.to_owned();
    let mut out = Vec::new();
    for i in 0..count {
        let u = pb::StorageUnit {
            facility_id: n.clone(),
            kind: pb::StorageUnitKind::Ilr as i32,
            name: format!("ILR {tag}{i}"),
            temperature_profile: 1,
            ..Default::default()
        };
        let req = pb::CreateStorageUnitRequest { storage_unit: Some(u), request_id: String::new() };
        let unit = fac.create_storage_unit(authed(&tok, req)).await.expect("create unit").into_inner().id;
        let reg = pb::RegisterDeviceRequest {
            device: Some(pb::Device {
                serial: format!("BENCH-{}", uuid::Uuid::now_v7().simple()),
                facility_id: n.clone(),
                probes: vec![pb::Probe { index: 0, storage_unit_id: unit.clone(), label: "ILR".into() }],
                expected_interval: Some(prost_types::Duration { seconds: 60, nanos: 0 }),
                ..Default::default()
            }),
            request_id: String::new(),
        };
        let r = tel.register_device(authed(&tok, reg)).await.expect("register device").into_inner();
        out.push((r.device.expect("device").id, r.key, unit));
    }
    out
}

async fn connect_devices(broker: &Broker, ids: &[(String, Vec<u8>, String)], inflight: u16) -> Vec<Device> {
    let mut v = Vec::new();
    for (id, key, _) in ids {
        v.push(Device::connect(&broker.host, broker.port, id.clone(), key.clone(), inflight, true).await.0);
    }
    v
}

/// Gets one reading of every device acked, re-sending each second: ingest may join the broker's
/// group a moment after it starts, and what is published before that is not delivered.
async fn warm_up(devices: Vec<Device>) -> Vec<Device> {
    let mut tasks = Vec::new();
    for mut d in devices {
        tasks.push(tokio::spawn(async move {
            let seq = d.next_seq;
            let deadline = Instant::now() + Duration::from_secs(30);
            while d.acked.borrow_and_update().0 < seq {
                assert!(Instant::now() < deadline, "warm-up: device {} got no ack in 30 s", d.id);
                d.send(d.batch(seq, 1)).await;
                let _ = tokio::time::timeout(Duration::from_secs(1), d.acked.changed()).await;
            }
            d.next_seq = seq + 1;
            d
        }));
    }
    let mut v = Vec::new();
    for t in tasks {
        v.push(t.await.expect("warm-up task"));
    }
    v
}

async fn ingest_scenario(
    cfg: &Config,
    broker: &Broker,
    engine: &'static str,
    devices: Vec<Device>,
    per_msg: u64,
    clients: &tokio::runtime::Handle,
) -> (Vec<Device>, Row) {
    let (window, secs) = (cfg.window, cfg.secs);
    let cpu0 = cpu_now();
    let (devices, runs) = clients
        .spawn(async move {
            let stop = stop_after(secs);
            run_devices(devices, per_msg, window, stop, None).await
        })
        .await
        .expect("ingest run");
    let cpu = cpu_now() - cpu0;
    let t = totals(&runs);
    if t.incomplete > 0 {
        println!("  {engine}: {} devices still had unacked readings {DRAIN_LIMIT:?} after the end", t.incomplete);
    }
    let row = Row {
        broker: broker.name.clone(),
        engine,
        kind: Kind::Ingest,
        scenario: format!("ingest, {per_msg} reading(s)/msg, window {window}/device"),
        per_msg,
        msgs_per_s: t.readings as f64 / per_msg as f64 / t.secs,
        readings_per_s: t.readings as f64 / t.secs,
        p50_ms: percentile(&t.latencies, 0.50),
        p99_ms: percentile(&t.latencies, 0.99),
        trouble: t.resent,
        readings: t.readings,
        cpu,
        load: loadavg(),
    };
    let _ = t.messages;
    row.print_line();
    (devices, row)
}

/// Background load on `load_devices` at `load` readings/s, and one EXCURSION at a time on
/// `alert_devices`, timed from its publish to the OPENED event on WatchAlerts; at most
/// `cfg.alert_trials` trials in `cfg.alert_secs`. Returns the devices for the next run.
#[allow(clippy::too_many_arguments)]
async fn alert_scenario(
    cfg: &Config,
    broker: &Broker,
    engine: &'static str,
    srv: &Server,
    load: f64,
    label: &str,
    devices: (Vec<Device>, Vec<Device>),
    clients: &tokio::runtime::Handle,
) -> ((Vec<Device>, Vec<Device>), Row) {
    let cfg = cfg.clone();
    let (addr, tok) = (srv.addr, srv.token.clone());
    let cpu0 = cpu_now();
    let (devices, lat, missed, load_rate, readings) = clients
        .spawn(async move {
            let (load_devices, mut alert_devices) = devices;
            // The watcher, subscribed before anything is published; it stamps each event as it
            // arrives and hands it over, so the trial loop's own delays are not measured.
            let ch = Channel::from_shared(format!("http://{addr}")).expect("uri").connect().await.expect("connect");
            let mut alerts = AlertServiceClient::new(ch);
            let watch_req =
                pb::WatchAlertsRequest { kinds: vec![pb::AlertKind::Excursion as i32], ..Default::default() };
            let mut stream = alerts.watch_alerts(authed(&tok, watch_req)).await.expect("watch alerts").into_inner();
            let (ev_tx, mut ev_rx) = mpsc::unbounded_channel::<(String, Instant)>();
            let watcher = tokio::spawn(async move {
                while let Ok(Some(ev)) = stream.message().await {
                    let at = Instant::now();
                    if ev.r#type == pb::AlertEventType::Opened as i32
                        && let Some(a) = ev.alert
                        && let Some(s) = a.subject
                    {
                        let _ = ev_tx.send((s.device_id, at));
                    }
                }
            });
            // Each alert device starts with a reading in range, so its first excursion is a
            // transition like any other (and a previous run's last episode is closed).
            let mut last_ms: HashMap<String, i64> = HashMap::new();
            for d in &mut alert_devices {
                let t = chrono::Utc::now().timestamp_millis();
                let seq = d.next_seq;
                d.send(d.signed(vec![reading_at(seq, t, 5.0)])).await;
                d.next_seq += 1;
                last_ms.insert(d.id.clone(), t);
                wait_ack(d, seq).await;
            }
            let (stop_tx, stop) = watch::channel(false);
            let per_device = load / load_devices.len().max(1) as f64;
            let pace = Duration::from_secs_f64(cfg.alert_load_batch as f64 / per_device.max(1e-3));
            let (lb, lw) = (cfg.alert_load_batch, cfg.window);
            let load = tokio::spawn(async move { run_devices(load_devices, lb, lw, stop, Some(pace)).await });
            // Let the load settle before the first trial.
            tokio::time::sleep(Duration::from_secs(2)).await;
            let mut lat = Vec::new();
            let mut missed = 0u64;
            let turns = alert_devices.len().max(1);
            let until = Instant::now() + Duration::from_secs(cfg.alert_secs);
            for i in 0..cfg.alert_trials {
                if Instant::now() >= until {
                    break;
                }
                let d = &mut alert_devices[i % turns];
                // The previous episode of this device must be closed first (its reading back in
                // range acked); with devices taking turns it normally is long since.
                wait_ack(d, d.next_seq - 1).await;
                let prev = last_ms.get(&d.id).copied().unwrap_or(0);
                let t = chrono::Utc::now().timestamp_millis().max(prev + 1);
                let seq = d.next_seq;
                let payload = d.signed(vec![reading_at(seq, t, 12.0)]);
                // Events of earlier trials that arrived late are not this trial's.
                while ev_rx.try_recv().is_ok() {}
                let t0 = Instant::now();
                d.send(payload).await;
                let deadline = t0 + Duration::from_secs(10);
                let got = loop {
                    match tokio::time::timeout_at(deadline.into(), ev_rx.recv()).await {
                        Ok(Some((dev, at))) if dev == d.id => break Some(at),
                        Ok(Some(_)) => {}
                        _ => break None,
                    }
                };
                match got {
                    Some(at) => lat.push(at.saturating_duration_since(t0).as_secs_f64() * 1e3),
                    None => missed += 1,
                }
                // Back in range, so the next trial on this device opens a new episode.
                let t2 = t + 1;
                d.send(d.signed(vec![reading_at(seq + 1, t2, 5.0)])).await;
                d.next_seq = seq + 2;
                last_ms.insert(d.id.clone(), t2);
            }
            let _ = stop_tx.send(true);
            let (load_devices, runs) = load.await.expect("background load");
            for d in &mut alert_devices {
                wait_ack(d, d.next_seq - 1).await;
            }
            watcher.abort();
            let t = totals(&runs);
            lat.sort_by(f64::total_cmp);
            ((load_devices, alert_devices), lat, missed, t.readings as f64 / t.secs, t.readings)
        })
        .await
        .expect("alert run");
    let cpu = cpu_now() - cpu0;
    let row = Row {
        broker: broker.name.clone(),
        engine,
        kind: Kind::Alert,
        scenario: format!(
            "alert latency{label}, EXCURSION, {} trials, load {:.0} readings/s (asked {load:.0}) in batches of {}",
            lat.len() as u64 + missed,
            load_rate,
            cfg.alert_load_batch
        ),
        per_msg: 0,
        msgs_per_s: f64::NAN,
        readings_per_s: load_rate,
        p50_ms: percentile(&lat, 0.50),
        p99_ms: percentile(&lat, 0.99),
        trouble: missed,
        readings,
        cpu,
        load: loadavg(),
    };
    row.print_line();
    (devices, row)
}

fn reading_at(seq: u64, ms: i64, temp_c: f64) -> pb::Reading {
    pb::Reading {
        seq,
        time: Some(prost_types::Timestamp {
            seconds: ms.div_euclid(1000),
            nanos: i32::try_from(ms.rem_euclid(1000) * 1_000_000).unwrap_or(0),
        }),
        probe: 0,
        temp_c,
        ..Default::default()
    }
}

async fn wait_ack(d: &mut Device, seq: u64) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while d.acked.borrow_and_update().0 < seq {
        if tokio::time::timeout_at(deadline.into(), d.acked.changed()).await.is_err() {
            println!("  no ack for seq {seq} of alert device {} within 30 s", d.id);
            return;
        }
    }
}

/// Every scenario of one engine on one broker; `copy_schema` (PostgreSQL) gets the COPY baseline.
async fn engine_scenarios(
    cfg: &Config,
    broker: &Broker,
    engine: &'static str,
    url: &str,
    pg: Option<(&sqlx::PgPool, &str)>,
    clients: &tokio::runtime::Handle,
    phase_rows: &mut Vec<Phases>,
) -> Vec<Row> {
    let srv = start_server(url, broker, cfg.workers).await;
    let n = national_store(&srv).await;
    let ids = register_devices(&srv, &n, cfg.devices, "L").await;
    let alert_ids = register_devices(&srv, &n, ALERT_DEVICES, "A").await;
    let (b, ids_c) = (broker.clone(), ids.clone());
    let devices = clients
        .spawn(async move {
            let d = connect_devices(&b, &ids_c, 100).await;
            warm_up(d).await
        })
        .await
        .expect("connect devices");
    let mut rows = Vec::new();
    let (devices, r) = ingest_scenario(cfg, broker, engine, devices, 1, clients).await;
    rows.push(r);
    let (devices, r) = ingest_scenario(cfg, broker, engine, devices, cfg.batch, clients).await;
    let batch_readings = r.readings;
    rows.push(r);
    let (b, a) = (broker.clone(), alert_ids.clone());
    let alert_devices = clients.spawn(async move { connect_devices(&b, &a, 100).await }).await.expect("connect");
    let mut both = (devices, alert_devices);
    let mut loads = vec![(cfg.alert_load, String::new())];
    if cfg.alert_light_load > 0.0 {
        loads.push((cfg.alert_light_load, " [diagnostic: light load]".to_owned()));
    }
    for (load, label) in loads {
        let (devs, row) = alert_scenario(cfg, broker, engine, &srv, load, &label, both, clients).await;
        both = devs;
        rows.push(row);
    }
    let (devices, alert_devices) = both;
    clients
        .spawn(async move {
            for d in devices.into_iter().chain(alert_devices) {
                d.disconnect().await;
            }
        })
        .await
        .expect("disconnect");
    // Where the time goes: a fresh device, the first load device with its whole history, and a
    // device with a month of one-minute readings (does a batch's cost grow with history?).
    let fresh = register_devices(&srv, &n, 1, "P").await;
    let month = register_devices(&srv, &n, 1, "M").await;
    fill_history(&srv.app, &month[0].0, 43_200).await;
    for (id, per_msg, msgs) in [
        (&fresh[0].0, 1, 300),
        (&fresh[0].0, cfg.batch, 100),
        (&ids[0].0, 1, 300),
        (&ids[0].0, cfg.batch, 100),
        (&month[0].0, 1, 100),
    ] {
        phase_rows.push(phases(engine, &srv.app, id, per_msg, msgs).await);
    }
    if let Some((pool, schema)) = pg {
        // The planner's view of a table that grew from nothing in minutes is stale until
        // autovacuum analyzes it; the same steps with fresh statistics show what that costs.
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!("ANALYZE {schema}.readings")))
            .execute(pool)
            .await
            .expect("ANALYZE readings");
        for id in [&ids[0].0, &month[0].0] {
            let mut p = phases(engine, &srv.app, id, 1, 100).await;
            p.engine = "postgres, after ANALYZE";
            phase_rows.push(p);
        }
    }
    // Every acked seq is stored exactly once: the ack is not ahead of the database.
    for (id, _, _) in &ids {
        let (n, lo, hi) = srv.app.store().count_readings(id).await.expect("count readings");
        let last = srv.app.store().get_device(id).await.expect("get device").expect("device").0.last_seq;
        assert!(n == hi && lo == 1 && hi >= last, "{engine}: device {id} has {n} readings {lo}..{hi}, acked {last}");
    }
    srv.stop().await;
    if let Some((pool, schema)) = pg {
        for foreign_keys in [true, false] {
            rows.push(copy_baseline(pool, schema, &ids, batch_readings.max(100_000), broker, foreign_keys).await);
        }
    }
    rows
}

// ---------------------------------------------------------------------------------------------
// Where a batch's time goes: the steps of `App::ingest` called one by one, without MQTT.

/// Mean wall time of each step of ingest for one message, in µs.
#[derive(Debug, Clone)]
struct Phases {
    engine: &'static str,
    history: i64,
    per_msg: u64,
    msgs: u64,
    verify_us: f64,
    get_device_us: f64,
    store_us: f64,
    evaluate_us: f64,
}

/// Runs `msgs` messages of `per_msg` in-range readings for `device_id` through the same steps
/// as `App::ingest` (signature check, device look-up, the storing transaction, the probe's
/// evaluation), one at a time, timing each.
async fn phases(engine: &'static str, app: &vaxtrace_server::App, device_id: &str, per_msg: u64, msgs: u64) -> Phases {
    use vaxtrace_server::domain::telemetry::StoredReading;
    let store = app.store();
    let (device, key, _) = store.get_device(device_id).await.expect("get device").expect("registered");
    let (history, _, _) = store.count_readings(device_id).await.expect("count readings");
    let probe = device.probes.first().expect("a probe").clone();
    let base = reading_base_secs();
    let mut seq = u64::try_from(device.last_seq).unwrap_or(0) + 1;
    let (mut verify, mut get, mut put, mut eval) = (0.0, 0.0, 0.0, 0.0);
    let sign = Device::signing_only(device_id, &key);
    for _ in 0..msgs {
        let payload = sign.batch_at(seq, per_msg, base);
        let t0 = Instant::now();
        let ok = matches!(
            vaxtrace_proto::signing::verify_signed(&payload, &key),
            Ok(vaxtrace_proto::signing::Verified::Valid(_))
        );
        assert!(ok, "the benchmark's own signature verifies");
        let t1 = Instant::now();
        let _ = store.get_device(device_id).await.expect("get device");
        let t2 = Instant::now();
        let rows: Vec<StoredReading> = (seq..seq + per_msg)
            .map(|s| StoredReading {
                seq: i64::try_from(s).expect("seq fits"),
                probe: 0,
                storage_unit_id: probe.storage_unit_id.clone(),
                time: chrono::DateTime::from_timestamp(base + s as i64, 0).expect("time"),
                temp_c: Some(in_range_temp(s)),
                power_on: None,
                battery_pct: None,
                door_open: None,
                sensor_fault: false,
                verified: true,
            })
            .collect();
        let t3 = Instant::now();
        store
            .store_readings(device_id, device.key_version, &rows, &[], chrono::Utc::now())
            .await
            .expect("store readings");
        let t4 = Instant::now();
        app.evaluate_probe(&device, &probe, rows[0].time).await.expect("evaluate");
        let t5 = Instant::now();
        verify += (t1 - t0).as_secs_f64();
        get += (t2 - t1).as_secs_f64();
        put += (t4 - t3).as_secs_f64();
        eval += (t5 - t4).as_secs_f64();
        seq += per_msg;
    }
    let us = |s: f64| s * 1e6 / msgs.max(1) as f64;
    Phases {
        engine,
        history,
        per_msg,
        msgs,
        verify_us: us(verify),
        get_device_us: us(get),
        store_us: us(put),
        evaluate_us: us(eval),
    }
}

/// Stores `n` in-range readings for the device straight through the store (in batches of the
/// most ingest accepts) and evaluates them once, as if they had been ingested.
async fn fill_history(app: &vaxtrace_server::App, device_id: &str, n: u64) {
    use vaxtrace_server::domain::telemetry::StoredReading;
    let store = app.store();
    let (device, _, _) = store.get_device(device_id).await.expect("get device").expect("registered");
    let probe = device.probes.first().expect("a probe").clone();
    let base = reading_base_secs();
    let chunk = vaxtrace_server::app::telemetry::MAX_BATCH as u64;
    let mut seq = 1;
    while seq <= n {
        let rows: Vec<StoredReading> = (seq..(seq + chunk).min(n + 1))
            .map(|s| StoredReading {
                seq: i64::try_from(s).expect("seq fits"),
                probe: 0,
                storage_unit_id: probe.storage_unit_id.clone(),
                time: chrono::DateTime::from_timestamp(base + s as i64, 0).expect("time"),
                temp_c: Some(in_range_temp(s)),
                power_on: None,
                battery_pct: None,
                door_open: None,
                sensor_fault: false,
                verified: true,
            })
            .collect();
        store
            .store_readings(device_id, device.key_version, &rows, &[], chrono::Utc::now())
            .await
            .expect("store readings");
        seq += chunk;
    }
    let first = chrono::DateTime::from_timestamp(base + 1, 0).expect("time");
    app.evaluate_probe(&device, &probe, first).await.expect("evaluate");
}

fn print_phases(all: &[Phases]) {
    if all.is_empty() {
        return;
    }
    // Ingest now groups messages per transaction (App::ingest_many); these are the one-message
    // store functions, kept as a per-step diagnostic of the database's costs.
    println!(
        "[diagnostic] One message's steps through the one-message store functions, one at a time (no MQTT, no \
         concurrency, not the grouped ingest path; mean µs):"
    );
    println!();
    println!(
        "| engine | device's readings before | readings/msg | messages | verify HMAC | get_device | store_readings | evaluate_probe | total |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|");
    for p in all {
        println!(
            "| {} | {} | {} | {} | {:.0} | {:.0} | {:.0} | {:.0} | {:.0} |",
            p.engine,
            p.history,
            p.per_msg,
            p.msgs,
            p.verify_us,
            p.get_device_us,
            p.store_us,
            p.evaluate_us,
            p.verify_us + p.get_device_us + p.store_us + p.evaluate_us
        );
    }
    println!();
}

// ---------------------------------------------------------------------------------------------
// Raw PostgreSQL COPY into a copy of the readings table.

async fn copy_baseline(
    pool: &sqlx::PgPool,
    schema: &str,
    ids: &[(String, Vec<u8>, String)],
    rows: u64,
    broker: &Broker,
    foreign_keys: bool,
) -> Row {
    let scratch = format!("vt_bench_copy_{}", uuid::Uuid::now_v7().simple());
    // Same columns, defaults, constraints and indexes, and the same foreign keys (every row's
    // device and unit is looked up, as for an ingested reading).
    let mut ddl = vec![
        format!("CREATE SCHEMA {scratch}"),
        format!("CREATE TABLE {scratch}.readings (LIKE {schema}.readings INCLUDING ALL)"),
    ];
    if foreign_keys {
        ddl.push(format!(
            "ALTER TABLE {scratch}.readings ADD FOREIGN KEY (device_id) REFERENCES {schema}.devices(id), \
             ADD FOREIGN KEY (storage_unit_id) REFERENCES {schema}.storage_units(id)"
        ));
    }
    for sql in ddl {
        sqlx::raw_sql(sqlx::AssertSqlSafe(sql)).execute(pool).await.expect("prepare the COPY table");
    }
    let per_device = rows.div_ceil(ids.len() as u64);
    let base = reading_base_secs();
    let received = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
    let mut conn = pool.acquire().await.expect("a connection");
    let cpu0 = cpu_now();
    let t0 = Instant::now();
    let mut copy = conn
        .copy_in_raw(&format!(
            "COPY {scratch}.readings (device_id, seq, probe, storage_unit_id, time, temp_c, power_on, battery_pct, \
             door_open, sensor_fault, received_at, verified) FROM STDIN"
        ))
        .await
        .expect("COPY FROM STDIN");
    let mut buf = String::with_capacity(1 << 20);
    let mut sent = 0u64;
    'outer: for seq in 1..=per_device {
        for (id, _, unit) in ids {
            if sent == rows {
                break 'outer;
            }
            let time = chrono::DateTime::from_timestamp(base + seq as i64, 0).expect("time").to_rfc3339();
            use std::fmt::Write as _;
            let _ = writeln!(
                buf,
                "{id}\t{seq}\t0\t{unit}\t{time}\t{}\t\\N\t\\N\t\\N\tf\t{received}\tt",
                in_range_temp(seq)
            );
            sent += 1;
            if buf.len() >= 1 << 20 {
                copy.send(std::mem::take(&mut buf).into_bytes()).await.expect("COPY data");
                buf.reserve(1 << 20);
            }
        }
    }
    if !buf.is_empty() {
        copy.send(buf.into_bytes()).await.expect("COPY data");
    }
    let n = copy.finish().await.expect("COPY done");
    let secs = t0.elapsed().as_secs_f64();
    let cpu = cpu_now() - cpu0;
    drop(conn);
    if let Err(e) = sqlx::raw_sql(sqlx::AssertSqlSafe(format!("DROP SCHEMA {scratch} CASCADE"))).execute(pool).await {
        println!("could not drop schema {scratch}: {e}");
    }
    let row = Row {
        broker: broker.name.clone(),
        engine: "postgres",
        kind: Kind::Copy,
        scenario: if foreign_keys {
            format!("raw COPY FROM STDIN, {n} rows, 1 connection")
        } else {
            format!("[diagnostic] the same COPY without the 2 foreign keys, {n} rows")
        },
        per_msg: 0,
        msgs_per_s: f64::NAN,
        readings_per_s: n as f64 / secs,
        p50_ms: f64::NAN,
        p99_ms: f64::NAN,
        trouble: 0,
        readings: n,
        cpu,
        load: loadavg(),
    };
    row.print_line();
    row
}

// ---------------------------------------------------------------------------------------------

async fn run(cfg: Config, clients: tokio::runtime::Handle) {
    let cpu_model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("model name").map(|m| m.trim_start_matches([' ', '\t', ':']).to_owned()))
        })
        .unwrap_or_else(|| "?".into());
    println!("vaxtrace cold-chain ingest benchmark");
    println!(
        "machine: {} CPUs ({cpu_model}), load average {}; {} devices, window {} batches/device, {} s per scenario, \
         batches of {}, {} ingest workers",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        loadavg(),
        cfg.devices,
        cfg.window,
        cfg.secs,
        cfg.batch,
        cfg.workers
    );
    let port = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port").local_addr().expect("addr").port();
    let embedded = vaxtrace_server::broker::start(([127, 0, 0, 1], port).into()).await.expect("embedded broker");
    let mut brokers = vec![Broker {
        name: "rumqttd".into(),
        host: "127.0.0.1".into(),
        port: embedded.addr.port(),
        embedded: Some(Arc::new(embedded)),
    }];
    if let Some(url) = &cfg.mqtt_url {
        let c = IngestConfig::from_url(url, String::new()).expect("VAXTRACE_BENCH_MQTT_URL is mqtt://host:port");
        brokers.push(Broker { name: "mosquitto".into(), host: c.host, port: c.port, embedded: None });
    }

    let pg = match &cfg.pg_url {
        Some(url) => match sqlx::PgPool::connect(url).await {
            Ok(p) => {
                if let Ok(v) = sqlx::query_scalar::<_, String>("SELECT version()").fetch_one(&p).await {
                    println!("PostgreSQL: {v}");
                }
                for setting in ["synchronous_commit", "fsync", "shared_buffers", "max_connections"] {
                    if let Ok(v) = sqlx::query_scalar::<_, String>(sqlx::AssertSqlSafe(format!("SHOW {setting}")))
                        .fetch_one(&p)
                        .await
                    {
                        println!("  {setting} = {v}");
                    }
                }
                Some((p, url.clone()))
            }
            Err(e) => {
                println!("PostgreSQL at {url} is not reachable ({e}): skipping PostgreSQL");
                None
            }
        },
        None => None,
    };
    let tmp = std::env::temp_dir().join(format!("vaxtrace-ingest-bench-{}", std::process::id()));
    std::fs::create_dir_all(&tmp).expect("create the temp dir");

    let mut rows = Vec::new();
    let mut phase_rows = Vec::new();
    for broker in &brokers {
        println!("\nbroker {} at {}:{}", broker.name, broker.host, broker.port);
        for per_msg in [1, cfg.batch] {
            rows.push(raw_broker(&cfg, broker, per_msg, "before", &clients).await);
        }
        if cfg.sqlite {
            let dir = tmp.join(format!("sqlite-{}", broker.name));
            std::fs::create_dir_all(&dir).expect("create the SQLite dir");
            let url = format!("sqlite://{}/bench.db", dir.display());
            println!("SQLite (file database in {}, WAL)", dir.display());
            rows.extend(engine_scenarios(&cfg, broker, "sqlite", &url, None, &clients, &mut phase_rows).await);
        }
        if let Some((pool, base)) = &pg {
            let schema = format!("vt_bench_{}", uuid::Uuid::now_v7().simple());
            sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE SCHEMA {schema}")))
                .execute(pool)
                .await
                .expect("create the benchmark schema");
            let sep = if base.contains('?') { '&' } else { '?' };
            let url = format!("{base}{sep}options=-c%20search_path%3D{schema}");
            println!("PostgreSQL (schema {schema})");
            rows.extend(
                engine_scenarios(&cfg, broker, "postgres", &url, Some((pool, &schema)), &clients, &mut phase_rows)
                    .await,
            );
            if let Err(e) =
                sqlx::raw_sql(sqlx::AssertSqlSafe(format!("DROP SCHEMA {schema} CASCADE"))).execute(pool).await
            {
                println!("could not drop schema {schema}: {e}");
            }
        }
        // Ingest has left the broker: the raw rates once more, for the noise.
        for per_msg in [1, cfg.batch] {
            rows.push(raw_broker(&cfg, broker, per_msg, "after", &clients).await);
        }
    }
    if let Err(e) = std::fs::remove_dir_all(&tmp) {
        println!("could not remove {}: {e}", tmp.display());
    }
    if let Some((pool, _)) = pg {
        pool.close().await;
    }

    print_table(&rows);
    print_phases(&phase_rows);
    verdict(&cfg, &rows);
}

fn verdict(cfg: &Config, rows: &[Row]) {
    let met = |b: bool| if b { "met" } else { "NOT met" };
    for broker in rows.iter().map(|r| r.broker.clone()).collect::<std::collections::BTreeSet<_>>() {
        let raw1 = raw_rate(rows, &broker, 1);
        let rawb = raw_rate(rows, &broker, cfg.batch);
        if let (Some(r1), Some(rb)) = (raw1, rawb) {
            println!(
                "{broker}: raw broker QoS 1 (mean of before/after): {r1:.0} msg/s with 1 reading, {rb:.0} msg/s ({:.0} readings/s) with {}",
                rb * cfg.batch as f64,
                cfg.batch
            );
        }
        for r in rows.iter().filter(|r| r.broker == broker) {
            match r.kind {
                Kind::Ingest if r.per_msg == 1 => {
                    if let Some(raw) = raw1 {
                        let ratio = r.msgs_per_s / raw;
                        println!(
                            "  {} single readings: {:.0} msg/s = {:.1} % of the raw broker (target ≥ 75 %: {})",
                            r.engine,
                            r.msgs_per_s,
                            100.0 * ratio,
                            met(ratio >= 0.75)
                        );
                    }
                }
                Kind::Ingest => {
                    let target = if r.engine == "postgres" {
                        format!(" (target ≥ 200,000 on PostgreSQL: {})", met(r.readings_per_s >= 200_000.0))
                    } else {
                        String::new()
                    };
                    println!("  {} batches of {}: {:.0} readings/s{target}", r.engine, r.per_msg, r.readings_per_s);
                }
                Kind::Alert if r.scenario.contains("[diagnostic") => println!(
                    "  {} [diagnostic] alert latency p50 {:.1} ms, p99 {:.1} ms under {:.0} readings/s",
                    r.engine, r.p50_ms, r.p99_ms, r.readings_per_s
                ),
                Kind::Alert => println!(
                    "  {} alert latency p50 {:.1} ms, p99 {:.1} ms under {:.0} readings/s (target p99 ≤ 50 ms under 10,000/s: {}){}",
                    r.engine,
                    r.p50_ms,
                    r.p99_ms,
                    r.readings_per_s,
                    met(r.p99_ms <= 50.0 && r.readings_per_s >= 9_500.0 && r.trouble == 0),
                    if r.trouble > 0 { format!(", {} trials missed", r.trouble) } else { String::new() }
                ),
                Kind::Copy => println!("  postgres {}: {:.0} rows/s", r.scenario, r.readings_per_s),
                Kind::Raw => {}
            }
        }
    }
}
