//! NO_DATA from the server's timer, on both engines: a logger silent for longer than 3 × its
//! interval gets one alert (however often the sweep runs, even two sweeps at once), dated from its
//! last reading; the agent's backlog that arrives afterwards closes it at the real end of the gap,
//! and a logger that keeps reporting is never flagged.
#![allow(clippy::unwrap_used)]

use chrono::{DateTime, Duration, Utc};
use vaxtrace_proto::signing::encode_signed;
use vaxtrace_proto::v1 as pb;
use vaxtrace_proto::v1::alert_service_client::AlertServiceClient;
use vaxtrace_tests::world::{register_logger, world};
use vaxtrace_tests::{TestDb, TestServer, authed};

struct Dev {
    id: String,
    key: Vec<u8>,
    next_seq: u64,
}

fn ts(t: DateTime<Utc>) -> prost_types::Timestamp {
    prost_types::Timestamp { seconds: t.timestamp(), nanos: 0 }
}

async fn register(srv: &TestServer, tok: &str, facility: &str, unit: &str) -> Dev {
    let (id, key) = register_logger(srv, tok, facility, unit, 600).await;
    Dev { id, key, next_seq: 1 }
}

/// Ingests in-range readings taken at `times`, as the MQTT subscriber would hand them over.
async fn send(srv: &TestServer, dev: &mut Dev, times: &[DateTime<Utc>]) {
    let mut batch = pb::ReadingBatch { device_id: dev.id.clone(), ..Default::default() };
    for t in times {
        batch.readings.push(pb::Reading { seq: dev.next_seq, time: Some(ts(*t)), temp_c: 5.0, ..Default::default() });
        dev.next_seq += 1;
    }
    let bytes = encode_signed(&batch, Some(&dev.key)).unwrap();
    let ack = srv.app.ingest(&dev.id, &bytes, false).await.unwrap();
    assert!(ack.error.is_empty() && ack.rejected == 0, "{ack:?}");
}

async fn no_data_alerts(srv: &TestServer, tok: &str) -> Vec<pb::Alert> {
    let mut alerts = AlertServiceClient::new(srv.channel().await);
    let r = pb::ListAlertsRequest { kinds: vec![pb::AlertKind::NoData as i32], ..Default::default() };
    alerts.list_alerts(authed(tok, r)).await.unwrap().into_inner().alerts
}

#[tokio::test]
async fn a_silent_logger_raises_no_data_once_and_its_backlog_closes_it() {
    for db in TestDb::all() {
        let srv = TestServer::start(db).await;
        let name = srv.db.name().to_owned();
        let w = world(&srv).await;
        let tok = w.tok.clone();
        let now = Utc::now();
        let at = |minutes: i64| now - Duration::minutes(minutes);
        let mut silent = register(&srv, &tok, &w.c, &w.cu).await;
        let mut live = register(&srv, &tok, &w.d, &w.du).await;
        send(&srv, &mut silent, &[at(60), at(50), at(40)]).await;
        send(&srv, &mut live, &[at(25), at(15), at(5)]).await;

        // 40 minutes of silence > 3 × 10 min: one alert, from the last reading, however many
        // sweeps run (two at once stand in for two replicas).
        let (a, b) = tokio::join!(srv.app.sweep_no_data(now), srv.app.sweep_no_data(now));
        assert_eq!(a.unwrap() + b.unwrap(), 1, "{name}");
        assert_eq!(srv.app.sweep_no_data(now + Duration::minutes(5)).await.unwrap(), 0, "{name}");
        let open = no_data_alerts(&srv, &tok).await;
        assert_eq!(open.len(), 1, "{name}: only the silent logger: {open:?}");
        let alert = &open[0];
        assert_eq!(alert.subject.as_ref().map(|s| s.device_id.as_str()), Some(silent.id.as_str()), "{name}");
        assert_eq!(alert.start_time.as_ref().map(|t| t.seconds), Some(at(40).timestamp()), "{name}");
        assert!(alert.condition_active, "{name}");
        let last = alert.details.as_ref().and_then(|d| d.last_reading_time.as_ref()).map(|t| t.seconds);
        assert_eq!(last, Some(at(40).timestamp()), "{name}");

        // Only the uplink was down: the logger's backlog arrives and closes the alert where the
        // readings resume (the real gap: 10 minutes), not when they arrived.
        send(&srv, &mut silent, &[at(30), at(20), at(10)]).await;
        let closed = no_data_alerts(&srv, &tok).await;
        assert_eq!(closed.len(), 1, "{name}: the same alert, not a second one");
        assert!(!closed[0].condition_active, "{name}: cleared");
        assert_eq!(closed[0].end_time.as_ref().map(|t| t.seconds), Some(at(30).timestamp()), "{name}");
        assert_eq!(srv.app.sweep_no_data(now).await.unwrap(), 0, "{name}: fresh readings, nothing to raise");

        // 45 minutes on, both loggers have been silent too long: a new episode each.
        assert_eq!(srv.app.sweep_no_data(now + Duration::minutes(45)).await.unwrap(), 2, "{name}");
        assert_eq!(no_data_alerts(&srv, &tok).await.len(), 3, "{name}");
        srv.stop().await;
    }
}
