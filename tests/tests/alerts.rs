//! Alert lifecycle through real gRPC on both engines: stock conditions raise and clear alerts,
//! officers acknowledge and resolve them, and WatchAlerts delivers every event and resumes after
//! a reconnect without missing one.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use tonic::Code;
use vaxtrace_proto::v1 as pb;
use vaxtrace_proto::v1::admin_service_client::AdminServiceClient;
use vaxtrace_proto::v1::alert_service_client::AlertServiceClient;
use vaxtrace_tests::world::{receive, world};
use vaxtrace_tests::{TestDb, TestServer, authed, reason};

async fn next_event(s: &mut tonic::Streaming<pb::AlertEvent>) -> pb::AlertEvent {
    tokio::time::timeout(Duration::from_secs(20), s.message())
        .await
        .expect("an event within 20 s")
        .unwrap()
        .expect("stream open")
}

#[tokio::test]
async fn stock_alerts_lifecycle_and_resumable_watch() {
    for db in TestDb::all() {
        let srv = TestServer::start(db).await;
        let mut w = world(&srv).await;
        let name = srv.db.name();
        let tok = w.tok.clone();
        let mut alerts = AlertServiceClient::new(srv.channel().await);
        let (nu1, lot) = (w.nu1.clone(), w.lots[0].clone());

        // A policy for the national store with no stock: STOCK_OUT.
        let policy = pb::StockPolicy {
            facility_id: w.n.clone(),
            product_id: w.product.clone(),
            min_doses: 1000,
            max_doses: 5000,
            ..Default::default()
        };
        w.stock
            .set_stock_policy(authed(
                &tok,
                pb::SetStockPolicyRequest { policy: Some(policy), request_id: String::new() },
            ))
            .await
            .unwrap();
        let listed = alerts.list_alerts(authed(&tok, pb::ListAlertsRequest::default())).await.unwrap().into_inner();
        assert!(listed.alerts.is_empty());
        let watch = pb::WatchAlertsRequest { after_event_id: listed.latest_event_id, ..Default::default() };
        let mut stream = alerts.watch_alerts(authed(&tok, watch)).await.unwrap().into_inner();
        assert!(srv.app.evaluate_stock_alerts(7).await.unwrap() >= 1);
        let e1 = next_event(&mut stream).await;
        let a1 = e1.alert.clone().unwrap();
        assert_eq!(
            (e1.r#type, a1.kind, a1.severity),
            (pb::AlertEventType::Opened as i32, pb::AlertKind::StockOut as i32, pb::AlertSeverity::Alarm as i32),
            "{name}"
        );
        assert_eq!(a1.details.as_ref().and_then(|d| d.quantity_to_max_doses), Some(5000));
        // Evaluating again with nothing changed writes nothing.
        assert_eq!(srv.app.evaluate_stock_alerts(7).await.unwrap(), 0, "{name}");

        // 50 vials = 500 doses: stock-out clears, below-minimum opens.
        receive(&mut w, &nu1, 0, 50, "").await.unwrap();
        srv.app.evaluate_stock_alerts(7).await.unwrap();
        let mut seen = [next_event(&mut stream).await, next_event(&mut stream).await];
        seen.sort_by_key(|e| e.event_id);
        let kinds: Vec<(i32, i32)> = seen.iter().map(|e| (e.r#type, e.alert.as_ref().unwrap().kind)).collect();
        assert!(
            kinds.contains(&(pb::AlertEventType::ConditionCleared as i32, pb::AlertKind::StockOut as i32)),
            "{name}: {kinds:?}"
        );
        assert!(
            kinds.contains(&(pb::AlertEventType::Opened as i32, pb::AlertKind::BelowMinimum as i32)),
            "{name}: {kinds:?}"
        );
        let below = seen
            .iter()
            .map(|e| e.alert.clone().unwrap())
            .find(|a| a.kind == pb::AlertKind::BelowMinimum as i32)
            .unwrap();
        let last_seen = seen.iter().map(|e| e.event_id).max().unwrap();
        drop(stream);

        // Acknowledge needs a comment; a depot manager may acknowledge but not resolve.
        let ack = |id: &str, comment: &str| pb::AcknowledgeAlertRequest {
            id: id.into(),
            comment: comment.into(),
            request_id: String::new(),
        };
        let e = alerts.acknowledge_alert(authed(&tok, ack(&below.id, " "))).await.unwrap_err();
        assert_eq!(reason(&e), "COMMENT_REQUIRED");
        let mut adm = AdminServiceClient::new(srv.channel().await);
        let dm = adm
            .create_token(authed(
                &tok,
                pb::CreateTokenRequest {
                    role: pb::Role::DepotManager as i32,
                    scope_facility_id: w.n.clone(),
                    description: "dm".into(),
                    ..Default::default()
                },
            ))
            .await
            .unwrap()
            .into_inner()
            .secret;
        let acked = alerts.acknowledge_alert(authed(&dm, ack(&below.id, "indent raised"))).await.unwrap().into_inner();
        assert_eq!(acked.state, pb::AlertState::Acknowledged as i32);
        let e = alerts.acknowledge_alert(authed(&dm, ack(&below.id, "again"))).await.unwrap_err();
        assert_eq!((e.code(), reason(&e).as_str()), (Code::FailedPrecondition, "INVALID_STATE"));
        let res = pb::ResolveAlertRequest {
            id: below.id.clone(),
            resolution: pb::AlertResolution::StockReplenished as i32,
            comment: "shipment booked".into(),
            request_id: String::new(),
        };
        assert_eq!(alerts.resolve_alert(authed(&dm, res.clone())).await.unwrap_err().code(), Code::PermissionDenied);
        alerts.resolve_alert(authed(&tok, res)).await.unwrap();

        // Resolved while still below minimum: no new alert until the condition clears and returns.
        assert_eq!(
            srv.app.evaluate_stock_alerts(7).await.unwrap(),
            0,
            "{name}: a resolved, still-active condition stays quiet"
        );
        receive(&mut w, &nu1, 0, 100, "").await.unwrap(); // 1500 doses: above minimum
        srv.app.evaluate_stock_alerts(7).await.unwrap();
        let adj = pb::AdjustStockRequest {
            storage_unit_id: nu1.clone(),
            lot_ref: Some(pb::adjust_stock_request::LotRef::LotId(lot.clone())),
            quantity_vials: -60,
            reason: pb::AdjustmentReason::Broken as i32,
            comment: String::new(),
            request_id: String::new(),
        };
        w.stock.adjust_stock(authed(&tok, adj)).await.unwrap(); // 900 doses: below again
        srv.app.evaluate_stock_alerts(7).await.unwrap();
        let open = pb::ListAlertsRequest {
            kinds: vec![pb::AlertKind::BelowMinimum as i32],
            states: vec![pb::AlertState::Open as i32],
            ..Default::default()
        };
        let open = alerts.list_alerts(authed(&tok, open)).await.unwrap().into_inner().alerts;
        assert_eq!(open.len(), 1, "{name}: the returning condition opens a new alert");
        assert_ne!(open[0].id, below.id);

        // Resuming from the last event seen replays everything since, in order, with no gaps in
        // what this caller may see.
        let watch = pb::WatchAlertsRequest { after_event_id: last_seen, ..Default::default() };
        let mut stream = alerts.watch_alerts(authed(&tok, watch)).await.unwrap().into_inner();
        let mut types = Vec::new();
        let mut prev = last_seen;
        for _ in 0..3 {
            let e = next_event(&mut stream).await;
            assert!(e.event_id > prev, "{name}: events in order");
            prev = e.event_id;
            types.push((e.r#type, e.alert.unwrap().id));
        }
        use pb::AlertEventType as T;
        let expected = vec![
            (T::Acknowledged as i32, below.id.clone()),
            (T::Resolved as i32, below.id.clone()),
            (T::Opened as i32, open[0].id.clone()),
        ];
        assert_eq!(types, expected, "{name}: clearing a resolved alert writes no event");

        // A cursor beyond the latest event is refused.
        let bad = pb::WatchAlertsRequest { after_event_id: 1_000_000, ..Default::default() };
        assert_eq!(alerts.watch_alerts(authed(&tok, bad)).await.unwrap_err().code(), Code::InvalidArgument);
        srv.stop().await;
    }
}

#[tokio::test]
async fn expiry_and_overdue_shipment_alerts() {
    for db in TestDb::all() {
        let srv = TestServer::start(db).await;
        let mut w = world(&srv).await;
        let name = srv.db.name();
        let tok = w.tok.clone();
        let mut alerts = AlertServiceClient::new(srv.channel().await);
        let nu1 = w.nu1.clone();
        receive(&mut w, &nu1, 1, 100, "").await.unwrap();
        // Lot B expires mid-2027: far beyond 90 days, so no expiry alert.
        srv.app.evaluate_stock_alerts(7).await.unwrap();
        let kinds = |k: pb::AlertKind| pb::ListAlertsRequest { kinds: vec![k as i32], ..Default::default() };
        assert!(
            alerts
                .list_alerts(authed(&tok, kinds(pb::AlertKind::ExpiryRisk)))
                .await
                .unwrap()
                .into_inner()
                .alerts
                .is_empty()
        );

        // A shipment expected yesterday and still in transit is overdue; receiving it clears that.
        let yesterday = chrono::Utc::now().date_naive() - chrono::Duration::days(1);
        use chrono::Datelike as _;
        let line = pb::CreateShipmentLine {
            lot_ref: Some(pb::create_shipment_line::LotRef::LotId(w.lots[1].clone())),
            vials: 10,
            ..Default::default()
        };
        let req = pb::CreateShipmentRequest {
            from_facility_id: w.n.clone(),
            to_facility_id: w.d.clone(),
            lines: vec![line],
            reference: "WB-17".into(),
            expected_arrival_date: Some(pb::Date {
                year: yesterday.year(),
                month: yesterday.month() as i32,
                day: yesterday.day() as i32,
            }),
            ..Default::default()
        };
        let s = w.stock.create_shipment(authed(&tok, req)).await.unwrap().into_inner();
        w.stock
            .dispatch_shipment(authed(
                &tok,
                pb::DispatchShipmentRequest { shipment_id: s.id.clone(), request_id: String::new() },
            ))
            .await
            .unwrap();
        srv.app.evaluate_stock_alerts(7).await.unwrap();
        let got =
            alerts.list_alerts(authed(&tok, kinds(pb::AlertKind::ShipmentOverdue))).await.unwrap().into_inner().alerts;
        assert_eq!(got.len(), 1, "{name}");
        assert_eq!(got[0].subject.as_ref().map(|s| s.shipment_id.as_str()), Some(s.id.as_str()));
        assert_eq!(got[0].details.as_ref().and_then(|d| d.days_overdue), Some(1));
        assert!(got[0].condition_active);
        let r = pb::ReceiveShipmentRequest {
            shipment_id: s.id.clone(),
            storage_unit_id: w.du.clone(),
            accept_unlisted_in_full: true,
            ..Default::default()
        };
        w.stock.receive_shipment(authed(&tok, r)).await.unwrap();
        srv.app.evaluate_stock_alerts(7).await.unwrap();
        let got =
            alerts.list_alerts(authed(&tok, kinds(pb::AlertKind::ShipmentOverdue))).await.unwrap().into_inner().alerts;
        assert!(!got[0].condition_active && got[0].end_time.is_some(), "{name}: {got:?}");
        srv.stop().await;
    }
}
