//! Property test through the server's ingest use case: for random temperature histories of one
//! fridge (breaches of random length, gaps, power cuts), the alerts the server raises — kind,
//! severity, start, end — are the same whether the readings arrive in order, in shuffled batches
//! or with batches sent twice (alerts a replay withdrew as SUPERSEDED are no longer alerts; that
//! they are withdrawn is part of the property). Each case runs on fresh in-memory SQLite servers; one fixed case
//! also runs on PostgreSQL when configured.
#![allow(clippy::unwrap_used)]

use chrono::{Duration, Utc};
use proptest::prelude::*;
use vaxtrace_proto::signing::encode_signed;
use vaxtrace_proto::v1 as pb;
use vaxtrace_proto::v1::alert_service_client::AlertServiceClient;
use vaxtrace_tests::world::{register_logger, world};
use vaxtrace_tests::{TestDb, TestServer, authed};

/// (minutes after the start, °C or None for a sensor fault, mains power).
type Sample = (i64, Option<f64>, bool);

/// (kind, severity, start, end, condition still active) of every alert, sorted.
type AlertKey = (i32, i32, i64, Option<i64>, bool);

/// How the readings are delivered.
#[derive(Debug, Clone)]
enum Delivery {
    InOrder,
    /// Batches of this size, sent in this order (a permutation of the batch indexes).
    Shuffled(usize, Vec<usize>),
    /// Every batch sent twice, the second round in reverse.
    Twice(usize),
}

async fn alerts_after(db: TestDb, t0: chrono::DateTime<Utc>, samples: &[Sample], delivery: &Delivery) -> Vec<AlertKey> {
    let srv = TestServer::start(db).await;
    let w = world(&srv).await;
    let (id, key) = register_logger(&srv, &w.tok, &w.c, &w.cu, 600).await;
    let readings: Vec<pb::Reading> = samples
        .iter()
        .enumerate()
        .map(|(i, (minute, temp, power))| pb::Reading {
            seq: i as u64 + 1,
            time: Some(prost_types::Timestamp { seconds: (t0 + Duration::minutes(*minute)).timestamp(), nanos: 0 }),
            temp_c: temp.unwrap_or(0.0),
            sensor_fault: temp.is_none().then_some(true),
            power_on: Some(*power),
            ..Default::default()
        })
        .collect();
    let batches: Vec<Vec<pb::Reading>> = match delivery {
        Delivery::InOrder => vec![readings],
        Delivery::Shuffled(size, order) => {
            let chunks: Vec<Vec<pb::Reading>> = readings.chunks(*size).map(<[pb::Reading]>::to_vec).collect();
            order.iter().filter_map(|i| chunks.get(*i).cloned()).collect()
        }
        Delivery::Twice(size) => {
            let chunks: Vec<Vec<pb::Reading>> = readings.chunks(*size).map(<[pb::Reading]>::to_vec).collect();
            chunks.iter().cloned().chain(chunks.iter().rev().cloned()).collect()
        }
    };
    for b in batches {
        let batch = pb::ReadingBatch { device_id: id.clone(), readings: b, ..Default::default() };
        let ack = srv.app.ingest(&id, &encode_signed(&batch, Some(&key)).unwrap(), false).await.unwrap();
        assert_eq!(ack.error, "");
    }
    let mut alerts = AlertServiceClient::new(srv.channel().await);
    let req = pb::ListAlertsRequest { page_size: 1000, ..Default::default() };
    let mut got: Vec<AlertKey> = alerts
        .list_alerts(authed(&w.tok, req))
        .await
        .unwrap()
        .into_inner()
        .alerts
        .into_iter()
        // Withdrawn by the server when late data disproved them: not alerts any more.
        .filter(|a| a.resolution.as_ref().is_none_or(|r| r.resolution != pb::AlertResolution::Superseded as i32))
        .map(|a| {
            (
                a.kind,
                a.severity,
                a.start_time.map_or(0, |t| t.seconds),
                a.end_time.map(|t| t.seconds),
                a.condition_active,
            )
        })
        .collect();
    got.sort_unstable();
    srv.stop().await;
    got
}

/// A fridge's history: runs of readings every 10 minutes at one temperature, with occasional
/// gaps (longer than the 30-minute no-data limit) and power cuts.
fn history() -> impl Strategy<Value = Vec<Sample>> {
    let run = (
        prop_oneof![Just(Some(5.0)), Just(Some(9.5)), Just(Some(-1.0)), Just(Some(1.5)), Just(None)],
        1usize..80,
        prop_oneof![4 => Just(0i64), 1 => 40i64..200],
        prop_oneof![5 => Just(true), 1 => Just(false)],
    );
    proptest::collection::vec(run, 1..8).prop_map(|runs| {
        let mut out = Vec::new();
        let mut minute = 0;
        for (temp, len, gap, power) in runs {
            minute += gap;
            for _ in 0..len {
                out.push((minute, temp, power));
                minute += 10;
            }
        }
        out
    })
}

fn delivery(n: usize) -> impl Strategy<Value = Delivery> {
    let size = 1usize..20;
    prop_oneof![
        size.clone().prop_flat_map(move |s| {
            let count = n.div_ceil(s).max(1);
            Just((0..count).collect::<Vec<_>>()).prop_shuffle().prop_map(move |o| Delivery::Shuffled(s, o))
        }),
        size.prop_map(Delivery::Twice),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, failure_persistence: None, max_shrink_iters: 0, ..ProptestConfig::default() })]
    #[test]
    fn alerts_do_not_depend_on_arrival_order((samples, how) in history().prop_flat_map(|h| {
        let n = h.len();
        (Just(h), delivery(n))
    })) {
        let rt = tokio::runtime::Runtime::new().unwrap();
        let t0 = Utc::now() - Duration::days(3);
        let (in_order, other) = rt.block_on(async {
            (alerts_after(TestDb::Sqlite, t0, &samples, &Delivery::InOrder).await, alerts_after(TestDb::Sqlite, t0, &samples, &how).await)
        });
        prop_assert_eq!(&in_order, &other, "samples {:?} delivered {:?}", samples, how);
    }
}

/// One fixed history with every kind of event, on every engine, shuffled against in order.
#[tokio::test]
async fn a_mixed_history_gives_the_same_alerts_shuffled_on_every_engine() {
    let mut samples: Vec<Sample> = Vec::new();
    let mut minute = 0;
    for (temp, len, gap, power) in [
        (Some(5.0), 10, 0, true),
        (Some(9.5), 70, 0, true),
        (Some(5.0), 5, 0, true),
        (Some(-1.0), 8, 60, false),
        (None, 3, 0, true),
        (Some(4.0), 6, 0, true),
    ] {
        minute += gap;
        for _ in 0..len {
            samples.push((minute, temp, power));
            minute += 10;
        }
    }
    let n = samples.len().div_ceil(7);
    let order: Vec<usize> = (0..n).rev().collect();
    let t0 = Utc::now() - Duration::days(3);
    for db in TestDb::all() {
        let in_order = alerts_after(db.clone(), t0, &samples, &Delivery::InOrder).await;
        assert!(
            in_order.iter().any(|a| a.0 == pb::AlertKind::Heat as i32),
            "the history holds a heat alarm: {in_order:?}"
        );
        assert!(in_order.iter().any(|a| a.0 == pb::AlertKind::Freeze as i32), "and a freeze alarm: {in_order:?}");
        let shuffled = alerts_after(db.clone(), t0, &samples, &Delivery::Shuffled(7, order.clone())).await;
        assert_eq!(in_order, shuffled, "{db:?}");
        let twice = alerts_after(db, t0, &samples, &Delivery::Twice(5)).await;
        assert_eq!(in_order, twice);
    }
}

/// Readings committed by a server that died before evaluating them (here: written through the
/// store alone, as the ingest transaction writes them) are still evaluated: the readings' own
/// transaction leaves a mark that the periodic sweep picks up. The gap they fill was only a gap
/// in arrival, so the alerts seen from it are withdrawn and one excursion stands from the first
/// warm reading.
#[tokio::test]
async fn readings_committed_before_a_crash_are_evaluated_by_the_sweep() {
    for db in TestDb::all() {
        let dir = tempfile::tempdir().unwrap();
        let srv = TestServer::start_reachable(db, dir.path()).await;
        let w = world(&srv).await;
        let (dev, key) = register_logger(&srv, &w.tok, &w.c, &w.cu, 60).await;
        let t0 = Utc::now() - Duration::hours(3);
        let at = |i: i64| t0 + Duration::minutes(i);
        // 9 °C throughout; seqs 11..=39 arrive only "during the crash".
        let early: Vec<_> = (1..=10).map(|i| (i as u64, at(i), 9.0)).collect();
        let late: Vec<_> = (40..=50).map(|i| (i as u64, at(i), 9.0)).collect();
        vaxtrace_tests::world::send_readings(&srv, &dev, &key, &early).await;
        vaxtrace_tests::world::send_readings(&srv, &dev, &key, &late).await;
        let standing = async || {
            let mut v: Vec<(i32, i64)> =
                standing_alerts(&srv, &w.tok).await.iter().map(|a| (a.kind, a.start_time.unwrap().seconds)).collect();
            v.sort_unstable();
            v
        };
        let excursion = pb::AlertKind::Excursion as i32;
        let seen = standing().await;
        assert!(
            seen.contains(&(excursion, at(40).timestamp())),
            "{}: the gap split the excursion before the fill: {seen:?}",
            srv.db.name()
        );

        // The crash: the fill is committed, its evaluation never runs.
        let device = srv.app.store().get_device(&dev).await.unwrap().unwrap().0;
        let fill: Vec<_> = (11..=39)
            .map(|i| vaxtrace_server::domain::telemetry::StoredReading {
                seq: i,
                probe: 0,
                storage_unit_id: w.cu.clone(),
                time: at(i),
                temp_c: Some(9.0),
                power_on: None,
                battery_pct: None,
                door_open: None,
                sensor_fault: false,
                verified: true,
            })
            .collect();
        let stored = srv.app.store().store_readings(&dev, device.key_version, &fill, &[], Utc::now()).await.unwrap();
        assert_eq!(stored.map(|(acked, _)| acked), Some(50), "{}", srv.db.name());
        assert_eq!(standing().await, seen, "{}: nothing evaluated the fill yet", srv.db.name());

        // The sweep after the restart.
        let n = srv.app.evaluate_unevaluated(Utc::now() + Duration::seconds(1)).await.unwrap();
        assert_eq!(n, 1, "{}", srv.db.name());
        assert_eq!(
            standing().await,
            vec![(excursion, at(1).timestamp())],
            "{}: one excursion from the first warm reading",
            srv.db.name()
        );
        // Nothing left to evaluate.
        assert_eq!(srv.app.evaluate_unevaluated(Utc::now() + Duration::seconds(1)).await.unwrap(), 0);
        srv.stop().await;
    }
}

/// A server killed after its evaluation wrote alerts but before it saved the rules' state (the
/// state write fails here, by a trigger: the same database afterwards): the alerts came from a
/// view with a gap that was only a batch in flight at another replica. When that batch is
/// evaluated, the probe is replayed from the first reading and the split is withdrawn, instead of
/// resuming from the old state that knows nothing of those alerts.
#[tokio::test]
async fn alerts_written_by_an_evaluation_that_never_saved_its_state_are_reconciled() {
    for db in TestDb::all() {
        let dir = tempfile::tempdir().unwrap();
        let srv = TestServer::start_reachable(db, dir.path()).await;
        let name = srv.db.name();
        let w = world(&srv).await;
        let (dev, key) = register_logger(&srv, &w.tok, &w.c, &w.cu, 60).await;
        let t0 = Utc::now() - Duration::hours(3);
        let at = |i: i64| t0 + Duration::minutes(i);
        let warm = |r: std::ops::RangeInclusive<i64>| r.map(|i| (i as u64, at(i), 9.0)).collect::<Vec<_>>();
        vaxtrace_tests::world::send_readings(&srv, &dev, &key, &warm(1..=10)).await;

        let (block, unblock) = match &srv.db {
            TestDb::Sqlite => (
                "CREATE TRIGGER vt_crash_i BEFORE INSERT ON probe_alarm_state BEGIN SELECT RAISE(ABORT, 'killed'); END; \
                 CREATE TRIGGER vt_crash_u BEFORE UPDATE ON probe_alarm_state BEGIN SELECT RAISE(ABORT, 'killed'); END;",
                "DROP TRIGGER vt_crash_i; DROP TRIGGER vt_crash_u;",
            ),
            TestDb::Postgres(_) => (
                "CREATE FUNCTION vt_crash() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RAISE EXCEPTION 'killed'; END $$; \
                 CREATE TRIGGER vt_crash BEFORE INSERT OR UPDATE ON probe_alarm_state FOR EACH ROW EXECUTE FUNCTION vt_crash();",
                "DROP TRIGGER vt_crash ON probe_alarm_state;",
            ),
        };
        srv.exec_sql(block).await;
        // Seqs 11..=39 are "at the other replica": this evaluation sees a 30-minute gap.
        vaxtrace_tests::world::send_readings(&srv, &dev, &key, &warm(40..=50)).await;
        let excursions = async || {
            let mut v: Vec<(i64, Option<i64>, bool)> = standing_alerts(&srv, &w.tok)
                .await
                .iter()
                .filter(|a| a.kind == pb::AlertKind::Excursion as i32)
                .map(|a| (a.start_time.unwrap().seconds, a.end_time.map(|t| t.seconds), a.condition_active))
                .collect();
            v.sort_unstable();
            v
        };
        assert_eq!(
            excursions().await,
            vec![(at(1).timestamp(), Some(at(40).timestamp()), false), (at(40).timestamp(), None, true)],
            "{name}: the crashed evaluation wrote the split excursion"
        );

        // The restart; the other replica's batch arrives.
        srv.exec_sql(unblock).await;
        vaxtrace_tests::world::send_readings(&srv, &dev, &key, &warm(11..=39)).await;
        assert_eq!(
            excursions().await,
            vec![(at(1).timestamp(), None, true)],
            "{name}: one excursion, still going, from the first warm reading"
        );
        srv.stop().await;
    }
}

/// The alerts that stand: all but those a replay withdrew (SUPERSEDED).
async fn standing_alerts(srv: &TestServer, tok: &str) -> Vec<pb::Alert> {
    let mut alerts = AlertServiceClient::new(srv.channel().await);
    let all = alerts
        .list_alerts(authed(tok, pb::ListAlertsRequest { page_size: 1000, ..Default::default() }))
        .await
        .unwrap()
        .into_inner()
        .alerts;
    let superseded = pb::AlertResolution::Superseded as i32;
    all.into_iter().filter(|a| a.resolution.as_ref().is_none_or(|r| r.resolution != superseded)).collect()
}
