//! EPCIS 2.0 export end to end on both engines: a known journey (supplier receipt by scan,
//! shipments down the tree with a transit loss, a session, discards, a reversed mistake) comes out
//! as the right events — bizSteps, quantities, locations, shipment links — in a document GS1's JSON
//! Schema accepts, over gRPC and over HTTP, scoped like every other read.
#![allow(clippy::unwrap_used)]

use serde_json::Value;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use vaxtrace_proto::v1 as pb;
use vaxtrace_proto::v1::admin_service_client::AdminServiceClient;
use vaxtrace_proto::v1::catalog_service_client::CatalogServiceClient;
use vaxtrace_proto::v1::facility_service_client::FacilityServiceClient;
use vaxtrace_proto::v1::report_service_client::ReportServiceClient;
use vaxtrace_tests::world::world;
use vaxtrace_tests::{TestDb, TestServer, authed, epcis, reason};

const GTIN: &str = "09506000134352";
/// GLN of the national store (valid check digit).
const GLN: &str = "9506000134352";

fn ts(t: chrono::DateTime<chrono::Utc>) -> prost_types::Timestamp {
    prost_types::Timestamp { seconds: t.timestamp(), nanos: 0 }
}

async fn export(
    rep: &mut ReportServiceClient<tonic::transport::Channel>,
    tok: &str,
    facility: &str,
    start: chrono::DateTime<chrono::Utc>,
    end: chrono::DateTime<chrono::Utc>,
) -> Result<Value, tonic::Status> {
    let r =
        pb::ExportEpcisRequest { facility_id: facility.into(), start_time: Some(ts(start)), end_time: Some(ts(end)) };
    let mut stream = rep.export_epcis(authed(tok, r)).await?.into_inner();
    let mut bytes = Vec::new();
    while let Some(c) = stream.message().await? {
        bytes.extend_from_slice(&c.data);
    }
    Ok(serde_json::from_slice(&bytes).expect("the export is JSON"))
}

/// (bizStep, disposition, location, quantity) of every event, in document order.
fn summary(doc: &Value, names: &[(&str, String)]) -> Vec<(String, String, String, i64)> {
    let name = |uri: &str| {
        names.iter().find(|(_, id)| uri.ends_with(id.as_str())).map(|(n, _)| (*n).to_owned()).unwrap_or(uri.to_owned())
    };
    doc["epcisBody"]["eventList"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["bizStep"].as_str().unwrap().to_owned(),
                e["disposition"].as_str().unwrap().to_owned(),
                name(e["bizLocation"]["id"].as_str().unwrap()),
                e["quantityList"][0]["quantity"].as_i64().unwrap(),
            )
        })
        .collect()
}

async fn http_get(addr: std::net::SocketAddr, path: &str, token: Option<&str>) -> (u16, String) {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let auth = token.map(|t| format!("authorization: Bearer {t}\r\n")).unwrap_or_default();
    let head = format!("GET {path} HTTP/1.1\r\nhost: x\r\n{auth}connection: close\r\n\r\n");
    s.write_all(head.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).await.unwrap();
    let text = String::from_utf8_lossy(&out).into_owned();
    let code = text.get(9..12).and_then(|c| c.parse().ok()).unwrap_or(0);
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default();
    (code, body)
}

/// Undoes chunked transfer encoding (axum streams bodies of unknown length that way).
fn dechunk(body: &str) -> String {
    if serde_json::from_str::<Value>(body).is_ok() {
        return body.to_owned();
    }
    let mut out = String::new();
    let mut rest = body;
    while let Some((size, tail)) = rest.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 {
            break;
        }
        out.push_str(&tail[..n]);
        rest = &tail[n + 2..];
    }
    out
}

#[tokio::test]
async fn a_known_journey_exports_as_valid_epcis() {
    for db in TestDb::all() {
        let srv = TestServer::start(db).await;
        let label = srv.db.name().to_owned();
        let mut w = world(&srv).await;
        let tok = w.tok.clone();
        let ch = srv.channel().await;
        let mut cat = CatalogServiceClient::new(ch.clone());
        let mut fac = FacilityServiceClient::new(ch.clone());
        let mut rep = ReportServiceClient::new(ch.clone());
        let t0 = chrono::Utc::now() - chrono::Duration::seconds(2);

        let mut p =
            cat.get_product(authed(&tok, pb::GetProductRequest { id: w.product.clone() })).await.unwrap().into_inner();
        p.gtins = vec![GTIN.into()];
        let mask = vec!["gtins".to_owned()];
        cat.update_product(authed(
            &tok,
            pb::UpdateProductRequest { product: Some(p), update_mask: mask, request_id: String::new() },
        ))
        .await
        .unwrap();
        let mut n =
            fac.get_facility(authed(&tok, pb::GetFacilityRequest { id: w.n.clone() })).await.unwrap().into_inner();
        n.gln = GLN.into();
        let mask = vec!["gln".to_owned()];
        fac.update_facility(authed(
            &tok,
            pb::UpdateFacilityRequest { facility: Some(n), update_mask: mask, request_id: String::new() },
        ))
        .await
        .unwrap();

        // Supplier receipt by scan: a lot number that needs percent-encoding in a Digital Link.
        let line = pb::SupplierReceiptLine {
            lot_ref: Some(pb::supplier_receipt_line::LotRef::ScannedCode(format!("(01){GTIN}(17)300630(10)PX/7"))),
            vials: 100,
            ..Default::default()
        };
        let r =
            pb::ReceiveFromSupplierRequest { storage_unit_id: w.nu1.clone(), lines: vec![line], ..Default::default() };
        let lot = w.stock.receive_from_supplier(authed(&tok, r)).await.unwrap().into_inner().lots[0].id.clone();

        let ship = |from: &str, to: &str, vials: i64| pb::CreateShipmentRequest {
            from_facility_id: from.into(),
            to_facility_id: to.into(),
            lines: vec![pb::CreateShipmentLine {
                lot_ref: Some(pb::create_shipment_line::LotRef::LotId(lot.clone())),
                vials,
                ..Default::default()
            }],
            reference: "RO-1".into(),
            ..Default::default()
        };
        let mut move_down = async |from: &str, to: &str, unit: &str, vials: i64, got: i64| {
            let s = w.stock.create_shipment(authed(&tok, ship(from, to, vials))).await.unwrap().into_inner();
            let d = pb::DispatchShipmentRequest { shipment_id: s.id.clone(), request_id: String::new() };
            w.stock.dispatch_shipment(authed(&tok, d)).await.unwrap();
            let r = pb::ReceiveShipmentRequest {
                shipment_id: s.id.clone(),
                storage_unit_id: unit.into(),
                lines: vec![pb::ReceiveShipmentLine {
                    line_ref: Some(pb::receive_shipment_line::LineRef::LineId(s.lines[0].id.clone())),
                    received_vials: got,
                    discrepancy_reason: if got < vials { pb::DiscrepancyReason::LostInTransit as i32 } else { 0 },
                    ..Default::default()
                }],
                ..Default::default()
            };
            w.stock.receive_shipment(authed(&tok, r)).await.unwrap();
            s.id
        };
        let s1 = move_down(&w.n.clone(), &w.d.clone(), &w.du.clone(), 30, 28).await;
        let _s2 = move_down(&w.d.clone(), &w.c.clone(), &w.cu.clone(), 20, 20).await;

        // A session at the site: 5 out, 1 returned unopened, 1 discarded unopened → 3 dispensed.
        let session = pb::SubmitSessionReportRequest {
            session_report: Some(pb::SessionReport {
                facility_id: w.s.clone(),
                storage_unit_id: w.cu.clone(),
                session_date: Some(pb::Date { year: 2026, month: 11, day: 20 }),
                lines: vec![pb::SessionReportLine {
                    lot_ref: Some(pb::session_report_line::LotRef::LotId(lot.clone())),
                    vials_issued: 5,
                    vials_opened: 3,
                    unopened_vials_returned: 1,
                    unopened_vials_discarded: 1,
                    discard_reason: pb::AdjustmentReason::Broken as i32,
                    doses_administered: 25,
                    ..Default::default()
                }],
                ..Default::default()
            }),
            request_id: String::new(),
        };
        w.stock.submit_session_report(authed(&tok, session)).await.unwrap();
        // A broken vial at the cold-chain point, and a mistaken one that is reversed.
        let adjust = |vials: i64| pb::AdjustStockRequest {
            storage_unit_id: w.cu.clone(),
            lot_ref: Some(pb::adjust_stock_request::LotRef::LotId(lot.clone())),
            quantity_vials: -vials,
            reason: pb::AdjustmentReason::Broken as i32,
            ..Default::default()
        };
        w.stock.adjust_stock(authed(&tok, adjust(1))).await.unwrap();
        let wrong = w.stock.adjust_stock(authed(&tok, adjust(4))).await.unwrap().into_inner();
        let rev = pb::ReverseLedgerEntryRequest {
            entry_id: wrong.id,
            comment: "typed 4, meant 0".into(),
            request_id: String::new(),
        };
        w.stock.reverse_ledger_entry(authed(&tok, rev)).await.unwrap();
        // A transfer between units is bookkeeping, not a supply-chain event.
        let tr = pb::TransferStockRequest {
            from_storage_unit_id: w.nu1.clone(),
            to_storage_unit_id: w.nu2.clone(),
            lot_id: lot.clone(),
            vials: 5,
            ..Default::default()
        };
        w.stock.transfer_stock(authed(&tok, tr)).await.unwrap();
        let t1 = chrono::Utc::now() + chrono::Duration::seconds(2);

        let doc = export(&mut rep, &tok, "", t0, t1).await.unwrap();
        if let Err(errors) = epcis::validate(&doc) {
            panic!("{label}: the export violates the EPCIS 2.0 schema:\n{}", errors.join("\n"));
        }
        assert_eq!((doc["type"].as_str(), doc["schemaVersion"].as_str()), (Some("EPCISDocument"), Some("2.0")));
        let names = [("N", GLN.to_owned()), ("D", w.d.clone()), ("C", w.c.clone()), ("S", w.s.clone())];
        let got = summary(&doc, &names);
        let ev = |a: &str, b: &str, c: &str, q: i64| (a.to_owned(), b.to_owned(), c.to_owned(), q);
        let expected = vec![
            ev("receiving", "in_progress", "N", 100),
            ev("shipping", "in_transit", "N", 30),
            ev("destroying", "destroyed", "D", 2),
            ev("receiving", "in_progress", "D", 28),
            ev("shipping", "in_transit", "D", 20),
            ev("receiving", "in_progress", "C", 20),
            // Session use is booked where the vials left: the cold-chain point's store.
            ev("dispensing", "dispensed", "C", 3),
            ev("destroying", "destroyed", "C", 1),
            ev("destroying", "destroyed", "C", 1),
        ];
        assert_eq!(got, expected, "{label}");

        let events = doc["epcisBody"]["eventList"].as_array().unwrap();
        let class = format!("https://id.gs1.org/01/{GTIN}/10/PX%2F7");
        assert!(events.iter().all(|e| e["quantityList"][0]["epcClass"] == class.as_str()), "{label}: LGTIN");
        assert!(events.iter().all(|e| e["action"] == "OBSERVE" && e["eventTimeZoneOffset"] == "+00:00"));
        let shipping = &events[1];
        assert_eq!(shipping["readPoint"]["id"], format!("https://id.gs1.org/414/{GLN}"), "{label}: GLN");
        assert_eq!(shipping["sourceList"][0]["source"], format!("https://id.gs1.org/414/{GLN}"));
        assert_eq!(shipping["destinationList"][0]["destination"], format!("urn:uuid:{}", w.d));
        assert_eq!(shipping["bizTransactionList"][0]["bizTransaction"], format!("urn:uuid:{s1}"));
        assert_eq!(
            events[3]["bizTransactionList"], shipping["bizTransactionList"],
            "{label}: receipt links to its shipment"
        );
        let mut ids: Vec<&str> = events.iter().map(|e| e["eventID"].as_str().unwrap()).collect();
        ids.sort_unstable();
        ids.dedup();
        assert_eq!(ids.len(), events.len(), "{label}: event ids are unique");

        // A subtree: only the cold-chain point and its session site.
        let sub = export(&mut rep, &tok, &w.c, t0, t1).await.unwrap();
        let steps: Vec<_> = summary(&sub, &names).into_iter().map(|(s, _, l, q)| (s, l, q)).collect();
        let expected_sub: Vec<(String, String, i64)> = vec![
            ("receiving".into(), "C".into(), 20),
            ("dispensing".into(), "C".into(), 3),
            ("destroying".into(), "C".into(), 1),
            ("destroying".into(), "C".into(), 1),
        ];
        assert_eq!(steps, expected_sub, "{label}");
        // A range with nothing in it is still a valid document.
        let empty = export(&mut rep, &tok, "", t1, t1 + chrono::Duration::hours(1)).await.unwrap();
        assert_eq!(empty["epcisBody"]["eventList"].as_array().map(Vec::len), Some(0));
        assert!(epcis::validate(&empty).is_ok(), "{label}");
        let e = export(&mut rep, &tok, "", t1, t0).await.unwrap_err();
        assert_eq!((e.code(), reason(&e).as_str()), (tonic::Code::InvalidArgument, "INVALID_FIELD"), "{label}");
        let e = export(&mut rep, &tok, "", t0 - chrono::Duration::days(367), t0).await.unwrap_err();
        assert!(e.message().contains("366 days"), "{label}: {}", e.message());

        // Scoped like every other read: a district officer of D sees D's subtree, not the national store.
        let mut adm = AdminServiceClient::new(ch.clone());
        let r = pb::CreateTokenRequest {
            role: pb::Role::DistrictOfficer as i32,
            scope_facility_id: w.d.clone(),
            description: "dio".into(),
            ..Default::default()
        };
        let dio = adm.create_token(authed(&tok, r)).await.unwrap().into_inner().secret;
        let mine = export(&mut rep, &dio, "", t0, t1).await.unwrap();
        let locations: Vec<String> = summary(&mine, &names).into_iter().map(|(_, _, l, _)| l).collect();
        assert!(!locations.is_empty() && !locations.contains(&"N".to_owned()), "{label}: {locations:?}");
        let e = export(&mut rep, &dio, &w.n, t0, t1).await.unwrap_err();
        assert_eq!(e.code(), tonic::Code::PermissionDenied, "{label}");

        // The same document over HTTP for tools without gRPC.
        let q = format!(
            "/api/v1/epcis?start_time={}&end_time={}",
            t0.format("%Y-%m-%dT%H:%M:%SZ"),
            (t1 + chrono::Duration::seconds(1)).format("%Y-%m-%dT%H:%M:%SZ")
        );
        let (code, body) = http_get(srv.addr, &q, Some(&tok)).await;
        assert_eq!(code, 200, "{label}: {body}");
        let over_http: Value = serde_json::from_str(&dechunk(&body)).unwrap();
        assert_eq!(summary(&over_http, &names), expected, "{label}");
        let (code, body) = http_get(srv.addr, &q, None).await;
        assert_eq!(code, 401, "{label}: {body}");
        assert!(body.contains("UNAUTHENTICATED"), "{body}");
        let (code, body) = http_get(srv.addr, "/api/v1/epcis?start_time=yesterday&end_time=now", Some(&tok)).await;
        assert_eq!(code, 400, "{label}: {body}");
        assert!(body.contains("start_time"), "{body}");
        srv.stop().await;
    }
}

/// Exposure data rides on quarantine events as a sensorElementList the schema accepts.
#[test]
fn exposures_become_sensor_elements() {
    use vaxtrace_server::domain::alert::Details;
    use vaxtrace_server::domain::epcis as e;
    use vaxtrace_server::domain::stock::{EntryDraft, EntryKind, Exposure, ExposureState, LedgerEntry, LotInfo};
    let start = chrono::DateTime::parse_from_rfc3339("2026-11-20T08:00:00Z").unwrap().to_utc();
    let info = LotInfo {
        lot_id: "0190a0b0-0000-7000-8000-000000000001".into(),
        product_id: "p".into(),
        doses_per_vial: 10,
        expiry: chrono::NaiveDate::from_ymd_opt(2030, 1, 1).unwrap(),
    };
    let mut draft = EntryDraft::new(EntryKind::Quarantine, "u", "0190a0b0-0000-7000-8000-0000000000f1", &info, 0);
    draft.quarantined_change = 40;
    draft.exposure_id = Some("x1".into());
    let entry = LedgerEntry {
        id: "0190a0b0-0000-7000-8000-0000000000e1".into(),
        sequence: 1,
        operation_id: "op".into(),
        draft,
        doses: 0,
        actor: "a".into(),
        time: start + chrono::Duration::hours(10),
        request_id: String::new(),
        balance_after_vials: 40,
        reversed_by: None,
    };
    let exposure = Exposure {
        id: "x1".into(),
        alert_id: "al".into(),
        storage_unit_id: "u".into(),
        facility_id: "f".into(),
        lot_id: info.lot_id.clone(),
        product_id: "p".into(),
        start,
        end: None,
        quarantined_vials: 40,
        state: ExposureState::Pending,
        details: Details { min_temp_c: Some(8.4), max_temp_c: Some(14.5), ..Default::default() },
        assessment: None,
    };
    let mut lookup = e::Lookup::default();
    lookup.exposures.insert("x1".into(), exposure);
    let events = e::events(&[entry], &lookup);
    assert_eq!(events.len(), 1);
    assert_eq!(events[0]["bizStep"], "holding");
    assert_eq!(events[0]["quantityList"][0]["quantity"], 40);
    assert_eq!(events[0]["quantityList"][0]["epcClass"], format!("urn:uuid:{}", info.lot_id), "no GTIN: a URN");
    let report = &events[0]["sensorElementList"][0]["sensorReport"][0];
    assert_eq!((report["type"].as_str(), report["uom"].as_str()), (Some("Temperature"), Some("CEL")));
    assert_eq!((report["minValue"].as_f64(), report["maxValue"].as_f64()), (Some(8.4), Some(14.5)));
    assert_eq!(events[0]["sensorElementList"][0]["sensorMetadata"]["startTime"], "2026-11-20T08:00:00.000Z");
    let doc = e::document(events, start);
    if let Err(errors) = epcis::validate(&doc) {
        panic!("sensor data violates the EPCIS schema:\n{}", errors.join("\n"));
    }
}
