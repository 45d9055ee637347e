//! The stock ledger through real gRPC on both engines: a full journey, random operation sequences
//! (property test) and concurrent contention, always checking balance = Σ ledger, never negative,
//! and that repeated request_ids change nothing.
#![allow(clippy::unwrap_used)]

use proptest::prelude::*;
use tonic::Code;
use vaxtrace_proto::v1 as pb;
use vaxtrace_proto::v1::report_service_client::ReportServiceClient;
use vaxtrace_tests::world::{check_ledger, receive, world};
use vaxtrace_tests::{TestDb, TestServer, authed, reason};

/// A transfer of `vials` of `lot` between two units, without a comment.
fn transfer(from: &str, to: &str, lot: &str, vials: i64, request_id: &str) -> pb::TransferStockRequest {
    pb::TransferStockRequest {
        from_storage_unit_id: from.to_owned(),
        to_storage_unit_id: to.to_owned(),
        lot_id: lot.to_owned(),
        vials,
        comment: String::new(),
        request_id: request_id.to_owned(),
    }
}

#[tokio::test]
async fn supply_chain_journey_end_to_end() {
    for db in TestDb::all() {
        let srv = TestServer::start(db).await;
        let mut w = world(&srv).await;
        let name = srv.db.name();
        let (nu1, du, cu, lot_a, lot_b) =
            (w.nu1.clone(), w.du.clone(), w.cu.clone(), w.lots[0].clone(), w.lots[1].clone());
        receive(&mut w, &nu1, 0, 1000, "rcpt-1").await.unwrap();
        receive(&mut w, &nu1, 1, 500, "rcpt-2").await.unwrap();
        // A repeated request_id books nothing twice.
        receive(&mut w, &nu1, 0, 1000, "rcpt-1").await.unwrap();
        // Supplier deliveries go to national or state stores only.
        let e = receive(&mut w, &du, 0, 10, "").await.unwrap_err();
        assert_eq!(reason(&e), "NOT_A_SUPPLY_STORE");

        // National → district: 200 vials of A (split over units automatically), dispatched.
        let line = |lot: &str, vials: i64| pb::CreateShipmentLine {
            lot_ref: Some(pb::create_shipment_line::LotRef::LotId(lot.into())),
            vials,
            ..Default::default()
        };
        let tok = w.tok.clone();
        let ship = pb::CreateShipmentRequest {
            from_facility_id: w.n.clone(),
            to_facility_id: w.d.clone(),
            lines: vec![line(&lot_a, 200), line(&lot_b, 100)],
            ..Default::default()
        };
        let s1 = w.stock.create_shipment(authed(&tok, ship)).await.unwrap().into_inner();
        let dispatch = pb::DispatchShipmentRequest { shipment_id: s1.id.clone(), request_id: "disp-1".into() };
        let d1 = w.stock.dispatch_shipment(authed(&tok, dispatch.clone())).await.unwrap().into_inner();
        assert_eq!(d1.state, pb::ShipmentState::Dispatched as i32);
        // The retry returns the original answer; a fresh second dispatch is refused.
        assert_eq!(w.stock.dispatch_shipment(authed(&tok, dispatch)).await.unwrap().into_inner(), d1);
        let e = w
            .stock
            .dispatch_shipment(authed(
                &tok,
                pb::DispatchShipmentRequest { shipment_id: s1.id.clone(), request_id: String::new() },
            ))
            .await
            .unwrap_err();
        assert_eq!(reason(&e), "INVALID_STATE");
        // Received at the district with 5 vials of B broken in transit.
        let lines = d1
            .lines
            .iter()
            .map(|l| {
                let short = if l.lot_id == lot_b { 5 } else { 0 };
                pb::ReceiveShipmentLine {
                    line_ref: Some(pb::receive_shipment_line::LineRef::LineId(l.id.clone())),
                    received_vials: l.vials - short,
                    vvm_stage: 1,
                    discrepancy_reason: if short > 0 { pb::DiscrepancyReason::DamagedInTransit as i32 } else { 0 },
                    ..Default::default()
                }
            })
            .collect();
        let rcv = pb::ReceiveShipmentRequest {
            shipment_id: s1.id.clone(),
            storage_unit_id: du.clone(),
            lines,
            ..Default::default()
        };
        let r1 = w.stock.receive_shipment(authed(&tok, rcv)).await.unwrap().into_inner();
        assert_eq!(r1.state, pb::ShipmentState::Received as i32);

        // District → cold-chain point: 50 vials of A, received in full.
        let ship = pb::CreateShipmentRequest {
            from_facility_id: w.d.clone(),
            to_facility_id: w.c.clone(),
            lines: vec![line(&lot_a, 50)],
            ..Default::default()
        };
        let s2 = w.stock.create_shipment(authed(&tok, ship)).await.unwrap().into_inner();
        w.stock
            .dispatch_shipment(authed(
                &tok,
                pb::DispatchShipmentRequest { shipment_id: s2.id.clone(), request_id: String::new() },
            ))
            .await
            .unwrap();
        let rcv = pb::ReceiveShipmentRequest {
            shipment_id: s2.id.clone(),
            storage_unit_id: cu.clone(),
            accept_unlisted_in_full: true,
            ..Default::default()
        };
        w.stock.receive_shipment(authed(&tok, rcv)).await.unwrap();

        // EEFO at the district: lot B (expires 2030) before A (2031).
        let sug = pb::SuggestAllocationRequest {
            facility_id: w.d.clone(),
            product_id: w.product.clone(),
            doses: 1000,
            ..Default::default()
        };
        let a = w.stock.suggest_allocation(authed(&tok, sug)).await.unwrap().into_inner();
        assert_eq!(a.lots[0].lot_id, lot_b, "{name}: earliest expiry first");
        assert_eq!((a.lots[0].suggested_vials, a.lots[1].suggested_vials), (95, 5));
        assert_eq!(a.shortfall_doses, 0);

        // Two sessions at the session site from the cold-chain point's unit: 12 vials issued,
        // 10 opened, 2 returned, 93 doses given; then 3 issued, 1 opened, 1 returned, 1 broken.
        let session = |issued, opened, returned, discarded, doses: i64, rid: &str| pb::SubmitSessionReportRequest {
            session_report: Some(pb::SessionReport {
                facility_id: w.s.clone(),
                storage_unit_id: cu.clone(),
                session_date: Some(pb::Date { year: 2026, month: 11, day: 20 }),
                lines: vec![pb::SessionReportLine {
                    lot_ref: Some(pb::session_report_line::LotRef::LotId(lot_a.clone())),
                    vials_issued: issued,
                    vials_opened: opened,
                    unopened_vials_returned: returned,
                    unopened_vials_discarded: discarded,
                    discard_reason: if discarded > 0 { pb::AdjustmentReason::Broken as i32 } else { 0 },
                    doses_administered: doses,
                    ..Default::default()
                }],
                ..Default::default()
            }),
            request_id: rid.into(),
        };
        let rep = w
            .stock
            .submit_session_report(authed(&tok, session(12, 10, 2, 0, 93, "sess-1")))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(rep.lines[0].doses_issued, 100);
        let again = w
            .stock
            .submit_session_report(authed(&tok, session(12, 10, 2, 0, 93, "sess-1")))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(again.id, rep.id, "a resubmitted report is the same report");
        w.stock.submit_session_report(authed(&tok, session(3, 1, 1, 1, 8, ""))).await.unwrap();
        let bad = w.stock.submit_session_report(authed(&tok, session(3, 1, 1, 0, 8, ""))).await.unwrap_err();
        assert_eq!(reason(&bad), "VIALS_DO_NOT_ADD_UP");

        let bal = check_ledger(&mut w, name).await;
        assert_eq!(
            bal[&(nu1.clone(), lot_a.clone())] + bal.get(&(w.nu2.clone(), lot_a.clone())).copied().unwrap_or(0),
            800
        );
        assert_eq!(bal[&(du.clone(), lot_b.clone())], 95);
        assert_eq!(bal[&(du.clone(), lot_a.clone())], 150);
        // 50 received − 12 − 3 issued + 2 + 2 returned − 1 broken.
        assert_eq!(bal[&(cu.clone(), lot_a.clone())], 38);

        // Wastage: 120 doses issued ((12−2)+(3−1) vials × 10), 101 given: 19/120 = 1583 bp; 10 of
        // the wasted doses were an unopened vial; the 5 vials lost in transit are store wastage.
        let mut reports = ReportServiceClient::new(srv.channel().await);
        let wr = pb::WastageReportRequest {
            facility_id: w.d.clone(),
            start_date: Some(pb::Date { year: 2026, month: 11, day: 1 }),
            end_date: Some(pb::Date { year: 2026, month: 11, day: 30 }),
            ..Default::default()
        };
        let rows = reports.wastage_report(authed(&tok, wr.clone())).await.unwrap().into_inner().rows;
        assert_eq!(rows.len(), 1, "{name}: {rows:?}");
        let r = &rows[0];
        assert_eq!(
            (r.sessions, r.doses_issued, r.doses_administered, r.wastage_rate_bp),
            (2, 120, 101, Some(1583)),
            "{name}"
        );
        assert_eq!(
            (r.unopened_vial_wastage_doses, r.opened_vial_wastage_doses, r.store_wastage_doses),
            (10, 9, 50),
            "{name}"
        );
        assert_eq!((r.acceptable_wastage_bp, r.above_acceptable), (2500, false));

        // Stock on hand rolls up: the district row holds its store and the cold-chain point below.
        let soh = pb::StockOnHandReportRequest {
            group_by: vec![pb::ReportDimension::Facility as i32, pb::ReportDimension::Product as i32],
            facility_grouping: Some(pb::FacilityGrouping { depth: 5 }),
            ..Default::default()
        };
        let rows = reports.stock_on_hand_report(authed(&tok, soh)).await.unwrap().into_inner().rows;
        let vials_at = |id: &str| rows.iter().find(|r| r.facility_id == id).map(|r| r.available_vials);
        assert_eq!(vials_at(&w.d), Some(150 + 95 + 38), "{name}: {rows:?}");
        assert_eq!(vials_at(&w.c), Some(38));
        assert_eq!(vials_at(&w.n), Some(800 + 400 + 150 + 95 + 38), "{name}: national row is the whole country");
        assert_eq!(rows[0].facility_id, w.n, "tree order starts at the root");

        // The CSV export of the wastage report.
        let req = pb::ExportReportCsvRequest { report: Some(pb::export_report_csv_request::Report::Wastage(wr)) };
        let mut stream = reports.export_report_csv(authed(&tok, req)).await.unwrap().into_inner();
        let mut csv = Vec::new();
        while let Some(chunk) = stream.message().await.unwrap() {
            csv.extend(chunk.data);
        }
        let csv = String::from_utf8(csv).unwrap();
        let mut lines = csv.split("\r\n");
        assert!(
            lines
                .next()
                .unwrap()
                .starts_with("facility_id,facility_name,depth,product_id,product_code,sessions,doses_issued")
        );
        assert!(lines.next().unwrap().contains(",PENTA10,2,120,101,1583,9,10,50,2500,false"), "{csv}");

        // Expiry risk: nothing expires within 90 days here; within 730 days lot B does.
        let er = pb::ExpiryRiskReportRequest { within_days: 730, ..Default::default() };
        let rows = reports.expiry_risk_report(authed(&tok, er)).await.unwrap().into_inner().rows;
        assert!(
            !rows.is_empty() && rows.iter().all(|r| r.lot_id == lot_b && r.days_to_expiry <= 730),
            "{name}: {rows:?}"
        );
        let at_district = rows.iter().find(|r| r.facility_id == w.d).unwrap();
        assert_eq!((at_district.vials, at_district.doses, at_district.band), (95, 950, pb::ExpiryBand::Later as i32));
        let er = pb::ExpiryRiskReportRequest { within_days: 90, ..Default::default() };
        assert!(reports.expiry_risk_report(authed(&tok, er)).await.unwrap().into_inner().rows.is_empty());
        srv.stop().await;
    }
}

/// A posting's answer is built before its write on PostgreSQL (its sequences drawn with the
/// locks): what it answers must be what the ledger holds, in the ledger's order, on both engines.
#[tokio::test]
async fn answers_name_the_entries_the_ledger_holds() {
    for db in TestDb::all() {
        let srv = TestServer::start(db).await;
        let mut w = world(&srv).await;
        let name = srv.db.name();
        let tok = w.tok.clone();
        let (nu1, nu2, lot) = (w.nu1.clone(), w.nu2.clone(), w.lots[0].clone());
        receive(&mut w, &nu1, 0, 100, "").await.unwrap();
        let mut answered = Vec::new();
        for (i, vials) in [30, 5, 12].into_iter().enumerate() {
            let t = transfer(&nu1, &nu2, &lot, vials, &format!("move-{i}"));
            let r = w.stock.transfer_stock(authed(&tok, t)).await.unwrap().into_inner();
            let (out, into) = (r.out_entry.unwrap(), r.in_entry.unwrap());
            assert!(out.sequence < into.sequence, "{name}: the legs in order");
            answered.extend([out, into]);
        }
        // An adjustment answers its entry as well.
        let found = pb::AdjustStockRequest {
            storage_unit_id: nu2.clone(),
            lot_ref: Some(pb::adjust_stock_request::LotRef::LotId(lot.clone())),
            quantity_vials: 2,
            reason: pb::AdjustmentReason::Found as i32,
            comment: "behind the ice packs".into(),
            request_id: "found-1".into(),
        };
        answered.push(w.stock.adjust_stock(authed(&tok, found)).await.unwrap().into_inner());
        let r = pb::ListLedgerEntriesRequest { lot_id: lot.clone(), page_size: 1000, ..Default::default() };
        let entries = w.stock.list_ledger_entries(authed(&tok, r)).await.unwrap().into_inner().entries;
        for a in &answered {
            let stored = entries.iter().find(|e| e.id == a.id);
            assert_eq!(stored, Some(a), "{name}: the answer is the stored entry");
        }
        let mut sequences: Vec<u64> = answered.iter().map(|e| e.sequence).collect();
        let in_call_order = sequences.clone();
        sequences.sort_unstable();
        assert_eq!(sequences, in_call_order, "{name}: later calls come later in the ledger");
        check_ledger(&mut w, name).await;
        srv.stop().await;
    }
}

/// On PostgreSQL concurrent postings share one transaction. A balance another transaction holds
/// must delay only the postings that need it, never the ones queued beside or behind them.
#[tokio::test]
async fn a_held_balance_delays_only_its_own_postings() {
    let Some(db) = TestDb::all().into_iter().find(|d| matches!(d, TestDb::Postgres(_))) else { return };
    let srv = TestServer::start(db).await;
    let mut w = world(&srv).await;
    let tok = w.tok.clone();
    let (nu1, nu2) = (w.nu1.clone(), w.nu2.clone());
    let (held_lot, free_lot) = (w.lots[0].clone(), w.lots[1].clone());
    receive(&mut w, &nu1, 0, 100, "").await.unwrap();
    receive(&mut w, &nu1, 1, 100, "").await.unwrap();
    let pool = sqlx::PgPool::connect(&srv.database_url).await.unwrap();
    let mut holder = pool.begin().await.unwrap();
    sqlx::query("SELECT vials FROM stock_balances WHERE storage_unit_id = $1 AND lot_id = $2 FOR UPDATE")
        .bind(&nu1)
        .bind(&held_lot)
        .fetch_one(&mut *holder)
        .await
        .unwrap();
    let mut stock = w.stock.clone();
    let held = tokio::spawn({
        let (tok, t) = (tok.clone(), transfer(&nu1, &nu2, &held_lot, 10, "held"));
        async move { stock.transfer_stock(authed(&tok, t)).await }
    });
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    // Queued behind (or grouped with) the held one, and answered while the balance is still held.
    for i in 0..3 {
        let t = transfer(&nu1, &nu2, &free_lot, 10, &format!("free-{i}"));
        let r = tokio::time::timeout(std::time::Duration::from_secs(20), w.stock.transfer_stock(authed(&tok, t)))
            .await
            .expect("a posting on a free balance is not held up by a held one");
        r.unwrap();
    }
    assert!(!held.is_finished(), "the held balance's posting waits for its lock");
    holder.rollback().await.unwrap();
    held.await.unwrap().unwrap();
    let on_hand = check_ledger(&mut w, "postgres").await;
    assert_eq!(on_hand.get(&(nu2.clone(), held_lot.clone())), Some(&10));
    assert_eq!(on_hand.get(&(nu2.clone(), free_lot.clone())), Some(&30));
    pool.close().await;
    srv.stop().await;
}

/// Refused postings leave nothing behind, also when they share a transaction with postings that
/// are written (PostgreSQL groups concurrent postings): no empty balance row appears for them.
#[tokio::test]
async fn refused_postings_beside_written_ones_leave_no_trace() {
    for db in TestDb::all() {
        let srv = TestServer::start(db).await;
        let mut w = world(&srv).await;
        let name = srv.db.name();
        let tok = w.tok.clone();
        let (nu1, nu2) = (w.nu1.clone(), w.nu2.clone());
        let (stocked, never) = (w.lots[0].clone(), w.lots[1].clone());
        receive(&mut w, &nu1, 0, 100, "").await.unwrap();
        let mut calls = Vec::new();
        for i in 0..16 {
            // Even calls move stock that exists; odd ones try to move a lot nobody holds.
            let (from, to, lot) = if i % 2 == 0 { (&nu1, &nu2, &stocked) } else { (&nu2, &nu1, &never) };
            let t = transfer(from, to, lot, 1, &format!("mixed-{i}"));
            let mut stock = w.stock.clone();
            let tok = tok.clone();
            calls.push(tokio::spawn(async move { stock.transfer_stock(authed(&tok, t)).await }));
        }
        for (i, c) in calls.into_iter().enumerate() {
            let r = c.await.unwrap();
            if i % 2 == 0 {
                r.unwrap();
            } else {
                assert_eq!(reason(&r.unwrap_err()), "INSUFFICIENT_STOCK", "{name}");
            }
        }
        let on_hand = check_ledger(&mut w, name).await;
        assert_eq!(on_hand.get(&(nu2.clone(), stocked.clone())), Some(&8), "{name}");
        let traces: Vec<_> = on_hand.keys().filter(|(_, lot)| *lot == never).collect();
        assert!(traces.is_empty(), "{name}: refused postings left balance rows {traces:?}");
        srv.stop().await;
    }
}

#[tokio::test]
async fn reversals_counts_transfers_and_errors() {
    for db in TestDb::all() {
        let srv = TestServer::start(db).await;
        let mut w = world(&srv).await;
        let name = srv.db.name();
        let tok = w.tok.clone();
        let (nu1, nu2, lot) = (w.nu1.clone(), w.nu2.clone(), w.lots[0].clone());
        receive(&mut w, &nu1, 0, 100, "").await.unwrap();
        let t = transfer(&nu1, &nu2, &lot, 40, "");
        let moved = w.stock.transfer_stock(authed(&tok, t.clone())).await.unwrap().into_inner();
        let mut too_much = t.clone();
        too_much.vials = 61;
        let e = w.stock.transfer_stock(authed(&tok, too_much)).await.unwrap_err();
        assert_eq!((e.code(), reason(&e).as_str()), (Code::FailedPrecondition, "INSUFFICIENT_STOCK"));
        // The units and the lot are read in one query; their answers keep their order.
        let nowhere = "01900000-0000-7000-8000-000000000000".to_owned();
        let unknown_lot = pb::TransferStockRequest { lot_id: nowhere.clone(), ..t.clone() };
        let e = w.stock.transfer_stock(authed(&tok, unknown_lot.clone())).await.unwrap_err();
        assert_eq!((e.code(), reason(&e).as_str()), (Code::NotFound, "LOT_NOT_FOUND"), "{e}");
        let unknown_both = pb::TransferStockRequest { to_storage_unit_id: nowhere.clone(), ..unknown_lot };
        let e = w.stock.transfer_stock(authed(&tok, unknown_both)).await.unwrap_err();
        assert_eq!((e.code(), reason(&e).as_str()), (Code::NotFound, "STORAGE_UNIT_NOT_FOUND"), "{e}");
        let same_unit = pb::TransferStockRequest { to_storage_unit_id: nu1.clone(), lot_id: nowhere, ..t.clone() };
        let e = w.stock.transfer_stock(authed(&tok, same_unit)).await.unwrap_err();
        assert_eq!((e.code(), reason(&e).as_str()), (Code::InvalidArgument, "SAME_STORAGE_UNIT"), "{e}");
        // Reversing one leg of a transfer reverses both; a second reversal is refused.
        let out_id = moved.out_entry.unwrap().id;
        let rev = pb::ReverseLedgerEntryRequest {
            entry_id: out_id.clone(),
            comment: "wrong unit".into(),
            request_id: String::new(),
        };
        w.stock.reverse_ledger_entry(authed(&tok, rev.clone())).await.unwrap();
        let e = w.stock.reverse_ledger_entry(authed(&tok, rev)).await.unwrap_err();
        assert_eq!(reason(&e), "ALREADY_REVERSED");
        let bal = check_ledger(&mut w, name).await;
        assert_eq!((bal[&(nu1.clone(), lot.clone())], bal[&(nu2.clone(), lot.clone())]), (100, 0));

        // Adjustments: sign and comment rules.
        let adj = |q: i64, r: pb::AdjustmentReason, c: &str| pb::AdjustStockRequest {
            storage_unit_id: nu1.clone(),
            lot_ref: Some(pb::adjust_stock_request::LotRef::LotId(lot.clone())),
            quantity_vials: q,
            reason: r as i32,
            comment: c.into(),
            request_id: String::new(),
        };
        assert_eq!(
            reason(&w.stock.adjust_stock(authed(&tok, adj(3, pb::AdjustmentReason::Broken, ""))).await.unwrap_err()),
            "SIGN_MISMATCH"
        );
        assert_eq!(
            reason(&w.stock.adjust_stock(authed(&tok, adj(-3, pb::AdjustmentReason::Lost, ""))).await.unwrap_err()),
            "COMMENT_REQUIRED"
        );
        w.stock.adjust_stock(authed(&tok, adj(-3, pb::AdjustmentReason::Broken, ""))).await.unwrap();
        // A physical count of 90 corrects 97 down by 7.
        let count = pb::RecordPhysicalCountRequest {
            facility_id: w.n.clone(),
            lines: vec![pb::PhysicalCountLine {
                storage_unit_id: nu1.clone(),
                lot_ref: Some(pb::physical_count_line::LotRef::LotId(lot.clone())),
                counted_vials: 90,
                vvm_stage: 2,
            }],
            ..Default::default()
        };
        let res = w.stock.record_physical_count(authed(&tok, count)).await.unwrap().into_inner();
        assert_eq!((res.results[0].expected_vials, res.results[0].counted_vials), (97, 90));
        assert_eq!(res.results[0].correction.as_ref().map(|c| c.quantity_vials), Some(-7));
        let bal = check_ledger(&mut w, name).await;
        assert_eq!(bal[&(nu1.clone(), lot.clone())], 90);
        // Malformed ids and a missing comment on cancel are refused cleanly.
        let e = w
            .stock
            .cancel_shipment(authed(
                &tok,
                pb::CancelShipmentRequest {
                    shipment_id: "nope".into(),
                    comment: "x".into(),
                    request_id: String::new(),
                },
            ))
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument);
        srv.stop().await;
    }
}

#[tokio::test]
async fn concurrent_issues_never_overdraw() {
    for db in TestDb::all() {
        let srv = TestServer::start(db).await;
        let mut w = world(&srv).await;
        let name = srv.db.name();
        let (nu1, nu2, lot) = (w.nu1.clone(), w.nu2.clone(), w.lots[0].clone());
        receive(&mut w, &nu1, 0, 50, "").await.unwrap();
        // 16 clients each try to move 5 vials at once: exactly 10 succeed.
        let mut tasks = Vec::new();
        for i in 0..16 {
            let mut client = w.stock.clone();
            let (tok, nu1, nu2, lot) = (w.tok.clone(), nu1.clone(), nu2.clone(), lot.clone());
            tasks.push(tokio::spawn(async move {
                let t = transfer(&nu1, &nu2, &lot, 5, &format!("t-{i}"));
                let first = client.transfer_stock(authed(&tok, t.clone())).await;
                // A retry of the same request changes nothing, whatever the first outcome.
                let second = client.transfer_stock(authed(&tok, t)).await;
                (first.map(|r| r.into_inner()), second.map(|r| r.into_inner()))
            }));
        }
        let mut ok = 0;
        for t in tasks {
            let (first, second) = t.await.unwrap();
            match first {
                Ok(r) => {
                    ok += 1;
                    assert_eq!(second.unwrap(), r, "{name}: retry returns the original result");
                }
                Err(e) => assert_eq!(reason(&e), "INSUFFICIENT_STOCK", "{name}: {e:?}"),
            }
        }
        assert_eq!(ok, 10, "{name}");
        let bal = check_ledger(&mut w, name).await;
        assert_eq!((bal[&(nu1, lot.clone())], bal[&(nu2, lot)]), (0, 50));
        srv.stop().await;
    }
}

#[derive(Debug, Clone)]
enum Step {
    Receive { lot: usize, vials: i64 },
    Transfer { up: bool, lot: usize, vials: i64 },
    Adjust { lot: usize, vials: i64 },
    Count { lot: usize, vials: i64 },
    Reverse { nth: usize },
    Ship { lot: usize, vials: i64, cancel: bool },
    Retry,
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        (0..2usize, 1..50i64).prop_map(|(lot, vials)| Step::Receive { lot, vials }),
        (any::<bool>(), 0..2usize, 1..60i64).prop_map(|(up, lot, vials)| Step::Transfer { up, lot, vials }),
        (0..2usize, -30..30i64).prop_map(|(lot, vials)| Step::Adjust { lot, vials }),
        (0..2usize, 0..80i64).prop_map(|(lot, vials)| Step::Count { lot, vials }),
        (0..40usize).prop_map(|nth| Step::Reverse { nth }),
        (0..2usize, 1..40i64, any::<bool>()).prop_map(|(lot, vials, cancel)| Step::Ship { lot, vials, cancel }),
        Just(Step::Retry),
    ]
}

/// Runs a random sequence on a fresh server; every step may succeed or be refused, but the
/// invariants must hold after each, and replaying the last request_id changes nothing.
async fn run_steps(db: TestDb, steps: Vec<Step>) {
    let srv = TestServer::start(db).await;
    let mut w = world(&srv).await;
    let name = srv.db.name();
    let tok = w.tok.clone();
    let mut last: Option<pb::AdjustStockRequest> = None;
    for (i, s) in steps.into_iter().enumerate() {
        let rid = format!("step-{i}");
        let (nu1, nu2) = (w.nu1.clone(), w.nu2.clone());
        match s {
            Step::Receive { lot, vials } => drop(receive(&mut w, &nu1, lot, vials, &rid).await),
            Step::Transfer { up, lot, vials } => {
                let (a, b) = if up { (nu1, nu2) } else { (nu2, nu1) };
                let t = transfer(&a, &b, &w.lots[lot], vials, &rid);
                drop(w.stock.transfer_stock(authed(&tok, t)).await);
            }
            Step::Adjust { lot, vials } => {
                let reason = if vials > 0 { pb::AdjustmentReason::Found } else { pb::AdjustmentReason::Broken };
                let a = pb::AdjustStockRequest {
                    storage_unit_id: nu1,
                    lot_ref: Some(pb::adjust_stock_request::LotRef::LotId(w.lots[lot].clone())),
                    quantity_vials: vials,
                    reason: reason as i32,
                    comment: "prop".into(),
                    request_id: rid,
                };
                drop(w.stock.adjust_stock(authed(&tok, a.clone())).await);
                last = Some(a);
            }
            Step::Count { lot, vials } => {
                let c = pb::RecordPhysicalCountRequest {
                    facility_id: w.n.clone(),
                    lines: vec![pb::PhysicalCountLine {
                        storage_unit_id: nu2,
                        lot_ref: Some(pb::physical_count_line::LotRef::LotId(w.lots[lot].clone())),
                        counted_vials: vials,
                        vvm_stage: 0,
                    }],
                    request_id: rid,
                    ..Default::default()
                };
                drop(w.stock.record_physical_count(authed(&tok, c)).await);
            }
            Step::Reverse { nth } => {
                let r = pb::ListLedgerEntriesRequest { page_size: 1000, ..Default::default() };
                let entries = w.stock.list_ledger_entries(authed(&tok, r)).await.unwrap().into_inner().entries;
                if !entries.is_empty() {
                    let e = &entries[nth % entries.len()];
                    let rev = pb::ReverseLedgerEntryRequest {
                        entry_id: e.id.clone(),
                        comment: "prop".into(),
                        request_id: rid,
                    };
                    drop(w.stock.reverse_ledger_entry(authed(&tok, rev)).await);
                }
            }
            Step::Ship { lot, vials, cancel } => {
                let l = pb::CreateShipmentLine {
                    lot_ref: Some(pb::create_shipment_line::LotRef::LotId(w.lots[lot].clone())),
                    vials,
                    ..Default::default()
                };
                let req = pb::CreateShipmentRequest {
                    from_facility_id: w.n.clone(),
                    to_facility_id: w.d.clone(),
                    lines: vec![l],
                    ..Default::default()
                };
                if let Ok(s) = w.stock.create_shipment(authed(&tok, req)).await {
                    let id = s.into_inner().id;
                    if w.stock
                        .dispatch_shipment(authed(
                            &tok,
                            pb::DispatchShipmentRequest { shipment_id: id.clone(), request_id: String::new() },
                        ))
                        .await
                        .is_ok()
                    {
                        if cancel {
                            let c = pb::CancelShipmentRequest {
                                shipment_id: id,
                                comment: "prop".into(),
                                request_id: String::new(),
                            };
                            w.stock.cancel_shipment(authed(&tok, c)).await.unwrap();
                        } else {
                            let r = pb::ReceiveShipmentRequest {
                                shipment_id: id,
                                storage_unit_id: w.du.clone(),
                                accept_unlisted_in_full: true,
                                ..Default::default()
                            };
                            w.stock.receive_shipment(authed(&tok, r)).await.unwrap();
                        }
                    }
                }
            }
            Step::Retry => {
                if let Some(a) = &last {
                    let before = check_ledger(&mut w, name).await;
                    drop(w.stock.adjust_stock(authed(&tok, a.clone())).await);
                    assert_eq!(check_ledger(&mut w, name).await, before, "{name}: a replayed request_id changed stock");
                }
            }
        }
        check_ledger(&mut w, name).await;
    }
    srv.stop().await;
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 12, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn random_operation_sequences_keep_the_ledger_whole(steps in prop::collection::vec(step(), 1..25)) {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        for db in TestDb::all() {
            rt.block_on(run_steps(db, steps.clone()));
        }
    }
}
