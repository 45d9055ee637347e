//! The binary itself: `demo` starts a seeded system on a free port and prints how to reach it;
//! `token create` and `migrate` work on a file database.
#![allow(clippy::unwrap_used)]

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_vaxtrace-server");

/// A child process that a failing assertion must not leave running.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if self.0.try_wait().ok().flatten().is_none() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

#[test]
fn demo_starts_seeds_and_answers_health_checks() {
    // Hold a port so the demo's preferred address is taken, as on a developer's machine.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let dir = tempfile::tempdir().unwrap();
    let mut child = KillOnDrop(
        Command::new(BIN)
            .args(["demo", "--listen", &format!("127.0.0.1:{port}"), "--data-dir"])
            .arg(dir.path())
            .env("VAXTRACE_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let child = &mut child.0;
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

fn run(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(BIN).args(args).env("VAXTRACE_LOG", "warn").output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

const EXAMPLE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../onboarding/example");

#[test]
fn import_the_example_country_then_export_backup_and_manage_tokens_and_devices() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("v.db");
    let url = format!("sqlite://{}", db.display());
    let (ok, out, err) = run(&["import", "--database-url", &url, "--dir", EXAMPLE, "--dry-run"]);
    assert!(ok, "{out}{err}");
    assert!(out.contains("nothing was written"), "{out}");
    let secrets = dir.path().join("secrets.csv");
    let (ok, out, err) =
        run(&["import", "--database-url", &url, "--dir", EXAMPLE, "--secrets-out", secrets.to_str().unwrap()]);
    assert!(ok, "{out}{err}");
    assert!(out.contains("wrote") && out.contains("rows/s"), "{out}");
    // Progress goes to stderr as plain lines when stderr is not a terminal.
    assert!(err.contains("import: facilities:"), "{err}");
    let written = std::fs::read_to_string(&secrets).unwrap();
    assert!(written.starts_with("kind,subject,id,secret\n") && written.contains("vxt_"), "{written}");
    assert!(!out.contains("vxt_"), "secrets went to the file only");
    let (ok, out, _) = run(&["import", "--database-url", &url, "--dir", EXAMPLE]);
    assert!(ok && out.contains("nothing new"), "{out}");

    // Export writes every format; `export readings` of an unmonitored unit is a header.
    let exp = dir.path().join("export");
    let (ok, out, err) = run(&["export", "--database-url", &url, "--dir", exp.to_str().unwrap()]);
    assert!(ok, "{out}{err}");
    let facilities = std::fs::read_to_string(exp.join("facilities.csv")).unwrap();
    assert!(facilities.starts_with("code,parent_code,kind,"), "{facilities}");
    assert_eq!(facilities.lines().count(), 24);
    let (ok, out, err) = run(&[
        "export",
        "readings",
        "--database-url",
        &url,
        "--facility",
        "RU-NVS",
        "--unit-name",
        "WIC 1",
        "--start",
        "2020-01-01T00:00:00Z",
    ]);
    assert!(ok, "{out}{err}");
    assert!(out.starts_with("time,device_serial,device_id,seq,"), "{out}");

    // Tokens: list, revoke.
    let (ok, out, _) = run(&["token", "list", "--database-url", &url]);
    assert!(ok);
    let dio = out.lines().find(|l| l.contains("DIO Lakeside")).unwrap().to_owned();
    let id = dio.split(',').next().unwrap();
    let (ok, out, err) = run(&["token", "revoke", "--database-url", &url, id]);
    assert!(ok && out.contains("revoked"), "{out}{err}");
    let (_, out, _) = run(&["token", "list", "--database-url", &url]);
    assert!(!out.contains("DIO Lakeside"), "{out}");
    let (_, out, _) = run(&["token", "list", "--database-url", &url, "--include-revoked"]);
    assert!(out.contains("DIO Lakeside"), "{out}");

    // Devices: registered once with a key shown once; the same registration changes nothing.
    let reg = [
        "device",
        "register",
        "--database-url",
        &url,
        "--serial",
        "CLI-1",
        "--facility",
        "RU-S-SVS",
        "--probe",
        "0=WIC 1:cooler",
        "--probe",
        "1=DF 1",
    ];
    let (ok, out, err) = run(&reg);
    assert!(ok, "{out}{err}");
    let key = out.lines().last().unwrap();
    assert_eq!(key.len(), 64, "{out}");
    let (ok, out, _) = run(&reg);
    assert!(ok && out.contains("already registered"), "{out}");
    let (ok, _, err) = run(&[
        "device",
        "register",
        "--database-url",
        &url,
        "--serial",
        "CLI-2",
        "--facility",
        "RU-S-SVS",
        "--probe",
        "0=Nope",
    ]);
    assert!(!ok && err.contains("unit_name: no storage unit 'Nope'"), "{err}");

    // Backup: a copy that opens as a vaxtrace database; never over an existing file.
    let backup = dir.path().join("backup.db");
    let (ok, out, err) = run(&["backup", "--database-url", &url, "--out", backup.to_str().unwrap()]);
    assert!(ok, "{out}{err}");
    let (ok, out, _) = run(&["token", "list", "--database-url", &format!("sqlite://{}", backup.display())]);
    assert!(ok && out.contains("Ruritania EPI admin"), "{out}");
    let (ok, _, err) = run(&["backup", "--database-url", &url, "--out", backup.to_str().unwrap()]);
    assert!(!ok && err.contains("exists"), "{err}");
    let out = Command::new(BIN)
        .args(["backup", "--database-url", "postgres://u:secret@127.0.0.1:1/db", "--out", "x.dump"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("pg_dump") && !err.contains("secret"), "{err}");
}

#[test]
fn a_dry_run_with_errors_exits_non_zero_and_names_file_line_and_column() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad");
    std::fs::create_dir(&bad).unwrap();
    for f in std::fs::read_dir(EXAMPLE).unwrap() {
        let f = f.unwrap();
        std::fs::copy(f.path(), bad.join(f.file_name())).unwrap();
    }
    let mut lots = std::fs::OpenOptions::new().append(true).open(bad.join("lots.csv")).unwrap();
    writeln!(lots, "PENTA10,PT9999,2027-13-01,,").unwrap();
    let mut fac = std::fs::OpenOptions::new().append(true).open(bad.join("facilities.csv")).unwrap();
    writeln!(fac, "RU-X,RU-NOPE,district_store,X,,,,,").unwrap();
    let url = format!("sqlite://{}/v.db", dir.path().display());
    let (ok, out, err) = run(&["import", "--database-url", &url, "--dir", bad.to_str().unwrap(), "--dry-run"]);
    assert!(!ok, "{out}");
    assert!(out.contains("facilities.csv:25:parent_code: unknown parent facility 'RU-NOPE'"), "{out}");
    assert!(out.contains("lots.csv:9:expiry: '2027-13-01' is not a date"), "{out}");
    assert!(err.contains("2 problem(s)") && err.contains("nothing was written"), "{err}");
}

#[test]
fn every_command_has_help_and_completions_print() {
    for cmd in [
        vec!["import"],
        vec!["export"],
        vec!["export", "readings"],
        vec!["token", "list"],
        vec!["token", "revoke"],
        vec!["device", "register"],
        vec!["backup"],
        vec!["completions"],
    ] {
        let mut args = cmd.clone();
        args.push("--help");
        let (ok, out, err) = run(&args);
        assert!(ok && out.contains("Usage: vaxtrace-server"), "{cmd:?}: {out}{err}");
    }
    let (ok, out, _) = run(&["completions", "bash"]);
    assert!(
        ok && out.contains("complete -F _vaxtrace__server") && out.contains("import"),
        "{}",
        &out[..out.len().min(200)]
    );
    let (ok, out, _) = run(&["completions", "zsh"]);
    assert!(ok && out.contains("#compdef vaxtrace-server"));
}
