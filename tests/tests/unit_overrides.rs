//! Per-storage-unit alarm threshold overrides through the public API, on both engines: a fridge
//! whose range is widened to +2..+12 °C with a one-hour heat alarm stays quiet at 10 °C (which
//! the +2..+8 °C profile would flag), and alarms at 13 °C after exactly one hour, not a minute
//! sooner, while a unit without overrides keeps the profile's ten hours. An overridden no-data
//! limit is what the NO_DATA sweep applies, and invalid overrides are refused naming the field.
#![allow(clippy::unwrap_used)]

use chrono::{DateTime, Duration, Utc};
use vaxtrace_proto::signing::encode_signed;
use vaxtrace_proto::v1 as pb;
use vaxtrace_proto::v1::alert_service_client::AlertServiceClient;
use vaxtrace_proto::v1::facility_service_client::FacilityServiceClient;
use vaxtrace_tests::world::{register_logger, world};
use vaxtrace_tests::{TestDb, TestServer, authed, reason};

struct Logger {
    id: String,
    key: Vec<u8>,
    next_seq: u64,
}

impl Logger {
    async fn register(srv: &TestServer, tok: &str, facility: &str, unit: &str, interval_secs: i64) -> Logger {
        let (id, key) = register_logger(srv, tok, facility, unit, interval_secs).await;
        Logger { id, key, next_seq: 1 }
    }

    /// Ingests one reading at `temp_c` per minute of `minutes` after `t0`, as the MQTT subscriber
    /// would hand them over.
    async fn send(&mut self, srv: &TestServer, t0: DateTime<Utc>, minutes: std::ops::RangeInclusive<i64>, temp_c: f64) {
        let mut batch = pb::ReadingBatch { device_id: self.id.clone(), ..Default::default() };
        for m in minutes {
            let t = t0 + Duration::minutes(m);
            batch.readings.push(pb::Reading {
                seq: self.next_seq,
                time: Some(prost_types::Timestamp { seconds: t.timestamp(), nanos: 0 }),
                temp_c,
                ..Default::default()
            });
            self.next_seq += 1;
        }
        let ack = srv.app.ingest(&self.id, &encode_signed(&batch, Some(&self.key)).unwrap(), false).await.unwrap();
        assert!(ack.error.is_empty() && ack.rejected == 0, "{ack:?}");
    }
}

/// The alerts of `kind` about `unit`.
async fn alerts(srv: &TestServer, tok: &str, unit: &str, kind: pb::AlertKind) -> Vec<pb::Alert> {
    let mut client = AlertServiceClient::new(srv.channel().await);
    let r = pb::ListAlertsRequest { kinds: vec![kind as i32], page_size: 1000, ..Default::default() };
    let all = client.list_alerts(authed(tok, r)).await.unwrap().into_inner().alerts;
    all.into_iter().filter(|a| a.subject.as_ref().is_some_and(|s| s.storage_unit_id == unit)).collect()
}

fn duration(seconds: i64) -> Option<prost_types::Duration> {
    Some(prost_types::Duration { seconds, nanos: 0 })
}

/// The field an INVALID_ARGUMENT names in its BadRequest details.
fn field_of(status: &tonic::Status) -> String {
    use tonic_types::StatusExt as _;
    status
        .get_error_details()
        .bad_request()
        .and_then(|b| b.field_violations.first().map(|v| v.field.clone()))
        .unwrap_or_default()
}

async fn update(
    fac: &mut FacilityServiceClient<tonic::transport::Channel>,
    tok: &str,
    unit: pb::StorageUnit,
    mask: &[&str],
) -> Result<pb::StorageUnit, tonic::Status> {
    let r = pb::UpdateStorageUnitRequest {
        storage_unit: Some(unit),
        update_mask: mask.iter().map(|m| (*m).to_owned()).collect(),
        request_id: String::new(),
    };
    fac.update_storage_unit(authed(tok, r)).await.map(tonic::Response::into_inner)
}

#[tokio::test]
async fn a_unit_alarms_at_its_overridden_thresholds_on_every_engine() {
    for db in TestDb::all() {
        let srv = TestServer::start(db).await;
        let name = srv.db.name().to_owned();
        let w = world(&srv).await;
        let tok = w.tok.clone();
        let mut fac = FacilityServiceClient::new(srv.channel().await);

        // CU: +2..+12 °C, heat alarm after one hour; the other overrides stay the profile's.
        let o =
            pb::AlarmThresholds { range_high_c: Some(12.0), heat_alarm_after: duration(3600), ..Default::default() };
        let unit = pb::StorageUnit { id: w.cu.clone(), alarm_overrides: Some(o), ..Default::default() };
        let mask = ["alarm_overrides.range_high_c", "alarm_overrides.heat_alarm_after"];
        let cu = update(&mut fac, &tok, unit, &mask).await.unwrap();
        assert_eq!(cu.alarm_overrides.as_ref(), Some(&o), "{name}");
        assert_eq!(cu.name, "CU", "{name}: fields outside the mask are kept");
        let eff = cu.effective_alarm_thresholds.unwrap_or_default();
        assert_eq!((eff.range_low_c, eff.range_high_c), (Some(2.0), Some(12.0)), "{name}");
        assert_eq!((eff.heat_alarm_after, eff.heat_critical_after), (duration(3600), duration(20 * 3600)), "{name}");
        assert_eq!((eff.freeze_threshold_c, eff.freeze_alarm_after), (Some(-0.5), duration(3600)), "{name}");
        assert_eq!(eff.no_data_after, None, "{name}: 3 × each logger's interval unless overridden");
        // Stored: a fresh read gives the same.
        let got = fac.get_storage_unit(authed(&tok, pb::GetStorageUnitRequest { id: w.cu.clone() })).await.unwrap();
        assert_eq!(got.into_inner().alarm_overrides, Some(o), "{name}");

        let t0 = Utc::now() - Duration::hours(6);
        let mut cu_logger = Logger::register(&srv, &tok, &w.c, &w.cu, 60).await;
        // Two hours at 10 °C: outside the profile's +2..+8 °C (an excursion at once, a heat alarm
        // after an hour with this unit's duration), inside this unit's range: nothing.
        cu_logger.send(&srv, t0, 0..=120, 10.0).await;
        for kind in [pb::AlertKind::Excursion, pb::AlertKind::Heat] {
            assert!(alerts(&srv, &tok, &w.cu, kind).await.is_empty(), "{name}: {kind:?} at 10 °C");
        }

        // 13 °C from minute 121: no heat alarm one minute short of the hour...
        cu_logger.send(&srv, t0, 121..=180, 13.0).await;
        assert!(alerts(&srv, &tok, &w.cu, pb::AlertKind::Heat).await.is_empty(), "{name}: 59 minutes at 13 °C");
        assert_eq!(alerts(&srv, &tok, &w.cu, pb::AlertKind::Excursion).await.len(), 1, "{name}: above +12 °C");
        // ...and one at exactly the hour, dated from the first warm reading.
        cu_logger.send(&srv, t0, 181..=181, 13.0).await;
        let heat = alerts(&srv, &tok, &w.cu, pb::AlertKind::Heat).await;
        assert_eq!(heat.len(), 1, "{name}: {heat:?}");
        let start = t0 + Duration::minutes(121);
        assert_eq!(heat[0].start_time.as_ref().map(|t| t.seconds), Some(start.timestamp()), "{name}");
        assert_eq!(heat[0].severity, pb::AlertSeverity::Alarm as i32, "{name}");
        let summary = heat[0].details.as_ref().map(|d| d.summary.clone()).unwrap_or_default();
        assert!(summary.contains("above 12.0 °C for 1 h, critical at 20 h"), "{name}: the effective limit: {summary}");

        // The same hour at 13 °C in DU, which has no overrides: the profile's ten hours apply.
        let mut du_logger = Logger::register(&srv, &tok, &w.d, &w.du, 60).await;
        du_logger.send(&srv, t0, 0..=61, 13.0).await;
        assert!(alerts(&srv, &tok, &w.du, pb::AlertKind::Heat).await.is_empty(), "{name}: DU keeps 10 h");
        assert_eq!(alerts(&srv, &tok, &w.du, pb::AlertKind::Excursion).await.len(), 1, "{name}: DU keeps +8 °C");

        srv.stop().await;
    }
}

#[tokio::test]
async fn an_overridden_no_data_limit_is_what_the_sweep_applies() {
    for db in TestDb::all() {
        let srv = TestServer::start(db).await;
        let name = srv.db.name().to_owned();
        let w = world(&srv).await;
        let tok = w.tok.clone();
        let mut fac = FacilityServiceClient::new(srv.channel().await);
        // A 10-minute logger: 30 minutes of silence by default, 15 in NU1.
        let o = pb::AlarmThresholds { no_data_after: duration(15 * 60), ..Default::default() };
        let unit = pb::StorageUnit { id: w.nu1.clone(), alarm_overrides: Some(o), ..Default::default() };
        update(&mut fac, &tok, unit, &["alarm_overrides"]).await.unwrap();
        let mut logger = Logger::register(&srv, &tok, &w.n, &w.nu1, 600).await;
        // Whole seconds, as readings carry them, so the edges below are exact.
        let last = DateTime::from_timestamp(Utc::now().timestamp() - 2 * 3600, 0).unwrap();
        logger.send(&srv, last - Duration::minutes(20), 0..=20, 5.0).await;

        // The limit is "longer than": 15 minutes is not yet a silence, one second more is.
        assert_eq!(srv.app.sweep_no_data(last + Duration::minutes(15)).await.unwrap(), 0, "{name}");
        assert!(alerts(&srv, &tok, &w.nu1, pb::AlertKind::NoData).await.is_empty(), "{name}");
        let at = last + Duration::minutes(15) + Duration::seconds(1);
        assert_eq!(srv.app.sweep_no_data(at).await.unwrap(), 1, "{name}");
        let open = alerts(&srv, &tok, &w.nu1, pb::AlertKind::NoData).await;
        assert_eq!(open.len(), 1, "{name}");
        assert_eq!(open[0].start_time.as_ref().map(|t| t.seconds), Some(last.timestamp()), "{name}");
        let summary = open[0].details.as_ref().map(|d| d.summary.clone()).unwrap_or_default();
        assert!(summary.ends_with("(limit 15 min)"), "{name}: {summary}");
        srv.stop().await;
    }
}

#[tokio::test]
async fn invalid_overrides_are_refused_naming_the_field() {
    for db in TestDb::all() {
        let srv = TestServer::start(db).await;
        let name = srv.db.name().to_owned();
        let w = world(&srv).await;
        let tok = w.tok.clone();
        let mut fac = FacilityServiceClient::new(srv.channel().await);
        let create = |o: pb::AlarmThresholds| pb::CreateStorageUnitRequest {
            storage_unit: Some(pb::StorageUnit {
                facility_id: w.c.clone(),
                kind: pb::StorageUnitKind::Ilr as i32,
                name: "ILR 9".into(),
                temperature_profile: pb::TemperatureProfile::Refrigerated as i32,
                alarm_overrides: Some(o),
                ..Default::default()
            }),
            request_id: String::new(),
        };
        let cases = [
            (pb::AlarmThresholds { range_low_c: Some(9.0), ..Default::default() }, "range_low_c"),
            (pb::AlarmThresholds { range_high_c: Some(81.0), ..Default::default() }, "range_high_c"),
            (pb::AlarmThresholds { freeze_threshold_c: Some(2.0), ..Default::default() }, "freeze_threshold_c"),
            (pb::AlarmThresholds { heat_alarm_after: duration(0), ..Default::default() }, "heat_alarm_after"),
            (pb::AlarmThresholds { heat_critical_after: duration(3600), ..Default::default() }, "heat_critical_after"),
            (
                pb::AlarmThresholds {
                    no_data_after: Some(prost_types::Duration { seconds: 60, nanos: 5 }),
                    ..Default::default()
                },
                "no_data_after",
            ),
        ];
        for (o, field) in cases {
            let e = fac.create_storage_unit(authed(&tok, create(o))).await.unwrap_err();
            assert_eq!(e.code(), tonic::Code::InvalidArgument, "{name}: {o:?}");
            assert_eq!(reason(&e), "INVALID_FIELD", "{name}: {o:?}");
            assert_eq!(field_of(&e), format!("storage_unit.alarm_overrides.{field}"), "{name}: {e:?}");
        }
        // Nothing was created; a valid one is.
        let ok = pb::AlarmThresholds { range_low_c: Some(3.0), ..Default::default() };
        let u = fac.create_storage_unit(authed(&tok, create(ok))).await.unwrap().into_inner();
        assert_eq!(u.alarm_overrides, Some(ok), "{name}");

        // An update is checked on the merged unit: a freezer's range high (−15 °C) lies below the
        // 3 °C low, and the unit stays as it was.
        let to_freezer = pb::StorageUnit {
            id: u.id.clone(),
            temperature_profile: pb::TemperatureProfile::Frozen as i32,
            ..Default::default()
        };
        let e = update(&mut fac, &tok, to_freezer, &["temperature_profile"]).await.unwrap_err();
        assert_eq!(field_of(&e), "storage_unit.alarm_overrides.range_low_c", "{name}: {e:?}");
        let e = update(
            &mut fac,
            &tok,
            pb::StorageUnit { id: u.id.clone(), ..Default::default() },
            &["alarm_overrides.range"],
        )
        .await
        .unwrap_err();
        assert_eq!(field_of(&e), "update_mask", "{name}");
        let got = fac.get_storage_unit(authed(&tok, pb::GetStorageUnitRequest { id: u.id.clone() })).await.unwrap();
        assert_eq!(got.into_inner().temperature_profile, pb::TemperatureProfile::Refrigerated as i32, "{name}");
        // Clearing them (the whole message, unset) makes the change possible.
        let cleared =
            update(&mut fac, &tok, pb::StorageUnit { id: u.id.clone(), ..Default::default() }, &["alarm_overrides"])
                .await
                .unwrap();
        assert_eq!(cleared.alarm_overrides, None, "{name}");
        let to_freezer = pb::StorageUnit {
            id: u.id.clone(),
            temperature_profile: pb::TemperatureProfile::Frozen as i32,
            ..Default::default()
        };
        let frozen = update(&mut fac, &tok, to_freezer, &["temperature_profile"]).await.unwrap();
        let eff = frozen.effective_alarm_thresholds.unwrap_or_default();
        assert_eq!((eff.range_low_c, eff.range_high_c), (Some(-25.0), Some(-15.0)), "{name}");
        srv.stop().await;
    }
}
