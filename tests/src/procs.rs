//! Real processes for the fault suite and the soak bench: the `vaxtrace-server` and
//! `vaxtrace-agent` binaries, a private Mosquitto, and a TCP "cable" that can be unplugged.
//!
//! Every process is killed when its handle drops, so a failing test leaves nothing running.

use std::io::{BufRead as _, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// A workspace binary built next to the running test (`cargo test --workspace` builds them).
pub fn workspace_bin(name: &str) -> PathBuf {
    // The test runs from target/<profile>/deps/; the binaries live in target/<profile>/.
    let exe = std::env::current_exe().expect("current exe");
    let dir = exe.parent().and_then(Path::parent).expect("target/<profile>");
    let bin = dir.join(name);
    assert!(
        bin.exists(),
        "{} is not built; run `cargo build --workspace --bins` (or the README's `cargo test --workspace`) first",
        bin.display()
    );
    bin
}

/// Whether a `mosquitto` binary can be started.
pub fn mosquitto_installed() -> bool {
    Command::new("mosquitto").arg("-h").stdout(Stdio::null()).stderr(Stdio::null()).status().is_ok()
}

/// A free port on 127.0.0.1 (for a child that cannot report the one it bound).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("free port").port()
}

/// Resident set size of a process in KiB (Linux), or 0 when it cannot be read.
pub fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines().find_map(|l| {
                l.strip_prefix("VmRSS:").and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            })
        })
        .unwrap_or(0)
}

/// A child process killed (SIGKILL) on drop.
#[derive(Debug)]
pub struct Proc {
    child: Child,
}

impl Proc {
    /// Spawns `cmd` with stdout and stderr appended to `log`.
    pub fn spawn(mut cmd: Command, log: &Path) -> Proc {
        let out = std::fs::OpenOptions::new().create(true).append(true).open(log).expect("open child log");
        let err = out.try_clone().expect("clone log handle");
        let child = cmd.stdin(Stdio::null()).stdout(out).stderr(err).spawn().expect("spawn child process");
        Proc { child }
    }

    /// The child's pid.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGKILL, then reap: no shutdown code runs, as in a crash or power cut of the process.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// True while the process has not exited.
    pub fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A private Mosquitto on a fixed port, so it can be restarted where its clients expect it.
#[derive(Debug)]
pub struct Mosquitto {
    /// Its port on 127.0.0.1.
    pub port: u16,
    conf: PathBuf,
    log: PathBuf,
    proc: Option<Proc>,
}

impl Mosquitto {
    /// Starts one on a free port, without persistence: a restart loses every queued message,
    /// which only end-to-end acks can make up for.
    pub fn start(dir: &Path) -> Mosquitto {
        let port = free_port();
        let conf = dir.join("mosquitto.conf");
        let mut text =
            format!("listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\nmax_queued_messages 100000\n");
        // Started as root, Mosquitto drops to its own user, which cannot read a private temp dir.
        if Command::new("id").arg("-u").output().is_ok_and(|o| o.stdout.trim_ascii() == b"0") {
            text.push_str("user root\n");
        }
        std::fs::write(&conf, text).expect("write mosquitto.conf");
        let mut m = Mosquitto { port, conf, log: dir.join("mosquitto.log"), proc: None };
        m.restart();
        m
    }

    /// (Re)starts it and waits until it accepts connections.
    pub fn restart(&mut self) {
        self.kill();
        let mut cmd = Command::new("mosquitto");
        cmd.arg("-c").arg(&self.conf);
        self.proc = Some(Proc::spawn(cmd, &self.log));
        wait_for_port(self.port, Duration::from_secs(20));
    }

    /// SIGKILL.
    pub fn kill(&mut self) {
        if let Some(mut p) = self.proc.take() {
            p.kill();
        }
    }

    /// Its pid while running.
    pub fn pid(&self) -> Option<u32> {
        self.proc.as_ref().map(Proc::pid)
    }
}

/// Waits until something accepts TCP connections on 127.0.0.1:`port`.
pub fn wait_for_port(port: u16, within: Duration) {
    let deadline = Instant::now() + within;
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "nothing listens on port {port} after {within:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A `vaxtrace-server serve` process.
#[derive(Debug)]
pub struct ServerProc {
    /// Its gRPC/HTTP address.
    pub addr: SocketAddr,
    /// Its process.
    pub proc: Proc,
}

impl ServerProc {
    /// Starts `vaxtrace-server serve` on a free port, ingesting from the broker at `mqtt_url`,
    /// and waits until it serves and has subscribed. Output is appended to `log`.
    pub fn start(database_url: &str, mqtt_url: &str, log: &Path, extra_args: &[&str]) -> ServerProc {
        let mut cmd = Command::new(workspace_bin("vaxtrace-server"));
        cmd.args(["serve", "--listen", "127.0.0.1:0", "--mqtt-url", mqtt_url])
            .args(extra_args)
            .env("VAXTRACE_DATABASE_URL", database_url)
            .env("VAXTRACE_LOG", std::env::var("VAXTRACE_TEST_LOG").unwrap_or_else(|_| "warn".into()));
        let start = std::fs::metadata(log).map(|m| m.len()).unwrap_or(0);
        let mut proc = Proc::spawn(cmd, log);
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut addr = None;
        loop {
            let text = std::fs::read(log).unwrap_or_default();
            let text = String::from_utf8_lossy(text.get(start as usize..).unwrap_or_default());
            for line in text.lines() {
                if let Some(a) = line.strip_prefix("vaxtrace listening on http://") {
                    addr = a.trim().parse().ok();
                }
            }
            if let Some(addr) = addr
                && text.contains("MQTT ingest via")
            {
                return ServerProc { addr, proc };
            }
            assert!(proc.running(), "vaxtrace-server exited at start:\n{text}");
            assert!(Instant::now() < deadline, "vaxtrace-server not up after 60 s:\n{text}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// A `vaxtrace-agent run` process with its config and data directory.
#[derive(Debug)]
pub struct AgentProc {
    /// The device id it publishes as.
    pub device_id: String,
    /// Its data directory (buffer, simulated clock, alarm state).
    pub data_dir: PathBuf,
    config: PathBuf,
    log: PathBuf,
    proc: Option<Proc>,
}

impl AgentProc {
    /// Writes `config_toml` (which must name `data_dir`) under `dir` and starts the agent.
    pub fn start(dir: &Path, device_id: &str, data_dir: &Path, config_toml: &str) -> AgentProc {
        let config = dir.join(format!("agent-{device_id}.toml"));
        std::fs::write(&config, config_toml).expect("write agent config");
        let mut a = AgentProc {
            device_id: device_id.to_owned(),
            data_dir: data_dir.to_owned(),
            config,
            log: dir.join(format!("agent-{device_id}.log")),
            proc: None,
        };
        a.restart();
        a
    }

    /// (Re)starts it on the same config and data directory.
    pub fn restart(&mut self) {
        self.kill();
        let mut cmd = Command::new(workspace_bin("vaxtrace-agent"));
        cmd.arg("--config").arg(&self.config).arg("run").env("VAXTRACE_LOG", "warn,vaxtrace_agent=info");
        self.proc = Some(Proc::spawn(cmd, &self.log));
    }

    /// SIGKILL.
    pub fn kill(&mut self) {
        if let Some(mut p) = self.proc.take() {
            p.kill();
        }
    }

    /// Its pid while running.
    pub fn pid(&self) -> Option<u32> {
        self.proc.as_ref().map(Proc::pid)
    }

    /// The end of its log, for failure messages.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }
}

/// A simulated agent's config for [`AgentProc::start`].
#[derive(Debug, Clone)]
pub struct SimAgent<'a> {
    /// Device id.
    pub id: &'a str,
    /// HMAC key.
    pub key: &'a [u8],
    /// Data directory.
    pub data_dir: &'a Path,
    /// Broker port on 127.0.0.1.
    pub mqtt_port: u16,
    /// Sampling interval, e.g. "60s".
    pub interval: &'a str,
    /// Simulated start ("now", "now - 1d").
    pub start: &'a str,
    /// Simulated seconds per real second.
    pub speed: u64,
    /// Readings in all (0 = forever).
    pub max_readings: u64,
    /// Simulator seed.
    pub seed: u64,
    /// One simulator scenario per probe (index = position).
    pub scenarios: &'a [&'a str],
}

impl SimAgent<'_> {
    /// The TOML: quick reconnects and a short ack timeout, so crashes cost seconds, not minutes.
    pub fn toml(&self) -> String {
        let mut t = format!(
            "device_id = \"{id}\"\ndata_dir = \"{data}\"\ninterval = \"{interval}\"\n\
             [mqtt]\nurl = \"mqtt://127.0.0.1:{port}\"\nkeep_alive = \"5s\"\nreconnect_min = \"200ms\"\nreconnect_max = \"2s\"\n\
             [uplink]\nbatch_size = 60\nack_timeout = \"3s\"\nkey_hex = \"{key}\"\n\
             [simulator]\nseed = {seed}\nspeed = {speed}\nstart = \"{start}\"\nmax_readings = {max}\n",
            id = self.id,
            data = self.data_dir.display(),
            interval = self.interval,
            port = self.mqtt_port,
            key = vaxtrace_proto::signing::to_hex(self.key),
            seed = self.seed,
            speed = self.speed,
            start = self.start,
            max = self.max_readings,
        );
        for (i, s) in self.scenarios.iter().enumerate() {
            t.push_str(&format!("[[probes]]\nindex = {i}\nsource = {{ kind = \"simulator\", scenario = \"{s}\" }}\n"));
        }
        t
    }
}

/// A TCP forwarder between agents and the broker that can be unplugged: unplugging drops every
/// open connection and refuses new ones until it is plugged in again.
#[derive(Debug)]
pub struct Cable {
    /// The port clients connect to.
    pub port: u16,
    plugged: Arc<AtomicBool>,
    generation: Arc<std::sync::atomic::AtomicU64>,
}

impl Cable {
    /// A cable on a free port to 127.0.0.1:`target`, plugged in or not.
    pub fn new(target: u16, plugged: bool) -> Cable {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind cable");
        let port = listener.local_addr().expect("cable addr").port();
        let cable = Cable {
            port,
            plugged: Arc::new(AtomicBool::new(plugged)),
            generation: Arc::new(std::sync::atomic::AtomicU64::new(0)),
        };
        let (on, generation) = (cable.plugged.clone(), cable.generation.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(client) = stream else { continue };
                if !on.load(Ordering::SeqCst) {
                    drop(client);
                    continue;
                }
                let Ok(server) = std::net::TcpStream::connect(("127.0.0.1", target)) else { continue };
                let gen_now = generation.load(Ordering::SeqCst);
                for (mut from, mut to) in
                    [(client.try_clone(), server.try_clone()), (server.try_clone(), client.try_clone())]
                        .into_iter()
                        .filter_map(|(a, b)| Some((a.ok()?, b.ok()?)))
                {
                    let (generation, on) = (generation.clone(), on.clone());
                    std::thread::spawn(move || {
                        let _ = from.set_read_timeout(Some(Duration::from_millis(200)));
                        let mut buf = [0u8; 16 * 1024];
                        loop {
                            if generation.load(Ordering::SeqCst) != gen_now || !on.load(Ordering::SeqCst) {
                                break;
                            }
                            match std::io::Read::read(&mut from, &mut buf) {
                                Ok(0) => break,
                                Ok(n) => {
                                    if std::io::Write::write_all(&mut to, &buf[..n]).is_err() {
                                        break;
                                    }
                                }
                                Err(e)
                                    if matches!(
                                        e.kind(),
                                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                                    ) => {}
                                Err(_) => break,
                            }
                        }
                        let _ = from.shutdown(std::net::Shutdown::Both);
                        let _ = to.shutdown(std::net::Shutdown::Both);
                    });
                }
            }
        });
        cable
    }

    /// Unplugs: open connections are cut, new ones refused.
    pub fn unplug(&self) {
        self.plugged.store(false, Ordering::SeqCst);
        self.generation.fetch_add(1, Ordering::SeqCst);
    }

    /// Plugs back in.
    pub fn plug(&self) {
        self.plugged.store(true, Ordering::SeqCst);
    }
}

/// Lines of a log that match `needle` (for failure messages and checks).
pub fn grep_log(log: &Path, needle: &str) -> Vec<String> {
    match std::fs::File::open(log) {
        Ok(f) => BufReader::new(f).lines().map_while(Result::ok).filter(|l| l.contains(needle)).collect(),
        Err(_) => Vec::new(),
    }
}
