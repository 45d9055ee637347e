//! The reading queries (ListReadings, QueryReadings, GetLatestReadings), UpdateDevice and the
//! ListDevices filters, end to end through gRPC on every engine. Readings enter through the
//! server's ingest use case as signed protobuf batches, exactly as the MQTT subscriber hands them
//! over, so they are validated, stored and evaluated the real way.
#![allow(clippy::unwrap_used)]

use std::collections::HashMap;

use chrono::{DateTime, Duration, Utc};
use tonic::Code;
use tonic::transport::Channel;
use vaxtrace_proto::signing::encode_signed;
use vaxtrace_proto::v1 as pb;
use vaxtrace_proto::v1::admin_service_client::AdminServiceClient;
use vaxtrace_proto::v1::facility_service_client::FacilityServiceClient;
use vaxtrace_proto::v1::telemetry_service_client::TelemetryServiceClient;
use vaxtrace_tests::world::{World, world};
use vaxtrace_tests::{TestDb, TestServer, authed, reason};

/// One reading the test sent, as the server should serve it back.
#[derive(Debug, Clone)]
struct Sent {
    device: String,
    seq: u64,
    probe: u32,
    unit: String,
    time: DateTime<Utc>,
    /// `None` for a sensor fault.
    temp: Option<f64>,
}

impl Sent {
    fn key(&self) -> (DateTime<Utc>, String, u64) {
        (self.time, self.device.clone(), self.seq)
    }
}

struct Dev {
    id: String,
    key: Vec<u8>,
    next_seq: u64,
}

/// The world of `vaxtrace_tests::world` plus a second district, more units, four loggers with
/// readings, and tokens for every role the checks need.
struct Fx {
    srv: TestServer,
    w: World,
    tel: TelemetryServiceClient<Channel>,
    /// District D2 (beside D) with cold-chain point C2 and its unit C2U.
    d2: String,
    c2u: String,
    /// A second unit at D and a second unit at C.
    du2: String,
    cu2: String,
    /// At C: probes 0 and 1 in CU.
    dev1: Dev,
    /// At C: probe 0 in CU.
    dev2: Dev,
    /// At D: probe 0 in DU, probe 1 in DU2 (which never reports).
    dev3: Dev,
    /// At C2: probe 0 in C2U.
    dev4: Dev,
    sent: Vec<Sent>,
    /// The first minute of the readings (two days ago, on the hour).
    t0: DateTime<Utc>,
    officer_d: String,
    officer_d2: String,
    depot_c: String,
    device_tok: String,
}

fn ts(t: DateTime<Utc>) -> prost_types::Timestamp {
    prost_types::Timestamp { seconds: t.timestamp(), nanos: i32::try_from(t.timestamp_subsec_nanos()).unwrap() }
}

fn from_ts(t: &prost_types::Timestamp) -> DateTime<Utc> {
    DateTime::from_timestamp(t.seconds, u32::try_from(t.nanos).unwrap()).unwrap()
}

fn minutes(m: i64) -> Option<prost_types::Duration> {
    Some(prost_types::Duration { seconds: m * 60, nanos: 0 })
}

/// The `field` metadata of an INVALID_ARGUMENT.
fn field(s: &tonic::Status) -> String {
    use tonic_types::StatusExt as _;
    s.get_error_details().error_info().and_then(|i| i.metadata.get("field").cloned()).unwrap_or_default()
}

async fn unit(fac: &mut FacilityServiceClient<Channel>, tok: &str, facility: &str, name: &str) -> String {
    let u = pb::StorageUnit {
        facility_id: facility.into(),
        kind: 1,
        name: name.into(),
        temperature_profile: 1,
        ..Default::default()
    };
    let r = pb::CreateStorageUnitRequest { storage_unit: Some(u), request_id: String::new() };
    fac.create_storage_unit(authed(tok, r)).await.unwrap().into_inner().id
}

async fn facility(fac: &mut FacilityServiceClient<Channel>, tok: &str, parent: &str, kind: pb::FacilityKind) -> String {
    let f = pb::Facility {
        parent_id: parent.into(),
        kind: kind as i32,
        code: format!("F-{}", uuid::Uuid::now_v7().simple()),
        name: "facility".into(),
        ..Default::default()
    };
    let r = pb::CreateFacilityRequest { facility: Some(f), request_id: String::new() };
    fac.create_facility(authed(tok, r)).await.unwrap().into_inner().id
}

async fn register(tel: &mut TelemetryServiceClient<Channel>, tok: &str, facility: &str, probes: &[(u32, &str)]) -> Dev {
    let d = pb::Device {
        serial: format!("SN-{}", uuid::Uuid::now_v7().simple()),
        name: "logger".into(),
        model: "Model A".into(),
        facility_id: facility.into(),
        probes: probes
            .iter()
            .map(|(i, u)| pb::Probe { index: *i, storage_unit_id: (*u).into(), label: format!("probe {i}") })
            .collect(),
        expected_interval: minutes(10),
        ..Default::default()
    };
    let r = tel
        .register_device(authed(tok, pb::RegisterDeviceRequest { device: Some(d), request_id: String::new() }))
        .await
        .unwrap()
        .into_inner();
    Dev { id: r.device.unwrap().id, key: r.key, next_seq: 1 }
}

async fn token(adm: &mut AdminServiceClient<Channel>, tok: &str, role: pb::Role, scope: &str, device: &str) -> String {
    let r = pb::CreateTokenRequest {
        role: role as i32,
        scope_facility_id: scope.into(),
        device_id: device.into(),
        description: format!("{role:?}"),
        request_id: String::new(),
    };
    adm.create_token(authed(tok, r)).await.unwrap().into_inner().secret
}

/// Sends readings of one device through the ingest use case; each is (probe, time, temperature
/// or `None` for a sensor fault). Returns the ack's error ("" when stored).
async fn send(
    srv: &TestServer,
    dev: &mut Dev,
    unit_of: &HashMap<u32, String>,
    readings: &[(u32, DateTime<Utc>, Option<f64>)],
    sent: &mut Vec<Sent>,
) -> &'static str {
    let mut batch = pb::ReadingBatch { device_id: dev.id.clone(), ..Default::default() };
    let mut mine = Vec::new();
    for (probe, time, temp) in readings {
        let seq = dev.next_seq;
        dev.next_seq += 1;
        batch.readings.push(pb::Reading {
            seq,
            time: Some(ts(*time)),
            probe: *probe,
            temp_c: temp.unwrap_or(0.0),
            sensor_fault: temp.is_none().then_some(true),
            ..Default::default()
        });
        mine.push(Sent {
            device: dev.id.clone(),
            seq,
            probe: *probe,
            unit: unit_of[probe].clone(),
            time: *time,
            temp: *temp,
        });
    }
    let bytes = encode_signed(&batch, Some(&dev.key)).unwrap();
    let ack = srv.app.ingest(&dev.id, &bytes, false).await.unwrap();
    if ack.error.is_empty() {
        assert_eq!(ack.rejected, 0, "every test reading is valid");
        assert_eq!(ack.acked_seq, i64::try_from(dev.next_seq - 1).unwrap(), "the batch is committed");
        sent.extend(mine);
    }
    ack.error
}

async fn fixture(db: TestDb) -> Fx {
    let srv = TestServer::start(db).await;
    let w = world(&srv).await;
    let ch = srv.channel().await;
    let mut fac = FacilityServiceClient::new(ch.clone());
    let mut tel = TelemetryServiceClient::new(ch.clone());
    let mut adm = AdminServiceClient::new(ch);
    let a = w.tok.clone();
    let state = fac.get_facility(authed(&a, pb::GetFacilityRequest { id: w.d.clone() })).await.unwrap();
    let state = state.into_inner().parent_id;
    let d2 = facility(&mut fac, &a, &state, pb::FacilityKind::DistrictStore).await;
    let c2 = facility(&mut fac, &a, &d2, pb::FacilityKind::ColdChainPoint).await;
    let c2u = unit(&mut fac, &a, &c2, "C2U").await;
    let du2 = unit(&mut fac, &a, &w.d, "DU2").await;
    let cu2 = unit(&mut fac, &a, &w.c, "CU2").await;

    let mut dev1 = register(&mut tel, &a, &w.c, &[(0, &w.cu), (1, &w.cu)]).await;
    let mut dev2 = register(&mut tel, &a, &w.c, &[(0, &w.cu)]).await;
    let mut dev3 = register(&mut tel, &a, &w.d, &[(0, &w.du), (1, &du2)]).await;
    let mut dev4 = register(&mut tel, &a, &c2, &[(0, &c2u)]).await;

    // Whole seconds: PostgreSQL keeps microseconds, and the test compares times exactly.
    let now = DateTime::from_timestamp(Utc::now().timestamp(), 0).unwrap();
    let t0 = DateTime::from_timestamp((now.timestamp() - 2 * 86_400) / 3600 * 3600, 0).unwrap();
    let mut sent = Vec::new();
    let units = |v: &[(u32, &String)]| v.iter().map(|(i, u)| (*i, (*u).clone())).collect::<HashMap<_, _>>();

    // dev1: both probes every minute for two hours (same instant, so ties are broken by seq);
    // every 17th minute probe 1 reports a sensor fault.
    let u1 = units(&[(0, &w.cu), (1, &w.cu)]);
    let mut r1 = Vec::new();
    for i in 0..120i64 {
        let t = t0 + Duration::minutes(i);
        r1.push((0, t, Some(3.0 + f64::from(u8::try_from(i * 7 % 11).unwrap()) * 0.4)));
        r1.push((1, t, if i % 17 == 0 { None } else { Some(4.0 + f64::from(u8::try_from(i * 5 % 9).unwrap()) * 0.3) }));
    }
    // Delivered out of order and in several batches, as a backlog would be.
    r1.reverse();
    for chunk in r1.chunks(70) {
        assert_eq!(send(&srv, &mut dev1, &u1, chunk, &mut sent).await, "");
    }
    // dev2: every two minutes, at dev1's instants (ties across devices) or half a second later.
    let u2 = units(&[(0, &w.cu)]);
    let r2: Vec<_> = (0..60i64)
        .map(|i| {
            let t = t0 + Duration::minutes(2 * i) + Duration::milliseconds(if i % 2 == 1 { 500 } else { 0 });
            (0, t, Some(5.0 + f64::from(u8::try_from(i % 5).unwrap()) * 0.25))
        })
        .collect();
    assert_eq!(send(&srv, &mut dev2, &u2, &r2, &mut sent).await, "");
    // dev3: DU a few times two days ago and once a minute ago; DU2 never.
    let u3 = units(&[(0, &w.du), (1, &du2)]);
    let mut r3: Vec<_> = (0..5i64).map(|i| (0, t0 + Duration::minutes(10 * i), Some(6.0))).collect();
    r3.push((0, now - Duration::minutes(1), Some(6.5)));
    assert_eq!(send(&srv, &mut dev3, &u3, &r3, &mut sent).await, "");
    // dev4, in the other district.
    let u4 = units(&[(0, &c2u)]);
    let r4: Vec<_> = (0..10i64).map(|i| (0, t0 + Duration::minutes(i), Some(4.0))).collect();
    assert_eq!(send(&srv, &mut dev4, &u4, &r4, &mut sent).await, "");

    let officer_d = token(&mut adm, &a, pb::Role::DistrictOfficer, &w.d, "").await;
    let officer_d2 = token(&mut adm, &a, pb::Role::DistrictOfficer, &d2, "").await;
    let depot_c = token(&mut adm, &a, pb::Role::DepotManager, &w.c, "").await;
    let device_tok = token(&mut adm, &a, pb::Role::Device, &w.c, &dev1.id).await;
    Fx { srv, w, tel, d2, c2u, du2, cu2, dev1, dev2, dev3, dev4, sent, t0, officer_d, officer_d2, depot_c, device_tok }
}

fn list_req(device: &str, unit: &str, start: DateTime<Utc>, end: DateTime<Utc>, size: i32) -> pb::ListReadingsRequest {
    pb::ListReadingsRequest {
        page_size: size,
        page_token: String::new(),
        device_id: device.into(),
        storage_unit_id: unit.into(),
        start_time: Some(ts(start)),
        end_time: Some(ts(end)),
    }
}

/// Every page of a ListReadings, checking each page's size.
async fn list_all(
    tel: &mut TelemetryServiceClient<Channel>,
    tok: &str,
    mut req: pb::ListReadingsRequest,
) -> Result<Vec<pb::RecordedReading>, tonic::Status> {
    let mut out = Vec::new();
    loop {
        let page = tel.list_readings(authed(tok, req.clone())).await?.into_inner();
        assert!(page.readings.len() <= usize::try_from(req.page_size).unwrap());
        out.extend(page.readings);
        if page.next_page_token.is_empty() {
            return Ok(out);
        }
        req.page_token = page.next_page_token;
    }
}

fn key_of(r: &pb::RecordedReading) -> (DateTime<Utc>, String, u64) {
    let reading = r.reading.as_ref().unwrap();
    (from_ts(reading.time.as_ref().unwrap()), r.device_id.clone(), reading.seq)
}

#[tokio::test]
async fn list_readings_orders_pages_and_scopes() {
    for db in TestDb::all() {
        let mut fx = fixture(db).await;
        let name = fx.srv.db.name();
        let a = fx.w.tok.clone();
        let (t0, end) = (fx.t0, fx.t0 + Duration::hours(2));

        // A storage unit, in small pages: the concatenation is exactly the expected order.
        let got = list_all(&mut fx.tel, &a, list_req("", &fx.w.cu, t0, end, 7)).await.unwrap();
        let mut expected: Vec<&Sent> = fx.sent.iter().filter(|s| s.unit == fx.w.cu && s.time < end).collect();
        expected.sort_by_key(|s| s.key());
        assert_eq!(expected.len(), 240 + 60, "{name}: the fixture itself");
        assert_eq!(got.iter().map(key_of).collect::<Vec<_>>(), expected.iter().map(|s| s.key()).collect::<Vec<_>>());
        assert!(got.windows(2).all(|p| key_of(&p[0]) < key_of(&p[1])), "{name}: strictly increasing, no duplicates");
        for (g, s) in got.iter().zip(&expected) {
            let r = g.reading.as_ref().unwrap();
            assert_eq!((g.storage_unit_id.as_str(), r.probe), (s.unit.as_str(), s.probe), "{name}");
            assert_eq!(r.sensor_fault == Some(true), s.temp.is_none(), "{name}: fault flag of {s:?}");
            if let Some(t) = s.temp {
                assert_eq!(r.temp_c, t, "{name}: temperature of {s:?}");
            }
            assert!(g.verified && g.receive_time.is_some(), "{name}");
        }

        // A device, start inclusive and end exclusive.
        let (from, to) = (t0 + Duration::minutes(30), t0 + Duration::minutes(60));
        let page =
            fx.tel.list_readings(authed(&a, list_req(&fx.dev1.id, "", from, to, 1000))).await.unwrap().into_inner();
        assert!(page.next_page_token.is_empty(), "{name}");
        let mut exp: Vec<_> =
            fx.sent.iter().filter(|s| s.device == fx.dev1.id && s.time >= from && s.time < to).map(Sent::key).collect();
        exp.sort();
        assert_eq!(exp.len(), 60, "{name}: 30 minutes of two probes");
        assert_eq!(page.readings.iter().map(key_of).collect::<Vec<_>>(), exp, "{name}");
        assert_eq!(key_of(&page.readings[0]).0, from, "{name}: the start instant is included");

        // A page token is bound to its filters.
        let mut req = list_req("", &fx.w.cu, t0, end, 5);
        let first = fx.tel.list_readings(authed(&a, req.clone())).await.unwrap().into_inner();
        req.start_time = Some(ts(t0 + Duration::minutes(1)));
        req.page_token = first.next_page_token;
        let e = fx.tel.list_readings(authed(&a, req)).await.unwrap_err();
        assert_eq!((e.code(), reason(&e).as_str()), (Code::InvalidArgument, "INVALID_PAGE_TOKEN"), "{name}");

        // Exactly one of device and unit; a range that ends before it starts; a start.
        for (dev, unit) in [("", ""), (fx.dev1.id.as_str(), fx.w.cu.as_str())] {
            let e = fx.tel.list_readings(authed(&a, list_req(dev, unit, t0, end, 10))).await.unwrap_err();
            assert_eq!((e.code(), reason(&e).as_str()), (Code::InvalidArgument, "INVALID_FIELD"), "{name}");
        }
        let e = fx.tel.list_readings(authed(&a, list_req("", &fx.w.cu, end, t0, 10))).await.unwrap_err();
        assert_eq!(
            (e.code(), reason(&e).as_str(), field(&e).as_str()),
            (Code::InvalidArgument, "INVALID_FIELD", "end_time")
        );
        let mut no_start = list_req("", &fx.w.cu, t0, end, 10);
        no_start.start_time = None;
        let e = fx.tel.list_readings(authed(&a, no_start)).await.unwrap_err();
        assert_eq!(field(&e), "start_time", "{name}");

        // Scope: the other district's officer is refused exactly as GetDevice refuses it.
        let get = fx.tel.get_device(authed(&fx.officer_d2, pb::GetDeviceRequest { id: fx.dev1.id.clone() })).await;
        let get_code = get.unwrap_err().code();
        assert_eq!(get_code, Code::PermissionDenied, "{name}");
        for (dev, unit) in [(fx.dev1.id.as_str(), ""), ("", fx.w.cu.as_str())] {
            let e = fx.tel.list_readings(authed(&fx.officer_d2, list_req(dev, unit, t0, end, 10))).await.unwrap_err();
            assert_eq!(e.code(), get_code, "{name}: out of scope like GetDevice");
        }
        // ... and cannot tell a missing device from a hidden one, unlike an admin.
        let ghost = uuid::Uuid::now_v7().to_string();
        let e = fx.tel.list_readings(authed(&fx.officer_d2, list_req(&ghost, "", t0, end, 10))).await.unwrap_err();
        assert_eq!(e.code(), Code::PermissionDenied, "{name}");
        let e = fx.tel.list_readings(authed(&a, list_req(&ghost, "", t0, end, 10))).await.unwrap_err();
        assert_eq!((e.code(), reason(&e).as_str()), (Code::NotFound, "DEVICE_NOT_FOUND"), "{name}");
        // Its own district's readings it sees.
        let own = list_all(&mut fx.tel, &fx.officer_d2, list_req("", &fx.c2u, t0, end, 100)).await.unwrap();
        assert_eq!(own.len(), 10, "{name}");
        // The officer of D sees C's unit (C lies below D), the same readings as the admin.
        let seen = list_all(&mut fx.tel, &fx.officer_d, list_req("", &fx.w.cu, t0, end, 1000)).await.unwrap();
        assert_eq!(seen.len(), expected.len(), "{name}");
        // A device reads nothing over gRPC, not even its own readings.
        let e = fx.tel.list_readings(authed(&fx.device_tok, list_req(&fx.dev1.id, "", t0, end, 10))).await.unwrap_err();
        assert_eq!(e.code(), Code::PermissionDenied, "{name}");
        fx.srv.stop().await;
    }
}

/// The buckets the server should compute from what was sent.
fn expected_buckets(
    sent: &[Sent],
    unit: &str,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    width: i64,
) -> Vec<(i64, f64, f64, f64, i64)> {
    let mut by: std::collections::BTreeMap<i64, Vec<f64>> = std::collections::BTreeMap::new();
    for s in sent.iter().filter(|s| s.unit == unit && s.time >= from && s.time < to) {
        if let Some(t) = s.temp {
            by.entry(s.time.timestamp().div_euclid(width) * width).or_default().push(t);
        }
    }
    by.into_iter()
        .map(|(start, v)| {
            let min = v.iter().copied().fold(f64::INFINITY, f64::min);
            let max = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            let n = i64::try_from(v.len()).unwrap();
            (start, min, v.iter().sum::<f64>() / v.len() as f64, max, n)
        })
        .collect()
}

fn query(
    unit: &str,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    bucket: Option<prost_types::Duration>,
) -> pb::QueryReadingsRequest {
    pb::QueryReadingsRequest {
        storage_unit_id: unit.into(),
        start_time: Some(ts(from)),
        end_time: Some(ts(to)),
        bucket,
    }
}

fn check_buckets(name: &str, got: &[pb::ReadingBucket], exp: &[(i64, f64, f64, f64, i64)]) {
    assert_eq!(got.len(), exp.len(), "{name}: {got:?}");
    for (g, e) in got.iter().zip(exp) {
        assert_eq!(g.start_time.as_ref().unwrap().seconds, e.0, "{name}: bucket start");
        assert_eq!((g.min_temp_c, g.max_temp_c, g.count), (e.1, e.3, e.4), "{name}: bucket at {}", e.0);
        assert!((g.mean_temp_c - e.2).abs() < 1e-9, "{name}: mean {} vs {}", g.mean_temp_c, e.2);
    }
}

#[tokio::test]
async fn query_readings_downsamples_into_aligned_buckets() {
    for db in TestDb::all() {
        let mut fx = fixture(db).await;
        let name = fx.srv.db.name();
        let a = fx.w.tok.clone();
        let t0 = fx.t0;

        // Quarter-hour buckets over the two hours (both devices, both probes, faults left out),
        // with an hour of nothing on each side that yields no bucket.
        let (from, to) = (t0 - Duration::hours(1), t0 + Duration::hours(3));
        let got = fx.tel.query_readings(authed(&a, query(&fx.w.cu, from, to, minutes(15)))).await.unwrap();
        let exp = expected_buckets(&fx.sent, &fx.w.cu, from, to, 900);
        assert_eq!(exp.len(), 8, "{name}: the fixture itself");
        assert_eq!(exp.iter().map(|b| b.4).sum::<i64>(), 240 - 8 + 60, "{name}: eight faults left out");
        check_buckets(name, &got.into_inner().buckets, &exp);

        // An unaligned range: buckets still start on multiples of the width, holding only the
        // readings inside the range.
        let (from, to) = (t0 + Duration::minutes(7), t0 + Duration::minutes(52));
        let got = fx.tel.query_readings(authed(&a, query(&fx.w.cu, from, to, minutes(15)))).await.unwrap();
        let got = got.into_inner().buckets;
        assert_eq!(from_ts(got[0].start_time.as_ref().unwrap()), t0, "{name}: aligned to the epoch");
        check_buckets(name, &got, &expected_buckets(&fx.sent, &fx.w.cu, from, to, 900));

        // Day buckets: everything in one (or two, when the two hours straddle midnight UTC).
        let (from, to) = (t0, t0 + Duration::hours(2));
        let got = fx.tel.query_readings(authed(&a, query(&fx.w.cu, from, to, minutes(1440)))).await.unwrap();
        let exp = expected_buckets(&fx.sent, &fx.w.cu, from, to, 86_400);
        assert_eq!(exp.iter().map(|b| b.4).sum::<i64>(), 240 - 8 + 60, "{name}: one or two days, everything");
        check_buckets(name, &got.into_inner().buckets, &exp);

        // 10 000 one-minute buckets are allowed; 10 080 (a week) are not.
        let ok = query(&fx.w.cu, t0 - Duration::minutes(10_000), t0, minutes(1));
        assert!(fx.tel.query_readings(authed(&a, ok)).await.unwrap().into_inner().buckets.is_empty(), "{name}");
        let e = fx.tel.query_readings(authed(&a, query(&fx.w.cu, t0 - Duration::days(7), t0, minutes(1)))).await;
        let e = e.unwrap_err();
        assert_eq!((e.code(), reason(&e).as_str()), (Code::InvalidArgument, "TOO_MANY_BUCKETS"), "{name}");
        for bad in [None, Some(prost_types::Duration { seconds: 90, nanos: 0 }), minutes(32 * 1440)] {
            let e = fx.tel.query_readings(authed(&a, query(&fx.w.cu, t0, to, bad))).await.unwrap_err();
            assert_eq!((reason(&e).as_str(), field(&e).as_str()), ("INVALID_FIELD", "bucket"), "{name}");
        }
        let e = fx.tel.query_readings(authed(&a, query(&fx.w.cu, to, t0, minutes(1)))).await.unwrap_err();
        assert_eq!(field(&e), "end_time", "{name}");

        // Scope and role.
        let e = fx.tel.query_readings(authed(&fx.officer_d2, query(&fx.w.cu, t0, to, minutes(15)))).await.unwrap_err();
        assert_eq!(e.code(), Code::PermissionDenied, "{name}");
        let e = fx.tel.query_readings(authed(&fx.device_tok, query(&fx.w.cu, t0, to, minutes(15)))).await.unwrap_err();
        assert_eq!(e.code(), Code::PermissionDenied, "{name}");
        let ok = fx.tel.query_readings(authed(&fx.depot_c, query(&fx.w.cu, t0, to, minutes(15)))).await.unwrap();
        assert_eq!(ok.into_inner().buckets.len(), 8, "{name}: a depot manager reads its own units");
        fx.srv.stop().await;
    }
}

/// Every page of GetLatestReadings.
async fn latest_all(
    tel: &mut TelemetryServiceClient<Channel>,
    tok: &str,
    ancestor: &str,
    size: i32,
) -> Result<Vec<pb::LatestReading>, tonic::Status> {
    let mut req =
        pb::GetLatestReadingsRequest { page_size: size, page_token: String::new(), ancestor_id: ancestor.into() };
    let mut out = Vec::new();
    loop {
        let page = tel.get_latest_readings(authed(tok, req.clone())).await?.into_inner();
        out.extend(page.latest);
        if page.next_page_token.is_empty() {
            return Ok(out);
        }
        req.page_token = page.next_page_token;
    }
}

#[tokio::test]
async fn latest_readings_one_row_per_monitored_unit() {
    for db in TestDb::all() {
        let mut fx = fixture(db).await;
        let name = fx.srv.db.name();
        let a = fx.w.tok.clone();

        // Units with a probe, by id; NU1, NU2 and CU2 have none and are left out.
        let all = latest_all(&mut fx.tel, &a, "", 2).await.unwrap();
        let mut units = vec![fx.w.cu.clone(), fx.w.du.clone(), fx.du2.clone(), fx.c2u.clone()];
        units.sort();
        assert_eq!(all.iter().map(|l| l.storage_unit_id.clone()).collect::<Vec<_>>(), units, "{name}");
        for l in &all {
            let newest = fx.sent.iter().filter(|s| s.unit == l.storage_unit_id).max_by_key(|s| s.key());
            match newest {
                None => {
                    assert!(l.reading.is_none() && l.stale, "{name}: DU2 never reported: {l:?}");
                    assert_eq!(l.facility_id, fx.w.d, "{name}");
                }
                Some(s) => {
                    let r = l.reading.as_ref().unwrap();
                    assert_eq!(key_of(r), s.key(), "{name}: latest of {}", l.storage_unit_id);
                    assert_eq!(r.reading.as_ref().unwrap().temp_c, s.temp.unwrap_or(0.0), "{name}");
                    // DU heard a minute ago (interval 10 min); the others two days ago.
                    assert_eq!(l.stale, l.storage_unit_id != fx.w.du, "{name}: stale of {}", l.storage_unit_id);
                }
            }
        }
        // CU's last instant holds readings of both of dev1's probes: the higher seq wins.
        let cu = all.iter().find(|l| l.storage_unit_id == fx.w.cu).unwrap();
        assert_eq!(key_of(cu.reading.as_ref().unwrap()).0, fx.t0 + Duration::minutes(119), "{name}");

        // A subtree, and the callers' scopes.
        let c_only = latest_all(&mut fx.tel, &a, &fx.w.c, 100).await.unwrap();
        assert_eq!(c_only.iter().map(|l| l.storage_unit_id.as_str()).collect::<Vec<_>>(), [fx.w.cu.as_str()], "{name}");
        let d = latest_all(&mut fx.tel, &fx.officer_d, "", 100).await.unwrap();
        assert_eq!(d.len(), 3, "{name}: CU, DU, DU2");
        let d2 = latest_all(&mut fx.tel, &fx.officer_d2, "", 100).await.unwrap();
        assert_eq!(d2.iter().map(|l| l.storage_unit_id.as_str()).collect::<Vec<_>>(), [fx.c2u.as_str()], "{name}");
        let e = latest_all(&mut fx.tel, &fx.officer_d2, &fx.w.d, 100).await.unwrap_err();
        assert_eq!(e.code(), Code::PermissionDenied, "{name}");
        let e = latest_all(&mut fx.tel, &fx.device_tok, "", 100).await.unwrap_err();
        assert_eq!(e.code(), Code::PermissionDenied, "{name}");
        fx.srv.stop().await;
    }
}

fn update(d: pb::Device, mask: &[&str], rid: &str) -> pb::UpdateDeviceRequest {
    pb::UpdateDeviceRequest {
        device: Some(d),
        update_mask: mask.iter().map(|m| (*m).to_owned()).collect(),
        request_id: rid.into(),
    }
}

async fn get(fx: &mut Fx, id: &str) -> pb::Device {
    fx.tel.get_device(authed(&fx.w.tok, pb::GetDeviceRequest { id: id.into() })).await.unwrap().into_inner()
}

async fn list_ids(
    tel: &mut TelemetryServiceClient<Channel>,
    tok: &str,
    mut req: pb::ListDevicesRequest,
) -> Result<Vec<String>, tonic::Status> {
    let mut out = Vec::new();
    loop {
        let page = tel.list_devices(authed(tok, req.clone())).await?.into_inner();
        out.extend(page.devices.into_iter().map(|d| d.id));
        if page.next_page_token.is_empty() {
            return Ok(out);
        }
        req.page_token = page.next_page_token;
    }
}

fn sorted(v: &[&str]) -> Vec<String> {
    let mut v: Vec<String> = v.iter().map(|s| (*s).to_owned()).collect();
    v.sort();
    v
}

#[tokio::test]
async fn list_devices_filters_by_subtree_and_unit() {
    for db in TestDb::all() {
        let mut fx = fixture(db).await;
        let name = fx.srv.db.name();
        let a = fx.w.tok.clone();
        let (d1, d2, d3, d4) = (fx.dev1.id.clone(), fx.dev2.id.clone(), fx.dev3.id.clone(), fx.dev4.id.clone());
        let req = |ancestor: &str, unit: &str| pb::ListDevicesRequest {
            page_size: 1,
            ancestor_id: ancestor.into(),
            storage_unit_id: unit.into(),
            ..Default::default()
        };
        let cases = [
            (fx.w.n.clone(), String::new(), sorted(&[&d1, &d2, &d3, &d4])),
            (fx.w.d.clone(), String::new(), sorted(&[&d1, &d2, &d3])),
            (fx.w.c.clone(), String::new(), sorted(&[&d1, &d2])),
            (fx.d2.clone(), String::new(), sorted(&[&d4])),
            (String::new(), fx.w.cu.clone(), sorted(&[&d1, &d2])),
            (String::new(), fx.du2.clone(), sorted(&[&d3])),
            (String::new(), fx.cu2.clone(), vec![]),
            (fx.d2.clone(), fx.w.cu.clone(), vec![]),
        ];
        for (ancestor, unit, exp) in cases {
            let got = list_ids(&mut fx.tel, &a, req(&ancestor, &unit)).await.unwrap();
            assert_eq!(got, exp, "{name}: ancestor {ancestor:?} unit {unit:?}");
        }
        // The officer of D: its subtree; the other district's subtree or unit is refused.
        let got = list_ids(&mut fx.tel, &fx.officer_d, req("", "")).await.unwrap();
        assert_eq!(got, sorted(&[&d1, &d2, &d3]), "{name}");
        for r in [req(&fx.d2, ""), req("", &fx.c2u)] {
            let e = list_ids(&mut fx.tel, &fx.officer_d, r).await.unwrap_err();
            assert_eq!(e.code(), Code::PermissionDenied, "{name}");
        }
        let e = list_ids(&mut fx.tel, &a, req("not-an-id", "")).await.unwrap_err();
        assert_eq!(field(&e), "ancestor_id", "{name}");
        fx.srv.stop().await;
    }
}

#[tokio::test]
async fn update_device_follows_the_mask() {
    for db in TestDb::all() {
        let mut fx = fixture(db).await;
        let name = fx.srv.db.name();
        let a = fx.w.tok.clone();
        let id = fx.dev1.id.clone();
        let before = get(&mut fx, &id).await;

        // Only the masked field changes; the serial never does.
        let mut d = before.clone();
        d.name = "Renamed".into();
        d.model = "ignored".into();
        d.serial = "ignored".into();
        let after = fx.tel.update_device(authed(&a, update(d.clone(), &["name"], ""))).await.unwrap().into_inner();
        assert_eq!((after.name.as_str(), after.model.as_str()), ("Renamed", "Model A"), "{name}");
        assert_eq!(after.serial, before.serial, "{name}");
        assert_eq!(get(&mut fx, &id).await, after, "{name}: stored as returned");

        // Unknown paths, the serial included, name themselves.
        for path in ["serial", "bogus"] {
            let e = fx.tel.update_device(authed(&a, update(d.clone(), &[path], ""))).await.unwrap_err();
            assert_eq!(
                (e.code(), reason(&e).as_str(), field(&e).as_str()),
                (Code::InvalidArgument, "INVALID_FIELD", "update_mask")
            );
            assert!(e.message().contains(path), "{name}: {}", e.message());
        }
        // Validated as RegisterDevice validates.
        let mut bad = before.clone();
        bad.expected_interval = Some(prost_types::Duration { seconds: 30, nanos: 0 });
        let e = fx.tel.update_device(authed(&a, update(bad, &["expected_interval"], ""))).await.unwrap_err();
        assert_eq!(field(&e), "device.expected_interval", "{name}");
        let mut dup = before.clone();
        dup.probes[1].index = 0;
        let e = fx.tel.update_device(authed(&a, update(dup, &["probes"], ""))).await.unwrap_err();
        assert_eq!(reason(&e), "DUPLICATE_PROBE", "{name}");
        // A probe in a unit of another facility, directly or by moving the device without its probes.
        let mut other = before.clone();
        other.probes[0].storage_unit_id = fx.c2u.clone();
        let e = fx.tel.update_device(authed(&a, update(other, &["probes"], ""))).await.unwrap_err();
        assert_eq!((e.code(), reason(&e).as_str()), (Code::FailedPrecondition, "STORAGE_UNIT_OTHER_FACILITY"));
        let mut moved = before.clone();
        moved.facility_id = fx.w.d.clone();
        let e = fx.tel.update_device(authed(&a, update(moved, &["facility_id"], ""))).await.unwrap_err();
        assert_eq!(reason(&e), "STORAGE_UNIT_OTHER_FACILITY", "{name}");
        assert_eq!(get(&mut fx, &id).await, after, "{name}: refusals change nothing");
        // An empty mask means every mutable field, so an incomplete device is refused...
        let e = fx.tel.update_device(authed(&a, update(pb::Device { id: id.clone(), ..Default::default() }, &[], "")));
        assert_eq!(e.await.unwrap_err().code(), Code::InvalidArgument, "{name}");

        // ... and a complete one replaces them all, re-binding probe 0 to CU2.
        let full = pb::Device {
            id: id.clone(),
            serial: "ignored".into(),
            name: "Full".into(),
            model: "Model B".into(),
            facility_id: fx.w.c.clone(),
            probes: vec![pb::Probe { index: 0, storage_unit_id: fx.cu2.clone(), label: "moved".into() }],
            expected_interval: minutes(5),
            unsigned_allowed: true,
            active: true,
            ..Default::default()
        };
        let r = fx.tel.update_device(authed(&a, update(full, &[], "full-1"))).await.unwrap().into_inner();
        assert_eq!((r.name.as_str(), r.model.as_str(), r.serial.as_str()), ("Full", "Model B", before.serial.as_str()));
        assert_eq!(r.probes, vec![pb::Probe { index: 0, storage_unit_id: fx.cu2.clone(), label: "moved".into() }]);
        assert_eq!((r.expected_interval, r.unsigned_allowed, r.active), (minutes(5), true, true), "{name}");
        let by_unit = |u: &str| pb::ListDevicesRequest { storage_unit_id: u.into(), ..Default::default() };
        assert_eq!(list_ids(&mut fx.tel, &a, by_unit(&fx.cu2)).await.unwrap(), vec![id.clone()], "{name}");
        assert_eq!(list_ids(&mut fx.tel, &a, by_unit(&fx.w.cu)).await.unwrap(), vec![fx.dev2.id.clone()], "{name}");
        // New readings of probe 0 are stored under CU2; probe 1 is gone.
        let unit_of = HashMap::from([(0, fx.cu2.clone()), (1, fx.w.cu.clone())]);
        let t = DateTime::from_timestamp(Utc::now().timestamp() - 120, 0).unwrap();
        let mut sent = Vec::new();
        assert_eq!(send(&fx.srv, &mut fx.dev1, &unit_of, &[(0, t, Some(4.25))], &mut sent).await, "", "{name}");
        let cu2 = list_all(&mut fx.tel, &a, list_req("", &fx.cu2, fx.t0, Utc::now(), 10)).await.unwrap();
        assert_eq!(cu2.iter().map(key_of).collect::<Vec<_>>(), vec![sent[0].key()], "{name}");

        // Idempotent: a repeat returns the first result and changes nothing; a reuse for another
        // body is refused.
        let mut m = r.clone();
        m.model = "Model C".into();
        let first = fx.tel.update_device(authed(&a, update(m.clone(), &["model"], "model-1"))).await.unwrap();
        let first = first.into_inner();
        let again = fx.tel.update_device(authed(&a, update(m.clone(), &["model"], "model-1"))).await.unwrap();
        assert_eq!(again.into_inner(), first, "{name}: same answer, same update_time");
        assert_eq!(get(&mut fx, &id).await.update_time, first.update_time, "{name}: not applied twice");
        m.model = "Model D".into();
        let e = fx.tel.update_device(authed(&a, update(m, &["model"], "model-1"))).await.unwrap_err();
        assert_eq!(reason(&e), "REQUEST_ID_REUSED", "{name}");

        // Roles and scope as RegisterDevice: the other district's officer and a depot manager
        // may not; the device's own district officer may.
        let mut n = first.clone();
        n.name = "by officer".into();
        for tok in [&fx.officer_d2, &fx.depot_c, &fx.device_tok] {
            let e = fx.tel.update_device(authed(tok, update(n.clone(), &["name"], ""))).await.unwrap_err();
            assert_eq!(e.code(), Code::PermissionDenied, "{name}");
        }
        let ok = fx.tel.update_device(authed(&fx.officer_d, update(n, &["name"], ""))).await.unwrap();
        assert_eq!(ok.into_inner().name, "by officer", "{name}");

        // Decommissioning: hidden from ListDevices unless asked for, and its batches are refused.
        let dev2_id = fx.dev2.id.clone();
        let mut off = get(&mut fx, &dev2_id).await;
        off.active = false;
        fx.tel.update_device(authed(&a, update(off, &["active"], ""))).await.unwrap();
        let at_c = |inactive| pb::ListDevicesRequest {
            ancestor_id: fx.w.c.clone(),
            include_inactive: inactive,
            ..Default::default()
        };
        assert_eq!(list_ids(&mut fx.tel, &a, at_c(false)).await.unwrap(), vec![id.clone()], "{name}");
        assert_eq!(list_ids(&mut fx.tel, &a, at_c(true)).await.unwrap().len(), 2, "{name}");
        let unit_of = HashMap::from([(0, fx.w.cu.clone())]);
        let err = send(&fx.srv, &mut fx.dev2, &unit_of, &[(0, t, Some(4.0))], &mut sent).await;
        assert_eq!(err, "DEVICE_INACTIVE", "{name}");

        // Moving dev4 into district D: its officer now sees the device, but not the readings it
        // took in the other district's unit before the move.
        let dev4_id = fx.dev4.id.clone();
        let mut mv = get(&mut fx, &dev4_id).await;
        mv.facility_id = fx.w.d.clone();
        mv.probes = vec![pb::Probe { index: 0, storage_unit_id: fx.du2.clone(), label: String::new() }];
        let moved = fx.tel.update_device(authed(&a, update(mv, &["facility_id", "probes"], ""))).await.unwrap();
        assert_eq!(moved.into_inner().facility_id, fx.w.d, "{name}");
        let req = list_req(&fx.dev4.id, "", fx.t0, Utc::now(), 100);
        assert_eq!(list_all(&mut fx.tel, &a, req.clone()).await.unwrap().len(), 10, "{name}: the admin sees all");
        assert!(list_all(&mut fx.tel, &fx.officer_d, req.clone()).await.unwrap().is_empty(), "{name}");
        let e = list_all(&mut fx.tel, &fx.officer_d2, req).await.unwrap_err();
        assert_eq!(e.code(), Code::PermissionDenied, "{name}: the device left D2");
        fx.srv.stop().await;
    }
}
