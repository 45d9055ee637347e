//! The Mosquitto ACL shipped in `deploy/mosquitto/vaxtrace.acl`, in a real Mosquitto with
//! password authentication: a logger's readings reach the server and are acked, but the same
//! logger cannot publish as another device (even with that device's valid signature) nor read
//! another device's acks (Mosquitto grants the subscription but delivers nothing on it). Without `mosquitto` and `mosquitto_passwd` the test says it was skipped.
#![allow(clippy::unwrap_used)]

use std::process::{Command, Stdio};
use std::time::Duration;

use prost::Message as _;
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use vaxtrace_proto::v1 as pb;
use vaxtrace_server::ingest::IngestConfig;
use vaxtrace_tests::world::{register_logger, world};
use vaxtrace_tests::{TestDb, TestServer};

struct Broker(std::process::Child);

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn batch(id: &str, key: &[u8], seq: u64) -> Vec<u8> {
    let b = pb::ReadingBatch {
        device_id: id.into(),
        readings: vec![pb::Reading {
            seq,
            time: Some(prost_types::Timestamp { seconds: chrono::Utc::now().timestamp() - 60, nanos: 0 }),
            temp_c: 4.5,
            ..Default::default()
        }],
        ..Default::default()
    };
    vaxtrace_proto::signing::encode_signed(&b, Some(key)).unwrap()
}

#[tokio::test]
async fn a_logger_can_only_publish_as_itself() {
    let have = |bin: &str| Command::new("which").arg(bin).output().is_ok_and(|o| o.status.success());
    if !have("mosquitto") || !have("mosquitto_passwd") {
        eprintln!("a_logger_can_only_publish_as_itself: SKIPPED — mosquitto and mosquitto_passwd are needed");
        return;
    }
    let srv = TestServer::start(TestDb::Sqlite).await;
    let w = world(&srv).await;
    let (a, key_a) = register_logger(&srv, &w.tok, &w.c, &w.cu, 600).await;
    let (b, key_b) = register_logger(&srv, &w.tok, &w.d, &w.du, 600).await;

    let dir = tempfile::tempdir().unwrap();
    let passwd = dir.path().join("passwd");
    for (i, user) in ["vaxtrace-server", a.as_str(), b.as_str()].into_iter().enumerate() {
        let mut cmd = Command::new("mosquitto_passwd");
        if i == 0 {
            cmd.arg("-c");
        }
        let ok = cmd.arg("-b").arg(&passwd).arg(user).arg(format!("pw-{user}")).stdout(Stdio::null()).status().unwrap();
        assert!(ok.success());
    }
    let acl = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/mosquitto/vaxtrace.acl");
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let mut conf = format!(
        "listener {port} 127.0.0.1\nallow_anonymous false\npassword_file {}\nacl_file {}\npersistence false\n",
        passwd.display(),
        acl.display()
    );
    // Started as root, Mosquitto drops to its own user, which cannot read a private temp dir.
    if Command::new("id").arg("-u").output().is_ok_and(|o| o.stdout.trim_ascii() == b"0") {
        conf.push_str("user root\n");
    }
    std::fs::write(dir.path().join("m.conf"), conf).unwrap();
    let _broker = Broker(
        Command::new("mosquitto")
            .arg("-c")
            .arg(dir.path().join("m.conf"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    tokio::time::sleep(Duration::from_millis(500)).await;

    let url = format!("mqtt://vaxtrace-server:pw-vaxtrace-server@127.0.0.1:{port}");
    let cfg = IngestConfig::from_url(&url, format!("vt-{}", uuid::Uuid::now_v7().simple())).unwrap();
    let ingest = vaxtrace_server::ingest::spawn(srv.app.clone(), cfg);

    // Logger A, authenticated as itself; what it receives is collected in the background.
    let connect = |id: &str| {
        let mut opts = MqttOptions::new(format!("c-{id}"), "127.0.0.1", port);
        opts.set_credentials(id.to_owned(), format!("pw-{id}"));
        AsyncClient::new(opts, 10)
    };
    let (client, mut events) = connect(&a);
    let (seen_tx, mut seen) = tokio::sync::mpsc::unbounded_channel::<(String, u64)>();
    let (subscribed_tx, subscribed) = tokio::sync::oneshot::channel::<()>();
    client.subscribe(format!("vaxtrace/v1/devices/{a}/ack"), QoS::AtLeastOnce).await.unwrap();
    client.subscribe(format!("vaxtrace/v1/devices/{b}/ack"), QoS::AtLeastOnce).await.unwrap();
    let a_loop = tokio::spawn(async move {
        let (mut subacks, mut subscribed_tx) = (0, Some(subscribed_tx));
        while let Ok(ev) = events.poll().await {
            match ev {
                Event::Incoming(Packet::SubAck(_)) => {
                    subacks += 1;
                    if subacks == 2
                        && let Some(tx) = subscribed_tx.take()
                    {
                        let _ = tx.send(());
                    }
                }
                Event::Incoming(Packet::Publish(m)) => {
                    let seq = pb::ReadingAck::decode(m.payload.as_ref()).map(|x| x.acked_seq).unwrap_or(0);
                    let _ = seen_tx.send((m.topic.clone(), seq));
                }
                _ => {}
            }
        }
    });
    tokio::time::timeout(Duration::from_secs(10), subscribed).await.unwrap().unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    // B's batch, validly signed with B's key, but sent by A: the broker drops it.
    let publish = |c: &AsyncClient, id: &str, payload: Vec<u8>| {
        let (c, topic) = (c.clone(), format!("vaxtrace/v1/devices/{id}/readings"));
        async move { c.publish(topic, QoS::AtLeastOnce, false, payload).await.unwrap() }
    };
    publish(&client, &b, batch(&b, &key_b, 1)).await;
    publish(&client, &a, batch(&a, &key_a, 1)).await;
    let first = tokio::time::timeout(Duration::from_secs(30), seen.recv()).await.unwrap().unwrap();
    assert_eq!(first, (format!("vaxtrace/v1/devices/{a}/ack"), 1), "A's own ack");
    tokio::time::sleep(Duration::from_secs(1)).await;
    let admin = srv.app.authenticate(&w.tok).await.unwrap();
    let since = Some(chrono::Utc::now() - chrono::Duration::hours(1));
    let now = Some(chrono::Utc::now());
    let of = |id: String| {
        let (app, admin) = (srv.app.clone(), admin.clone());
        async move { app.list_readings(&admin, &id, "", since, now, 10, "").await.unwrap().items.len() }
    };
    assert_eq!(of(a.clone()).await, 1);
    assert_eq!(of(b.clone()).await, 0, "A published as B: the ACL must stop it");

    // B itself publishes and gets its ack; A, subscribed to B's acks, receives none of them.
    let (client_b, mut events_b) = connect(&b);
    client_b.subscribe(format!("vaxtrace/v1/devices/{b}/ack"), QoS::AtLeastOnce).await.unwrap();
    let b_acked = async {
        let mut sent = false;
        loop {
            match events_b.poll().await.unwrap() {
                Event::Incoming(Packet::SubAck(_)) if !sent => {
                    publish(&client_b, &b, batch(&b, &key_b, 1)).await;
                    sent = true;
                }
                Event::Incoming(Packet::Publish(m)) => {
                    return pb::ReadingAck::decode(m.payload.as_ref()).unwrap().acked_seq;
                }
                _ => {}
            }
        }
    };
    assert_eq!(tokio::time::timeout(Duration::from_secs(30), b_acked).await.unwrap(), 1);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(seen.try_recv().is_err(), "A received B's ack");
    assert_eq!(of(b.clone()).await, 1);
    a_loop.abort();
    ingest.abort();
    srv.stop().await;
}
