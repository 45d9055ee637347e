//! Stock that enters a unit while its heat alarm lasts is exposed too, on both engines: more vials
//! of an already exposed lot join that lot's exposure, a new lot gets its own, and nothing can be
//! allocated until the exposures are assessed.
#![allow(clippy::unwrap_used)]

use chrono::{Duration, Utc};
use vaxtrace_proto::signing::encode_signed;
use vaxtrace_proto::v1 as pb;
use vaxtrace_tests::world::{check_ledger, receive, register_logger, world};
use vaxtrace_tests::{TestDb, TestServer, authed};

#[tokio::test]
async fn stock_arriving_during_a_heat_alarm_is_quarantined_too() {
    for db in TestDb::all() {
        let srv = TestServer::start(db).await;
        let name = srv.db.name().to_owned();
        let mut w = world(&srv).await;
        let tok = w.tok.clone();
        let nu1 = w.nu1.clone();
        receive(&mut w, &nu1, 0, 100, "").await.unwrap();
        let (id, key) = register_logger(&srv, &tok, &w.n, &nu1, 600).await;
        let t0 = Utc::now() - Duration::hours(12);
        let mut seq = 0u64;
        let mut send = async |from: i64, to: i64, temp: f64| {
            let readings = (from..to)
                .map(|i| {
                    seq += 1;
                    pb::Reading {
                        seq,
                        time: Some(prost_types::Timestamp {
                            seconds: (t0 + Duration::minutes(10 * i)).timestamp(),
                            nanos: 0,
                        }),
                        temp_c: temp,
                        ..Default::default()
                    }
                })
                .collect();
            let batch = pb::ReadingBatch { device_id: id.clone(), readings, ..Default::default() };
            let ack = srv.app.ingest(&id, &encode_signed(&batch, Some(&key)).unwrap(), false).await.unwrap();
            assert_eq!(ack.error, "", "{ack:?}");
        };
        // 10 h 10 min at 9 °C: the heat alarm is open and the 100 vials are quarantined.
        send(0, 62, 9.0).await;
        let balances = |w: &mut vaxtrace_tests::world::World| {
            let req = pb::ListBalancesRequest { storage_unit_id: nu1.clone(), ..Default::default() };
            let mut stock = w.stock.clone();
            let tok = tok.clone();
            async move {
                let mut b: Vec<(String, i64, i64)> = stock
                    .list_balances(authed(&tok, req))
                    .await
                    .unwrap()
                    .into_inner()
                    .balances
                    .into_iter()
                    .map(|b| (b.lot_id, b.vials, b.quarantined_vials))
                    .collect();
                b.sort();
                b
            }
        };
        let (a, b) = (w.lots[0].clone(), w.lots[1].clone());
        assert_eq!(balances(&mut w).await, vec![(a.clone(), 100, 100)], "{name}");

        // A delivery during the alarm: 50 more of the exposed lot, 30 of another.
        receive(&mut w, &nu1, 0, 50, "").await.unwrap();
        receive(&mut w, &nu1, 1, 30, "").await.unwrap();
        // The next reading (still hot) quarantines them.
        send(62, 63, 9.5).await;
        let mut expected = vec![(a.clone(), 150, 150), (b.clone(), 30, 30)];
        expected.sort();
        assert_eq!(balances(&mut w).await, expected, "{name}");
        let xs = w
            .stock
            .list_exposures(authed(&tok, pb::ListExposuresRequest::default()))
            .await
            .unwrap()
            .into_inner()
            .exposures;
        let mut got: Vec<(String, i64)> = xs.iter().map(|x| (x.lot_id.clone(), x.quarantined_vials)).collect();
        got.sort();
        let mut want = vec![(a.clone(), 150), (b.clone(), 30)];
        want.sort();
        assert_eq!(got, want, "{name}: one exposure per lot, the first one topped up");
        let sug = pb::SuggestAllocationRequest {
            facility_id: w.n.clone(),
            product_id: w.product.clone(),
            doses: 10,
            ..Default::default()
        };
        let s = w.stock.suggest_allocation(authed(&tok, sug)).await.unwrap().into_inner();
        assert_eq!(s.suggested_doses, 0, "{name}: nothing in the breached unit can be issued");

        // Back in range: the alarm ends and stock arriving now is not quarantined.
        send(63, 64, 5.0).await;
        receive(&mut w, &nu1, 1, 5, "").await.unwrap();
        send(64, 65, 5.0).await;
        let after = balances(&mut w).await;
        assert!(after.contains(&(b.clone(), 35, 30)), "{name}: {after:?}");
        check_ledger(&mut w, &name).await;
        srv.stop().await;
    }
}
