//! Dashboard server time on PostgreSQL with a district's history: 100 cold-chain points, one
//! fridge and logger each, 30 days of one-minute readings per fridge (4.3 million rows, with their
//! hourly rollups), a few open breaches. A signed-in district officer's browser is imitated over
//! HTTP on loopback; each page is fetched `VAXTRACE_BENCH_ROUNDS` times after a warm-up and the
//! time to the last byte is reported (p50, p95, max) with the page size. Target: under 300 ms.
//!
//! ```sh
//! VAXTRACE_BENCH_POSTGRES_URL=postgres://postgres@127.0.0.1:5432/test \
//!   cargo bench -p vaxtrace-tests --bench dashboard_bench
//! ```
//!
//! Environment: `VAXTRACE_BENCH_POSTGRES_URL` (default as above), `VAXTRACE_BENCH_FACILITIES`
//! (100), `VAXTRACE_BENCH_DAYS` (30), `VAXTRACE_BENCH_ROUNDS` (30). Run as a test target
//! (`cargo test --benches`) it only prints a note.
#![allow(clippy::unwrap_used, clippy::print_stdout)]

use std::time::Instant;

use chrono::{Duration, Utc};
use vaxtrace_proto::v1 as pb;
use vaxtrace_proto::v1::facility_service_client::FacilityServiceClient;
use vaxtrace_tests::web::Web;
use vaxtrace_tests::world::{register_logger, send_readings, token};
use vaxtrace_tests::{TestDb, TestServer, authed};

fn env(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        println!("dashboard_bench: run with `cargo bench -p vaxtrace-tests --bench dashboard_bench`");
        return;
    }
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    rt.block_on(run());
}

async fn run() {
    let url = std::env::var("VAXTRACE_BENCH_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned());
    let facilities = env("VAXTRACE_BENCH_FACILITIES", 100);
    let days = env("VAXTRACE_BENCH_DAYS", 30) as i64;
    let rounds = env("VAXTRACE_BENCH_ROUNDS", 30);
    let srv = TestServer::start(TestDb::Postgres(url)).await;
    let tok = srv.admin_token.clone();
    let mut fac = FacilityServiceClient::new(srv.channel().await);
    let mut mk = async |parent: &str, kind: pb::FacilityKind, code: String| {
        let f = pb::Facility {
            parent_id: parent.into(),
            kind: kind as i32,
            name: code.clone(),
            code,
            ..Default::default()
        };
        let r = pb::CreateFacilityRequest { facility: Some(f), request_id: String::new() };
        fac.create_facility(authed(&tok, r)).await.unwrap().into_inner().id
    };
    let n = mk("", pb::FacilityKind::NationalStore, "N".into()).await;
    let st = mk(&n, pb::FacilityKind::StateStore, "ST".into()).await;
    let d = mk(&st, pb::FacilityKind::DistrictStore, "D".into()).await;
    let mut points = Vec::new();
    for i in 0..facilities {
        points.push(mk(&d, pb::FacilityKind::ColdChainPoint, format!("CCP-{i:03}")).await);
    }
    let mut fac = FacilityServiceClient::new(srv.channel().await);
    let mut loggers = Vec::new();
    for p in &points {
        let u = pb::StorageUnit {
            facility_id: p.clone(),
            kind: 1,
            name: "ILR".into(),
            temperature_profile: 1,
            ..Default::default()
        };
        let r = pb::CreateStorageUnitRequest { storage_unit: Some(u), request_id: String::new() };
        let unit = fac.create_storage_unit(authed(&tok, r)).await.unwrap().into_inner().id;
        loggers.push(register_logger(&srv, &tok, p, &unit, 60).await);
    }

    // The history, written straight into the tables (the ingest path has its own benchmark).
    let pool = sqlx::PgPool::connect(&srv.database_url).await.unwrap();
    let minutes = days * 24 * 60;
    let t = Instant::now();
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "INSERT INTO readings (device_id, seq, probe, storage_unit_id, time, temp_c, sensor_fault, received_at, verified) \
         SELECT p.device_id, g, 0, p.storage_unit_id, date_trunc('minute', now()) - ({minutes} - g) * interval '1 minute', \
                5 + 1.5 * sin(g / 90.0) + random() * 0.3, false, now(), true \
         FROM device_probes p CROSS JOIN generate_series(1, {minutes}) g; \
         INSERT INTO reading_rollups (storage_unit_id, hour, min_c, max_c, sum_c, count) \
         SELECT storage_unit_id, CAST(floor(date_part('epoch', time) / 3600) AS BIGINT) * 3600, \
                MIN(temp_c), MAX(temp_c), SUM(temp_c), COUNT(*) FROM readings GROUP BY 1, 2 \
         ON CONFLICT (storage_unit_id, hour) DO NOTHING; \
         UPDATE devices SET last_seq = {minutes}; ANALYZE;"
    )))
    .execute(&pool)
    .await
    .unwrap();
    let rows: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM readings").fetch_one(&pool).await.unwrap();
    println!(
        "seeded {rows} readings for {facilities} facilities over {days} days in {:.0} s",
        t.elapsed().as_secs_f64()
    );
    // A few fridges warm up now: open excursions show on the overview.
    for (dev, key) in loggers.iter().take(5) {
        send_readings(&srv, dev, key, &[(minutes as u64 + 1, Utc::now() - Duration::seconds(30), 9.2)]).await;
    }

    let dio = token(&srv, &tok, pb::Role::DistrictOfficer, &d).await;
    let mut web = Web::new(srv.addr);
    web.sign_in(&dio).await;
    let pages = [
        ("overview", "/dash".to_owned()),
        ("alerts", "/dash/alerts".to_owned()),
        ("facility 24 h", format!("/dash/facilities/{}?range=24h", points[0])),
        ("facility 7 d", format!("/dash/facilities/{}?range=7d", points[0])),
        ("facility 30 d", format!("/dash/facilities/{}?range=30d", points[0])),
        ("reports (stock)", "/dash/reports".to_owned()),
    ];
    println!("{:<18} {:>9} {:>9} {:>9} {:>10}", "page", "p50 ms", "p95 ms", "max ms", "size KB");
    for (label, path) in &pages {
        for _ in 0..3 {
            assert_eq!(web.get(path).await.status, 200, "{label}");
        }
        let mut times = Vec::new();
        let mut size = 0;
        for _ in 0..rounds {
            let t = Instant::now();
            let p = web.get(path).await;
            times.push(t.elapsed().as_secs_f64() * 1000.0);
            assert_eq!(p.status, 200, "{label}");
            size = p.body.len();
        }
        times.sort_by(f64::total_cmp);
        let at = |q: f64| times[((times.len() as f64 - 1.0) * q).round() as usize];
        println!("{label:<18} {:>9.1} {:>9.1} {:>9.1} {:>10.1}", at(0.5), at(0.95), at(1.0), size as f64 / 1024.0);
    }
    let schema: String = sqlx::query_scalar("SELECT current_schema()").fetch_one(&pool).await.unwrap();
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!("DROP SCHEMA {schema} CASCADE"))).execute(&pool).await.unwrap();
    srv.stop().await;
}
