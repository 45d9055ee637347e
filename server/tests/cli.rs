//! The binary itself: `demo` starts a seeded system on a free port and prints how to reach it;
//! `token create` and `migrate` work on a file database.
#![allow(clippy::unwrap_used)]

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_vaxtrace-server");

#[test]
fn demo_starts_seeds_and_answers_health_checks() {
    // Hold a port so the demo's preferred address is taken, as on a developer's machine.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(BIN)
        .args(["demo", "--listen", &format!("127.0.0.1:{port}"), "--data-dir"])
        .arg(dir.path())
        .env("VAXTRACE_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let started = Instant::now();
    let (mut addr, mut token, mut seeded) = (String::new(), String::new(), String::new());
    while started.elapsed() < Duration::from_secs(60) && token.is_empty() {
        let Some(Ok(line)) = lines.next() else { break };
        let line = line.trim().to_owned();
        if let Some(rest) = line.strip_prefix("health") {
            addr = rest.trim().trim_start_matches("http://").trim_end_matches("/healthz").to_owned();
        } else if let Some(rest) = line.strip_prefix("seeded") {
            seeded = rest.trim().to_owned();
        } else if let Some(rest) = line.strip_prefix("admin token (shown once):") {
            token = rest.trim().to_owned();
        }
    }
    assert!(token.starts_with("vxt_"), "demo printed an admin token");
    assert!(!addr.ends_with(&format!(":{port}")), "demo moved off the taken port: {addr}");
    assert!(seeded.starts_with("29 facilities"), "{seeded}");

    let mut s = std::net::TcpStream::connect(&addr).unwrap();
    s.write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n").unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).unwrap();
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");

    // export-epcis talks gRPC to the running demo with the admin token and writes the document.
    let file = dir.path().join("events.jsonld");
    let (start, end) =
        (chrono::Utc::now() - chrono::Duration::days(300), chrono::Utc::now() + chrono::Duration::days(1));
    let (start, end) = (start.to_rfc3339(), end.to_rfc3339());
    let range = ["--start", start.as_str(), "--end", end.as_str()];
    let out = Command::new(BIN)
        .args(["export-epcis", "--server", &format!("http://{addr}"), "--token", &token, "-o"])
        .arg(&file)
        .args(range)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let doc: serde_json::Value = serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
    assert_eq!(doc["type"], "EPCISDocument");
    let steps: Vec<&str> =
        doc["epcisBody"]["eventList"].as_array().unwrap().iter().filter_map(|e| e["bizStep"].as_str()).collect();
    assert!(steps.contains(&"receiving") && steps.contains(&"shipping"), "the seeded journey: {steps:?}");
    let out = Command::new(BIN)
        .args(["export-epcis", "--server", &format!("http://{addr}"), "--token", "vxt_nope_nope"])
        .args(range)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("Unauthenticated"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // SIGTERM shuts it down gracefully.
    let _ = Command::new("kill").arg("-TERM").arg(child.id().to_string()).status();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            assert!(status.success(), "demo exits cleanly on SIGTERM: {status}");
            break;
        }
        assert!(Instant::now() < deadline, "demo did not stop on SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    }
    drop(taken);
}

#[test]
fn migrate_and_token_create_on_a_file_database() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}/v.db", dir.path().display());
    let out = Command::new(BIN).args(["migrate", "--database-url", &url]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let out = Command::new(BIN)
        .args(["token", "create", "--database-url", &url, "--role", "admin", "--description", "ops"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("vxt_"), "{stdout}");
    // A scoped role without a scope is refused with a clear message and a failure exit code.
    let out = Command::new(BIN)
        .args(["token", "create", "--database-url", &url, "--role", "depot_manager", "--description", "x"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("scope"), "{}", String::from_utf8_lossy(&out.stderr));
    let out = Command::new(BIN)
        .args(["token", "create", "--database-url", &url, "--role", "king", "--description", "x"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown role"));
}
