//! Onboarding import rate: the issue's national country (10,000 facilities with their storage
//! units, 20 products, 2,000 lots with opening balances, 1,000 policies, 5,000 loggers with
//! their probes, 201 tokens: 35,442 CSV rows) imported into an empty database, on a SQLite file
//! (WAL, as shipped) and on PostgreSQL; then the same files again (nothing to write) and an
//! export. Results go to stdout; BENCHMARKS.md records a run.
//!
//! ```sh
//! CARGO_TARGET_DIR=/tmp/target-bench cargo bench -p vaxtrace-tests --bench onboarding_bench
//! ```
//!
//! Environment: `VAXTRACE_BENCH_POSTGRES_URL` (default `postgres://postgres@127.0.0.1:5432/test`,
//! empty = skip PostgreSQL), `VAXTRACE_BENCH_ENGINES` (default `sqlite,postgres`),
//! `VAXTRACE_BENCH_RUNS` (3 fresh databases per engine; the median run is reported).
//!
//! Run as a test target (`cargo test --benches`, no `--bench` argument) it only prints a note.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use vaxtrace_server::onboard::{self, ImportOptions, NoProgress, Progress};
use vaxtrace_tests::country::{Country, Size};

/// Records how long each write stage took.
#[derive(Debug, Default)]
struct Stages(Mutex<Vec<(String, u64, Duration)>>, Mutex<Option<(String, u64, Instant)>>);

impl Progress for Stages {
    fn start(&self, stage: &str, _total: u64) {
        self.finish();
        *self.1.lock().unwrap_or_else(|p| p.into_inner()) = Some((stage.to_owned(), 0, Instant::now()));
    }
    fn advance(&self, n: u64) {
        if let Some(s) = self.1.lock().unwrap_or_else(|p| p.into_inner()).as_mut() {
            s.1 += n;
        }
    }
    fn finish(&self) {
        if let Some((name, n, t)) = self.1.lock().unwrap_or_else(|p| p.into_inner()).take() {
            self.0.lock().unwrap_or_else(|p| p.into_inner()).push((name, n, t.elapsed()));
        }
    }
}

#[derive(Debug, Clone)]
struct Run {
    total: Duration,
    validate: Duration,
    write: Duration,
    again: Duration,
    export: Duration,
    stages: Vec<(String, u64, Duration)>,
}

fn rate(rows: usize, d: Duration) -> f64 {
    rows as f64 / d.as_secs_f64()
}

async fn one_run(url: &str, files: &[onboard::SourceFile], rows: usize) -> Run {
    let app = vaxtrace_server::open(url).await.expect("open the benchmark database");
    let stages = Stages::default();
    let t = Instant::now();
    let out = app.import_files(files, &ImportOptions::default(), false, &stages).await.expect("import");
    let total = t.elapsed();
    assert!(out.problems.is_empty() && out.written, "the generated country imports: {:?}", out.problems.first());
    let t = Instant::now();
    let again = app.import_files(files, &ImportOptions::default(), false, &NoProgress).await.expect("import again");
    let again_time = t.elapsed();
    assert!(!again.written && again.summary.new_rows() == 0, "a second import writes nothing");
    let t = Instant::now();
    let exported = app.export_files(Default::default()).await.expect("export");
    let export = t.elapsed();
    let exported_rows: usize = exported.iter().map(|f| f.rows).sum();
    assert_eq!(exported_rows, rows, "the export holds every imported row");
    let stages = std::mem::take(&mut *stages.0.lock().unwrap_or_else(|p| p.into_inner()));
    Run { total, validate: out.validate_time, write: out.write_time, again: again_time, export, stages }
}

async fn engine(name: &str, urls: impl Fn(usize) -> std::pin::Pin<Box<dyn Future<Output = String>>>, runs: usize) {
    let country = Country::generate(Size::NATIONAL);
    let rows = country.len();
    let dir = tempfile::tempdir().expect("tempdir");
    country.write(dir.path()).expect("write the country");
    let files = onboard::read_dir(dir.path()).expect("read the country");
    let mut results = Vec::new();
    for i in 0..runs {
        let url = urls(i).await;
        let r = one_run(&url, &files, rows).await;
        println!(
            "{name} run {}: import {:.2} s ({:.0} rows/s; validation {:.2} s, one write transaction {:.2} s = {:.0} rows/s), \
             again {:.2} s, export {:.2} s",
            i + 1,
            r.total.as_secs_f64(),
            rate(rows, r.total),
            r.validate.as_secs_f64(),
            r.write.as_secs_f64(),
            rate(rows, r.write),
            r.again.as_secs_f64(),
            r.export.as_secs_f64()
        );
        results.push(r);
    }
    results.sort_by_key(|r| r.total);
    let Some(m) = results.get(results.len() / 2) else { return };
    println!("\n{name}: median of {runs} runs, {rows} CSV rows");
    println!("| stage | rows | seconds | rows/s |");
    println!("|---|---:|---:|---:|");
    for (stage, n, d) in &m.stages {
        println!("| {stage} | {n} | {:.3} | {:.0} |", d.as_secs_f64(), *n as f64 / d.as_secs_f64().max(1e-9));
    }
    println!(
        "| validation (parse + database snapshot + checks) | {rows} | {:.3} | {:.0} |",
        m.validate.as_secs_f64(),
        rate(rows, m.validate)
    );
    println!("| write transaction | {rows} | {:.3} | {:.0} |", m.write.as_secs_f64(), rate(rows, m.write));
    println!("| **whole import** | {rows} | {:.3} | **{:.0}** |", m.total.as_secs_f64(), rate(rows, m.total));
    println!(
        "| second import (nothing to write) | {rows} | {:.3} | {:.0} |",
        m.again.as_secs_f64(),
        rate(rows, m.again)
    );
    println!("| export | {rows} | {:.3} | {:.0} |\n", m.export.as_secs_f64(), rate(rows, m.export));
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        println!("onboarding_bench: not run as a test; use `cargo bench -p vaxtrace-tests --bench onboarding_bench`");
        return;
    }
    let engines = std::env::var("VAXTRACE_BENCH_ENGINES").unwrap_or_else(|_| "sqlite,postgres".into());
    let runs: usize = std::env::var("VAXTRACE_BENCH_RUNS").ok().and_then(|v| v.parse().ok()).unwrap_or(3).max(1);
    let pg_url = std::env::var("VAXTRACE_BENCH_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("tokio runtime");
    rt.block_on(async {
        println!(
            "vaxtrace onboarding benchmark: {} CPUs, load average {}",
            std::thread::available_parallelism().map_or(0, |n| n.get()),
            std::fs::read_to_string("/proc/loadavg")
                .unwrap_or_default()
                .split(' ')
                .take(3)
                .collect::<Vec<_>>()
                .join(" ")
        );
        if engines.contains("sqlite") {
            let dir = tempfile::tempdir().expect("tempdir");
            let base = dir.path().to_owned();
            engine(
                "sqlite",
                move |i| {
                    let url = format!("sqlite://{}/bench-{i}.db", base.display());
                    Box::pin(async move { url })
                },
                runs,
            )
            .await;
        }
        if engines.contains("postgres") && !pg_url.is_empty() {
            let pool = match sqlx::PgPool::connect(&pg_url).await {
                Ok(p) => p,
                Err(e) => {
                    println!("PostgreSQL at {pg_url} is not reachable ({e}): skipping PostgreSQL");
                    return;
                }
            };
            if let Ok(v) = sqlx::query_scalar::<_, String>("SELECT version()").fetch_one(&pool).await {
                println!("PostgreSQL: {v}");
            }
            let schemas: Vec<String> =
                (0..runs).map(|_| format!("vt_bench_{}", uuid::Uuid::now_v7().simple())).collect();
            for s in &schemas {
                sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE SCHEMA {s}"))).execute(&pool).await.expect("schema");
            }
            let sep = if pg_url.contains('?') { '&' } else { '?' };
            let urls: Vec<String> =
                schemas.iter().map(|s| format!("{pg_url}{sep}options=-c%20search_path%3D{s}")).collect();
            engine(
                "postgres",
                move |i| {
                    let url = urls.get(i).cloned().unwrap_or_default();
                    Box::pin(async move { url })
                },
                runs,
            )
            .await;
            for s in &schemas {
                if let Err(e) =
                    sqlx::raw_sql(sqlx::AssertSqlSafe(format!("DROP SCHEMA {s} CASCADE"))).execute(&pool).await
                {
                    println!("could not drop schema {s}: {e}");
                }
            }
        }
    });
}
