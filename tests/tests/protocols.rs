//! The server answers every protocol on its one port: gRPC health, reflection (so grpcurl needs no
//! proto files), grpc-web over HTTP/1.1, and plain HTTP `/healthz` and `/metrics`.
#![allow(clippy::unwrap_used)]

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio_stream::StreamExt as _;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::{HealthCheckRequest, health_check_response::ServingStatus};
use tonic_reflection::pb::v1::ServerReflectionRequest;
use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
use vaxtrace_tests::{TestDb, TestServer};

/// Sends one HTTP/1.1 request and returns the whole response as text (headers and body).
async fn http(addr: std::net::SocketAddr, head: &str, body: &[u8]) -> Vec<u8> {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(head.as_bytes()).await.unwrap();
    s.write_all(body).await.unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).await.unwrap();
    out
}

#[tokio::test]
async fn health_reflection_grpc_web_and_http() {
    let s = TestServer::start(TestDb::Sqlite).await;
    let ch = s.channel().await;

    let mut health = HealthClient::new(ch.clone());
    for service in ["", "vaxtrace.v1.FacilityService"] {
        let r = health.check(HealthCheckRequest { service: service.into() }).await.unwrap().into_inner();
        assert_eq!(r.status, ServingStatus::Serving as i32, "{service}");
    }

    let mut refl = ServerReflectionClient::new(ch);
    let req = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut stream = refl.server_reflection_info(tokio_stream::iter([req])).await.unwrap().into_inner();
    let Some(Ok(resp)) = stream.next().await else { panic!("no reflection answer") };
    let Some(MessageResponse::ListServicesResponse(list)) = resp.message_response else { panic!("wrong answer") };
    let names: Vec<_> = list.service.iter().map(|s| s.name.as_str()).collect();
    for want in
        ["vaxtrace.v1.FacilityService", "vaxtrace.v1.StockService", "vaxtrace.v1.AlertService", "grpc.health.v1.Health"]
    {
        assert!(names.contains(&want), "reflection lists {want}: {names:?}");
    }

    // grpc-web over HTTP/1.1: WhoAmI with the admin token; the frame is flag 0 + length 0 (empty message).
    let head = format!(
        "POST /vaxtrace.v1.AdminService/WhoAmI HTTP/1.1\r\nhost: x\r\ncontent-type: application/grpc-web+proto\r\n\
         x-grpc-web: 1\r\nauthorization: Bearer {}\r\ncontent-length: 5\r\nconnection: close\r\n\r\n",
        s.admin_token
    );
    let resp = String::from_utf8_lossy(&http(s.addr, &head, &[0, 0, 0, 0, 0]).await).to_string();
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    assert!(resp.contains("application/grpc-web"), "{resp}");
    assert!(resp.contains("grpc-status:0") || resp.contains("grpc-status: 0"), "{resp}");
    assert!(resp.contains("bootstrap admin"), "the WhoAmI answer is in the body: {resp}");

    let resp = String::from_utf8_lossy(
        &http(s.addr, "GET /healthz HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n", b"").await,
    )
    .to_string();
    assert!(resp.starts_with("HTTP/1.1 200") && resp.ends_with("ok\n"), "{resp}");
    let resp = String::from_utf8_lossy(
        &http(s.addr, "GET /metrics HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n", b"").await,
    )
    .to_string();
    assert!(resp.contains("vaxtrace_grpc_requests_total"), "{resp}");
    assert!(resp.contains("# TYPE vaxtrace_uptime_seconds gauge"), "{resp}");
    s.stop().await;
}
