//! Footprint benchmark for BENCHMARKS.md (ignored by default: it measures, it does not judge).
//!
//! cargo test --release -p vaxtrace-agent --test footprint -- --ignored --nocapture
//!
//! Reports the binary size, the agent's peak RSS (VmHWM) at 1 reading/s, and the peak RSS and time
//! to drain a 43,200-reading backlog (30 days at one a minute) through the embedded broker to an
//! acker that plays the server.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::{Acker, AgentProc, BrokerProc, ChildBroker, wait_until};
use vaxtrace_agent::agent::timestamp;
use vaxtrace_agent::buffer::{Buffer, BufferConfig};
use vaxtrace_proto::v1::Reading;

const KEY_HEX: &str = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";
const BACKLOG: u64 = 43_200;

#[test]
#[ignore = "helper process for the benchmark; runs only when started by it"]
fn broker_child_process() {
    if let Ok(port) = std::env::var(common::BROKER_PORT_ENV) {
        common::run_embedded_broker(port.parse().unwrap());
    }
}

fn vm_hwm_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

fn config(dir: &Path, device: &str, port: u16) -> std::path::PathBuf {
    let temp = dir.join("temp");
    std::fs::write(&temp, "4.5\n").unwrap();
    let text = format!(
        "device_id = \"{device}\"\ndata_dir = \"{}\"\ninterval = \"1s\"\n[mqtt]\nurl = \"mqtt://127.0.0.1:{port}\"\n\
         reconnect_min = \"100ms\"\n[uplink]\nkey_hex = \"{KEY_HEX}\"\n\
         [[probes]]\nsource = {{ kind = \"file\", path = \"{}\" }}\n",
        dir.join("data").display(),
        temp.display()
    );
    let path = dir.join("agent.toml");
    std::fs::write(&path, text).unwrap();
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark; run explicitly in release mode"]
async fn footprint() {
    let bin = Path::new(env!("CARGO_BIN_EXE_vaxtrace-agent"));
    let size = std::fs::metadata(bin).unwrap().len();
    println!("binary: {} ({} bytes = {:.2} MiB)", bin.display(), size, size as f64 / 1048576.0);

    let port = common::free_port();
    let _broker = ChildBroker::start(BrokerProc::Embedded, port);
    let key = vaxtrace_agent::config::decode_hex(KEY_HEX).unwrap();

    // 1 reading/s, steady state.
    let dir = tempfile::tempdir().unwrap();
    let acker = Acker::start("127.0.0.1", port, "bench-live", key.clone());
    let mut agent = AgentProc::spawn(&config(dir.path(), "bench-live", port), &dir.path().join("log"));
    wait_until("60 live readings acked", Duration::from_secs(120), || acker.contiguous() >= 60).await;
    let live_hwm = vm_hwm_kib(agent.child.id());
    agent.terminate();
    println!("peak RSS at 1 reading/s over 60 readings: {live_hwm} KiB = {:.2} MiB", live_hwm as f64 / 1024.0);

    // A 30-day backlog (one a minute), then start the agent and drain it.
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), "bench-drain", port);
    {
        let mut buffer = Buffer::open(&dir.path().join("data").join("buffer"), BufferConfig::default()).unwrap();
        let start = vaxtrace_agent::agent::now_ms() - BACKLOG as i64 * 60_000;
        for chunk in (0..BACKLOG).collect::<Vec<_>>().chunks(1000) {
            let records: Vec<Vec<u8>> = chunk
                .iter()
                .map(|i| {
                    let r = Reading {
                        time: Some(timestamp(start + *i as i64 * 60_000)),
                        temp_c: 4.0 + (*i % 40) as f64 / 10.0,
                        ..Default::default()
                    };
                    vaxtrace_agent::wire::encode_record(&r)
                })
                .collect();
            buffer.append_batch(&records).unwrap();
        }
        println!("backlog: {} readings, {} bytes on disk", buffer.unacked_count(), buffer.bytes_on_disk());
    }
    let acker = Acker::start("127.0.0.1", port, "bench-drain", key);
    let t0 = Instant::now();
    let mut agent = AgentProc::spawn(&cfg, &dir.path().join("log"));
    let pid = agent.child.id();
    let mut peak = 0;
    wait_until("backlog drained", Duration::from_secs(600), || {
        peak = peak.max(vm_hwm_kib(pid));
        acker.contiguous() >= BACKLOG
    })
    .await;
    let drain = t0.elapsed();
    peak = peak.max(vm_hwm_kib(pid));
    agent.terminate();
    println!(
        "drain of {BACKLOG} readings (from agent start to the last ack): {:.2} s; peak RSS {peak} KiB = {:.2} MiB; batches received {}",
        drain.as_secs_f64(),
        peak as f64 / 1024.0,
        acker.state.lock().unwrap().batches
    );
}
