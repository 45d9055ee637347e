//! Stock ledger throughput: stock transactions per second through real gRPC over loopback with
//! concurrent clients, on PostgreSQL next to pgbench TPC-B on the same server in the same run, and
//! on a SQLite file database. Results go to stdout; BENCHMARKS.md records a run.
//!
//! ```sh
//! CARGO_TARGET_DIR=/tmp/target-bench cargo bench -p vaxtrace-tests --bench stock_bench
//! ```
//!
//! One stock transaction = one `TransferStock` RPC moving 1 vial between two storage units of one
//! facility (alternating direction, so stock never runs out), each with a fresh `request_id`.
//! Scenarios: every client on its own lot ("independent lots") or all on one lot ("same lot",
//! contended); each with one HTTP/2 connection per client or one shared connection.
//!
//! Environment: `VAXTRACE_BENCH_POSTGRES_URL` (default `postgres://postgres@127.0.0.1:5432/test`,
//! empty = skip PostgreSQL), `VAXTRACE_BENCH_ENGINES` (default `postgres,sqlite`),
//! `VAXTRACE_BENCH_CLIENTS` (8), `VAXTRACE_BENCH_SECS` (20), `VAXTRACE_BENCH_WARMUP_SECS` (3),
//! `VAXTRACE_BENCH_PGBENCH_SCALE` (10).
//!
//! Run as a test target (`cargo test --benches`, no `--bench` argument) it only prints a note.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::oneshot;
use tonic::transport::Channel;
use vaxtrace_proto::v1 as pb;
use vaxtrace_proto::v1::catalog_service_client::CatalogServiceClient;
use vaxtrace_proto::v1::facility_service_client::FacilityServiceClient;
use vaxtrace_proto::v1::stock_service_client::StockServiceClient;
use vaxtrace_tests::authed;

/// Linux's USER_HZ: /proc reports CPU times in these ticks.
const TICKS_PER_SEC: f64 = 100.0;
const PGBENCH_DB: &str = "vaxtrace_pgbench";

#[derive(Debug, Clone)]
struct Config {
    clients: usize,
    secs: u64,
    warmup: u64,
    pg_url: Option<String>,
    sqlite: bool,
    pgbench_scale: u32,
}

impl Config {
    fn from_env() -> Config {
        let num = |k: &str, d: u64| std::env::var(k).ok().and_then(|v| v.parse().ok()).unwrap_or(d);
        let engines = std::env::var("VAXTRACE_BENCH_ENGINES").unwrap_or_else(|_| "postgres,sqlite".into());
        let pg_url = std::env::var("VAXTRACE_BENCH_POSTGRES_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
        Config {
            clients: usize::try_from(num("VAXTRACE_BENCH_CLIENTS", 8)).unwrap_or(8).max(1),
            secs: num("VAXTRACE_BENCH_SECS", 20).max(1),
            warmup: num("VAXTRACE_BENCH_WARMUP_SECS", 3),
            pg_url: (engines.contains("postgres") && !pg_url.is_empty()).then_some(pg_url),
            sqlite: engines.contains("sqlite"),
            pgbench_scale: u32::try_from(num("VAXTRACE_BENCH_PGBENCH_SCALE", 10)).unwrap_or(10),
        }
    }
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        println!("stock_bench: not run as a test; use `cargo bench -p vaxtrace-tests --bench stock_bench`");
        return;
    }
    let cfg = Config::from_env();
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("tokio runtime");
    rt.block_on(run(cfg));
}

// ---------------------------------------------------------------------------------------------
// CPU accounting from /proc (Linux only; zeros elsewhere).

/// CPU seconds: this process (server + clients), its reaped children (pgbench), every `postgres`
/// process (live ones plus the children the postmaster has reaped), and the whole machine.
#[derive(Debug, Clone, Copy, Default)]
struct Cpu {
    own: f64,
    children: f64,
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
    if let Some((_, f)) = stat_fields(Path::new("/proc/self/stat"))
        && f.len() > 14
    {
        c.own = secs(f[11] + f[12]);
        c.children = secs(f[13] + f[14]);
    }
    if let Ok(dir) = std::fs::read_dir("/proc") {
        for e in dir.flatten() {
            if !e.file_name().to_string_lossy().bytes().all(|b| b.is_ascii_digit()) {
                continue;
            }
            if let Some((comm, f)) = stat_fields(&e.path().join("stat"))
                && comm == "postgres"
                && f.len() > 14
            {
                c.postgres += secs(f[11] + f[12] + f[13] + f[14]);
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
        Cpu {
            own: self.own - o.own,
            children: self.children - o.children,
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

// ---------------------------------------------------------------------------------------------
// Results.

#[derive(Debug, Clone)]
struct Row {
    engine: &'static str,
    scenario: String,
    tps: f64,
    p50_ms: f64,
    p99_ms: f64,
    mean_ms: f64,
    ok: usize,
    errors: usize,
    /// CPU µs per transaction: the client/server process (or pgbench), and PostgreSQL.
    app_us: f64,
    pg_us: f64,
    /// Share of the whole machine busy during the measurement, any process.
    machine_busy_pct: f64,
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i]
}

fn print_table(rows: &[Row], pgbench_tps: Option<f64>) {
    println!();
    println!(
        "| engine | scenario | tx/s | p50 ms | p99 ms | mean ms | ok | errors | app CPU µs/tx | postgres CPU µs/tx | machine busy | vs pgbench |"
    );
    println!("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for r in rows {
        let ratio = match (r.engine, pgbench_tps) {
            ("pgbench", _) => "—".to_owned(),
            (_, Some(pg)) if pg > 0.0 => format!("{:.0} %", 100.0 * r.tps / pg),
            _ => "n/a".to_owned(),
        };
        let pg_us = if r.engine == "sqlite" { "—".to_owned() } else { format!("{:.0}", r.pg_us) };
        println!(
            "| {} | {} | {:.0} | {:.2} | {:.2} | {:.2} | {} | {} | {:.0} | {} | {:.0} % | {} |",
            r.engine,
            r.scenario,
            r.tps,
            r.p50_ms,
            r.p99_ms,
            r.mean_ms,
            r.ok,
            r.errors,
            r.app_us,
            pg_us,
            r.machine_busy_pct,
            ratio
        );
    }
    println!();
}

// ---------------------------------------------------------------------------------------------
// The server and its small world.

struct Server {
    addr: std::net::SocketAddr,
    token: String,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

/// Opens the database and issues the admin token.
async fn open_app(url: &str) -> (vaxtrace_server::App, String) {
    let app = vaxtrace_server::open(url).await.expect("open the benchmark database");
    let admin = app.bootstrap_admin().await.expect("bootstrap").expect("fresh database has no token");
    (app, admin.secret)
}

async fn start_server(app: &vaxtrace_server::App, token: &str) -> Server {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind ephemeral port");
    let addr = listener.local_addr().expect("local addr");
    let (stop, stopped) = oneshot::channel::<()>();
    let shutdown = async move {
        let _ = stopped.await;
    };
    let task = tokio::spawn(vaxtrace_server::serve(app.clone(), listener, shutdown));
    Server { addr, token: token.to_owned(), stop: Some(stop), task }
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
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        self.task.await.expect("server task").expect("server exits cleanly");
    }
}

/// National store N with units U1 and U2, product P; lots are made per scenario.
struct World {
    tok: String,
    ch: Channel,
    u1: String,
    u2: String,
    product: String,
}

async fn world(srv: &Server) -> World {
    let ch = srv.channel().await;
    let tok = srv.token.clone();
    let mut fac = FacilityServiceClient::new(ch.clone());
    let f = pb::Facility {
        kind: pb::FacilityKind::NationalStore as i32,
        code: "N".into(),
        name: "National store".into(),
        ..Default::default()
    };
    let n = fac
        .create_facility(authed(&tok, pb::CreateFacilityRequest { facility: Some(f), request_id: String::new() }))
        .await
        .expect("create facility")
        .into_inner()
        .id;
    let mut units = Vec::new();
    for name in ["U1", "U2"] {
        let u = pb::StorageUnit {
            facility_id: n.clone(),
            kind: 1,
            name: name.into(),
            temperature_profile: 1,
            ..Default::default()
        };
        let req = pb::CreateStorageUnitRequest { storage_unit: Some(u), request_id: String::new() };
        units.push(fac.create_storage_unit(authed(&tok, req)).await.expect("create unit").into_inner().id);
    }
    let p = pb::Product {
        code: "PENTA10".into(),
        name: "Penta".into(),
        vaccine: "Penta".into(),
        doses_per_vial: 10,
        presentation: pb::Presentation::Liquid as i32,
        vvm_type: pb::VvmType::Vvm14 as i32,
        temperature_profile: 1,
        multi_dose_vial_policy: true,
        ..Default::default()
    };
    let product = CatalogServiceClient::new(ch.clone())
        .create_product(authed(&tok, pb::CreateProductRequest { product: Some(p), request_id: String::new() }))
        .await
        .expect("create product")
        .into_inner()
        .id;
    let u2 = units.pop().expect("two units");
    let u1 = units.pop().expect("two units");
    World { tok, ch, u1, u2, product }
}

const STOCK_PER_UNIT: i64 = 10_000;

/// `count` new lots, each with STOCK_PER_UNIT vials in both units.
async fn lots(w: &World, tag: &str, count: usize) -> Vec<String> {
    let mut cat = CatalogServiceClient::new(w.ch.clone());
    let mut stock = StockServiceClient::new(w.ch.clone());
    let mut out = Vec::new();
    for i in 0..count {
        let l = pb::Lot {
            product_id: w.product.clone(),
            lot_number: format!("{tag}{i}"),
            expiry: Some(pb::Date { year: 2031, month: 6, day: 30 }),
            ..Default::default()
        };
        let id = cat
            .create_lot(authed(&w.tok, pb::CreateLotRequest { lot: Some(l), request_id: String::new() }))
            .await
            .expect("create lot")
            .into_inner()
            .id;
        for unit in [&w.u1, &w.u2] {
            let line = pb::SupplierReceiptLine {
                lot_ref: Some(pb::supplier_receipt_line::LotRef::LotId(id.clone())),
                vials: STOCK_PER_UNIT,
                ..Default::default()
            };
            let r = pb::ReceiveFromSupplierRequest {
                storage_unit_id: unit.clone(),
                lines: vec![line],
                supplier: "UNICEF SD".into(),
                ..Default::default()
            };
            stock.receive_from_supplier(authed(&w.tok, r)).await.expect("receive stock");
        }
        out.push(id);
    }
    out
}

/// Σ vials of `lot` over both units, read back through the API.
async fn lot_total(w: &World, lot: &str) -> i64 {
    let r = pb::ListBalancesRequest { page_size: 1000, lot_id: lot.into(), include_zero: true, ..Default::default() };
    let b = StockServiceClient::new(w.ch.clone())
        .list_balances(authed(&w.tok, r))
        .await
        .expect("list balances")
        .into_inner()
        .balances;
    b.iter().map(|b| b.vials).sum()
}

// ---------------------------------------------------------------------------------------------
// The workload.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Channels {
    PerClient,
    Shared,
}

async fn workload(
    cfg: &Config,
    engine: &'static str,
    srv: &Server,
    w: &World,
    same_lot: bool,
    channels: Channels,
) -> Row {
    let tag = format!("{}{}", if same_lot { "S" } else { "I" }, if channels == Channels::Shared { "s" } else { "p" });
    let lots = lots(w, &tag, if same_lot { 1 } else { cfg.clients }).await;
    let shared = srv.channel().await;
    let start = Instant::now();
    let measure_from = start + Duration::from_secs(cfg.warmup);
    let end = measure_from + Duration::from_secs(cfg.secs);
    let first_error = Arc::new(std::sync::Mutex::new(None::<String>));
    let mut tasks = Vec::new();
    for i in 0..cfg.clients {
        let ch = match channels {
            Channels::Shared => shared.clone(),
            Channels::PerClient => srv.channel().await,
        };
        let mut client = StockServiceClient::new(ch);
        let lot = lots[i % lots.len()].clone();
        let (tok, u1, u2, tag) = (w.tok.clone(), w.u1.clone(), w.u2.clone(), tag.clone());
        let first_error = first_error.clone();
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::with_capacity(64 * 1024);
            let (mut errors, mut forward, mut k) = (0usize, true, 0u64);
            let mut last_done = measure_from;
            loop {
                let t0 = Instant::now();
                if t0 >= end {
                    break;
                }
                let (from, to) = if forward { (&u1, &u2) } else { (&u2, &u1) };
                let req = pb::TransferStockRequest {
                    from_storage_unit_id: from.clone(),
                    to_storage_unit_id: to.clone(),
                    lot_id: lot.clone(),
                    vials: 1,
                    comment: String::new(),
                    request_id: format!("bench-{tag}-{i}-{k}"),
                };
                k += 1;
                let r = client.transfer_stock(authed(&tok, req)).await;
                let done = Instant::now();
                match r {
                    Ok(_) => forward = !forward,
                    Err(e) => {
                        if t0 >= measure_from {
                            errors += 1;
                        }
                        let mut fe = first_error.lock().expect("error slot");
                        if fe.is_none() {
                            *fe = Some(format!("{:?}: {}", e.code(), e.message()));
                        }
                        continue;
                    }
                }
                if t0 >= measure_from {
                    lat.push((done - t0).as_secs_f64() * 1e3);
                    last_done = done;
                }
            }
            (lat, errors, last_done)
        }));
    }
    tokio::time::sleep_until(measure_from.into()).await;
    let cpu0 = cpu_now();
    let mut lat = Vec::new();
    let mut errors = 0;
    let mut last_done = measure_from;
    for t in tasks {
        let (l, e, d) = t.await.expect("client task");
        lat.extend(l);
        errors += e;
        last_done = last_done.max(d);
    }
    let cpu = cpu_now() - cpu0;
    let window = (last_done - measure_from).as_secs_f64().max(1e-9);
    lat.sort_by(f64::total_cmp);
    let ok = lat.len();
    if let Some(e) = first_error.lock().expect("error slot").take() {
        eprintln!("  {engine} {tag}: first error: {e}");
    }
    // Every transfer moves a vial within the lot: its total never changes.
    for l in &lots {
        let total = lot_total(w, l).await;
        assert_eq!(total, 2 * STOCK_PER_UNIT, "{engine} {tag}: lot {l} total changed");
    }
    let per_tx = |s: f64| if ok == 0 { f64::NAN } else { s * 1e6 / ok as f64 };
    let row = Row {
        engine,
        scenario: format!(
            "{}, {}",
            if same_lot { "same lot (contended)" } else { "independent lots" },
            if channels == Channels::Shared { "1 shared connection" } else { "1 connection per client" },
        ),
        tps: ok as f64 / window,
        p50_ms: percentile(&lat, 0.50),
        p99_ms: percentile(&lat, 0.99),
        mean_ms: lat.iter().sum::<f64>() / ok.max(1) as f64,
        ok,
        errors,
        app_us: per_tx(cpu.own),
        pg_us: per_tx(cpu.postgres),
        machine_busy_pct: 100.0 * cpu.machine_busy / cpu.machine_total.max(1e-9),
    };
    println!(
        "  {:<8} {:<52} {:>7.0} tx/s  p50 {:>6.2} ms  p99 {:>6.2} ms  errors {}  load {}",
        row.engine,
        row.scenario,
        row.tps,
        row.p50_ms,
        row.p99_ms,
        row.errors,
        loadavg()
    );
    row
}

/// The four scenarios on the shipped server.
async fn all_scenarios(cfg: &Config, engine: &'static str, url: &str) -> Vec<Row> {
    let (app, token) = open_app(url).await;
    let shipped = start_server(&app, &token).await;
    let w = world(&shipped).await;
    let mut rows = Vec::new();
    for same_lot in [false, true] {
        for channels in [Channels::PerClient, Channels::Shared] {
            rows.push(workload(cfg, engine, &shipped, &w, same_lot, channels).await);
        }
    }
    shipped.stop().await;
    rows
}

// ---------------------------------------------------------------------------------------------
// pgbench.

fn find_tool(name: &str) -> Option<PathBuf> {
    let on_path = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).map(|d| d.join(name)).find(|f| f.is_file()))
        .unwrap_or_default();
    on_path.or_else(|| {
        let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
            .ok()?
            .flatten()
            .map(|d| d.path().join("bin").join(name))
            .filter(|f| f.is_file())
            .collect();
        found.sort();
        found.pop()
    })
}

/// The same server, another database: the URL with its path replaced and its query dropped.
fn with_database(url: &str, db: &str) -> String {
    let base = url.split('?').next().unwrap_or(url);
    let after_scheme = base.find("://").map_or(0, |i| i + 3);
    match base[after_scheme..].find('/') {
        Some(i) => format!("{}/{db}", &base[..after_scheme + i]),
        None => format!("{base}/{db}"),
    }
}

fn run_tool(cmd: &mut Command) -> Result<String, String> {
    let out = cmd.output().map_err(|e| format!("{cmd:?}: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!("{cmd:?} failed: {}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
    }
}

struct PgBench {
    pgbench: PathBuf,
    psql: PathBuf,
    admin_url: String,
    url: String,
    log_dir: PathBuf,
}

impl PgBench {
    /// Creates and initialises the scratch database; None (with a message) when that is impossible.
    fn prepare(cfg: &Config, pg_url: &str, log_dir: &Path) -> Option<PgBench> {
        let (Some(pgbench), Some(psql)) = (find_tool("pgbench"), find_tool("psql")) else {
            println!(
                "pgbench/psql not found (PATH or /usr/lib/postgresql/*/bin): skipping the TPC-B comparison. \
                 Install postgresql-client (Debian) to get them."
            );
            return None;
        };
        let admin_url = pg_url.split('?').next().unwrap_or(pg_url).to_owned();
        let url = with_database(pg_url, PGBENCH_DB);
        let prep = || -> Result<(), String> {
            for sql in [format!("DROP DATABASE IF EXISTS {PGBENCH_DB}"), format!("CREATE DATABASE {PGBENCH_DB}")] {
                run_tool(Command::new(&psql).args([
                    "-X",
                    "-q",
                    "-v",
                    "ON_ERROR_STOP=1",
                    "-d",
                    &admin_url,
                    "-c",
                    &sql,
                ]))?;
            }
            let scale = cfg.pgbench_scale.to_string();
            run_tool(Command::new(&pgbench).args(["-i", "-q", "-s", &scale, &url]))?;
            Ok(())
        };
        match prep() {
            Ok(()) => Some(PgBench { pgbench, psql, admin_url, url, log_dir: log_dir.to_owned() }),
            Err(e) => {
                println!("could not prepare pgbench's database, skipping the TPC-B comparison: {e}");
                None
            }
        }
    }

    /// One TPC-B run (after a warm-up run), with per-transaction latencies from pgbench's log.
    fn run(&self, cfg: &Config, label: &str) -> Option<Row> {
        let clients = cfg.clients.to_string();
        let jobs = cfg.clients.min(2).to_string();
        if cfg.warmup > 0 {
            let t = cfg.warmup.to_string();
            if let Err(e) = run_tool(
                Command::new(&self.pgbench).args(["-c", &clients, "-j", &jobs, "-T", &t, "-M", "prepared", &self.url]),
            ) {
                println!("pgbench warm-up failed: {e}");
                return None;
            }
        }
        let prefix = self.log_dir.join(format!("pgbench_{label}"));
        let prefix_s = prefix.to_string_lossy().into_owned();
        let secs = cfg.secs.to_string();
        let cpu0 = cpu_now();
        let out = run_tool(Command::new(&self.pgbench).args([
            "-c",
            &clients,
            "-j",
            &jobs,
            "-T",
            &secs,
            "-M",
            "prepared",
            "-l",
            "--log-prefix",
            &prefix_s,
            &self.url,
        ]));
        let cpu = cpu_now() - cpu0;
        let out = match out {
            Ok(o) => o,
            Err(e) => {
                println!("pgbench failed: {e}");
                return None;
            }
        };
        let number_after = |key: &str| {
            out.lines()
                .find_map(|l| l.trim().strip_prefix(key))
                .and_then(|r| r.split_whitespace().next())
                .and_then(|v| v.parse::<f64>().ok())
        };
        let tps = number_after("tps = ")?;
        let mean_ms = number_after("latency average = ").unwrap_or(f64::NAN);
        let ok = number_after("number of transactions actually processed: ").unwrap_or(0.0) as usize;
        let errors = number_after("number of failed transactions: ").unwrap_or(0.0) as usize;
        // Log lines: client_id transaction_no latency_us script_no epoch_s epoch_us.
        let mut lat = Vec::new();
        if let Ok(dir) = std::fs::read_dir(&self.log_dir) {
            for e in dir.flatten() {
                if !e.file_name().to_string_lossy().starts_with(&format!("pgbench_{label}")) {
                    continue;
                }
                let text = std::fs::read_to_string(e.path()).unwrap_or_default();
                lat.extend(
                    text.lines().filter_map(|l| l.split_whitespace().nth(2)?.parse::<f64>().ok()).map(|us| us / 1e3),
                );
            }
        }
        lat.sort_by(f64::total_cmp);
        let n = lat.len().max(1) as f64;
        let row = Row {
            engine: "pgbench",
            scenario: format!("TPC-B, -c {clients} -j {jobs} -M prepared, scale {} ({label})", cfg.pgbench_scale),
            tps,
            p50_ms: percentile(&lat, 0.50),
            p99_ms: percentile(&lat, 0.99),
            mean_ms,
            ok,
            errors,
            app_us: cpu.children * 1e6 / n,
            pg_us: cpu.postgres * 1e6 / n,
            machine_busy_pct: 100.0 * cpu.machine_busy / cpu.machine_total.max(1e-9),
        };
        println!(
            "  {:<8} {:<52} {:>7.0} tx/s  p50 {:>6.2} ms  p99 {:>6.2} ms  errors {}  load {}",
            row.engine,
            row.scenario,
            row.tps,
            row.p50_ms,
            row.p99_ms,
            row.errors,
            loadavg()
        );
        Some(row)
    }

    fn drop_database(&self) {
        let sql = format!("DROP DATABASE IF EXISTS {PGBENCH_DB}");
        if let Err(e) = run_tool(Command::new(&self.psql).args(["-X", "-q", "-d", &self.admin_url, "-c", &sql])) {
            println!("could not drop {PGBENCH_DB}: {e}");
        }
    }
}

// ---------------------------------------------------------------------------------------------

async fn postgres(cfg: &Config, pg_url: &str, tmp: &Path, rows: &mut Vec<Row>) -> Option<f64> {
    let pool = match sqlx::PgPool::connect(pg_url).await {
        Ok(p) => p,
        Err(e) => {
            println!("PostgreSQL at {pg_url} is not reachable ({e}): skipping PostgreSQL");
            return None;
        }
    };
    let schema = format!("vt_bench_{}", uuid::Uuid::now_v7().simple());
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE SCHEMA {schema}")))
        .execute(&pool)
        .await
        .expect("create the benchmark schema");
    if let Ok(v) = sqlx::query_scalar::<_, String>("SELECT version()").fetch_one(&pool).await {
        println!("PostgreSQL: {v}");
    }
    for setting in ["synchronous_commit", "fsync", "shared_buffers", "max_connections"] {
        if let Ok(v) =
            sqlx::query_scalar::<_, String>(sqlx::AssertSqlSafe(format!("SHOW {setting}"))).fetch_one(&pool).await
        {
            println!("  {setting} = {v}");
        }
    }

    let bench = PgBench::prepare(cfg, pg_url, tmp);
    let mut pgbench_tps = Vec::new();
    if let Some(b) = &bench
        && let Some(r) = b.run(cfg, "before")
    {
        pgbench_tps.push(r.tps);
        rows.push(r);
    }

    let sep = if pg_url.contains('?') { '&' } else { '?' };
    let url = format!("{pg_url}{sep}options=-c%20search_path%3D{schema}");
    rows.extend(all_scenarios(cfg, "postgres", &url).await);

    if let Some(b) = &bench {
        if let Some(r) = b.run(cfg, "after") {
            pgbench_tps.push(r.tps);
            rows.push(r);
        }
        b.drop_database();
    }
    if let Err(e) = sqlx::raw_sql(sqlx::AssertSqlSafe(format!("DROP SCHEMA {schema} CASCADE"))).execute(&pool).await {
        println!("could not drop schema {schema}: {e}");
    }
    pool.close().await;
    (!pgbench_tps.is_empty()).then(|| pgbench_tps.iter().sum::<f64>() / pgbench_tps.len() as f64)
}

async fn run(cfg: Config) {
    let cpu_model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("model name").map(|m| m.trim_start_matches([' ', '\t', ':']).to_owned()))
        })
        .unwrap_or_else(|| "?".into());
    println!("vaxtrace stock ledger benchmark");
    println!(
        "machine: {} CPUs ({cpu_model}), load average {}; {} clients, {} s measured after {} s warm-up per scenario",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        loadavg(),
        cfg.clients,
        cfg.secs,
        cfg.warmup
    );
    let tmp = std::env::temp_dir().join(format!("vaxtrace-stock-bench-{}", std::process::id()));
    std::fs::create_dir_all(&tmp).expect("create the temp dir");
    let mut rows = Vec::new();
    let mut pgbench_tps = None;
    if let Some(pg_url) = &cfg.pg_url {
        println!("\nPostgreSQL ({pg_url})");
        pgbench_tps = postgres(&cfg, pg_url, &tmp, &mut rows).await;
    }
    if cfg.sqlite {
        let dir = tmp.join("sqlite");
        std::fs::create_dir_all(&dir).expect("create the SQLite dir");
        println!("\nSQLite (file database in {}, WAL)", dir.display());
        rows.extend(all_scenarios(&cfg, "sqlite", &format!("sqlite://{}/bench.db", dir.display())).await);
    }
    if let Err(e) = std::fs::remove_dir_all(&tmp) {
        println!("could not remove {}: {e}", tmp.display());
    }

    print_table(&rows, pgbench_tps);
    let Some(pg) = pgbench_tps else {
        println!("no pgbench figure: no ratio");
        return;
    };
    println!("pgbench TPC-B: {pg:.0} tx/s (mean of the runs before and after vaxtrace)");
    let best = rows
        .iter()
        .filter(|r| r.engine == "postgres" && r.scenario.starts_with("independent"))
        .max_by(|a, b| a.tps.total_cmp(&b.tps));
    if let Some(b) = best {
        let ratio = b.tps / pg;
        println!(
            "vaxtrace on PostgreSQL, independent lots, best channel setup: {:.0} tx/s = {:.0} % of pgbench (target ≥ 60 %: {}), p99 {:.2} ms (target < 15 ms: {})",
            b.tps,
            100.0 * ratio,
            if ratio >= 0.6 { "met" } else { "NOT met" },
            b.p99_ms,
            if b.p99_ms < 15.0 { "met" } else { "NOT met" }
        );
    }
}
