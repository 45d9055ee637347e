//! Soak: the whole system at a fixed load for a given time — real `vaxtrace-agent` processes
//! (simulator, real-time clock) publishing through a broker to a real `vaxtrace-server serve`
//! process — reporting per minute the readings stored per second, the sample → stored latency
//! (p50, p99, max) and the resident memory of the server, the agents and the broker, to show that
//! nothing grows without bound. Results go to stdout; BENCHMARKS.md records a run.
//!
//! ```sh
//! cargo build --release -p vaxtrace-server -p vaxtrace-agent
//! VAXTRACE_SOAK_SECS=3600 cargo bench -p vaxtrace-tests --bench soak_bench
//! ```
//!
//! The broker is a private Mosquitto (the `mosquitto` binary must be installed). Environment: `VAXTRACE_SOAK_SECS` (600), `VAXTRACE_SOAK_AGENTS` (20),
//! `VAXTRACE_SOAK_INTERVAL_MS` (1000; each agent has two probes, so 2 × agents readings per
//! interval), `VAXTRACE_SOAK_POSTGRES_URL` (unset: a SQLite file; set: a fresh schema there).
//!
//! Latency is from the sample's time (the agent stamps it when it reads the probes and publishes
//! at once) to the server's receipt in the committed row, so it includes the agent, the broker
//! and the ingest transaction.

use std::time::{Duration, Instant};

use vaxtrace_proto::v1 as pb;
use vaxtrace_proto::v1::telemetry_service_client::TelemetryServiceClient;
use vaxtrace_tests::procs::{AgentProc, Mosquitto, ServerProc, SimAgent, mosquitto_installed, rss_kib};
use vaxtrace_tests::world::register_logger_probes;
use vaxtrace_tests::{TestDb, TestServer, authed};

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn pct(sorted: &[i64], p: f64) -> i64 {
    if sorted.is_empty() {
        return 0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        println!("soak_bench: run with `cargo bench -p vaxtrace-tests --bench soak_bench` (see its doc comment)");
        return;
    }
    let secs = env_u64("VAXTRACE_SOAK_SECS", 600);
    let agents_n = env_u64("VAXTRACE_SOAK_AGENTS", 20) as usize;
    let interval_ms = env_u64("VAXTRACE_SOAK_INTERVAL_MS", 1000);
    let db = match std::env::var("VAXTRACE_SOAK_POSTGRES_URL") {
        Ok(u) if !u.is_empty() => TestDb::Postgres(u),
        _ => TestDb::Sqlite,
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let srv = TestServer::start_reachable(db, dir.path()).await;
    let w = vaxtrace_tests::world::world(&srv).await;

    if !mosquitto_installed() {
        println!("soak_bench: needs the mosquitto binary (Debian: apt-get install mosquitto)");
        return;
    }
    let broker = Mosquitto::start(dir.path());
    let mqtt_port = broker.port;
    let server_log = dir.path().join("server.log");
    let server = ServerProc::start(&srv.database_url, &format!("mqtt://127.0.0.1:{mqtt_port}"), &server_log, &[]);

    let mut tel = TelemetryServiceClient::new(srv.channel().await);
    let mut agents = Vec::new();
    for i in 0..agents_n {
        // The server's floor for the expected interval is a minute; NO_DATA then fires after three.
        let every = (interval_ms / 1000).max(60) as i64;
        let (id, key) = register_logger_probes(&srv, &w.tok, &w.c, &w.cu, 2, every).await;
        let data = dir.path().join(format!("agent-{i}"));
        let interval = format!("{interval_ms}ms");
        let config = SimAgent {
            id: &id,
            key: &key,
            data_dir: &data,
            mqtt_port,
            interval: &interval,
            start: "now",
            speed: 1,
            max_readings: 0,
            seed: i as u64,
            scenarios: &["stable", if i % 5 == 0 { "door_open" } else { "stable" }],
        }
        .toml();
        agents.push(AgentProc::start(dir.path(), &id, &data, &config));
    }
    println!(
        "soak: {agents_n} agents × 2 probes every {interval_ms} ms = {:.0} readings/s offered, {secs} s, {} + Mosquitto",
        agents_n as f64 * 2.0 * 1000.0 / interval_ms as f64,
        srv.db.name(),
    );
    println!();
    println!(
        "| minute | readings/s stored | latency p50 ms | p99 ms | max ms | server RSS MiB | agent RSS MiB (mean / max) | broker RSS MiB |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|");

    let started = Instant::now();
    let mut window_start = chrono::Utc::now();
    let mut minute = 0;
    let mut first_server_rss = 0;
    let mut total = 0u64;
    while started.elapsed() < Duration::from_secs(secs) {
        let left = Duration::from_secs(secs).saturating_sub(started.elapsed());
        tokio::time::sleep(left.min(Duration::from_secs(60))).await;
        minute += 1;
        let window_end = chrono::Utc::now();
        // Everything received in the window, through the public API.
        let mut lat: Vec<i64> = Vec::new();
        for a in &agents {
            let mut token = String::new();
            loop {
                let page = tel
                    .list_readings(authed(
                        &w.tok,
                        pb::ListReadingsRequest {
                            page_size: 1000,
                            page_token: token.clone(),
                            device_id: a.device_id.clone(),
                            start_time: Some(prost_types::Timestamp {
                                seconds: window_start.timestamp() - 120,
                                nanos: 0,
                            }),
                            ..Default::default()
                        },
                    ))
                    .await
                    .expect("list readings")
                    .into_inner();
                for r in page.readings {
                    let recv = r.receive_time.unwrap_or_default();
                    let recv_ms = recv.seconds * 1000 + i64::from(recv.nanos) / 1_000_000;
                    if recv_ms < window_start.timestamp_millis() || recv_ms >= window_end.timestamp_millis() {
                        continue;
                    }
                    let t = r.reading.and_then(|r| r.time).unwrap_or_default();
                    lat.push(recv_ms - (t.seconds * 1000 + i64::from(t.nanos) / 1_000_000));
                }
                if page.next_page_token.is_empty() {
                    break;
                }
                token = page.next_page_token;
            }
        }
        lat.sort_unstable();
        total += lat.len() as u64;
        let span = (window_end - window_start).num_milliseconds().max(1) as f64 / 1000.0;
        let server_rss = rss_kib(server.proc.pid());
        if minute == 1 {
            first_server_rss = server_rss;
        }
        let agent_rss: Vec<u64> = agents.iter().filter_map(|a| a.pid()).map(rss_kib).collect();
        let mean = agent_rss.iter().sum::<u64>() as f64 / agent_rss.len().max(1) as f64;
        let max = agent_rss.iter().copied().max().unwrap_or(0);
        println!(
            "| {minute} | {:.0} | {} | {} | {} | {:.1} | {:.1} / {:.1} | {:.1} |",
            lat.len() as f64 / span,
            pct(&lat, 0.5),
            pct(&lat, 0.99),
            lat.last().copied().unwrap_or(0),
            server_rss as f64 / 1024.0,
            mean / 1024.0,
            max as f64 / 1024.0,
            broker.pid().map(rss_kib).unwrap_or(0) as f64 / 1024.0,
        );
        window_start = window_end;
    }
    println!();
    println!(
        "soak: {total} readings stored in {:.0} s; server RSS {:.1} MiB after the first minute, {:.1} MiB at the end",
        started.elapsed().as_secs_f64(),
        first_server_rss as f64 / 1024.0,
        rss_kib(server.proc.pid()) as f64 / 1024.0
    );
    // Nothing lost at the end either: every agent's readings are acked once it has caught up.
    for a in &mut agents {
        a.kill();
    }
    drop(server);
    drop(broker);
    srv.stop().await;
}
