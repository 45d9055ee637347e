//! The listing filters of ListAlerts (time window), ListExposures (subtree, unit, lot, alarm,
//! states, time) and ListStockPolicies (subtree), through gRPC on both engines: each filter keeps
//! exactly what it names, a window must not end before it starts, and a subtree outside the
//! caller's scope is refused.
#![allow(clippy::unwrap_used)]

use chrono::{DateTime, Duration, Utc};
use vaxtrace_proto::v1 as pb;
use vaxtrace_proto::v1::alert_service_client::AlertServiceClient;
use vaxtrace_tests::world::{receive, register_logger, send_readings, ship, token, world};
use vaxtrace_tests::{TestDb, TestServer, authed};

fn ts(t: DateTime<Utc>) -> Option<prost_types::Timestamp> {
    Some(prost_types::Timestamp { seconds: t.timestamp(), nanos: 0 })
}

/// `hot` hours at 9 °C from `t0` (a heat alarm from `t0`), then `cool` in-range readings; one
/// reading every 10 minutes, seqs from 1.
fn history(t0: DateTime<Utc>, hot: i64, cool: i64) -> Vec<(u64, DateTime<Utc>, f64)> {
    (0..hot * 6 + cool)
        .map(|i| (i as u64 + 1, t0 + Duration::minutes(10 * i), if i < hot * 6 { 9.0 } else { 5.0 }))
        .collect()
}

#[tokio::test]
async fn listings_keep_what_their_filters_name() {
    for db in TestDb::all() {
        let srv = TestServer::start(db).await;
        let name = srv.db.name();
        let mut w = world(&srv).await;
        let tok = w.tok.clone();
        let (n, d, nu1, du) = (w.n.clone(), w.d.clone(), w.nu1.clone(), w.du.clone());
        let (lot_a, lot_b) = (w.lots[0].clone(), w.lots[1].clone());
        receive(&mut w, &nu1, 0, 100, "").await.unwrap();
        receive(&mut w, &nu1, 1, 40, "").await.unwrap();
        ship(&mut w, &n, &d, &du, 0, 20).await;

        // A national fridge hot for 11 h a day and a half ago (over by now); a district fridge hot
        // since 14 h ago (still going).
        let t_nat = Utc::now() - Duration::hours(36);
        let t_dis = Utc::now() - Duration::hours(14);
        let (nat, nat_key) = register_logger(&srv, &tok, &n, &nu1, 600).await;
        let (dis, dis_key) = register_logger(&srv, &tok, &d, &du, 600).await;
        send_readings(&srv, &nat, &nat_key, &history(t_nat, 11, 3)).await;
        send_readings(&srv, &dis, &dis_key, &history(t_dis, 13, 0)).await;

        // ListAlerts: the time window.
        let mut alerts = AlertServiceClient::new(srv.channel().await);
        let heat = pb::AlertKind::Heat as i32;
        let mut heat_alerts = async |start: Option<DateTime<Utc>>, end: Option<DateTime<Utc>>| {
            let req = pb::ListAlertsRequest {
                kinds: vec![heat],
                start_time: start.and_then(ts),
                end_time: end.and_then(ts),
                ..Default::default()
            };
            let mut v: Vec<(String, i64)> = alerts
                .list_alerts(authed(&tok, req))
                .await
                .map(|r| r.into_inner().alerts)
                .unwrap_or_else(|e| panic!("{name}: {e}"))
                .into_iter()
                .map(|a| (a.subject.unwrap().device_id, a.start_time.unwrap().seconds))
                .collect();
            v.sort();
            v
        };
        let both = {
            let mut v = vec![(nat.clone(), t_nat.timestamp()), (dis.clone(), t_dis.timestamp())];
            v.sort();
            v
        };
        assert_eq!(heat_alerts(None, None).await, both, "{name}: no window");
        let after_nat = t_nat + Duration::hours(12);
        assert_eq!(
            heat_alerts(Some(after_nat), None).await,
            vec![(dis.clone(), t_dis.timestamp())],
            "{name}: going on since"
        );
        assert_eq!(
            heat_alerts(None, Some(t_dis)).await,
            vec![(nat.clone(), t_nat.timestamp())],
            "{name}: started before"
        );
        assert_eq!(heat_alerts(Some(t_nat), Some(t_dis + Duration::minutes(1))).await, both, "{name}: both overlap");
        let backwards = pb::ListAlertsRequest { start_time: ts(t_dis), end_time: ts(t_nat), ..Default::default() };
        let e = alerts.list_alerts(authed(&tok, backwards)).await.unwrap_err();
        assert_eq!(e.code(), tonic::Code::InvalidArgument, "{name}: {e}");

        // ListExposures: lots A and B exposed at the national fridge, lot A at the district's.
        let nat_alarm = {
            let req = pb::ListAlertsRequest { kinds: vec![heat], storage_unit_id: nu1.clone(), ..Default::default() };
            alerts.list_alerts(authed(&tok, req)).await.unwrap().into_inner().alerts[0].id.clone()
        };
        let mut stock = w.stock.clone();
        let mut exposures = async |req: pb::ListExposuresRequest| {
            let mut v: Vec<(String, String)> = stock
                .list_exposures(authed(&tok, req))
                .await
                .map(|r| r.into_inner().exposures)
                .unwrap_or_else(|e| panic!("{name}: {e}"))
                .into_iter()
                .map(|x| (x.storage_unit_id, x.lot_id))
                .collect();
            v.sort();
            v
        };
        let all = {
            let mut v = vec![(nu1.clone(), lot_a.clone()), (nu1.clone(), lot_b.clone()), (du.clone(), lot_a.clone())];
            v.sort();
            v
        };
        let only = |u: &str, l: &str| vec![(u.to_owned(), l.to_owned())];
        let q = pb::ListExposuresRequest::default;
        assert_eq!(exposures(q()).await, all, "{name}: no filter");
        assert_eq!(
            exposures(pb::ListExposuresRequest { ancestor_id: d.clone(), ..q() }).await,
            only(&du, &lot_a),
            "{name}"
        );
        assert_eq!(exposures(pb::ListExposuresRequest { ancestor_id: n.clone(), ..q() }).await, all, "{name}");
        assert_eq!(
            exposures(pb::ListExposuresRequest { storage_unit_id: nu1.clone(), ..q() }).await.len(),
            2,
            "{name}"
        );
        assert_eq!(
            exposures(pb::ListExposuresRequest { lot_id: lot_b.clone(), ..q() }).await,
            only(&nu1, &lot_b),
            "{name}"
        );
        assert_eq!(exposures(pb::ListExposuresRequest { alarm_id: nat_alarm, ..q() }).await.len(), 2, "{name}");
        let pending = pb::ExposureState::Pending as i32;
        let released = pb::ExposureState::Released as i32;
        assert_eq!(exposures(pb::ListExposuresRequest { states: vec![pending], ..q() }).await, all, "{name}");
        assert_eq!(exposures(pb::ListExposuresRequest { states: vec![released], ..q() }).await, vec![], "{name}");
        assert_eq!(exposures(pb::ListExposuresRequest { states: vec![released, pending], ..q() }).await, all, "{name}");
        assert_eq!(
            exposures(pb::ListExposuresRequest { start_time: ts(t_dis), ..q() }).await,
            only(&du, &lot_a),
            "{name}"
        );
        assert_eq!(exposures(pb::ListExposuresRequest { end_time: ts(t_dis), ..q() }).await.len(), 2, "{name}");
        let e = w
            .stock
            .list_exposures(authed(&tok, pb::ListExposuresRequest { states: vec![9], ..q() }))
            .await
            .unwrap_err();
        assert_eq!(e.code(), tonic::Code::InvalidArgument, "{name}: {e}");

        // ListStockPolicies: a subtree.
        for f in [&n, &d] {
            let p = pb::StockPolicy {
                facility_id: f.clone(),
                product_id: w.product.clone(),
                min_doses: 10,
                max_doses: 100,
                ..Default::default()
            };
            w.stock
                .set_stock_policy(authed(
                    &tok,
                    pb::SetStockPolicyRequest { policy: Some(p), request_id: String::new() },
                ))
                .await
                .unwrap();
        }
        let mut policies = async |tok: &str, ancestor: &str| {
            let req = pb::ListStockPoliciesRequest { ancestor_id: ancestor.into(), ..Default::default() };
            w.stock.list_stock_policies(authed(tok, req)).await.map(|r| {
                let mut v: Vec<String> = r.into_inner().policies.into_iter().map(|p| p.facility_id).collect();
                v.sort();
                v
            })
        };
        let mut nd = vec![n.clone(), d.clone()];
        nd.sort();
        assert_eq!(policies(&tok, "").await.unwrap(), nd, "{name}");
        assert_eq!(policies(&tok, &n).await.unwrap(), nd, "{name}");
        assert_eq!(policies(&tok, &d).await.unwrap(), vec![d.clone()], "{name}");
        let district = token(&srv, &tok, pb::Role::DistrictOfficer, &d).await;
        assert_eq!(policies(&district, &d).await.unwrap(), vec![d.clone()], "{name}");
        let e = policies(&district, &n).await.unwrap_err();
        assert_eq!(e.code(), tonic::Code::PermissionDenied, "{name}: a subtree above the scope: {e}");
        srv.stop().await;
    }
}
