//! End to end over TLS: a throwaway CA and broker certificate are generated in the test (rcgen,
//! ring; no committed keys), Mosquitto serves a TLS-only listener with them, and the real agent
//! binary connects with `url = "mqtts://..."` and `ca_file` = the generated CA. The test acker uses
//! the very TLS transport the agent builds (`mqtt::mqtt_options`), so both sides verify the broker.
//!
//! Mosquitto is a child process (rumqttd is built here without its TLS feature); without the
//! `mosquitto` binary the tests print "SKIPPED: ..." and pass.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::{Acker, AgentProc, persisted_ack, wait_until};
use rcgen::{
    BasicConstraints, Certificate, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose,
};
use rumqttc::Transport;
use vaxtrace_agent::agent::timestamp;
use vaxtrace_agent::buffer::{Buffer, BufferConfig};
use vaxtrace_agent::config::Config;

const KEY_HEX: &str = "5ec2e7a1c0ffee00112233445566778899aabbccddeeff00112233445566778899";
/// Total readings: 2 probes × 100 samples.
const N: u64 = 200;
const PROBES: [u32; 2] = [0, 5];
const HANG_GUARD: Duration = Duration::from_secs(60);

fn show_agent_log_if_asked(log: &str) {
    if std::env::var_os("VAXTRACE_TEST_SHOW_AGENT_LOG").is_some() {
        eprintln!("agent log:\n{log}");
    }
}

fn mosquitto_installed() -> bool {
    Command::new("mosquitto").arg("-h").output().is_ok()
}

/// A CA: its certificate and the key that signs with it.
struct TestCa {
    pem: String,
    cert: Certificate,
    key: KeyPair,
}

fn new_ca(name: &str) -> TestCa {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    let key = KeyPair::generate().unwrap();
    let cert = params.self_signed(&key).unwrap();
    TestCa { pem: cert.pem(), cert, key }
}

/// A server certificate for 127.0.0.1 and localhost signed by `ca`: (cert PEM, key PEM).
fn server_cert(ca: &TestCa) -> (String, String) {
    let mut params = CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()]).unwrap();
    params.distinguished_name.push(DnType::CommonName, "vaxtrace test broker");
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let key = KeyPair::generate().unwrap();
    let cert = params.signed_by(&key, &ca.cert, &ca.key).unwrap();
    (cert.pem(), key.serialize_pem())
}

/// Mosquitto with one TLS-only listener on 127.0.0.1; killed on drop.
struct TlsMosquitto {
    child: Child,
    port: u16,
}

impl TlsMosquitto {
    /// Writes the CA, certificate, key and config into `dir` and starts the broker.
    fn start(dir: &Path, ca: &TestCa) -> Self {
        let (cert, key) = server_cert(ca);
        let ca_path = dir.join("broker-ca.pem");
        let cert_path = dir.join("broker-cert.pem");
        let key_path = dir.join("broker-key.pem");
        std::fs::write(&ca_path, &ca.pem).unwrap();
        std::fs::write(&cert_path, cert).unwrap();
        std::fs::write(&key_path, key).unwrap();
        let port = common::free_port();
        let mut conf = format!(
            "listener {port} 127.0.0.1\ncafile {}\ncertfile {}\nkeyfile {}\nallow_anonymous true\npersistence false\n",
            ca_path.display(),
            cert_path.display(),
            key_path.display(),
        );
        // Run as root, Mosquitto drops to the `mosquitto` user, which cannot read a private temp dir.
        if Command::new("id").arg("-u").output().is_ok_and(|o| o.stdout.trim_ascii() == b"0") {
            conf.push_str("user root\n");
        }
        let conf_path = dir.join("mosquitto.conf");
        std::fs::write(&conf_path, conf).unwrap();
        let log = std::fs::File::create(dir.join("mosquitto.log")).unwrap();
        let child = Command::new("mosquitto")
            .arg("-c")
            .arg(&conf_path)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        Self { child, port }
    }
}

impl Drop for TlsMosquitto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn write_config(dir: &Path, device_id: &str, port: u16, ca_file: &Path) -> PathBuf {
    let text = format!(
        r#"
device_id = "{device_id}"
data_dir = "{data}"
interval = "60s"

[mqtt]
url = "mqtts://127.0.0.1:{port}"
ca_file = "{ca}"
reconnect_min = "100ms"
reconnect_max = "1s"
keep_alive = "5s"

[uplink]
batch_size = 20
max_inflight_batches = 4
ack_timeout = "2s"
key_hex = "{KEY_HEX}"

[simulator]
seed = 7
# 60 s readings at 6000× = one sample per 10 ms, starting far enough back that none is in the future.
speed = 6000
start = "now - 7d"
max_readings = {N}

[[probes]]
index = {p0}
source = {{ kind = "simulator", scenario = "stable" }}

[[probes]]
index = {p1}
source = {{ kind = "simulator", scenario = "door_open" }}
"#,
        data = dir.join("data").display(),
        ca = ca_file.display(),
        p0 = PROBES[0],
        p1 = PROBES[1],
    );
    let path = dir.join("agent.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// The TLS transport the agent itself builds from `config` (ring provider, roots = `ca_file` only).
fn agent_transport(config: &Path) -> Transport {
    let config = Config::load(config).unwrap();
    let transport = vaxtrace_agent::mqtt::mqtt_options(&config).unwrap().transport();
    assert!(matches!(transport, Transport::Tls(_)), "an mqtts:// url must give a TLS transport");
    transport
}

fn unique_device_id(prefix: &str) -> String {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
    format!("{prefix}-{}-{nanos}", std::process::id())
}

/// Starts the broker and a connected, subscribed acker trusting `ca`.
async fn broker_and_acker(dir: &Path, ca: &TestCa, device_id: &str) -> (TlsMosquitto, Acker) {
    let broker = TlsMosquitto::start(dir, ca);
    let ca_path = dir.join("acker-ca.pem");
    std::fs::write(&ca_path, &ca.pem).unwrap();
    // A config only to build the acker's transport exactly as the agent would.
    let acker_config = write_config(&dir.join("acker"), device_id, broker.port, &ca_path);
    let transport = agent_transport(&acker_config);
    let up = common::wait_for_broker_with("127.0.0.1", broker.port, HANG_GUARD, Some(transport.clone()));
    let mosquitto_log = || std::fs::read_to_string(dir.join("mosquitto.log")).unwrap_or_default();
    assert!(up, "TLS broker did not come up on port {}\n{}", broker.port, mosquitto_log());
    let key = vaxtrace_agent::config::decode_hex(KEY_HEX).unwrap();
    let acker = Acker::start_with_transport("127.0.0.1", broker.port, device_id, key, Some(transport));
    wait_until("acker subscribed over TLS", HANG_GUARD, || acker.state.lock().unwrap().subacks >= 2).await;
    (broker, acker)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tlsbroker_delivers_every_reading_once() {
    if !mosquitto_installed() {
        eprintln!("SKIPPED: mosquitto not installed");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("acker")).unwrap();
    let device_id = unique_device_id("tls");
    let ca = new_ca("vaxtrace throwaway test CA");
    let (broker, acker) = broker_and_acker(dir.path(), &ca, &device_id).await;

    let ca_file = dir.path().join("agent-ca.pem");
    std::fs::write(&ca_file, &ca.pem).unwrap();
    let config = write_config(dir.path(), &device_id, broker.port, &ca_file);
    let log = dir.path().join("agent.log");
    let buffer_dir = dir.path().join("data").join("buffer");
    let mut agent = AgentProc::spawn(&config, &log);
    let show_log = || std::fs::read_to_string(&log).unwrap_or_default();

    wait_until("all N readings received over TLS", HANG_GUARD, || acker.contiguous() >= N).await;
    wait_until("status online", HANG_GUARD, || acker.last_status().as_deref() == Some("online")).await;
    wait_until("the agent persisted ack N", HANG_GUARD, || persisted_ack(&buffer_dir) == N).await;
    let status = agent.terminate();
    let agent_log = show_log();
    assert!(status.success(), "agent exit {status:?}\n{agent_log}");
    assert!(agent_log.contains("tls=true"), "the agent must report a TLS connection\n{agent_log}");
    show_agent_log_if_asked(&agent_log);

    let s = acker.state.lock().unwrap();
    assert!(
        s.conflicts.is_empty(),
        "seqs reused for different readings: {:?}",
        &s.conflicts[..s.conflicts.len().min(5)]
    );
    assert_eq!(s.bad_signatures, 0, "every batch must carry a valid HMAC");
    let seqs: Vec<u64> = s.readings.keys().copied().collect();
    assert_eq!(seqs, (1..=N).collect::<Vec<_>>(), "exactly seqs 1..N, none missing, none extra");
    let start_ms: i64 =
        std::fs::read_to_string(dir.path().join("data").join("sim-start")).unwrap().trim().parse().unwrap();
    for (seq, r) in &s.readings {
        let sample = (seq - 1) / 2;
        assert_eq!(r.probe, PROBES[((seq - 1) % 2) as usize], "probe of seq {seq}");
        assert_eq!(r.time, Some(timestamp(start_ms + sample as i64 * 60_000)), "time of seq {seq}");
    }
    drop(s);

    let buffer = Buffer::open(&buffer_dir, BufferConfig::default()).unwrap();
    assert_eq!((buffer.acked_upto(), buffer.unacked_count(), buffer.next_seq()), (N, 0, N + 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tlsbroker_signed_by_another_ca_gets_nothing() {
    if !mosquitto_installed() {
        eprintln!("SKIPPED: mosquitto not installed");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("acker")).unwrap();
    let device_id = unique_device_id("tls-bad-ca");
    let broker_ca = new_ca("vaxtrace throwaway broker CA");
    let (broker, acker) = broker_and_acker(dir.path(), &broker_ca, &device_id).await;

    // The agent trusts only a CA that never signed the broker's certificate.
    let other_ca = new_ca("vaxtrace unrelated CA");
    let ca_file = dir.path().join("agent-ca.pem");
    std::fs::write(&ca_file, &other_ca.pem).unwrap();
    let config = write_config(dir.path(), &device_id, broker.port, &ca_file);
    let log = dir.path().join("agent.log");
    let mut agent = AgentProc::spawn(&config, &log);
    let show_log = || std::fs::read_to_string(&log).unwrap_or_default();

    wait_until("the agent logs a certificate error", Duration::from_secs(20), || {
        let l = show_log();
        l.contains("broker connection failed") && l.contains("invalid peer certificate")
    })
    .await;
    // A few more connection attempts (reconnect_max = 1s) must not get anything through either.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (batches, readings, statuses) = {
        let s = acker.state.lock().unwrap();
        (s.batches, s.readings.len(), s.statuses.clone())
    };
    let agent_log = show_log();
    assert_eq!((batches, readings), (0, 0), "nothing may reach the broker\n{agent_log}");
    assert!(statuses.is_empty(), "the agent must never come online: {statuses:?}");
    assert!(!agent_log.contains("connected to the broker"), "{agent_log}");
    let status = agent.terminate();
    assert!(status.success(), "agent exit {status:?}\n{agent_log}");
    show_agent_log_if_asked(&agent_log);
}
