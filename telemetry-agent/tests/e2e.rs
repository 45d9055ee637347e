//! End to end with a real broker: the agent binary with the simulator publishes N readings while
//! the broker is stopped and restarted and the agent is SIGKILLed and restarted; the receiving side
//! (a test acker playing the server) must end with exactly seqs 1..N, each the reading it should be.
//!
//! Brokers: the embedded rumqttd in a child process (always), `mosquitto -p PORT` as a child when the
//! binary is installed, and the external broker named by VAXTRACE_TEST_MQTT_URL (agent kill only: a
//! shared broker must not be stopped).
#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;
use std::time::Duration;

use common::{Acker, AgentProc, BrokerProc, ChildBroker, persisted_ack, segment_bytes, wait_until};
use vaxtrace_agent::agent::timestamp;
use vaxtrace_agent::buffer::{Buffer, BufferConfig};

const KEY_HEX: &str = "5ec2e7a1c0ffee00112233445566778899aabbccddeeff00112233445566778899";
/// Total readings: 2 probes × 1500 samples.
const N: u64 = 3000;
const PROBES: [u32; 2] = [0, 3];
const HANG_GUARD: Duration = Duration::from_secs(120);

/// Not a test: the body of the child process that serves the embedded broker (see ChildBroker).
#[test]
#[ignore = "helper process for the e2e tests; runs only when started by them"]
fn broker_child_process() {
    match std::env::var(common::BROKER_PORT_ENV) {
        Ok(port) => common::run_embedded_broker(port.parse().unwrap()),
        Err(_) => eprintln!("broker_child_process: only meaningful when spawned by the e2e tests"),
    }
}

fn write_config(dir: &Path, device_id: &str, host: &str, port: u16) -> std::path::PathBuf {
    let text = format!(
        r#"
device_id = "{device_id}"
data_dir = "{data}"
interval = "60s"

[mqtt]
url = "mqtt://{host}:{port}"
reconnect_min = "100ms"
reconnect_max = "1s"
keep_alive = "5s"

[uplink]
batch_size = 60
max_inflight_batches = 4
ack_timeout = "2s"
key_hex = "{KEY_HEX}"

[simulator]
seed = 11
# 60 s readings at 12000× = one sample per 5 ms; the timeline starts far enough back that no
# reading is ever stamped in the future.
speed = 12000
start = "now - 30d"
max_readings = {N}

[[probes]]
index = {p0}
label = "ILR basket"
source = {{ kind = "simulator", scenario = "power_cut" }}

[[probes]]
index = {p1}
label = "second fridge"
source = {{ kind = "simulator", scenario = "stable" }}
"#,
        data = dir.join("data").display(),
        p0 = PROBES[0],
        p1 = PROBES[1],
    );
    let path = dir.join("agent.toml");
    std::fs::write(&path, text).unwrap();
    path
}

fn unique_device_id() -> String {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
    format!("e2e-{}-{nanos}", std::process::id())
}

/// The whole story; `broker` is None for a shared broker that must not be stopped.
async fn scenario(host: &str, port: u16, mut broker: Option<&mut ChildBroker>) {
    let dir = tempfile::tempdir().unwrap();
    let device_id = unique_device_id();
    let config = write_config(dir.path(), &device_id, host, port);
    let log = dir.path().join("agent.log");
    let buffer_dir = dir.path().join("data").join("buffer");
    let key = vaxtrace_agent::config::decode_hex(KEY_HEX).unwrap();
    let acker = Acker::start(host, port, &device_id, key);

    let mut agent = AgentProc::spawn(&config, &log);
    let show_log = || std::fs::read_to_string(&log).unwrap_or_default();
    wait_until("first readings acked", HANG_GUARD, || acker.contiguous() >= 200).await;
    wait_until("status online", HANG_GUARD, || acker.last_status().as_deref() == Some("online")).await;

    if let Some(b) = broker.as_deref_mut() {
        b.kill();
        // Sensing goes on without a broker: the buffer must keep growing.
        let before = segment_bytes(&buffer_dir);
        wait_until("buffer grows while the broker is down", HANG_GUARD, || {
            segment_bytes(&buffer_dir) > before + 800 * 40
        })
        .await;
        let acked_before = acker.contiguous();
        assert!(acked_before < N, "the agent finished before the outage; make N larger");
        b.restart();
        wait_until("acks resume after the broker restart", HANG_GUARD, || acker.contiguous() > acked_before + 100)
            .await;
    }

    let acked_before_kill = acker.contiguous();
    agent.kill_hard();
    if broker.is_some() {
        // The broker publishes the Last Will when the killed agent's socket closes.
        wait_until("Last Will offline", HANG_GUARD, || acker.last_status().as_deref() == Some("offline")).await;
    }
    assert!(acked_before_kill < N, "the agent finished before the SIGKILL; make N larger\n{}", show_log());
    let mut agent = AgentProc::spawn(&config, &log);
    wait_until("all N readings received", HANG_GUARD, || acker.contiguous() >= N).await;
    // The agent deletes records only on the ack; wait for it to persist the final ack.
    wait_until("the agent persisted ack N", HANG_GUARD, || persisted_ack(&buffer_dir) == N).await;
    let status = agent.terminate();
    assert!(status.success(), "agent exit {status:?}\n{}", show_log());

    let s = acker.state.lock().unwrap();
    assert!(
        s.conflicts.is_empty(),
        "seqs reused for different readings: {:?}",
        &s.conflicts[..s.conflicts.len().min(5)]
    );
    assert_eq!(s.bad_signatures, 0, "every batch must carry a valid HMAC");
    let seqs: Vec<u64> = s.readings.keys().copied().collect();
    assert_eq!(seqs, (1..=N).collect::<Vec<_>>(), "exactly seqs 1..N, none missing, none extra");
    // Each seq is the reading it must be: sample (seq-1)/2 of probe PROBES[(seq-1)%2], on the
    // simulated clock that survived the SIGKILL, so no sample was skipped or taken twice.
    let start_ms: i64 =
        std::fs::read_to_string(dir.path().join("data").join("sim-start")).unwrap().trim().parse().unwrap();
    let now = vaxtrace_agent::agent::now_ms();
    for (seq, r) in &s.readings {
        let sample = (seq - 1) / 2;
        assert_eq!(r.probe, PROBES[((seq - 1) % 2) as usize], "probe of seq {seq}");
        assert_eq!(r.time, Some(timestamp(start_ms + sample as i64 * 60_000)), "time of seq {seq}");
        assert!(start_ms + (sample as i64) * 60_000 <= now, "seq {seq} stamped in the future");
    }
    let power_off = s.readings.values().filter(|r| r.power_on == Some(false)).count();
    assert!(power_off > 0, "the power_cut scenario reports mains off");
    drop(s);

    // The buffer agrees after the restart: everything acked, the seq counter at N + 1.
    let buffer = Buffer::open(&buffer_dir, BufferConfig::default()).unwrap();
    assert_eq!((buffer.acked_upto(), buffer.unacked_count(), buffer.next_seq()), (N, 0, N + 1));
    if std::env::var_os("VAXTRACE_TEST_SHOW_AGENT_LOG").is_some() {
        eprintln!("agent log:\n{}", show_log());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_broker_restart_and_agent_sigkill_lose_and_duplicate_nothing() {
    let port = common::free_port();
    let mut broker = ChildBroker::start(BrokerProc::Embedded, port);
    scenario("127.0.0.1", port, Some(&mut broker)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mosquitto_restart_and_agent_sigkill_lose_and_duplicate_nothing() {
    if std::process::Command::new("mosquitto").arg("-h").output().is_err() {
        eprintln!("SKIPPED: `mosquitto` is not installed; the broker-restart part ran only against rumqttd");
        return;
    }
    let port = common::free_port();
    let mut broker = ChildBroker::start(BrokerProc::Mosquitto, port);
    scenario("127.0.0.1", port, Some(&mut broker)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn external_broker_agent_sigkill_loses_and_duplicates_nothing() {
    let Ok(url) = std::env::var("VAXTRACE_TEST_MQTT_URL") else {
        eprintln!("SKIPPED: VAXTRACE_TEST_MQTT_URL is not set");
        return;
    };
    let rest = url.strip_prefix("mqtt://").expect("VAXTRACE_TEST_MQTT_URL must be mqtt://host:port");
    let (host, port) = rest.trim_end_matches('/').rsplit_once(':').unwrap_or((rest, "1883"));
    scenario(host, port.parse().unwrap(), None).await;
}
