//! MQTT ingest end to end: devices publish signed batches through a real broker (embedded rumqttd,
//! and Mosquitto when VAXTRACE_TEST_MQTT_URL is set); the server stores each (device, seq) once and
//! acks only what is committed, on both engines.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use prost::Message as _;
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use vaxtrace_proto::signing::encode_signed;
use vaxtrace_proto::v1 as pb;
use vaxtrace_proto::v1::telemetry_service_client::TelemetryServiceClient;
use vaxtrace_server::ingest::IngestConfig;
use vaxtrace_tests::world::world;
use vaxtrace_tests::{TestDb, TestServer, authed};

/// On a shared external broker every test's server receives every device's batches (one copy per
/// subscription group) and would answer DEVICE_NOT_REGISTERED for the other test's devices, so the
/// tests of this file take turns.
static BROKER_TURN: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// How a test's ingest reaches its broker.
#[derive(Clone)]
enum Route {
    /// A fresh embedded broker, ingest on its in-process link, as `serve` runs it.
    Embedded,
    /// The external broker (VAXTRACE_TEST_MQTT_URL), ingest as a TCP client.
    External(String, u16),
}

/// The routes to run against: the embedded broker always, the external one when configured.
fn routes() -> Vec<Route> {
    let mut v = vec![Route::Embedded];
    if let Ok(url) = std::env::var("VAXTRACE_TEST_MQTT_URL")
        && !url.is_empty()
    {
        let c = IngestConfig::from_url(&url, String::new()).unwrap();
        v.push(Route::External(c.host, c.port));
    }
    v
}

impl Route {
    /// Starts `srv`'s ingest in shared-subscription group `group` (an embedded broker first, for
    /// that route); returns where devices connect.
    async fn ingest(&self, srv: &TestServer, group: &str) -> (String, u16, tokio::task::JoinHandle<()>) {
        match self {
            Route::Embedded => {
                let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
                let broker = vaxtrace_server::broker::start(([127, 0, 0, 1], port).into()).await.unwrap();
                let port = broker.addr.port();
                let ingest =
                    vaxtrace_server::ingest::spawn_embedded(srv.app.clone(), std::sync::Arc::new(broker), 4, group);
                ("127.0.0.1".to_owned(), port, ingest)
            }
            Route::External(host, port) => {
                let ingest = vaxtrace_server::ingest::spawn(srv.app.clone(), ingest_config(host, *port, group));
                (host.clone(), *port, ingest)
            }
        }
    }
}

fn ingest_config(host: &str, port: u16, group: &str) -> IngestConfig {
    IngestConfig {
        host: host.to_owned(),
        port,
        client_id: format!("vt-ingest-{}", uuid::Uuid::now_v7().simple()),
        username: None,
        password: None,
        workers: 4,
        share_group: group.to_owned(),
        tls: None,
    }
}

/// A device's side of the contract: publishes batches and waits for acks.
struct Device {
    id: String,
    key: Vec<u8>,
    client: AsyncClient,
    acks: tokio::sync::mpsc::UnboundedReceiver<(String, Vec<u8>)>,
}

impl Device {
    async fn connect(host: &str, port: u16, id: &str, key: Vec<u8>) -> Device {
        let mut opts = MqttOptions::new(format!("dev-{}", uuid::Uuid::now_v7().simple()), host, port);
        opts.set_keep_alive(Duration::from_secs(30));
        let (client, mut el) = AsyncClient::new(opts, 100);
        let (tx, acks) = tokio::sync::mpsc::unbounded_channel();
        let (ready_tx, ready) = tokio::sync::oneshot::channel();
        let mut ready_tx = Some(ready_tx);
        tokio::spawn(async move {
            loop {
                match el.poll().await {
                    Ok(Event::Incoming(Packet::SubAck(_))) => {
                        if let Some(r) = ready_tx.take() {
                            let _ = r.send(());
                        }
                    }
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        let _ = tx.send((p.topic.clone(), p.payload.to_vec()));
                    }
                    Ok(_) => {}
                    Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
                }
            }
        });
        // `ack/#` also matches `ack` itself (MQTT 4.7.1.2): one subscription, no duplicates.
        client.subscribe(format!("vaxtrace/v1/devices/{id}/ack/#"), QoS::AtLeastOnce).await.unwrap();
        tokio::time::timeout(Duration::from_secs(10), ready).await.unwrap().unwrap();
        Device { id: id.to_owned(), key, client, acks }
    }

    async fn publish(&self, seqs: impl IntoIterator<Item = u64>, temp: f64, key: Option<&[u8]>) {
        let now = chrono::Utc::now();
        let readings = seqs
            .into_iter()
            .map(|seq| pb::Reading {
                seq,
                time: Some(prost_types_ts(now - chrono::Duration::minutes(10) + chrono::Duration::seconds(seq as i64))),
                probe: 0,
                temp_c: temp,
                ..Default::default()
            })
            .collect();
        let batch = pb::ReadingBatch { device_id: self.id.clone(), readings, key_version: 0, signature: Vec::new() };
        let bytes = encode_signed(&batch, key).unwrap();
        self.client
            .publish(format!("vaxtrace/v1/devices/{}/readings", self.id), QoS::AtLeastOnce, false, bytes)
            .await
            .unwrap();
    }

    async fn publish_readings(&self, readings: Vec<pb::Reading>, key: &[u8]) {
        let batch = pb::ReadingBatch { device_id: self.id.clone(), readings, key_version: 0, signature: Vec::new() };
        let bytes = encode_signed(&batch, Some(key)).unwrap();
        self.client
            .publish(format!("vaxtrace/v1/devices/{}/readings", self.id), QoS::AtLeastOnce, false, bytes)
            .await
            .unwrap();
    }

    async fn ack(&mut self) -> pb::ReadingAck {
        let (topic, body) =
            tokio::time::timeout(Duration::from_secs(20), self.acks.recv()).await.expect("an ack within 20 s").unwrap();
        assert!(topic.ends_with("/ack"), "{topic}");
        pb::ReadingAck::decode(body.as_slice()).unwrap()
    }
}

fn prost_types_ts(t: chrono::DateTime<chrono::Utc>) -> prost_types::Timestamp {
    prost_types::Timestamp { seconds: t.timestamp(), nanos: 0 }
}

#[tokio::test]
async fn batches_are_stored_once_and_acked_after_commit() {
    let _turn = BROKER_TURN.lock().await;
    for route in routes() {
        for db in TestDb::all() {
            let srv = TestServer::start(db).await;
            let w = world(&srv).await;
            let group = format!("vt-test-{}", uuid::Uuid::now_v7().simple());
            let (host, port, ingest) = route.ingest(&srv, &group).await;
            let name = format!("{} via {host}:{port}", srv.db.name());
            let mut tel = TelemetryServiceClient::new(srv.channel().await);
            let reg = pb::RegisterDeviceRequest {
                device: Some(pb::Device {
                    serial: format!("SN-{}", uuid::Uuid::now_v7().simple()),
                    facility_id: w.c.clone(),
                    probes: vec![pb::Probe { index: 0, storage_unit_id: w.cu.clone(), label: "ILR".into() }],
                    expected_interval: Some(prost_types::Duration { seconds: 600, nanos: 0 }),
                    ..Default::default()
                }),
                request_id: String::new(),
            };
            let r = tel.register_device(authed(&w.tok, reg)).await.unwrap().into_inner();
            let (id, key) = (r.device.unwrap().id, r.key);
            assert_eq!(key.len(), 32);
            let mut dev = Device::connect(&host, port, &id, key.clone()).await;
            // The subscriber may join the broker's group a moment after we start it.
            tokio::time::sleep(Duration::from_millis(300)).await;
            let k = dev.key.clone();

            dev.publish(1..=5, 4.5, Some(&k)).await;
            let a = dev.ack().await;
            assert_eq!((a.acked_seq, a.rejected_count, a.error.as_str()), (5, 0, ""), "{name}");
            // A re-sent batch is acked again and stored once.
            dev.publish(1..=5, 4.5, Some(&k)).await;
            assert_eq!(dev.ack().await.acked_seq, 5, "{name}");
            // A gap holds the ack back until it is filled.
            dev.publish(7..=8, 4.5, Some(&k)).await;
            assert_eq!(dev.ack().await.acked_seq, 5, "{name}: seq 6 is missing");
            dev.publish([6], 4.5, Some(&k)).await;
            assert_eq!(dev.ack().await.acked_seq, 8, "{name}");
            // Invalid content is rejected, counted, and does not hold the ack back.
            dev.publish([9], 95.0, Some(&k)).await;
            let a = dev.ack().await;
            assert_eq!((a.acked_seq, a.rejected_count), (9, 1), "{name}");
            // A wrong key or no signature stores nothing.
            dev.publish([10], 4.5, Some(b"not the device key")).await;
            let a = dev.ack().await;
            assert_eq!((a.acked_seq, a.error.as_str()), (9, "BAD_SIGNATURE"), "{name}");
            dev.publish([10], 4.5, None).await;
            assert_eq!(dev.ack().await.error, "SIGNATURE_REQUIRED", "{name}");
            let (n, lo, hi) = srv.app.store().count_readings(&id).await.unwrap();
            assert_eq!((n, lo, hi), (8, 1, 8), "{name}: seqs 1..8 stored exactly once");

            // An unregistered device is never acked.
            let ghost_id = uuid::Uuid::now_v7().to_string();
            let mut ghost = Device::connect(&host, port, &ghost_id, key.clone()).await;
            ghost.publish(1..=3, 4.5, Some(&k)).await;
            let a = ghost.ack().await;
            assert_eq!((a.acked_seq, a.error.as_str()), (0, "DEVICE_NOT_REGISTERED"), "{name}");

            // The JSON topic, as a simple third-party logger would send it.
            let readings = format!(
                r#"[{{"seq":10,"time":"{}","temp_c":5.5}}]"#,
                (chrono::Utc::now() - chrono::Duration::minutes(1)).to_rfc3339()
            );
            let sig = vaxtrace_proto::signing::to_hex(
                &vaxtrace_proto::signing::hmac_sha256(&k, readings.as_bytes()).unwrap(),
            );
            let body = format!(r#"{{"readings":{readings},"signature":"{sig}"}}"#);
            dev.client
                .publish(format!("vaxtrace/v1/devices/{id}/readings/json"), QoS::AtLeastOnce, false, body)
                .await
                .unwrap();
            let (topic, body) = tokio::time::timeout(Duration::from_secs(20), dev.acks.recv()).await.unwrap().unwrap();
            assert!(topic.ends_with("/ack/json"), "{topic}");
            let v: serde_json_shim::Value = serde_json_shim::from_slice(&body).unwrap();
            assert_eq!(v["acked_seq"], 10, "{name}: {v}");

            // Seqs the agent lost for good (its disk cap forced them out) hold the ack back until
            // its signed status/dropped notice says so; a forged notice changes nothing.
            dev.publish(14..=15, 4.5, Some(&k)).await;
            assert_eq!(dev.ack().await.acked_seq, 10, "{name}: 11..13 missing");
            use vaxtrace_agent::buffer::{DropReason, DroppedRange};
            let lost =
                |first, last| vec![DroppedRange { first_seq: first, last_seq: last, reason: DropReason::SizeCap }];
            let topic = format!("vaxtrace/v1/devices/{id}/status/dropped");
            let forged = vaxtrace_agent::agent::dropped_notice(&id, &lost(11, 13), Some(b"not the device key"));
            dev.client.publish(topic.clone(), QoS::AtLeastOnce, false, forged).await.unwrap();
            let a = dev.ack().await;
            assert_eq!((a.acked_seq, a.error.as_str()), (10, "BAD_SIGNATURE"), "{name}");
            let notice = vaxtrace_agent::agent::dropped_notice(&id, &lost(11, 13), Some(&k));
            dev.client.publish(topic, QoS::AtLeastOnce, false, notice).await.unwrap();
            let a = dev.ack().await;
            assert_eq!((a.acked_seq, a.error.as_str()), (15, ""), "{name}: the ack moves past the lost seqs");
            let (n, lo, hi) = srv.app.store().count_readings(&id).await.unwrap();
            assert_eq!((n, lo, hi), (11, 1, 15), "{name}: nothing invented for the lost seqs");
            ingest.abort();
            srv.stop().await;
        }
    }
}

mod serde_json_shim {
    pub use serde_json::{Value, from_slice};
}

/// The real agent (in-process, simulator on a fast clock) publishes through the broker to two
/// ingest replicas sharing the subscription; one replica dies mid-run. Every reading the agent
/// produced ends up stored exactly once and acked.
#[tokio::test]
async fn real_agent_through_two_replicas_one_killed() {
    let _turn = BROKER_TURN.lock().await;
    for route in routes() {
        for db in TestDb::all() {
            let srv = TestServer::start(db).await;
            let w = world(&srv).await;
            let group = format!("vt-test-{}", uuid::Uuid::now_v7().simple());
            // On the embedded broker the survivor is the in-process link and the killed replica a
            // TCP client of it: the two transports share the group.
            let (host, port, replica_b) = route.ingest(&srv, &group).await;
            let replica_a = vaxtrace_server::ingest::spawn(srv.app.clone(), ingest_config(&host, port, &group));
            let name = format!("{} via {host}:{port}", srv.db.name());
            let mut tel = TelemetryServiceClient::new(srv.channel().await);
            let reg = pb::RegisterDeviceRequest {
                device: Some(pb::Device {
                    serial: format!("SN-{}", uuid::Uuid::now_v7().simple()),
                    facility_id: w.c.clone(),
                    probes: vec![
                        pb::Probe { index: 0, storage_unit_id: w.cu.clone(), label: "ILR top".into() },
                        pb::Probe { index: 1, storage_unit_id: w.cu.clone(), label: "ILR basket".into() },
                    ],
                    expected_interval: Some(prost_types::Duration { seconds: 60, nanos: 0 }),
                    ..Default::default()
                }),
                request_id: String::new(),
            };
            let r = tel.register_device(authed(&w.tok, reg)).await.unwrap().into_inner();
            let id = r.device.unwrap().id;
            let listed = tel
                .list_devices(authed(&w.tok, pb::ListDevicesRequest { facility_id: w.c.clone(), ..Default::default() }))
                .await
                .unwrap()
                .into_inner()
                .devices;
            assert_eq!(listed.len(), 1, "{name}");
            assert_eq!(listed[0].probes.iter().map(|p| p.index).collect::<Vec<_>>(), vec![0, 1], "{name}");
            tokio::time::sleep(Duration::from_millis(300)).await;

            const N: i64 = 600;
            let dir = tempfile::tempdir().unwrap();
            let config = format!(
                r#"
device_id = "{id}"
data_dir = "{data}"
interval = "60s"
[mqtt]
url = "mqtt://{host}:{port}"
[uplink]
batch_size = 20
ack_timeout = "2s"
key_hex = "{key}"
[simulator]
seed = 7
speed = 100000
start = "now - 2d"
max_readings = {N}
[[probes]]
index = 0
source = {{ kind = "simulator", scenario = "stable" }}
[[probes]]
index = 1
source = {{ kind = "simulator", scenario = "warm_drift" }}
"#,
                data = dir.path().display(),
                key = vaxtrace_proto::signing::to_hex(&r.key),
            );
            let cfg = vaxtrace_agent::config::Config::parse(&config).unwrap();
            let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
            let agent = tokio::spawn(vaxtrace_agent::agent::run(cfg, async move {
                let _ = stopped.await;
            }));
            // Kill one replica once part of the readings are in; its share moves to the other.
            let deadline = std::time::Instant::now() + Duration::from_secs(90);
            let mut killed = false;
            loop {
                let (n, _, _) = srv.app.store().count_readings(&id).await.unwrap();
                if !killed && n >= N / 4 {
                    replica_a.abort();
                    killed = true;
                }
                let d = srv.app.store().get_device(&id).await.unwrap().unwrap().0;
                if d.last_seq == N {
                    break;
                }
                assert!(
                    std::time::Instant::now() < deadline,
                    "{name}: only {n} readings, acked {} after 90 s",
                    d.last_seq
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            assert!(killed, "{name}");
            let (n, lo, hi) = srv.app.store().count_readings(&id).await.unwrap();
            assert_eq!((n, lo, hi), (N, 1, N), "{name}: every seq 1..N stored exactly once");
            let _ = stop.send(());
            let _ = tokio::time::timeout(Duration::from_secs(10), agent).await;
            replica_b.abort();
            srv.stop().await;
        }
    }
}

/// A 12-hour breach above +8 °C, published second half first and then re-sent whole, opens
/// exactly one HEAT alarm and one EXCURSION warning, both carrying reading times, and the reading
/// back in range clears them.
#[tokio::test]
async fn heat_breach_alerts_do_not_depend_on_arrival_order() {
    let _turn = BROKER_TURN.lock().await;
    for db in TestDb::all() {
        let srv = TestServer::start(db).await;
        let w = world(&srv).await;
        let name = srv.db.name();
        let (host, port, ingest) = Route::Embedded.ingest(&srv, "vt-heat").await;
        let mut tel = TelemetryServiceClient::new(srv.channel().await);
        let reg = pb::RegisterDeviceRequest {
            device: Some(pb::Device {
                serial: format!("SN-{}", uuid::Uuid::now_v7().simple()),
                facility_id: w.c.clone(),
                probes: vec![pb::Probe { index: 0, storage_unit_id: w.cu.clone(), label: "ILR".into() }],
                expected_interval: Some(prost_types::Duration { seconds: 600, nanos: 0 }),
                ..Default::default()
            }),
            request_id: String::new(),
        };
        let r = tel.register_device(authed(&w.tok, reg)).await.unwrap().into_inner();
        let id = r.device.unwrap().id;
        let mut dev = Device::connect(&host, port, &id, r.key.clone()).await;
        tokio::time::sleep(Duration::from_millis(300)).await;

        // Every 10 min: 6 readings at 5 °C, 73 at 9 °C (12 h), then one at 5 °C.
        let t0 = (chrono::Utc::now() - chrono::Duration::hours(14)).timestamp();
        let temps: Vec<f64> = std::iter::repeat_n(5.0, 6).chain(std::iter::repeat_n(9.0, 73)).chain([5.0]).collect();
        let readings: Vec<pb::Reading> = temps
            .iter()
            .enumerate()
            .map(|(i, t)| pb::Reading {
                seq: i as u64 + 1,
                time: Some(prost_types::Timestamp { seconds: t0 + 600 * i as i64, nanos: 0 }),
                temp_c: *t,
                ..Default::default()
            })
            .collect();
        let breach_start = t0 + 600 * 6;
        let back_in_range = t0 + 600 * 79;
        dev.publish_readings(readings[40..].to_vec(), &r.key).await;
        assert_eq!(dev.ack().await.acked_seq, 0, "{name}: seqs 1..40 still missing");
        dev.publish_readings(readings[..40].to_vec(), &r.key).await;
        assert_eq!(dev.ack().await.acked_seq, 80, "{name}");
        dev.publish_readings(readings.clone(), &r.key).await;
        assert_eq!(dev.ack().await.acked_seq, 80, "{name}");

        let mut alerts = vaxtrace_proto::v1::alert_service_client::AlertServiceClient::new(srv.channel().await);
        let all =
            alerts.list_alerts(authed(&w.tok, pb::ListAlertsRequest::default())).await.unwrap().into_inner().alerts;
        let of = |k: pb::AlertKind| all.iter().filter(|a| a.kind == k as i32).collect::<Vec<_>>();
        let heat = of(pb::AlertKind::Heat);
        let excursion = of(pb::AlertKind::Excursion);
        assert_eq!((heat.len(), excursion.len()), (1, 1), "{name}: one alert per episode: {all:?}");
        for a in [heat[0], excursion[0]] {
            assert_eq!(a.start_time.map(|t| t.seconds), Some(breach_start), "{name}: reading time, not arrival");
            assert_eq!(a.end_time.map(|t| t.seconds), Some(back_in_range), "{name}");
            assert!(!a.condition_active, "{name}");
            assert_eq!(a.subject.as_ref().map(|s| s.storage_unit_id.as_str()), Some(w.cu.as_str()));
        }
        assert_eq!(heat[0].severity, pb::AlertSeverity::Alarm as i32, "{name}: 12 h is short of the 20 h escalation");

        // Resolved, then a late reading from inside the breach forces a full replay of the probe:
        // the handled episode must not come back.
        let res = pb::ResolveAlertRequest {
            id: heat[0].id.clone(),
            resolution: pb::AlertResolution::UnitRepaired as i32,
            comment: "thermostat replaced".into(),
            request_id: "resolve-heat".into(),
        };
        alerts.resolve_alert(authed(&w.tok, res)).await.unwrap();
        let late = pb::Reading {
            seq: 81,
            time: Some(prost_types::Timestamp { seconds: breach_start + 300, nanos: 0 }),
            temp_c: 9.2,
            ..Default::default()
        };
        dev.publish_readings(vec![late], &r.key).await;
        assert_eq!(dev.ack().await.acked_seq, 81, "{name}");
        let all =
            alerts.list_alerts(authed(&w.tok, pb::ListAlertsRequest::default())).await.unwrap().into_inner().alerts;
        let heats: Vec<_> = all.iter().filter(|a| a.kind == pb::AlertKind::Heat as i32).collect();
        assert_eq!(heats.len(), 1, "{name}: a replay does not reopen a resolved episode: {all:?}");
        assert_eq!(heats[0].state, pb::AlertState::Resolved as i32, "{name}");
        ingest.abort();
        srv.stop().await;
    }
}

/// Breach → alert on WatchAlerts → the unit's lots quarantined → allocation skips them → a
/// district officer's assessment releases them.
#[tokio::test]
async fn breach_quarantines_stock_until_assessed() {
    let _turn = BROKER_TURN.lock().await;
    for db in TestDb::all() {
        let srv = TestServer::start(db).await;
        let mut w = world(&srv).await;
        let name = srv.db.name();
        let tok = w.tok.clone();
        let (nu1, n, lot) = (w.nu1.clone(), w.n.clone(), w.lots[0].clone());
        vaxtrace_tests::world::receive(&mut w, &nu1, 0, 100, "").await.unwrap();
        let (host, port, ingest) = Route::Embedded.ingest(&srv, "vt-quarantine").await;
        let mut tel = TelemetryServiceClient::new(srv.channel().await);
        let reg = pb::RegisterDeviceRequest {
            device: Some(pb::Device {
                serial: format!("SN-{}", uuid::Uuid::now_v7().simple()),
                facility_id: n.clone(),
                probes: vec![pb::Probe { index: 0, storage_unit_id: nu1.clone(), label: "WIC".into() }],
                expected_interval: Some(prost_types::Duration { seconds: 600, nanos: 0 }),
                ..Default::default()
            }),
            request_id: String::new(),
        };
        let r = tel.register_device(authed(&tok, reg)).await.unwrap().into_inner();
        let id = r.device.unwrap().id;
        let mut dev = Device::connect(&host, port, &id, r.key.clone()).await;
        let mut alerts = vaxtrace_proto::v1::alert_service_client::AlertServiceClient::new(srv.channel().await);
        let latest = alerts
            .list_alerts(authed(&tok, pb::ListAlertsRequest::default()))
            .await
            .unwrap()
            .into_inner()
            .latest_event_id;
        let watch = pb::WatchAlertsRequest {
            after_event_id: latest,
            kinds: vec![pb::AlertKind::Heat as i32],
            ..Default::default()
        };
        let mut stream = alerts.watch_alerts(authed(&tok, watch)).await.unwrap().into_inner();
        tokio::time::sleep(Duration::from_millis(300)).await;

        // 11 h at 9 °C every 10 min, then back to 5 °C.
        let t0 = (chrono::Utc::now() - chrono::Duration::hours(13)).timestamp();
        let readings: Vec<pb::Reading> = (0..68)
            .map(|i| pb::Reading {
                seq: i + 1,
                time: Some(prost_types::Timestamp { seconds: t0 + 600 * i as i64, nanos: 0 }),
                temp_c: if i < 67 { 9.0 } else { 5.0 },
                ..Default::default()
            })
            .collect();
        dev.publish_readings(readings, &r.key).await;
        assert_eq!(dev.ack().await.acked_seq, 68, "{name}");
        let ev = tokio::time::timeout(Duration::from_secs(20), stream.message()).await.unwrap().unwrap().unwrap();
        assert_eq!(
            (ev.r#type, ev.alert.as_ref().unwrap().kind),
            (pb::AlertEventType::Opened as i32, pb::AlertKind::Heat as i32),
            "{name}"
        );

        // The lot in that unit is quarantined: allocation skips it.
        let bal = pb::ListBalancesRequest { storage_unit_id: nu1.clone(), ..Default::default() };
        let b = w.stock.list_balances(authed(&tok, bal.clone())).await.unwrap().into_inner().balances;
        assert_eq!((b[0].vials, b[0].quarantined_vials, b[0].available_vials), (100, 100, 0), "{name}");
        let sug = pb::SuggestAllocationRequest {
            facility_id: n.clone(),
            product_id: w.product.clone(),
            doses: 100,
            ..Default::default()
        };
        let a = w.stock.suggest_allocation(authed(&tok, sug.clone())).await.unwrap().into_inner();
        assert_eq!((a.suggested_doses, a.lots[0].reason), (0, pb::AllocationReason::Quarantined as i32), "{name}");

        // The exposure records the alarm; a depot manager cannot assess it, a district officer can.
        let xs = w
            .stock
            .list_exposures(authed(&tok, pb::ListExposuresRequest::default()))
            .await
            .unwrap()
            .into_inner()
            .exposures;
        assert_eq!(xs.len(), 1, "{name}");
        let x = &xs[0];
        assert_eq!(
            (x.lot_id.as_str(), x.quarantined_vials, x.state),
            (lot.as_str(), 100, pb::ExposureState::Pending as i32)
        );
        assert_eq!(x.start_time.map(|t| t.seconds), Some(t0), "{name}: reading time of the first reading past +8 °C");
        assert!(x.end_time.is_some() && x.max_temp_c == 9.0, "{name}: {x:?}");
        let mut adm = vaxtrace_proto::v1::admin_service_client::AdminServiceClient::new(srv.channel().await);
        let mk = |role: pb::Role| pb::CreateTokenRequest {
            role: role as i32,
            scope_facility_id: n.clone(),
            description: "t".into(),
            ..Default::default()
        };
        let dm = adm.create_token(authed(&tok, mk(pb::Role::DepotManager))).await.unwrap().into_inner().secret;
        let dio = adm.create_token(authed(&tok, mk(pb::Role::DistrictOfficer))).await.unwrap().into_inner().secret;
        let assess = pb::RecordExposureAssessmentRequest {
            exposure_id: x.id.clone(),
            decision: pb::ExposureDecision::Release as i32,
            comment: "VVM stage 1 on every vial; 11 h at 9 °C is within the VVM14 budget".into(),
            ..Default::default()
        };
        // A count during quarantine finds 90 of the 100 vials: the assessment still goes through.
        let count = pb::RecordPhysicalCountRequest {
            facility_id: n.clone(),
            lines: vec![pb::PhysicalCountLine {
                storage_unit_id: nu1.clone(),
                lot_ref: Some(pb::physical_count_line::LotRef::LotId(lot.clone())),
                counted_vials: 90,
                vvm_stage: 1,
            }],
            comment: "10 vials missing".into(),
            ..Default::default()
        };
        w.stock.record_physical_count(authed(&tok, count)).await.unwrap();
        let e = w.stock.record_exposure_assessment(authed(&dm, assess.clone())).await.unwrap_err();
        assert_eq!(e.code(), tonic::Code::PermissionDenied, "{name}");
        let done = w.stock.record_exposure_assessment(authed(&dio, assess.clone())).await.unwrap().into_inner();
        assert_eq!(done.state, pb::ExposureState::Released as i32);
        let e = w.stock.record_exposure_assessment(authed(&dio, assess)).await.unwrap_err();
        assert_eq!(vaxtrace_tests::reason(&e), "ALREADY_ASSESSED");
        let b = w.stock.list_balances(authed(&tok, bal)).await.unwrap().into_inner().balances;
        assert_eq!((b[0].quarantined_vials, b[0].available_vials), (0, 90), "{name}");
        assert_eq!(done.assessment.as_ref().map(|a| a.released_vials), Some(90), "{name}");
        let a = w.stock.suggest_allocation(authed(&tok, sug)).await.unwrap().into_inner();
        assert_eq!(a.suggested_doses, 100, "{name}: released stock is issued again");
        vaxtrace_tests::world::check_ledger(&mut w, name).await;
        ingest.abort();
        srv.stop().await;
    }
}

/// Makes every insert of a reading at 66.5 °C fail inside the database: a real failure of one
/// device's writes in the middle of a grouped transaction, with no test hook in the server.
async fn inject_write_failure(srv: &TestServer) {
    let sql = match &srv.db {
        TestDb::Sqlite => {
            "CREATE TRIGGER vt_fail BEFORE INSERT ON readings WHEN NEW.temp_c = 66.5 \
             BEGIN SELECT RAISE(ABORT, 'injected failure'); END;"
        }
        TestDb::Postgres(_) => {
            "CREATE FUNCTION vt_fail_reading() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN \
             IF NEW.temp_c = 66.5 THEN RAISE EXCEPTION 'injected failure'; END IF; RETURN NEW; END $$; \
             CREATE TRIGGER vt_fail BEFORE INSERT ON readings FOR EACH ROW EXECUTE FUNCTION vt_fail_reading();"
        }
    };
    srv.exec_sql(sql).await;
}

async fn register(srv: &TestServer, w: &vaxtrace_tests::world::World, n: usize) -> Vec<(String, Vec<u8>)> {
    let mut tel = TelemetryServiceClient::new(srv.channel().await);
    let mut out = Vec::new();
    for _ in 0..n {
        let reg = pb::RegisterDeviceRequest {
            device: Some(pb::Device {
                serial: format!("SN-{}", uuid::Uuid::now_v7().simple()),
                facility_id: w.c.clone(),
                probes: vec![pb::Probe { index: 0, storage_unit_id: w.cu.clone(), label: "ILR".into() }],
                expected_interval: Some(prost_types::Duration { seconds: 600, nanos: 0 }),
                ..Default::default()
            }),
            request_id: String::new(),
        };
        let r = tel.register_device(authed(&w.tok, reg)).await.unwrap().into_inner();
        out.push((r.device.unwrap().id, r.key));
    }
    out
}

fn signed_batch(id: &str, seqs: std::ops::RangeInclusive<u64>, temp: f64, key: &[u8]) -> Vec<u8> {
    let now = chrono::Utc::now();
    let readings = seqs
        .map(|seq| pb::Reading {
            seq,
            time: Some(prost_types_ts(now - chrono::Duration::minutes(30) + chrono::Duration::seconds(seq as i64))),
            temp_c: temp,
            ..Default::default()
        })
        .collect();
    let batch = pb::ReadingBatch { device_id: id.to_owned(), readings, key_version: 0, signature: Vec::new() };
    encode_signed(&batch, Some(key)).unwrap()
}

/// Many devices' batches written in one transaction: a message refused on its own merits is
/// refused alone, and when one device's writes fail inside the database the group is rolled back
/// and each message stored alone, so only the failing one goes unanswered (an `Err`: no ack).
#[tokio::test]
async fn a_grouped_transaction_isolates_a_failing_device() {
    for db in TestDb::all() {
        let dir = tempfile::tempdir().unwrap();
        let srv = TestServer::start_reachable(db, dir.path()).await;
        let name = srv.db.name();
        let w = world(&srv).await;
        inject_write_failure(&srv).await;
        let devices = register(&srv, &w, 6).await;
        let (bad_id, bad_key) = &devices[5];
        let mut payloads: Vec<(String, Vec<u8>)> = Vec::new();
        for (id, key) in &devices[..5] {
            payloads.push((id.clone(), signed_batch(id, 1..=3, 4.5, key)));
            payloads.push((id.clone(), signed_batch(id, 4..=4, 4.5, key)));
            // The same batch twice in one group: stored once.
            payloads.push((id.clone(), signed_batch(id, 4..=5, 4.5, key)));
        }
        payloads.push((devices[0].0.clone(), signed_batch(&devices[0].0, 6..=6, 4.5, b"not the device key")));
        payloads.push((bad_id.clone(), signed_batch(bad_id, 1..=2, 66.5, bad_key)));
        let msgs: Vec<vaxtrace_server::app::telemetry::ReadingsMessage<'_>> = payloads
            .iter()
            .map(|(id, p)| vaxtrace_server::app::telemetry::ReadingsMessage { device_id: id, payload: p, json: false })
            .collect();
        let answers = srv.app.ingest_many(&msgs).await;
        assert_eq!(answers.len(), msgs.len(), "{name}");
        for (i, a) in answers.iter().take(15).enumerate() {
            let a = a.as_ref().unwrap();
            // Each message's ack covers at least its own seqs (more when stored with later ones).
            let top = [3, 4, 5][i % 3];
            assert!(a.error.is_empty() && (top..=5).contains(&a.acked_seq), "{name}: message {i}: {a:?}");
        }
        let refused = answers[15].as_ref().unwrap();
        assert_eq!((refused.acked_seq, refused.error), (0, "BAD_SIGNATURE"), "{name}");
        assert!(answers[16].is_err(), "{name}: the failing device's batch is not acked: {:?}", answers[16]);
        for (id, _) in &devices[..5] {
            let (n, lo, hi) = srv.app.store().count_readings(id).await.unwrap();
            assert_eq!((n, lo, hi), (5, 1, 5), "{name}: seqs 1..5 stored exactly once");
        }
        assert_eq!(srv.app.store().count_readings(bad_id).await.unwrap().0, 0, "{name}: nothing of the failing batch");
        // The failing device recovers once its writes succeed again; the others are not disturbed.
        let again = srv.app.ingest(bad_id, &signed_batch(bad_id, 1..=2, 5.0, bad_key), false).await.unwrap();
        assert_eq!((again.acked_seq, again.error), (2, ""), "{name}");
        srv.stop().await;
    }
}

/// The same through the broker: devices publishing concurrently (so the workers group their
/// messages), each ack checked against the database as it arrives (never ahead of the commit),
/// one device whose writes fail inside the database (never acked, nothing stored), batches
/// with a wrong signature mixed in (refused alone), re-sends stored once.
#[tokio::test]
async fn concurrent_devices_are_acked_only_after_commit() {
    let _turn = BROKER_TURN.lock().await;
    for route in routes() {
        for db in TestDb::all() {
            let dir = tempfile::tempdir().unwrap();
            let srv = TestServer::start_reachable(db, dir.path()).await;
            let w = world(&srv).await;
            inject_write_failure(&srv).await;
            let group = format!("vt-test-{}", uuid::Uuid::now_v7().simple());
            let (host, port, ingest) = route.ingest(&srv, &group).await;
            let name = format!("{} via {host}:{port}", srv.db.name());
            let registered = register(&srv, &w, 13).await;
            let mut devices = Vec::new();
            for (id, key) in &registered {
                devices.push(Device::connect(&host, port, id, key.clone()).await);
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
            let mut failing = devices.pop().unwrap();
            const SEQS: u64 = 20;
            let mut tasks = tokio::task::JoinSet::new();
            for mut dev in devices {
                let (app, name) = (srv.app.clone(), name.clone());
                tasks.spawn(async move {
                    let k = dev.key.clone();
                    for seq in 1..=SEQS {
                        if seq == SEQS / 2 {
                            dev.publish([seq], 4.5, Some(b"not the device key")).await;
                            let a = dev.ack().await;
                            assert_eq!((a.acked_seq, a.error.as_str()), (seq - 1, "BAD_SIGNATURE"), "{name}");
                        }
                        dev.publish([seq], 4.5, Some(&k)).await;
                        let a = dev.ack().await;
                        assert_eq!((a.acked_seq, a.error.as_str()), (seq, ""), "{name}");
                        // Ack after commit: what the ack covers is in the database already.
                        let (n, _, hi) = app.store().count_readings(&dev.id).await.unwrap();
                        assert!(n >= seq as i64 && hi >= seq as i64, "{name}: acked {seq}, stored {n}");
                    }
                    dev.publish(1..=3, 4.5, Some(&k)).await;
                    assert_eq!(dev.ack().await.acked_seq, SEQS, "{name}: a re-send is acked again");
                    dev.id.clone()
                });
            }
            for _ in 0..3 {
                failing.publish(1..=2, 66.5, Some(&failing.key.clone())).await;
            }
            let mut done = Vec::new();
            while let Some(r) = tasks.join_next().await {
                done.push(r.unwrap());
            }
            for id in &done {
                let (n, lo, hi) = srv.app.store().count_readings(id).await.unwrap();
                assert_eq!((n, lo, hi), (SEQS as i64, 1, SEQS as i64), "{name}: every reading stored exactly once");
            }
            let late = tokio::time::timeout(Duration::from_millis(500), failing.acks.recv()).await;
            assert!(late.is_err(), "{name}: no ack for a batch whose transaction rolled back: {late:?}");
            assert_eq!(srv.app.store().count_readings(&failing.id).await.unwrap().0, 0, "{name}");
            ingest.abort();
            srv.stop().await;
        }
    }
}

/// Another replica re-binds a probe to another unit while this one still holds the device as it
/// was (its cache keeps a device for minutes): the next batch is not filed under the old unit,
/// because the commit re-checks the device under its row lock and the batch is validated again.
#[tokio::test]
async fn a_probe_re_bound_by_another_replica_files_the_next_batch_under_its_new_unit() {
    for db in TestDb::all() {
        let srv = TestServer::start(db).await;
        let name = srv.db.name();
        let w = world(&srv).await;
        let (dev, key) = vaxtrace_tests::world::register_logger(&srv, &w.tok, &w.n, &w.nu1, 60).await;
        let t0 = chrono::Utc::now() - chrono::Duration::hours(1);
        let at = |i: i64| t0 + chrono::Duration::minutes(i);
        // This replica caches the device as it stores a first batch.
        vaxtrace_tests::world::send_readings(&srv, &dev, &key, &[(1, at(1), 5.0)]).await;
        // The other replica: the store itself, past this App's cache.
        let probes = vec![vaxtrace_server::domain::telemetry::Probe {
            index: 0,
            storage_unit_id: w.nu2.clone(),
            label: "moved".into(),
        }];
        let patch = vaxtrace_server::domain::telemetry::DevicePatch { probes: Some(probes), ..Default::default() };
        srv.app.store().update_device(None, &dev, &patch).await.unwrap().unwrap();
        vaxtrace_tests::world::send_readings(&srv, &dev, &key, &[(2, at(2), 5.5)]).await;

        let mut tel = TelemetryServiceClient::new(srv.channel().await);
        let mut seqs_in = async |unit: &str| {
            let req = pb::ListReadingsRequest {
                storage_unit_id: unit.into(),
                start_time: Some(prost_types::Timestamp { seconds: t0.timestamp(), nanos: 0 }),
                ..Default::default()
            };
            let r = tel.list_readings(authed(&w.tok, req)).await.unwrap().into_inner();
            r.readings.into_iter().map(|r| r.reading.map_or(0, |x| x.seq)).collect::<Vec<_>>()
        };
        assert_eq!(seqs_in(&w.nu1).await, vec![1], "{name}: the old unit keeps what it measured");
        assert_eq!(seqs_in(&w.nu2).await, vec![2], "{name}: the batch after the re-binding is the new unit's");
        srv.stop().await;
    }
}
