//! The fault suite: real `vaxtrace-agent` processes with the simulator publish through a real
//! Mosquitto to real `vaxtrace-server` processes, while the test SIGKILLs and restarts the
//! server, the broker and the agents, and keeps one agent off the network for a simulated week.
//! At the end the readings in the database are exactly the ones the agents produced (nothing
//! missing, nothing twice), no alert was opened twice, and the cold-chain alerts are exactly the
//! ones the alarm rules give over the stored readings, at reading times.
//!
//! Needs the `mosquitto` binary; without it the tests print SKIPPED, unless
//! `VAXTRACE_REQUIRE_MOSQUITTO=1` (CI) makes that a failure.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::{Duration, Instant};

use vaxtrace_coldchain::{AlarmKind, Profile, Reading, Transition, evaluate_all};
use vaxtrace_proto::v1 as pb;
use vaxtrace_proto::v1::alert_service_client::AlertServiceClient;
use vaxtrace_proto::v1::telemetry_service_client::TelemetryServiceClient;
use vaxtrace_tests::procs::{AgentProc, Cable, Mosquitto, ServerProc, SimAgent, mosquitto_installed};
use vaxtrace_tests::world::register_logger_probes;
use vaxtrace_tests::{TestDb, TestServer, authed};

/// Loggers publishing live (on a fast clock) during the chaos.
const LIVE_AGENTS: usize = 20;
/// Samples each live logger takes: 20 simulated hours at one a minute.
const LIVE_SAMPLES: u64 = 1200;
/// Samples of the logger that is offline for a week: 7 days at one per 5 minutes.
const OFFLINE_SAMPLES: u64 = 7 * 24 * 12;
/// Probes per logger: probe 0 holds steady, probe 1 of some loggers drifts warm into a HEAT alarm.
const PROBES: u64 = 2;

/// One test at a time in this binary: each starts two dozen processes.
static TURN: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn skip(name: &str) -> bool {
    if mosquitto_installed() {
        return false;
    }
    assert!(
        std::env::var("VAXTRACE_REQUIRE_MOSQUITTO").is_err(),
        "{name}: mosquitto is not installed but VAXTRACE_REQUIRE_MOSQUITTO is set"
    );
    eprintln!("{name}: SKIPPED — mosquitto is not installed");
    true
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn crashes_of_server_broker_and_agents_lose_and_repeat_nothing() {
    if skip("crashes_of_server_broker_and_agents_lose_and_repeat_nothing") {
        return;
    }
    let _turn = TURN.lock().await;
    for db in TestDb::all() {
        run(db, 1).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_replicas_share_ingest_and_one_dies_mid_run() {
    if skip("two_replicas_share_ingest_and_one_dies_mid_run") {
        return;
    }
    let _turn = TURN.lock().await;
    for db in TestDb::all() {
        run(db, 2).await;
    }
}

/// A logger under test: its process and what it should produce.
struct Logger {
    agent: AgentProc,
    readings: u64,
    interval_ms: i64,
}

async fn start_server(url: &str, mqtt: &str, log: &Path) -> ServerProc {
    let (url, mqtt, log) = (url.to_owned(), mqtt.to_owned(), log.to_owned());
    tokio::task::spawn_blocking(move || ServerProc::start(&url, &mqtt, &log, &["--no-data-check-interval", "2"]))
        .await
        .expect("start server")
}

async fn run(db: TestDb, replicas: usize) {
    let name = format!("{} with {replicas} replica(s)", db.name());
    // VAXTRACE_KEEP_FAULT_DIR=1 keeps the servers' and agents' logs and data for a post-mortem.
    let keep = std::env::var("VAXTRACE_KEEP_FAULT_DIR").is_ok_and(|v| v == "1");
    let dir = tempfile::Builder::new().prefix("vaxtrace-fault").disable_cleanup(keep).tempdir().expect("tempdir");
    if keep {
        eprintln!("{name}: keeping {}", dir.path().display());
    }
    let srv = TestServer::start_reachable(db, dir.path()).await;
    let w = vaxtrace_tests::world::world(&srv).await;
    let mut broker = Mosquitto::start(dir.path());
    let mqtt = format!("mqtt://127.0.0.1:{}", broker.port);

    // The week offline: its logger publishes through a cable that starts unplugged.
    let cable = Cable::new(broker.port, false);
    let mut loggers = Vec::new();
    for i in 0..=LIVE_AGENTS {
        let offline = i == LIVE_AGENTS;
        let interval_secs = if offline { 300 } else { 60 };
        let (id, key) = register_logger_probes(&srv, &srv.admin_token, &w.c, &w.cu, PROBES as u32, interval_secs).await;
        let data = dir.path().join(format!("agent-{i}"));
        let warm = offline || i % 4 == 0;
        let mut sim = SimAgent {
            id: &id,
            key: &key,
            data_dir: &data,
            mqtt_port: broker.port,
            // 20 simulated hours in about 30 s: long enough for the warm ones to raise HEAT.
            interval: "60s",
            start: "now - 1d",
            speed: 2400,
            max_readings: LIVE_SAMPLES * PROBES,
            seed: 11,
            scenarios: &["stable", if warm { "warm_drift" } else { "stable" }],
        };
        if offline {
            // A week of 5-minute samples in a few seconds, the last a day before now, through the cable.
            sim = SimAgent {
                mqtt_port: cable.port,
                interval: "5m",
                start: "now - 8d",
                speed: 200_000,
                max_readings: OFFLINE_SAMPLES * PROBES,
                ..sim
            };
        }
        let (config, samples) = (sim.toml(), sim.max_readings / PROBES);
        let agent = AgentProc::start(dir.path(), &id, &data, &config);
        loggers.push(Logger { agent, readings: samples * PROBES, interval_ms: interval_secs * 1000 });
    }

    let logs: Vec<_> = (0..replicas).map(|r| dir.path().join(format!("server-{r}.log"))).collect();
    let mut servers = Vec::new();
    for log in &logs {
        servers.push(Some(start_server(&srv.database_url, &mqtt, log).await));
    }

    // The chaos, at fixed points of the run while readings flow. In the replica run only
    // replica 0 is killed (the last time for good); replica 1 carries on throughout.
    let t0 = Instant::now();
    let mut plugged_at = None;
    let mut step = 0;
    let steps: [(u64, &str); 9] = [
        (4, "kill server"),
        (6, "restart server"),
        (9, "kill agents 0..7"),
        (10, "restart agents 0..7"),
        (13, "restart broker"),
        (16, "plug the offline logger in"),
        (17, "kill server"),
        (19, "restart server; kill agents 7..14 and restart them"),
        (24, "kill server for good (replicas) / kill and restart it (single)"),
    ];
    while step < steps.len() {
        let (at, what) = steps[step];
        let due = t0 + Duration::from_secs(at);
        tokio::time::sleep(due.saturating_duration_since(Instant::now())).await;
        eprintln!("{name}: t={:>4.1}s {what}", t0.elapsed().as_secs_f64());
        match step {
            0 | 6 => {
                if let Some(mut p) = servers[0].take() {
                    p.proc.kill();
                }
            }
            1 | 7 => servers[0] = Some(start_server(&srv.database_url, &mqtt, &logs[0]).await),
            2 => loggers[..7].iter_mut().for_each(|l| l.agent.kill()),
            3 => loggers[..7].iter_mut().for_each(|l| l.agent.restart()),
            4 => {
                let b = &mut broker;
                tokio::task::block_in_place(|| b.restart());
            }
            5 => {
                cable.plug();
                plugged_at = Some(chrono::Utc::now());
            }
            _ => {}
        }
        if step == 7 {
            for l in &mut loggers[7..14] {
                l.agent.kill();
                l.agent.restart();
            }
        }
        if step == 8 {
            if let Some(mut p) = servers[0].take() {
                p.proc.kill();
            }
            if replicas == 1 {
                tokio::time::sleep(Duration::from_millis(500)).await;
                servers[0] = Some(start_server(&srv.database_url, &mqtt, &logs[0]).await);
            }
        }
        step += 1;
    }
    let plugged_at = plugged_at.expect("offline logger plugged in");

    // Everything the loggers produced is acked in the end.
    let deadline = Instant::now() + Duration::from_secs(240);
    loop {
        let mut behind = Vec::new();
        for l in &loggers {
            let d = srv.app.store().get_device(&l.agent.device_id).await.expect("device").expect("registered").0;
            if d.last_seq < l.readings as i64 {
                behind.push((l.agent.device_id.clone(), d.last_seq, l.readings));
            }
        }
        if behind.is_empty() {
            break;
        }
        if Instant::now() > deadline {
            // Say which readings are gone: neither stored nor still held unacked by the agent.
            let mut tel = TelemetryServiceClient::new(srv.channel().await);
            let mut lost = Vec::new();
            for l in &mut loggers {
                l.agent.kill();
                let (stored, _) = stored_readings(&mut tel, &srv.admin_token, &l.agent.device_id).await;
                let dir = l.agent.data_dir.join(vaxtrace_agent::agent::BUFFER_DIR);
                let held: BTreeSet<u64> =
                    vaxtrace_agent::buffer::Buffer::open(&dir, vaxtrace_agent::buffer::BufferConfig::default())
                        .and_then(|b| b.unacked(0, usize::MAX))
                        .map(|v| v.into_iter().map(|(seq, _)| seq).collect())
                        .unwrap_or_default();
                let gone: Vec<u64> =
                    (1..=l.readings).filter(|s| !stored.contains_key(s) && !held.contains(s)).take(10).collect();
                if !gone.is_empty() {
                    lost.push(format!("{}: seqs {gone:?}…", l.agent.device_id));
                }
            }
            panic!(
                "{name}: loggers not fully acked after the run: {behind:?}\nreadings lost (acked to the agent, never stored): {lost:#?}"
            );
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    eprintln!("{name}: all readings acked at t={:.1}s", t0.elapsed().as_secs_f64());
    for l in &mut loggers {
        l.agent.kill();
    }

    let ch = srv.channel().await;
    let mut tel = TelemetryServiceClient::new(ch.clone());
    let mut oracle: BTreeSet<(i32, String, u32, i64)> = BTreeSet::new();
    for l in &loggers {
        // What the agent produced: its buffer's seq counter, which never repeats a seq.
        let produced = {
            let dir = l.agent.data_dir.join(vaxtrace_agent::agent::BUFFER_DIR);
            let b = vaxtrace_agent::buffer::Buffer::open(&dir, vaxtrace_agent::buffer::BufferConfig::default())
                .expect("open agent buffer");
            assert_eq!(b.dropped_total(), 0, "{name}: the agent dropped readings");
            b.next_seq() - 1
        };
        assert_eq!(produced, l.readings, "{name}: agent {} produced {produced} readings", l.agent.device_id);

        let (seqs, mut per_probe) = stored_readings(&mut tel, &srv.admin_token, &l.agent.device_id).await;
        let twice: Vec<_> = seqs.iter().filter(|(_, n)| **n > 1).map(|(s, _)| *s).collect();
        assert!(twice.is_empty(), "{name}: {}: seqs stored twice: {twice:?}", l.agent.device_id);
        let stored: BTreeSet<u64> = seqs.keys().copied().collect();
        let expected: BTreeSet<u64> = (1..=produced).collect();
        let missing: Vec<_> = expected.difference(&stored).take(20).collect();
        assert!(missing.is_empty(), "{name}: {}: seqs missing: {missing:?}…", l.agent.device_id);
        assert_eq!(stored, expected, "{name}: {}: stored seqs", l.agent.device_id);

        // The rules over the stored readings, in reading-time order, give the expected alerts.
        let profile = Profile::vaccine_2_8().with_expected_interval_ms(l.interval_ms);
        for (probe, readings) in &mut per_probe {
            for e in evaluate_all(&profile, readings) {
                let kind = match e.kind {
                    AlarmKind::Excursion => pb::AlertKind::Excursion,
                    AlarmKind::Heat => pb::AlertKind::Heat,
                    AlarmKind::Freeze => pb::AlertKind::Freeze,
                    _ => continue,
                };
                if e.transition == Transition::Opened {
                    oracle.insert((kind as i32, l.agent.device_id.clone(), *probe, e.start_ms));
                }
            }
        }
    }

    // Readings committed by a server killed before it evaluated them are evaluated by the next
    // evaluation of their device or by the periodic sweep: wait (bounded) for the alerts to agree.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match check_alerts(&srv, &name, &loggers, &oracle, plugged_at).await {
            Ok(()) => break,
            Err(e) if Instant::now() > deadline => panic!("{e}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(500)).await,
        }
    }
    drop(cable);
    for s in servers.iter_mut() {
        if let Some(mut p) = s.take() {
            p.proc.kill();
        }
    }
    broker.kill();
    srv.stop().await;
}

/// No alert twice, and the standing cold-chain alerts are exactly the rules' over the stored
/// readings; `Err` says what differs.
async fn check_alerts(
    srv: &TestServer,
    name: &str,
    loggers: &[Logger],
    oracle: &BTreeSet<(i32, String, u32, i64)>,
    plugged_at: chrono::DateTime<chrono::Utc>,
) -> Result<(), String> {
    let mut alerts = AlertServiceClient::new(srv.channel().await);
    let mut all = Vec::new();
    let mut token = String::new();
    loop {
        let page = alerts
            .list_alerts(authed(
                &srv.admin_token,
                pb::ListAlertsRequest { page_size: 1000, page_token: token.clone(), ..Default::default() },
            ))
            .await
            .map_err(|e| format!("list alerts: {e}"))?
            .into_inner();
        all.extend(page.alerts);
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    let key = |a: &pb::Alert| {
        let s = a.subject.clone().unwrap_or_default();
        let t = a.start_time.unwrap_or_default();
        (
            a.kind,
            s.device_id,
            s.probe,
            s.storage_unit_id,
            s.lot_id,
            s.product_id,
            s.shipment_id,
            t.seconds * 1000 + i64::from(t.nanos) / 1_000_000,
        )
    };
    let mut seen = BTreeMap::new();
    for a in &all {
        *seen.entry(key(a)).or_insert(0) += 1;
    }
    let doubled: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).collect();
    let show = |dev: &str| {
        let mut v: Vec<_> = all
            .iter()
            .filter(|a| a.subject.as_ref().is_some_and(|s| s.device_id == dev))
            .map(|a| {
                let s = a.subject.clone().unwrap_or_default();
                format!(
                    "  kind {} probe {} start {} end {:?} state {} sev {} active {} opened {} resolution {:?}",
                    a.kind,
                    s.probe,
                    a.start_time.unwrap_or_default().seconds,
                    a.end_time.map(|t| t.seconds),
                    a.state,
                    a.severity,
                    a.condition_active,
                    a.open_time.unwrap_or_default().seconds,
                    a.resolution.as_ref().map(|r| (r.resolution, r.comment.clone()))
                )
            })
            .collect();
        v.sort();
        v.join("\n")
    };
    if let Some(((_, dev, ..), _)) = doubled.first() {
        return Err(format!("{name}: alerts opened twice: {doubled:?}\nthat logger's alerts:\n{}", show(dev)));
    }

    // An alert withdrawn after a replay (a gap that was only a gap in arrival) recorded what was
    // seen at the time; the truth is what stands.
    let superseded = pb::AlertResolution::Superseded as i32;
    let standing = |a: &&pb::Alert| a.resolution.as_ref().is_none_or(|r| r.resolution != superseded);
    let cold: BTreeSet<(i32, String, u32, i64)> = all
        .iter()
        .filter(standing)
        .filter(|a| {
            [pb::AlertKind::Excursion, pb::AlertKind::Heat, pb::AlertKind::Freeze].map(|k| k as i32).contains(&a.kind)
        })
        .map(|a| {
            let (kind, dev, probe, .., at) = key(a);
            (kind, dev, probe, at)
        })
        .collect();
    let extra: Vec<_> = cold.difference(oracle).collect();
    let lacking: Vec<_> = oracle.difference(&cold).collect();
    if let Some((_, dev, ..)) = extra.first().or(lacking.first()) {
        return Err(format!(
            "{name}: cold-chain alerts differ from the rules: extra {extra:?}, missing {lacking:?}\nthat logger's alerts:\n{}",
            show(dev)
        ));
    }
    // warm_drift passes +8 °C six hours into each simulated day and stays there until midnight:
    // one HEAT alarm in the live loggers' 20 hours, one per day in the offline week.
    let heat = pb::AlertKind::Heat as i32;
    let back = plugged_at.timestamp();
    for (i, l) in loggers.iter().enumerate() {
        let starts: Vec<i64> = all
            .iter()
            .filter(standing)
            .filter(|a| a.kind == heat && a.subject.as_ref().is_some_and(|s| s.device_id == l.agent.device_id))
            .map(|a| a.start_time.unwrap_or_default().seconds)
            .collect();
        let expected = match (i == LIVE_AGENTS, i % 4 == 0) {
            (true, _) => 7,
            (false, true) => 1,
            (false, false) => 0,
        };
        if starts.len() != expected {
            return Err(format!("{name}: logger {i} has {} HEAT alarms, expected {expected}", starts.len()));
        }
        if i == LIVE_AGENTS {
            // The offline week's alarms carry reading times from that week (its last reading
            // was taken a day before now), not the time its logger came back.
            if starts.iter().any(|s| *s >= back - 86_400) {
                return Err(format!(
                    "{name}: the offline week's HEAT alarms start at {starts:?}; its logger came back at {back}"
                ));
            }
        }
    }
    Ok(())
}

/// A device's stored readings through `ListReadings`: how many rows each seq has, and the
/// readings by probe.
async fn stored_readings(
    tel: &mut TelemetryServiceClient<tonic::transport::Channel>,
    token: &str,
    device_id: &str,
) -> (BTreeMap<u64, u32>, BTreeMap<u32, Vec<Reading>>) {
    let mut seqs: BTreeMap<u64, u32> = BTreeMap::new();
    let mut per_probe: BTreeMap<u32, Vec<Reading>> = BTreeMap::new();
    let mut page_token = String::new();
    loop {
        let page = tel
            .list_readings(authed(
                token,
                pb::ListReadingsRequest {
                    page_size: 1000,
                    page_token: page_token.clone(),
                    device_id: device_id.to_owned(),
                    start_time: Some(prost_types::Timestamp { seconds: 0, nanos: 0 }),
                    ..Default::default()
                },
            ))
            .await
            .expect("list readings")
            .into_inner();
        for r in page.readings {
            let r = r.reading.expect("reading");
            *seqs.entry(r.seq).or_default() += 1;
            let t = r.time.expect("time");
            let ms = t.seconds * 1000 + i64::from(t.nanos) / 1_000_000;
            per_probe.entry(r.probe).or_default().push(Reading::from_celsius(ms, r.temp_c));
        }
        if page.next_page_token.is_empty() {
            break;
        }
        page_token = page.next_page_token;
    }
    (seqs, per_probe)
}
