//! Scanned GS1 codes in place of typed lot data, end to end through gRPC on both engines: a
//! supplier receipt creates or matches lots from a scan, shipments and counts name lots by scan,
//! and every bad scan is refused with a reason naming the problem while nothing changes.

use vaxtrace_proto::v1 as pb;
use vaxtrace_proto::v1::catalog_service_client::CatalogServiceClient;
use vaxtrace_tests::world::{World, check_ledger, world};
use vaxtrace_tests::{TestDb, TestServer, authed, reason};

/// GTIN of the test product's packs (valid check digit).
const GTIN: &str = "09506000134352";
/// A valid GTIN no product carries.
const OTHER_GTIN: &str = "04012345678901";
const GS: char = '\u{1d}';

fn supplier_line(code: &str, vials: i64) -> pb::SupplierReceiptLine {
    pb::SupplierReceiptLine {
        lot_ref: Some(pb::supplier_receipt_line::LotRef::ScannedCode(code.into())),
        manufacturer: "Serum Institute".into(),
        vials,
        ..Default::default()
    }
}

async fn receive_scanned(
    w: &mut World,
    code: &str,
    vials: i64,
) -> Result<pb::ReceiveFromSupplierResponse, tonic::Status> {
    let r = pb::ReceiveFromSupplierRequest {
        storage_unit_id: w.nu1.clone(),
        lines: vec![supplier_line(code, vials)],
        supplier: "UNICEF SD".into(),
        ..Default::default()
    };
    w.stock.receive_from_supplier(authed(&w.tok, r)).await.map(tonic::Response::into_inner)
}

async fn lots(cat: &mut CatalogServiceClient<tonic::transport::Channel>, tok: &str) -> Vec<pb::Lot> {
    let r = pb::ListLotsRequest { page_size: 1000, ..Default::default() };
    cat.list_lots(authed(tok, r)).await.expect("list lots").into_inner().lots
}

fn field_of(status: &tonic::Status) -> String {
    use tonic_types::StatusExt as _;
    status
        .get_error_details()
        .bad_request()
        .and_then(|b| b.field_violations.first().map(|v| v.field.clone()))
        .unwrap_or_default()
}

#[tokio::test]
async fn scanned_codes_create_match_and_name_lots() {
    for db in TestDb::all() {
        let srv = TestServer::start(db).await;
        let label = srv.db.name().to_owned();
        let mut w = world(&srv).await;
        let mut cat = CatalogServiceClient::new(srv.channel().await);
        let mut p = cat
            .get_product(authed(&w.tok, pb::GetProductRequest { id: w.product.clone() }))
            .await
            .expect("product")
            .into_inner();
        p.gtins = vec![GTIN.into()];
        cat.update_product(authed(
            &w.tok,
            pb::UpdateProductRequest { product: Some(p), update_mask: vec!["gtins".into()], request_id: String::new() },
        ))
        .await
        .expect("give the product its GTIN");
        let before = lots(&mut cat, &w.tok).await.len();

        // Raw scanner output: symbology identifier, GS after the variable-length lot, day 00.
        let raw = format!("]d201{GTIN}17290200{GS}10SC-77{GS}21SERIAL1");
        let got = receive_scanned(&mut w, &raw, 40).await.expect("a scan creates the lot");
        let lot = got.lots.first().cloned().expect("the created lot");
        assert_eq!((lot.gtin.as_str(), lot.lot_number.as_str()), (GTIN, "SC-77"), "{label}");
        assert_eq!(lot.expiry, Some(pb::Date { year: 2029, month: 2, day: 28 }), "{label}: day 00 = last day");
        assert_eq!(lot.manufacturer, "Serum Institute", "{label}");
        assert_eq!(lot.product_id, w.product, "{label}");
        assert_eq!(lots(&mut cat, &w.tok).await.len(), before + 1, "{label}");

        // The bracketed text under the barcode names the same lot: matched, not created again.
        let bracketed = format!("(01){GTIN}(17)290228(10)SC-77");
        let again = receive_scanned(&mut w, &bracketed, 10).await.expect("the same lot by its bracketed form");
        assert_eq!(again.lots.first().map(|l| l.id.clone()), Some(lot.id.clone()), "{label}");
        assert_eq!(lots(&mut cat, &w.tok).await.len(), before + 1, "{label}");

        // Refusals: each names its problem, and none changes anything.
        let ledger_before = check_ledger(&mut w, &label).await;
        let e = receive_scanned(&mut w, &format!("(01){GTIN}(17)291231(10)SC-77"), 5).await.expect_err("expiry");
        assert_eq!((e.code(), reason(&e).as_str()), (tonic::Code::FailedPrecondition, "EXPIRY_MISMATCH"), "{label}");
        assert!(e.message().contains("2029-02-28") && e.message().contains("2029-12-31"), "{label}: {}", e.message());
        let e = receive_scanned(&mut w, &format!("(01){OTHER_GTIN}(17)291231(10)X1"), 5).await.expect_err("gtin");
        assert_eq!((e.code(), reason(&e).as_str()), (tonic::Code::NotFound, "UNKNOWN_GTIN"), "{label}");
        assert!(e.message().contains(OTHER_GTIN), "{label}: {}", e.message());
        let e = receive_scanned(&mut w, "(01)09506000134353(17)291231(10)X1", 5).await.expect_err("check digit");
        assert_eq!((e.code(), reason(&e).as_str()), (tonic::Code::InvalidArgument, "INVALID_SCANNED_CODE"), "{label}");
        assert_eq!(field_of(&e), "lines[0].scanned_code", "{label}");
        assert!(e.message().contains("check digit"), "{label}: {}", e.message());
        let e = receive_scanned(&mut w, &format!("(01){GTIN}(10)NEW-1"), 5).await.expect_err("no expiry");
        assert_eq!(reason(&e), "INVALID_SCANNED_CODE", "{label}");
        assert!(e.message().contains("(17)"), "{label}: {}", e.message());
        let e = receive_scanned(&mut w, &format!("]d201{GTIN}10ABCDEFGHIJKLMNOPQRSTU17291231"), 5)
            .await
            .expect_err("missing separator");
        assert_eq!(reason(&e), "INVALID_SCANNED_CODE", "{label}");
        let e = receive_scanned(&mut w, "(99)ABC", 5).await.expect_err("unknown AI");
        assert_eq!(reason(&e), "INVALID_SCANNED_CODE", "{label}");
        assert_eq!(lots(&mut cat, &w.tok).await.len(), before + 1, "{label}: no lot from a refused scan");
        assert_eq!(check_ledger(&mut w, &label).await, ledger_before, "{label}: refusals change nothing");

        // A physical count names the lot by scan; an unknown lot is NOT_FOUND there (counts never
        // create lots).
        let count = |code: String, vials: i64| pb::RecordPhysicalCountRequest {
            facility_id: w.n.clone(),
            lines: vec![pb::PhysicalCountLine {
                storage_unit_id: w.nu1.clone(),
                lot_ref: Some(pb::physical_count_line::LotRef::ScannedCode(code)),
                counted_vials: vials,
                ..Default::default()
            }],
            ..Default::default()
        };
        let r = w
            .stock
            .record_physical_count(authed(&w.tok, count(bracketed.clone(), 48)))
            .await
            .expect("count by scan")
            .into_inner();
        let res = r.results.first().expect("one result");
        assert_eq!((res.lot_id.as_str(), res.expected_vials, res.counted_vials), (lot.id.as_str(), 50, 48), "{label}");
        let e = w
            .stock
            .record_physical_count(authed(&w.tok, count(format!("(01){GTIN}(10)NOPE"), 1)))
            .await
            .expect_err("unknown lot");
        assert_eq!((e.code(), reason(&e).as_str()), (tonic::Code::NotFound, "UNKNOWN_LOT"), "{label}");

        // A shipment names the lot by scan; the receiver scans the pack and the received vials
        // fill the lot's lines in line order (here one line per source unit).
        let transfer = pb::TransferStockRequest {
            from_storage_unit_id: w.nu1.clone(),
            to_storage_unit_id: w.nu2.clone(),
            lot_id: lot.id.clone(),
            vials: 8,
            ..Default::default()
        };
        w.stock.transfer_stock(authed(&w.tok, transfer)).await.expect("transfer");
        let line = |unit: &str, vials: i64| pb::CreateShipmentLine {
            lot_ref: Some(pb::create_shipment_line::LotRef::ScannedCode(bracketed.clone())),
            vials,
            source_storage_unit_id: unit.into(),
        };
        let s = pb::CreateShipmentRequest {
            from_facility_id: w.n.clone(),
            to_facility_id: w.d.clone(),
            lines: vec![line(&w.nu1, 20), line(&w.nu2, 8)],
            ..Default::default()
        };
        let s = w.stock.create_shipment(authed(&w.tok, s)).await.expect("shipment by scan").into_inner();
        assert!(s.lines.iter().all(|l| l.lot_id == lot.id), "{label}");
        let d = pb::DispatchShipmentRequest { shipment_id: s.id.clone(), request_id: String::new() };
        w.stock.dispatch_shipment(authed(&w.tok, d)).await.expect("dispatch");
        let receive = |vials: i64| pb::ReceiveShipmentRequest {
            shipment_id: s.id.clone(),
            storage_unit_id: w.du.clone(),
            lines: vec![pb::ReceiveShipmentLine {
                line_ref: Some(pb::receive_shipment_line::LineRef::ScannedCode(raw.clone())),
                received_vials: vials,
                discrepancy_reason: pb::DiscrepancyReason::DamagedInTransit as i32,
                ..Default::default()
            }],
            ..Default::default()
        };
        let e = w.stock.receive_shipment(authed(&w.tok, receive(29))).await.expect_err("more than dispatched");
        assert_eq!(reason(&e), "RECEIVED_EXCEEDS_DISPATCHED", "{label}");
        let got = w.stock.receive_shipment(authed(&w.tok, receive(25))).await.expect("receive by scan").into_inner();
        let received: Vec<(i64, i64)> = got.lines.iter().map(|l| (l.vials, l.received_vials)).collect();
        assert_eq!(received, vec![(20, 20), (8, 5)], "{label}: filled in line order, the shortfall on the last");
        let balances = check_ledger(&mut w, &label).await;
        assert_eq!(balances.get(&(w.du.clone(), lot.id.clone())), Some(&25), "{label}");
    }
}
