//! The command line: check-config, read --once, and clear errors for bad configs and sensors.
#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::process::{Command, Output};

use vaxtrace_agent::config::Config;

fn agent(config: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_vaxtrace-agent")).arg("--config").arg(config).args(args).output().unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn write(dir: &Path, body: &str) -> std::path::PathBuf {
    let path = dir.join("agent.toml");
    let data = dir.join("data");
    std::fs::write(
        &path,
        format!(
            "device_id = \"dev-7\"\ndata_dir = \"{}\"\n[mqtt]\nurl = \"mqtt://127.0.0.1:1\"\n{body}",
            data.display()
        ),
    )
    .unwrap();
    path
}

#[test]
fn the_example_config_in_the_repo_is_valid() {
    let text = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("agent.example.toml")).unwrap();
    let c = Config::parse(&text).unwrap();
    assert_eq!(c.probes.len(), 2);
    assert!(c.mqtt_endpoint().unwrap().tls);
}

#[test]
fn check_config_prints_a_summary_and_rejects_bad_configs_with_the_key_named() {
    let dir = tempfile::tempdir().unwrap();
    let good = write(dir.path(), "[uplink]\nbatch_size = 30\n[[probes]]\nsource = { kind = \"simulator\" }\n");
    let out = agent(&good, &["check-config"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(stdout.contains("config OK") && stdout.contains("batch 30") && stdout.contains("127.0.0.1:1"), "{stdout}");
    assert!(stdout.contains("OFF (unsigned"), "{stdout}");

    let bad = write(dir.path(), "[[probes]]\nindex = 16\nsource = { kind = \"simulator\" }\n");
    let out = agent(&bad, &["check-config"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("probes[0].index 16"), "{}", text(&out.stderr));

    let missing_key =
        write(dir.path(), "[uplink]\nkey_file = \"/nonexistent/key\"\n[[probes]]\nsource = { kind = \"simulator\" }\n");
    let out = agent(&missing_key, &["check-config"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("uplink.key_file /nonexistent/key"), "{}", text(&out.stderr));

    let out = agent(&dir.path().join("nope.toml"), &["check-config"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("cannot read config file"), "{}", text(&out.stderr));
}

#[test]
fn read_once_prints_every_probe_without_touching_buffer_or_network() {
    let dir = tempfile::tempdir().unwrap();
    let temp = dir.path().join("temp");
    std::fs::write(&temp, "4.75\n").unwrap();
    let w1 = dir.path().join("w1");
    std::fs::write(&w1, "e1 01 : crc=d2 YES\ne1 01 t=-18500\n").unwrap();
    let cfg = write(
        dir.path(),
        &format!(
            "[[probes]]\nsource = {{ kind = \"file\", path = \"{}\" }}\n\
             [[probes]]\nindex = 5\nsource = {{ kind = \"ds18b20\", path = \"{}\" }}\n\
             [[probes]]\nsource = {{ kind = \"command\", command = [\"sh\", \"-c\", \"echo 3.5\"] }}\n",
            temp.display(),
            w1.display()
        ),
    );
    let out = agent(&cfg, &["read", "--once", "--json"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let lines: Vec<serde_json::Value> = text(&out.stdout).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let temps: Vec<(u64, f64)> =
        lines.iter().map(|v| (v["probe"].as_u64().unwrap(), v["temp_c"].as_f64().unwrap())).collect();
    assert_eq!(temps, vec![(0, 4.75), (5, -18.5), (2, 3.5)]);
    assert!(!dir.path().join("data").exists(), "read --once must not create the buffer");

    // An unreadable probe: its error is printed, the others still are, and the exit code says so.
    std::fs::remove_file(&w1).unwrap();
    let out = agent(&cfg, &["read", "--once"]);
    assert_eq!(out.status.code(), Some(1));
    let stdout = text(&out.stdout);
    assert!(stdout.contains("probe 0 \"\": 4.75 °C"), "{stdout}");
    assert!(stdout.contains("probe 5 \"\": ERROR cannot read DS18B20"), "{stdout}");
}
