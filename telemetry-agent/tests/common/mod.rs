//! Test helpers: brokers (embedded rumqttd, in a child process so it can be killed; Mosquitto;
//! an external one), a receiving-side "acker" standing in for the server, and the agent process.
#![allow(clippy::unwrap_used, dead_code)]

use std::collections::{BTreeMap, HashMap};
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use prost::Message;
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS, Transport};
use vaxtrace_agent::wire::{self, Verified};
use vaxtrace_proto::v1::{Reading, ReadingAck};

/// Env var naming the port the child broker process must serve.
pub const BROKER_PORT_ENV: &str = "VAXTRACE_TEST_BROKER_CHILD_PORT";

/// A port that was free a moment ago (rumqttd cannot report a port-0 binding).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Runs rumqttd on `port` in this process; blocks forever (the router has no shutdown call).
pub fn run_embedded_broker(port: u16) {
    use rumqttd::{Config, ConnectionSettings, RouterConfig, ServerSettings};
    let listen: SocketAddr = ([127, 0, 0, 1], port).into();
    let server = ServerSettings {
        name: "v4".into(),
        listen,
        tls: None,
        next_connection_delay_ms: 1,
        connections: ConnectionSettings {
            connection_timeout_ms: 60_000,
            max_payload_size: 1 << 20,
            max_inflight_count: 100,
            auth: None,
            external_auth: None,
            dynamic_filters: true,
        },
    };
    let config = Config {
        id: 0,
        router: RouterConfig {
            // The default of 0 refuses every client; segments below 1 KiB panic the router.
            max_connections: 10_000,
            max_outgoing_packet_count: 200,
            max_segment_size: 1 << 20,
            max_segment_count: 10,
            ..Default::default()
        },
        v4: Some(HashMap::from([("v4".to_owned(), server)])),
        ..Default::default()
    };
    // start() blocks while the broker runs, and returns Ok even when the bind failed.
    let result = rumqttd::Broker::new(config).start();
    panic!("embedded broker on port {port} stopped: {result:?} (port taken?)");
}

/// True once a real MQTT CONNECT to `port` is answered (a bare TCP probe makes rumqttd log errors).
pub fn wait_for_broker(host: &str, port: u16, within: Duration) -> bool {
    wait_for_broker_with(host, port, within, None)
}

/// [`wait_for_broker`] over `transport` (e.g. TLS) instead of plain TCP.
pub fn wait_for_broker_with(host: &str, port: u16, within: Duration, transport: Option<Transport>) -> bool {
    let host = host.to_owned();
    // Its own thread and runtime, so async tests can call it too.
    std::thread::spawn(move || probe_broker(&host, port, within, transport)).join().unwrap()
}

fn probe_broker(host: &str, port: u16, within: Duration, transport: Option<Transport>) -> bool {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            let id = format!("probe-{}-{}", std::process::id(), rand_u32());
            let mut opts = MqttOptions::new(id, host, port);
            opts.set_keep_alive(Duration::from_secs(5));
            if let Some(t) = &transport {
                opts.set_transport(t.clone());
            }
            let (client, mut el) = AsyncClient::new(opts, 10);
            let ok = tokio::time::timeout(Duration::from_secs(2), async {
                loop {
                    match el.poll().await {
                        Ok(Event::Incoming(Packet::ConnAck(_))) => return true,
                        Ok(_) => {}
                        Err(_) => return false,
                    }
                }
            })
            .await
            .unwrap_or(false);
            if ok {
                let _ = client.try_disconnect();
                let _ = tokio::time::timeout(Duration::from_millis(200), el.poll()).await;
                return true;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        false
    })
}

fn rand_u32() -> u32 {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_nanos();
    nanos ^ std::process::id().rotate_left(16)
}

/// How the test gets a broker it may stop and start.
pub enum BrokerProc {
    /// This test binary re-run as `broker_child_process` (embedded rumqttd).
    Embedded,
    /// `mosquitto -p PORT` with its default configuration.
    Mosquitto,
}

/// A broker in a child process, killable and restartable on the same port.
pub struct ChildBroker {
    kind: BrokerProc,
    pub port: u16,
    child: Option<Child>,
}

impl ChildBroker {
    pub fn start(kind: BrokerProc, port: u16) -> Self {
        let mut b = Self { kind, port, child: None };
        b.restart();
        b
    }

    pub fn restart(&mut self) {
        assert!(self.child.is_none());
        let mut cmd = match self.kind {
            BrokerProc::Embedded => {
                let mut c = Command::new(std::env::current_exe().unwrap());
                c.args(["--exact", "broker_child_process", "--ignored", "--nocapture", "--test-threads=1"])
                    .env(BROKER_PORT_ENV, self.port.to_string())
                    .env("RUST_LOG", "off");
                c
            }
            BrokerProc::Mosquitto => {
                let mut c = Command::new("mosquitto");
                c.args(["-p", &self.port.to_string()]);
                c
            }
        };
        let child = cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
        self.child = Some(child);
        assert!(
            wait_for_broker("127.0.0.1", self.port, Duration::from_secs(30)),
            "broker did not come up on port {}",
            self.port
        );
    }

    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            c.kill().unwrap();
            c.wait().unwrap();
        }
    }
}

impl Drop for ChildBroker {
    fn drop(&mut self) {
        self.kill();
    }
}

/// What the receiving side saw.
#[derive(Default, Debug)]
pub struct Received {
    /// Every distinct seq with its reading (first copy).
    pub readings: BTreeMap<u64, Reading>,
    /// Seqs that arrived again with different content (a reused seq).
    pub conflicts: Vec<String>,
    pub bad_signatures: u64,
    pub batches: u64,
    pub contiguous: u64,
    /// CONNACKs the acker received (its own connections to the broker).
    pub connacks: u64,
    /// SUBACKs the acker received (two per connection: readings and status).
    pub subacks: u64,
    /// Payloads seen on the status topic, in order.
    pub statuses: Vec<String>,
}

/// Stands in for the server: verifies, records, and acks the highest contiguous seq.
pub struct Acker {
    pub state: Arc<Mutex<Received>>,
    task: tokio::task::JoinHandle<()>,
}

impl Acker {
    pub fn start(host: &str, port: u16, device_id: &str, key: Vec<u8>) -> Self {
        Self::start_with_transport(host, port, device_id, key, None)
    }

    /// [`Acker::start`] over `transport` (e.g. TLS) instead of plain TCP.
    pub fn start_with_transport(
        host: &str,
        port: u16,
        device_id: &str,
        key: Vec<u8>,
        transport: Option<Transport>,
    ) -> Self {
        let state = Arc::new(Mutex::new(Received::default()));
        let mut opts = MqttOptions::new(format!("acker-{}-{}", std::process::id(), rand_u32()), host, port);
        opts.set_keep_alive(Duration::from_secs(5));
        opts.set_max_packet_size(1 << 20, 1 << 20);
        if let Some(t) = transport {
            opts.set_transport(t);
        }
        let (client, mut el) = AsyncClient::new(opts, 1000);
        let device = device_id.to_owned();
        let st = state.clone();
        let task = tokio::spawn(async move {
            let ack_topic = format!("vaxtrace/v1/devices/{device}/ack");
            let status_topic = format!("vaxtrace/v1/devices/{device}/status");
            loop {
                match el.poll().await {
                    Ok(Event::Incoming(Packet::ConnAck(_))) => {
                        st.lock().unwrap().connacks += 1;
                        client.try_subscribe("vaxtrace/v1/devices/+/readings", QoS::AtLeastOnce).unwrap();
                        client.try_subscribe(&status_topic, QoS::AtLeastOnce).unwrap();
                    }
                    Ok(Event::Incoming(Packet::SubAck(_))) => st.lock().unwrap().subacks += 1,
                    Ok(Event::Incoming(Packet::Publish(p))) if p.topic == status_topic => {
                        st.lock().unwrap().statuses.push(String::from_utf8_lossy(&p.payload).into_owned());
                    }
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        if p.topic != format!("vaxtrace/v1/devices/{device}/readings") {
                            continue; // another test's device on a shared broker
                        }
                        let acked = {
                            let mut s = st.lock().unwrap();
                            s.batches += 1;
                            match wire::verify_signed(&p.payload, &key) {
                                Ok(Verified::Valid(batch)) => {
                                    for r in batch.readings {
                                        match s.readings.get(&r.seq) {
                                            Some(old) if *old != r => {
                                                let msg = format!("seq {} reused: {old:?} vs {r:?}", r.seq);
                                                s.conflicts.push(msg);
                                            }
                                            Some(_) => {}
                                            None => {
                                                s.readings.insert(r.seq, r);
                                            }
                                        }
                                    }
                                    while s.readings.contains_key(&(s.contiguous + 1)) {
                                        s.contiguous += 1;
                                    }
                                    Some(s.contiguous)
                                }
                                _ => {
                                    s.bad_signatures += 1;
                                    None
                                }
                            }
                        };
                        if let Some(acked) = acked {
                            let ack = ReadingAck { device_id: device.clone(), acked_seq: acked, ..Default::default() };
                            let _ = client.try_publish(&ack_topic, QoS::AtLeastOnce, false, ack.encode_to_vec());
                        }
                    }
                    Ok(_) => {}
                    Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
                }
            }
        });
        Self { state, task }
    }

    pub fn contiguous(&self) -> u64 {
        self.state.lock().unwrap().contiguous
    }

    pub fn last_status(&self) -> Option<String> {
        self.state.lock().unwrap().statuses.last().cloned()
    }
}

impl Drop for Acker {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Polls `cond` until true; panics with `what` after `within` (a hang guard, not a timing check).
pub async fn wait_until(what: &str, within: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The agent binary as a child process, stderr captured to a file.
pub struct AgentProc {
    pub child: Child,
    pub log: PathBuf,
}

impl AgentProc {
    pub fn spawn(config: &Path, log: &Path) -> Self {
        let stderr = std::fs::OpenOptions::new().create(true).append(true).open(log).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_vaxtrace-agent"))
            .arg("--config")
            .arg(config)
            .arg("run")
            .env("VAXTRACE_LOG", "info,rumqttc=warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .unwrap();
        Self { child, log: log.to_path_buf() }
    }

    /// SIGKILL: no chance to flush anything.
    pub fn kill_hard(&mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    /// SIGTERM and wait for a clean exit; returns the exit status.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let pid = self.child.id().to_string();
        Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(Instant::now() < deadline, "agent ignored SIGTERM");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for AgentProc {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Total bytes of the buffer's segment files.
pub fn segment_bytes(buffer_dir: &Path) -> u64 {
    std::fs::read_dir(buffer_dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .filter(|e| e.file_name().to_string_lossy().ends_with(".seg"))
                .filter_map(|e| e.metadata().ok())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0)
}

/// The ack level persisted in the buffer's `state` file (layout documented in buffer.rs).
pub fn persisted_ack(buffer_dir: &Path) -> u64 {
    match std::fs::read(buffer_dir.join("state")) {
        Ok(b) if b.len() == 24 => u64::from_le_bytes(b[12..20].try_into().unwrap()),
        _ => 0,
    }
}
