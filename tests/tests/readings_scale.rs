//! Readings at scale on both engines: hourly rollups kept with the readings answer QueryReadings
//! for whole hours with the same figures the raw readings give; a seq re-sent with another time
//! is still stored once (PostgreSQL's partitioned key holds the time); retention deletes old raw
//! readings (whole monthly partitions on PostgreSQL) while the rollups keep the long view.
#![allow(clippy::unwrap_used)]

use chrono::{DateTime, Duration, Utc};
use vaxtrace_proto::signing::encode_signed;
use vaxtrace_proto::v1 as pb;
use vaxtrace_proto::v1::telemetry_service_client::TelemetryServiceClient;
use vaxtrace_tests::world::{register_logger, world};
use vaxtrace_tests::{TestDb, TestServer, authed};

fn ts(t: DateTime<Utc>) -> prost_types::Timestamp {
    prost_types::Timestamp { seconds: t.timestamp(), nanos: 0 }
}

/// The start of the hour containing `t`.
fn hour_of(t: DateTime<Utc>) -> DateTime<Utc> {
    DateTime::from_timestamp(t.timestamp().div_euclid(3600) * 3600, 0).unwrap()
}

#[tokio::test]
async fn rollups_dedup_and_retention() {
    for db in TestDb::all() {
        let srv = TestServer::start(db).await;
        let name = srv.db.name().to_owned();
        let w = world(&srv).await;
        let tok = w.tok.clone();
        let mut tel = TelemetryServiceClient::new(srv.channel().await);
        let (id, key) = register_logger(&srv, &tok, &w.c, &w.cu, 600).await;
        let now = Utc::now();
        let old = hour_of(now - Duration::days(100));
        let recent = hour_of(now - Duration::hours(4));
        // Monthly partitions around the old readings exist before they arrive (PostgreSQL).
        srv.app.store().maintain_readings(old, None).await.unwrap();

        // Three hours of readings every 10 minutes, twice: 100 days ago and 4 hours ago.
        let temp = |i: i64| 3.0 + (i % 7) as f64 * 0.5;
        let series = |start: DateTime<Utc>, first_seq: u64| -> Vec<pb::Reading> {
            (0..18)
                .map(|i| pb::Reading {
                    seq: first_seq + i as u64,
                    time: Some(ts(start + Duration::minutes(10 * i))),
                    temp_c: temp(i),
                    ..Default::default()
                })
                .collect()
        };
        let send = |readings: Vec<pb::Reading>| {
            let batch = pb::ReadingBatch { device_id: id.clone(), readings, ..Default::default() };
            let bytes = encode_signed(&batch, Some(&key)).unwrap();
            let app = srv.app.clone();
            let id = id.clone();
            async move { app.ingest(&id, &bytes, false).await.unwrap() }
        };
        assert_eq!(send(series(old, 1)).await.acked_seq, 18, "{name}");
        assert_eq!(send(series(recent, 19)).await.acked_seq, 36, "{name}");

        let expected: Vec<(i64, f64, f64, f64, i64)> = (0..3)
            .map(|h| {
                let v: Vec<f64> = (6 * h..6 * h + 6).map(temp).collect();
                let lo = v.iter().copied().fold(f64::INFINITY, f64::min);
                let hi = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                ((old + Duration::hours(h)).timestamp(), lo, v.iter().sum::<f64>() / 6.0, hi, 6)
            })
            .collect();
        let query = |start: DateTime<Utc>, hours: i64| pb::QueryReadingsRequest {
            storage_unit_id: w.cu.clone(),
            start_time: Some(ts(start)),
            end_time: Some(ts(start + Duration::hours(hours))),
            bucket: Some(prost_types::Duration { seconds: 3600, nanos: 0 }),
        };
        let buckets = |resp: pb::QueryReadingsResponse| -> Vec<(i64, f64, f64, f64, i64)> {
            resp.buckets
                .into_iter()
                .map(|b| {
                    let r = |x: f64| (x * 1000.0).round() / 1000.0;
                    (b.start_time.unwrap().seconds, r(b.min_temp_c), r(b.mean_temp_c), r(b.max_temp_c), b.count)
                })
                .collect()
        };
        let round = |v: Vec<(i64, f64, f64, f64, i64)>| {
            v.into_iter()
                .map(|(t, a, b, c, n)| {
                    (t, (a * 1000.0).round() / 1000.0, (b * 1000.0).round() / 1000.0, (c * 1000.0).round() / 1000.0, n)
                })
                .collect::<Vec<_>>()
        };
        // Whole hours: served from the rollups.
        let hourly = buckets(tel.query_readings(authed(&tok, query(old, 3))).await.unwrap().into_inner());
        assert_eq!(hourly, round(expected.clone()), "{name}: rollups give the raw figures");
        // A range off the hour is computed from the raw readings: the same buckets.
        let mut raw_query = query(old, 3);
        raw_query.end_time = Some(ts(old + Duration::hours(3) - Duration::seconds(1)));
        let raw = buckets(tel.query_readings(authed(&tok, raw_query)).await.unwrap().into_inner());
        assert_eq!(raw, hourly, "{name}: raw and rolled-up paths agree");

        // A seq re-sent with another time is the same reading: stored and rolled up once.
        let mut again = series(old, 1);
        for r in &mut again {
            r.time = r.time.map(|t| prost_types::Timestamp { seconds: t.seconds + 60, nanos: 0 });
        }
        assert_eq!(send(again).await.acked_seq, 36, "{name}");
        assert_eq!(srv.app.store().count_readings(&id).await.unwrap(), (36, 1, 36), "{name}");
        let hourly_again = buckets(tel.query_readings(authed(&tok, query(old, 3))).await.unwrap().into_inner());
        assert_eq!(hourly_again, hourly, "{name}: rollups unchanged");

        // Retention of 30 days: the old raw readings go, the recent stay, the rollups remain.
        srv.app.store().maintain_readings(now, Some(now - Duration::days(30))).await.unwrap();
        assert_eq!(srv.app.store().count_readings(&id).await.unwrap(), (18, 19, 36), "{name}");
        let list = pb::ListReadingsRequest {
            storage_unit_id: w.cu.clone(),
            start_time: Some(ts(old - Duration::days(1))),
            end_time: Some(ts(old + Duration::days(1))),
            ..Default::default()
        };
        assert!(tel.list_readings(authed(&tok, list)).await.unwrap().into_inner().readings.is_empty(), "{name}");
        let kept = buckets(tel.query_readings(authed(&tok, query(old, 3))).await.unwrap().into_inner());
        assert_eq!(kept, hourly, "{name}: the long view survives retention");
        let recent_view = buckets(tel.query_readings(authed(&tok, query(recent, 3))).await.unwrap().into_inner());
        assert_eq!(recent_view.iter().map(|b| b.4).sum::<i64>(), 18, "{name}");
        srv.stop().await;
    }
}
