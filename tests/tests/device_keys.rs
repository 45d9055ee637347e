//! RotateDeviceKey on both engines: after a rotation only the new key verifies; with
//! reset_sequence a replaced logger restarts at seq 1 and its readings are stored (not mistaken
//! for duplicates of the old ones), acked in its own seqs, and still stored exactly once.
#![allow(clippy::unwrap_used)]

use chrono::{Duration, Utc};
use vaxtrace_proto::signing::encode_signed;
use vaxtrace_proto::v1 as pb;
use vaxtrace_proto::v1::admin_service_client::AdminServiceClient;
use vaxtrace_proto::v1::telemetry_service_client::TelemetryServiceClient;
use vaxtrace_tests::world::world;
use vaxtrace_tests::{TestDb, TestServer, authed, reason};

fn batch(device: &str, seqs: std::ops::RangeInclusive<u64>) -> pb::ReadingBatch {
    let base = Utc::now() - Duration::hours(2);
    pb::ReadingBatch {
        device_id: device.into(),
        readings: seqs
            .map(|s| pb::Reading {
                seq: s,
                time: Some(prost_types::Timestamp {
                    seconds: (base + Duration::minutes(i64::try_from(s).unwrap())).timestamp(),
                    nanos: 0,
                }),
                temp_c: 5.0,
                ..Default::default()
            })
            .collect(),
        ..Default::default()
    }
}

#[tokio::test]
async fn rotation_changes_the_key_and_a_reset_restarts_the_sequence() {
    for db in TestDb::all() {
        let srv = TestServer::start(db).await;
        let name = srv.db.name().to_owned();
        let w = world(&srv).await;
        let tok = w.tok.clone();
        let mut tel = TelemetryServiceClient::new(srv.channel().await);
        let d = pb::Device {
            serial: "SN-ROT-1".into(),
            name: "logger".into(),
            facility_id: w.c.clone(),
            probes: vec![pb::Probe { index: 0, storage_unit_id: w.cu.clone(), label: "fridge".into() }],
            expected_interval: Some(prost_types::Duration { seconds: 60, nanos: 0 }),
            ..Default::default()
        };
        let reg = tel
            .register_device(authed(&tok, pb::RegisterDeviceRequest { device: Some(d), request_id: String::new() }))
            .await
            .unwrap()
            .into_inner();
        let id = reg.device.unwrap().id;
        let old_key = reg.key;
        let ingest = |b: pb::ReadingBatch, key: Vec<u8>| {
            let app = srv.app.clone();
            let id = id.clone();
            async move { app.ingest(&id, &encode_signed(&b, Some(&key)).unwrap(), false).await.unwrap() }
        };
        let ack = ingest(batch(&id, 1..=10), old_key.clone()).await;
        assert_eq!((ack.acked_seq, ack.error), (10, ""), "{name}");

        // Rotation: version 2, a new key shown once; the old key no longer verifies.
        let rot = |reset: bool, rid: &str| pb::RotateDeviceKeyRequest {
            id: id.clone(),
            reset_sequence: reset,
            request_id: rid.into(),
        };
        let r = tel.rotate_device_key(authed(&tok, rot(false, "rot-1"))).await.unwrap().into_inner();
        assert_eq!((r.key_version, r.key.len()), (2, 32), "{name}");
        assert_ne!(r.key, old_key, "{name}");
        let new_key = r.key.clone();
        let again = tel.rotate_device_key(authed(&tok, rot(false, "rot-1"))).await.unwrap().into_inner();
        assert_eq!(
            (again.key_version, &again.key),
            (2, &new_key),
            "{name}: a retry by the same token shows the same key again and rotates nothing"
        );
        let ack = ingest(batch(&id, 11..=12), old_key.clone()).await;
        assert_eq!((ack.error, ack.acked_seq), ("BAD_SIGNATURE", 10), "{name}: nothing stored");
        let ack = ingest(batch(&id, 11..=12), new_key.clone()).await;
        assert_eq!((ack.error, ack.acked_seq), ("", 12), "{name}");

        // A replaced logger: the sequence restarts at 1 with a new key.
        let r = tel.rotate_device_key(authed(&tok, rot(true, "rot-2"))).await.unwrap().into_inner();
        assert_eq!(r.key_version, 3, "{name}");
        assert_eq!(r.device.as_ref().map(|d| d.last_seq), Some(0), "{name}: the device starts again at 0");
        let replaced = r.key;
        let ack = ingest(batch(&id, 1..=5), replaced.clone()).await;
        assert_eq!((ack.error, ack.acked_seq), ("", 5), "{name}: acked in the device's own seqs");
        let ack = ingest(batch(&id, 1..=5), replaced.clone()).await;
        assert_eq!((ack.error, ack.acked_seq), ("", 5), "{name}: a re-sent batch is acked again");
        let dev = tel.get_device(authed(&tok, pb::GetDeviceRequest { id: id.clone() })).await.unwrap().into_inner();
        assert_eq!(dev.last_seq, 5, "{name}");

        // Every reading stored exactly once: 12 before the reset, 5 after.
        let list = pb::ListReadingsRequest {
            device_id: id.clone(),
            start_time: Some(prost_types::Timestamp {
                seconds: (Utc::now() - Duration::days(1)).timestamp(),
                nanos: 0,
            }),
            page_size: 1000,
            ..Default::default()
        };
        let got = tel.list_readings(authed(&tok, list)).await.unwrap().into_inner().readings;
        assert_eq!(got.len(), 17, "{name}");
        let mut seqs: Vec<u64> = got.iter().filter_map(|r| r.reading.as_ref().map(|x| x.seq)).collect();
        seqs.sort_unstable();
        seqs.dedup();
        assert_eq!(seqs.len(), 17, "{name}: stored identities stay unique across the reset");

        // Only officers may rotate, in scope; an unknown device is not found.
        let mut adm = AdminServiceClient::new(srv.channel().await);
        let cr = pb::CreateTokenRequest {
            role: pb::Role::DepotManager as i32,
            scope_facility_id: w.c.clone(),
            description: "dm".into(),
            ..Default::default()
        };
        let dm = adm.create_token(authed(&tok, cr)).await.unwrap().into_inner().secret;
        let e = tel.rotate_device_key(authed(&dm, rot(false, ""))).await.unwrap_err();
        assert_eq!(e.code(), tonic::Code::PermissionDenied, "{name}");
        let missing = pb::RotateDeviceKeyRequest { id: uuid::Uuid::now_v7().to_string(), ..Default::default() };
        let e = tel.rotate_device_key(authed(&tok, missing)).await.unwrap_err();
        assert_eq!((e.code(), reason(&e).as_str()), (tonic::Code::NotFound, "DEVICE_NOT_FOUND"), "{name}");
        srv.stop().await;
    }
}
