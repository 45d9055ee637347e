//! TLS on the server's one port, with a CA made in the test: gRPC over HTTP/2 and the pages over
//! HTTP/1.1 both negotiate through ALPN, session cookies become `Secure`, a client that does not
//! trust the CA is refused, and a plain-text client or a silent one does not stop the server.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint};
use vaxtrace_proto::v1 as pb;

struct Pki {
    ca_pem: String,
    cert_pem: String,
    key_pem: String,
}

fn pki() -> Pki {
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name.push(DnType::CommonName, "vaxtrace test CA");
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let key = KeyPair::generate().unwrap();
    let leaf = CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()]).unwrap();
    let cert = leaf.signed_by(&key, &ca_cert, &ca_key).unwrap();
    Pki { ca_pem: ca_cert.pem(), cert_pem: cert.pem(), key_pem: key.serialize_pem() }
}

fn client_config(ca_pem: &str, alpn: &[u8]) -> Arc<rustls::ClientConfig> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject as _;
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(c.unwrap()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    cfg.alpn_protocols = vec![alpn.to_vec()];
    Arc::new(cfg)
}

/// One HTTP/1.1 request over TLS; returns the response head and body as text.
async fn https(addr: std::net::SocketAddr, cfg: Arc<rustls::ClientConfig>, request: &str) -> std::io::Result<String> {
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let mut tls = tokio_rustls::TlsConnector::from(cfg).connect(name, tcp).await?;
    tls.write_all(request.as_bytes()).await?;
    let mut out = Vec::new();
    tls.read_to_end(&mut out).await.or_else(|e| if out.is_empty() { Err(e) } else { Ok(0) })?;
    Ok(String::from_utf8_lossy(&out).into_owned())
}

#[tokio::test]
async fn grpc_and_pages_over_tls() {
    let dir = tempfile::tempdir().unwrap();
    let p = pki();
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::write(&cert, &p.cert_pem).unwrap();
    std::fs::write(&key, &p.key_pem).unwrap();
    let config = vaxtrace_server::tls::server_config(&cert, &key).unwrap();
    // A key that does not belong to the certificate is a clear start-up error.
    let other = dir.path().join("other.pem");
    std::fs::write(&other, KeyPair::generate().unwrap().serialize_pem()).unwrap();
    let e = vaxtrace_server::tls::server_config(&cert, &other).unwrap_err();
    assert!(e.contains("do not fit"), "{e}");
    assert!(vaxtrace_server::tls::server_config(&dir.path().join("missing.pem"), &key).is_err());

    let app = vaxtrace_server::open("sqlite::memory:").await.unwrap();
    let admin = app.bootstrap_admin().await.unwrap().unwrap().secret;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(vaxtrace_server::serve_tls(app, listener, config, async {
        let _ = stopped.await;
    }));

    // A client that connects and says nothing, and one that speaks plain HTTP, do not block others.
    let _silent = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut plain = tokio::net::TcpStream::connect(addr).await.unwrap();
    plain.write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n").await.unwrap();

    // gRPC over TLS (HTTP/2 by ALPN).
    let tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(&p.ca_pem)).domain_name("localhost");
    let ch = Endpoint::from_shared(format!("https://127.0.0.1:{}", addr.port())).unwrap().tls_config(tls).unwrap();
    let ch = ch.connect().await.unwrap();
    let mut adm = pb::admin_service_client::AdminServiceClient::new(ch);
    let me = adm.who_am_i(vaxtrace_tests::authed(&admin, pb::WhoAmIRequest::default())).await.unwrap().into_inner();
    assert_eq!(me.role, pb::Role::Admin as i32);

    // The pages over HTTP/1.1: the session cookie is Secure.
    let body = format!("token={admin}");
    let req = format!(
        "POST /signin HTTP/1.1\r\nhost: localhost\r\ncontent-type: application/x-www-form-urlencoded\r\n\
         content-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    let resp = https(addr, client_config(&p.ca_pem, b"http/1.1"), &req).await.unwrap();
    assert!(resp.starts_with("HTTP/1.1 303"), "{resp}");
    let cookie = resp.lines().find(|l| l.to_ascii_lowercase().starts_with("set-cookie: vxt_session=")).unwrap();
    assert!(cookie.contains("; Secure") && cookie.contains("HttpOnly"), "{cookie}");
    let health = https(
        addr,
        client_config(&p.ca_pem, b"http/1.1"),
        "GET /healthz HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n\r\n",
    )
    .await
    .unwrap();
    assert!(health.starts_with("HTTP/1.1 200") && health.ends_with("ok\n"), "{health}");

    // A client that does not trust our CA is refused.
    let stranger = pki();
    let e = https(addr, client_config(&stranger.ca_pem, b"http/1.1"), "GET /healthz HTTP/1.1\r\n\r\n").await;
    assert!(e.is_err(), "{e:?}");

    let _ = stop.send(());
    server.await.unwrap().unwrap();
}

/// Mosquitto with one TLS-only listener on 127.0.0.1 (a child process; killed on drop).
struct TlsMosquitto {
    child: std::process::Child,
    port: u16,
}

impl Drop for TlsMosquitto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn tls_mosquitto(dir: &std::path::Path, p: &Pki) -> Option<TlsMosquitto> {
    if std::process::Command::new("mosquitto").arg("-h").output().is_err() {
        eprintln!("server_ingests_from_a_tls_broker: SKIPPED — mosquitto is not installed");
        return None;
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let (ca, cert, key) = (dir.join("b-ca.pem"), dir.join("b-cert.pem"), dir.join("b-key.pem"));
    std::fs::write(&ca, &p.ca_pem).unwrap();
    std::fs::write(&cert, &p.cert_pem).unwrap();
    std::fs::write(&key, &p.key_pem).unwrap();
    let mut conf = format!(
        "listener {port} 127.0.0.1\ncafile {}\ncertfile {}\nkeyfile {}\nallow_anonymous true\npersistence false\n",
        ca.display(),
        cert.display(),
        key.display()
    );
    // Started as root, Mosquitto drops to its own user, which cannot read a private temp dir.
    if std::process::Command::new("id").arg("-u").output().is_ok_and(|o| o.stdout.trim_ascii() == b"0") {
        conf.push_str("user root\n");
    }
    std::fs::write(dir.join("mosquitto.conf"), conf).unwrap();
    let child = std::process::Command::new("mosquitto")
        .arg("-c")
        .arg(dir.join("mosquitto.conf"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    Some(TlsMosquitto { child, port })
}

#[tokio::test]
async fn server_ingests_from_a_tls_broker() {
    use prost::Message as _;
    use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS, TlsConfiguration, Transport};
    use vaxtrace_server::ingest::IngestConfig;

    let dir = tempfile::tempdir().unwrap();
    let p = pki();
    let Some(broker) = tls_mosquitto(dir.path(), &p) else { return };
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, &p.ca_pem).unwrap();
    // A CA file only makes sense for mqtts://.
    let plain = IngestConfig::from_url("mqtt://127.0.0.1:1883", "x".into()).unwrap();
    assert!(plain.trust_ca_file(&ca).unwrap_err().contains("mqtts://"));

    let srv = vaxtrace_tests::TestServer::start(vaxtrace_tests::TestDb::Sqlite).await;
    let w = vaxtrace_tests::world::world(&srv).await;
    let (id, key) = vaxtrace_tests::world::register_logger(&srv, &w.tok, &w.c, &w.cu, 600).await;
    let url = format!("mqtts://127.0.0.1:{}", broker.port);
    let cfg = IngestConfig::from_url(&url, format!("vt-{}", uuid::Uuid::now_v7().simple()))
        .unwrap()
        .trust_ca_file(&ca)
        .unwrap();
    let ingest = vaxtrace_server::ingest::spawn(srv.app.clone(), cfg);

    // The device's side, over TLS too.
    let tls = vaxtrace_server::tls::client_config(Some(&ca)).unwrap();
    let mut opts = MqttOptions::new(format!("dev-{id}"), "127.0.0.1", broker.port);
    opts.set_transport(Transport::tls_with_config(TlsConfiguration::Rustls(tls)));
    let (client, mut events) = AsyncClient::new(opts, 10);
    client.subscribe(format!("vaxtrace/v1/devices/{id}/ack"), QoS::AtLeastOnce).await.unwrap();
    let batch = pb::ReadingBatch {
        device_id: id.clone(),
        readings: (1..=3)
            .map(|seq| pb::Reading {
                seq,
                time: Some(prost_types::Timestamp {
                    seconds: chrono::Utc::now().timestamp() - 600 + seq as i64,
                    nanos: 0,
                }),
                temp_c: 4.5,
                ..Default::default()
            })
            .collect(),
        ..Default::default()
    };
    let payload = vaxtrace_proto::signing::encode_signed(&batch, Some(&key)).unwrap();
    let acked = tokio::time::timeout(std::time::Duration::from_secs(30), async {
        let mut published = false;
        loop {
            match events.poll().await {
                Ok(Event::Incoming(Packet::SubAck(_))) if !published => {
                    // The server's shared subscription may join a moment after ours.
                    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
                    client
                        .publish(format!("vaxtrace/v1/devices/{id}/readings"), QoS::AtLeastOnce, false, payload.clone())
                        .await
                        .unwrap();
                    published = true;
                }
                Ok(Event::Incoming(Packet::Publish(m))) => {
                    let ack = pb::ReadingAck::decode(m.payload.as_ref()).unwrap();
                    if ack.acked_seq == 3 {
                        return ack;
                    }
                }
                Ok(_) => {}
                Err(e) => panic!("device connection over TLS failed: {e}"),
            }
        }
    })
    .await
    .expect("an ack over TLS within 30 s");
    assert_eq!((acked.acked_seq, acked.error.as_str()), (3, ""));
    let admin = srv.app.authenticate(&w.tok).await.unwrap();
    let since = Some(chrono::Utc::now() - chrono::Duration::hours(1));
    let stored = srv.app.list_readings(&admin, &id, "", since, Some(chrono::Utc::now()), 100, "").await.unwrap();
    assert_eq!(stored.items.len(), 3);
    ingest.abort();
    srv.stop().await;
}
