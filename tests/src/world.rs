//! A small stock world for end-to-end tests: facilities, units, a product with two lots, and
//! helpers that check the ledger invariants through the public API.

use std::collections::HashMap;

use tonic::transport::Channel;
use vaxtrace_proto::v1 as pb;
use vaxtrace_proto::v1::catalog_service_client::CatalogServiceClient;
use vaxtrace_proto::v1::facility_service_client::FacilityServiceClient;
use vaxtrace_proto::v1::stock_service_client::StockServiceClient;

use crate::{TestServer, authed};

/// A small country: national store N (unit NU1, NU2), district D (unit DU), cold-chain point C
/// (unit CU) with session site S; product PENTA (10 doses, MDVP) with two lots.
#[allow(missing_docs, missing_debug_implementations)]
pub struct World {
    pub tok: String,
    pub stock: StockServiceClient<Channel>,
    pub n: String,
    pub d: String,
    pub c: String,
    pub s: String,
    pub nu1: String,
    pub nu2: String,
    pub du: String,
    pub cu: String,
    pub product: String,
    pub lots: Vec<String>,
}

pub async fn world(srv: &TestServer) -> World {
    let ch = srv.channel().await;
    let tok = srv.admin_token.clone();
    let mut fac = FacilityServiceClient::new(ch.clone());
    let mut cat = CatalogServiceClient::new(ch.clone());
    let mut mk = async |parent: &str, kind: pb::FacilityKind, code: &str| {
        let f = pb::Facility {
            parent_id: parent.into(),
            kind: kind as i32,
            code: code.into(),
            name: code.into(),
            ..Default::default()
        };
        fac.create_facility(authed(&tok, pb::CreateFacilityRequest { facility: Some(f), request_id: String::new() }))
            .await
            .expect("test world set-up")
            .into_inner()
            .id
    };
    let n = mk("", pb::FacilityKind::NationalStore, "N").await;
    let st = mk(&n, pb::FacilityKind::StateStore, "ST").await;
    let d = mk(&st, pb::FacilityKind::DistrictStore, "D").await;
    let c = mk(&d, pb::FacilityKind::ColdChainPoint, "C").await;
    let s = mk(&c, pb::FacilityKind::SessionSite, "S").await;
    let mut unit = async |f: &str, name: &str| {
        let u = pb::StorageUnit {
            facility_id: f.into(),
            kind: 1,
            name: name.into(),
            temperature_profile: 1,
            ..Default::default()
        };
        fac.create_storage_unit(authed(
            &tok,
            pb::CreateStorageUnitRequest { storage_unit: Some(u), request_id: String::new() },
        ))
        .await
        .expect("test world set-up")
        .into_inner()
        .id
    };
    let (nu1, nu2, du, cu) = (unit(&n, "NU1").await, unit(&n, "NU2").await, unit(&d, "DU").await, unit(&c, "CU").await);
    let p = pb::Product {
        code: "PENTA10".into(),
        name: "Penta".into(),
        vaccine: "Penta".into(),
        doses_per_vial: 10,
        presentation: pb::Presentation::Liquid as i32,
        vvm_type: pb::VvmType::Vvm14 as i32,
        temperature_profile: 1,
        multi_dose_vial_policy: true,
        ..Default::default()
    };
    let product = cat
        .create_product(authed(&tok, pb::CreateProductRequest { product: Some(p), request_id: String::new() }))
        .await
        .expect("test world set-up")
        .into_inner()
        .id;
    let mut lots = Vec::new();
    for (n, y) in [("A1", 2031), ("B2", 2027)] {
        let l = pb::Lot {
            product_id: product.clone(),
            lot_number: n.into(),
            expiry: Some(pb::Date { year: y, month: 6, day: 30 }),
            ..Default::default()
        };
        lots.push(
            cat.create_lot(authed(&tok, pb::CreateLotRequest { lot: Some(l), request_id: String::new() }))
                .await
                .expect("test world set-up")
                .into_inner()
                .id,
        );
    }
    World { tok, stock: StockServiceClient::new(ch), n, d, c, s, nu1, nu2, du, cu, product, lots }
}

pub async fn receive(w: &mut World, unit: &str, lot: usize, vials: i64, rid: &str) -> Result<(), tonic::Status> {
    let line = pb::SupplierReceiptLine {
        lot_ref: Some(pb::supplier_receipt_line::LotRef::LotId(w.lots[lot].clone())),
        vials,
        ..Default::default()
    };
    let r = pb::ReceiveFromSupplierRequest {
        storage_unit_id: unit.into(),
        lines: vec![line],
        supplier: "UNICEF SD".into(),
        request_id: rid.into(),
        ..Default::default()
    };
    w.stock.receive_from_supplier(authed(&w.tok, r)).await.map(drop)
}

/// Checks the invariants through the public API: for every (unit, lot), the balance equals the sum
/// of its ledger entries and is never negative; returns the balances.
pub async fn check_ledger(w: &mut World, db: &str) -> HashMap<(String, String), i64> {
    let mut sums: HashMap<(String, String), (i64, i64)> = HashMap::new();
    let mut token = String::new();
    loop {
        let r = pb::ListLedgerEntriesRequest { page_size: 1000, page_token: token, ..Default::default() };
        let page = w.stock.list_ledger_entries(authed(&w.tok, r)).await.expect("test world set-up").into_inner();
        for e in page.entries {
            if e.storage_unit_id.is_empty() {
                continue; // transit losses never sat in a unit
            }
            let s = sums.entry((e.storage_unit_id.clone(), e.lot_id.clone())).or_default();
            s.0 += e.quantity_vials;
            s.1 += e.quarantined_vials_change;
            assert_eq!(s.0, e.balance_after_vials, "{db}: running balance recorded on entry {}", e.id);
        }
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    let r = pb::ListBalancesRequest { page_size: 1000, include_zero: true, ..Default::default() };
    let balances = w.stock.list_balances(authed(&w.tok, r)).await.expect("test world set-up").into_inner().balances;
    let mut out = HashMap::new();
    for b in balances {
        let key = (b.storage_unit_id.clone(), b.lot_id.clone());
        let (v, q) = sums.remove(&key).unwrap_or_default();
        assert_eq!((b.vials, b.quarantined_vials), (v, q), "{db}: balance = Σ ledger for {key:?}");
        assert!(b.vials >= 0 && b.quarantined_vials >= 0 && b.quarantined_vials <= b.vials, "{db}: {b:?}");
        out.insert(key, b.vials);
    }
    assert!(sums.values().all(|s| *s == (0, 0)), "{db}: entries without a balance row: {sums:?}");
    out
}

/// Registers a one-probe logger at `facility` measuring `unit` every `interval_secs`; returns its
/// id and HMAC key.
pub async fn register_logger(
    srv: &TestServer,
    tok: &str,
    facility: &str,
    unit: &str,
    interval_secs: i64,
) -> (String, Vec<u8>) {
    register_logger_probes(srv, tok, facility, unit, 1, interval_secs).await
}

/// Registers a logger at `facility` whose `probes` probes (indexes 0..) all measure `unit`,
/// every `interval_secs`; returns its id and HMAC key.
pub async fn register_logger_probes(
    srv: &TestServer,
    tok: &str,
    facility: &str,
    unit: &str,
    probes: u32,
    interval_secs: i64,
) -> (String, Vec<u8>) {
    let mut tel = vaxtrace_proto::v1::telemetry_service_client::TelemetryServiceClient::new(srv.channel().await);
    let d = pb::Device {
        serial: format!("SN-{}", uuid::Uuid::now_v7().simple()),
        name: "logger".into(),
        model: "Model A".into(),
        facility_id: facility.into(),
        probes: (0..probes)
            .map(|i| pb::Probe { index: i, storage_unit_id: unit.into(), label: format!("probe {i}") })
            .collect(),
        expected_interval: Some(prost_types::Duration { seconds: interval_secs, nanos: 0 }),
        ..Default::default()
    };
    let r = tel
        .register_device(authed(tok, pb::RegisterDeviceRequest { device: Some(d), request_id: String::new() }))
        .await
        .expect("test world set-up")
        .into_inner();
    (r.device.map(|d| d.id).unwrap_or_default(), r.key)
}

/// Issues a token of `role` scoped to `scope` (empty = whole tree); returns its bearer string.
pub async fn token(srv: &TestServer, admin: &str, role: pb::Role, scope: &str) -> String {
    let mut t = vaxtrace_proto::v1::admin_service_client::AdminServiceClient::new(srv.channel().await);
    t.create_token(authed(
        admin,
        pb::CreateTokenRequest {
            role: role as i32,
            scope_facility_id: scope.into(),
            description: format!("{role:?} for a test"),
            ..Default::default()
        },
    ))
    .await
    .expect("test world set-up")
    .into_inner()
    .secret
}

/// Ingests readings of probe 0 as the logger would publish them: (seq, time, °C) each.
pub async fn send_readings(
    srv: &TestServer,
    device: &str,
    key: &[u8],
    readings: &[(u64, chrono::DateTime<chrono::Utc>, f64)],
) {
    let readings = readings
        .iter()
        .map(|(seq, t, c)| pb::Reading {
            seq: *seq,
            time: Some(prost_types::Timestamp { seconds: t.timestamp(), nanos: 0 }),
            temp_c: *c,
            ..Default::default()
        })
        .collect();
    let batch = pb::ReadingBatch { device_id: device.into(), readings, ..Default::default() };
    let payload = vaxtrace_proto::signing::encode_signed(&batch, Some(key)).expect("sign a batch");
    let ack = srv.app.ingest(device, &payload, false).await.expect("ingest");
    assert_eq!(ack.error, "", "{ack:?}");
}

/// Ships `vials` of lot number `lot` from facility `from` to facility `to`, received in full into
/// `to_unit`; returns the shipment id.
pub async fn ship(w: &mut World, from: &str, to: &str, to_unit: &str, lot: usize, vials: i64) -> String {
    let tok = w.tok.clone();
    let req = pb::CreateShipmentRequest {
        from_facility_id: from.into(),
        to_facility_id: to.into(),
        lines: vec![pb::CreateShipmentLine {
            lot_ref: Some(pb::create_shipment_line::LotRef::LotId(w.lots[lot].clone())),
            vials,
            ..Default::default()
        }],
        ..Default::default()
    };
    let id = w.stock.create_shipment(authed(&tok, req)).await.expect("test world set-up").into_inner().id;
    let d = pb::DispatchShipmentRequest { shipment_id: id.clone(), request_id: String::new() };
    w.stock.dispatch_shipment(authed(&tok, d)).await.expect("test world set-up");
    let r = pb::ReceiveShipmentRequest {
        shipment_id: id.clone(),
        storage_unit_id: to_unit.into(),
        accept_unlisted_in_full: true,
        ..Default::default()
    };
    w.stock.receive_shipment(authed(&tok, r)).await.expect("test world set-up");
    id
}
