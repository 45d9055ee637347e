//! Invariant 3's second half: every mutating RPC (every RPC whose request carries a request_id,
//! read from the compiled proto descriptors, so a new one without a case here fails) is
//! idempotent, through gRPC, on every engine:
//!
//! (a) a sequential retry with the same request_id answers exactly as the first call did,
//!     success or refusal, and changes nothing;
//! (b) two identical calls sent at once get the same answer, and the effect happens once (the
//!     pair changes the state as much as one call does).
//!
//! Then the cases the matrix cannot show: a retry after the state changed (a lot expired, a unit
//! back in service, stock arrived) still gets the first answer; secrets shown once are shown
//! again to the same token only and are not kept readable in the database; and a
//! RecordPhysicalCount answer recorded by an older version (a plain list of entries) is read.
#![allow(clippy::unwrap_used)]

use std::fmt::Debug;

use chrono::Utc;
use prost::Message as _;
use tonic::transport::Channel;
use tonic::{Code, Status};
use vaxtrace_proto::v1 as pb;
use vaxtrace_proto::v1::admin_service_client::AdminServiceClient;
use vaxtrace_proto::v1::alert_service_client::AlertServiceClient;
use vaxtrace_proto::v1::catalog_service_client::CatalogServiceClient;
use vaxtrace_proto::v1::facility_service_client::FacilityServiceClient;
use vaxtrace_proto::v1::telemetry_service_client::TelemetryServiceClient;
use vaxtrace_server::domain::alert::{AlertKind, Condition, Details, Severity, Subject};
use vaxtrace_tests::world::{World, receive, register_logger, send_readings, ship, world};
use vaxtrace_tests::{TestDb, TestServer, authed, reason};

/// Every mutating RPC with a case below: (service, method).
const CASES: &[(&str, &str)] = &[
    ("FacilityService", "CreateFacility"),
    ("FacilityService", "UpdateFacility"),
    ("FacilityService", "CreateStorageUnit"),
    ("FacilityService", "UpdateStorageUnit"),
    ("CatalogService", "CreateProduct"),
    ("CatalogService", "UpdateProduct"),
    ("CatalogService", "CreateLot"),
    ("AdminService", "CreateToken"),
    ("AdminService", "RevokeToken"),
    ("AlertService", "AcknowledgeAlert"),
    ("AlertService", "ResolveAlert"),
    ("AlertService", "CreateWebhook"),
    ("AlertService", "DeleteWebhook"),
    ("TelemetryService", "RegisterDevice"),
    ("TelemetryService", "UpdateDevice"),
    ("TelemetryService", "RotateDeviceKey"),
    ("StockService", "ReceiveFromSupplier"),
    ("StockService", "CreateShipment"),
    ("StockService", "DispatchShipment"),
    ("StockService", "ReceiveShipment"),
    ("StockService", "CancelShipment"),
    ("StockService", "TransferStock"),
    ("StockService", "AdjustStock"),
    ("StockService", "RecordPhysicalCount"),
    ("StockService", "SubmitSessionReport"),
    ("StockService", "ReverseLedgerEntry"),
    ("StockService", "SetStockPolicy"),
    ("StockService", "RecordExposureAssessment"),
];

/// The RPCs of vaxtrace.v1 whose request message has a `request_id` field.
fn descriptor_mutations() -> Vec<(String, String)> {
    let fds = prost_types::FileDescriptorSet::decode(vaxtrace_proto::FILE_DESCRIPTOR_SET).unwrap();
    let files: Vec<_> = fds.file.iter().filter(|f| f.package() == "vaxtrace.v1").collect();
    let has_request_id = |type_name: &str| {
        files.iter().flat_map(|f| &f.message_type).any(|m| {
            format!(".vaxtrace.v1.{}", m.name()) == type_name && m.field.iter().any(|f| f.name() == "request_id")
        })
    };
    let mut out = Vec::new();
    for f in &files {
        for s in &f.service {
            for m in s.method.iter().filter(|m| has_request_id(m.input_type())) {
                out.push((s.name().to_owned(), m.name().to_owned()));
            }
        }
    }
    out
}

#[test]
fn every_rpc_with_a_request_id_has_a_case() {
    let described = descriptor_mutations();
    assert!(described.len() >= 28, "the descriptors list {} mutating RPCs", described.len());
    let missing: Vec<_> = described
        .iter()
        .filter(|(s, m)| !CASES.iter().any(|(cs, cm)| cs == s && cm == m))
        .map(|(s, m)| format!("{s}/{m}"))
        .collect();
    assert!(missing.is_empty(), "mutating RPCs without an idempotency case: {missing:?}");
    let stale: Vec<_> = CASES.iter().filter(|(s, m)| !described.iter().any(|(ds, dm)| ds == s && dm == m)).collect();
    assert!(stale.is_empty(), "cases for RPCs that take no request_id: {stale:?}");
}

/// An answer as a client sees it: the response, or the refusal's code, reason and message.
type Answer = Result<String, (Code, String, String)>;

fn answer<T: Debug>(r: Result<tonic::Response<T>, Status>) -> Answer {
    r.map(|ok| format!("{:?}", ok.into_inner())).map_err(|e| (e.code(), reason(&e), e.message().to_owned()))
}

/// Which request of a case to send: one that succeeds, or one the server refuses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Ok,
    Refused,
}

/// The clients and the objects the cases work on.
struct Cx {
    srv_tok: String,
    w: World,
    fac: FacilityServiceClient<Channel>,
    cat: CatalogServiceClient<Channel>,
    admin: AdminServiceClient<Channel>,
    alerts: AlertServiceClient<Channel>,
    tel: TelemetryServiceClient<Channel>,
    /// A unit at N that is out of service.
    off: String,
    /// A logger at C measuring CU, with its key and next seq and reading clock.
    dev: (String, Vec<u8>),
    seq: u64,
    clock: chrono::DateTime<Utc>,
    serial: String,
    /// Distinguishes the objects each preparation makes.
    n: u32,
}

impl Cx {
    async fn new(srv: &TestServer) -> Cx {
        let ch = srv.channel().await;
        let mut w = world(srv).await;
        let (n, nu1, nu2, c, cu) = (w.n.clone(), w.nu1.clone(), w.nu2.clone(), w.c.clone(), w.cu.clone());
        for (u, lot) in [(&nu1, 0), (&nu1, 1), (&nu2, 0)] {
            receive(&mut w, u, lot, 10_000, "").await.unwrap();
        }
        ship(&mut w, &n, &c, &cu, 0, 1_000).await;
        let mut fac = FacilityServiceClient::new(ch.clone());
        let tok = srv.admin_token.clone();
        let u = pb::StorageUnit {
            facility_id: n.clone(),
            kind: 1,
            name: "OFF".into(),
            temperature_profile: 1,
            ..Default::default()
        };
        let off = fac
            .create_storage_unit(authed(
                &tok,
                pb::CreateStorageUnitRequest { storage_unit: Some(u), request_id: String::new() },
            ))
            .await
            .unwrap()
            .into_inner()
            .id;
        let mut cx = Cx {
            srv_tok: tok.clone(),
            fac,
            cat: CatalogServiceClient::new(ch.clone()),
            admin: AdminServiceClient::new(ch.clone()),
            alerts: AlertServiceClient::new(ch.clone()),
            tel: TelemetryServiceClient::new(ch.clone()),
            off: off.clone(),
            dev: register_logger(srv, &tok, &c, &cu, 1800).await,
            seq: 1,
            clock: Utc::now() - chrono::Duration::days(20),
            serial: String::new(),
            n: 0,
            w,
        };
        cx.set_active(&off, false).await;
        cx.serial = cx.device(&cx.dev.0.clone()).await.serial;
        cx
    }

    /// A second client with the same view, to send a twin request on its own connection state.
    fn twin(&self) -> Cx {
        let w = &self.w;
        Cx {
            srv_tok: self.srv_tok.clone(),
            w: World {
                tok: w.tok.clone(),
                stock: w.stock.clone(),
                n: w.n.clone(),
                d: w.d.clone(),
                c: w.c.clone(),
                s: w.s.clone(),
                nu1: w.nu1.clone(),
                nu2: w.nu2.clone(),
                du: w.du.clone(),
                cu: w.cu.clone(),
                product: w.product.clone(),
                lots: w.lots.clone(),
            },
            fac: self.fac.clone(),
            cat: self.cat.clone(),
            admin: self.admin.clone(),
            alerts: self.alerts.clone(),
            tel: self.tel.clone(),
            off: self.off.clone(),
            dev: self.dev.clone(),
            seq: self.seq,
            clock: self.clock,
            serial: self.serial.clone(),
            n: self.n,
        }
    }

    fn tok(&self) -> String {
        self.srv_tok.clone()
    }

    fn next(&mut self) -> u32 {
        self.n += 1;
        self.n
    }

    async fn set_active(&mut self, unit: &str, active: bool) {
        let u = pb::StorageUnit { id: unit.into(), active, ..Default::default() };
        let r = pb::UpdateStorageUnitRequest {
            storage_unit: Some(u),
            update_mask: vec!["active".into()],
            request_id: String::new(),
        };
        self.fac.update_storage_unit(authed(&self.tok(), r)).await.unwrap();
    }

    async fn device(&mut self, id: &str) -> pb::Device {
        self.tel.get_device(authed(&self.tok(), pb::GetDeviceRequest { id: id.into() })).await.unwrap().into_inner()
    }

    /// A draft shipment of `vials` of lot A1 from NU1 (N) to D.
    async fn draft(&mut self, vials: i64) -> String {
        let r = pb::CreateShipmentRequest {
            from_facility_id: self.w.n.clone(),
            to_facility_id: self.w.d.clone(),
            lines: vec![pb::CreateShipmentLine {
                lot_ref: Some(pb::create_shipment_line::LotRef::LotId(self.w.lots[0].clone())),
                vials,
                source_storage_unit_id: self.w.nu1.clone(),
            }],
            ..Default::default()
        };
        self.w.stock.create_shipment(authed(&self.tok(), r)).await.unwrap().into_inner().id
    }

    async fn dispatched(&mut self) -> String {
        let id = self.draft(1).await;
        let r = pb::DispatchShipmentRequest { shipment_id: id.clone(), request_id: String::new() };
        self.w.stock.dispatch_shipment(authed(&self.tok(), r)).await.unwrap();
        id
    }

    /// A fresh open alert at C.
    async fn alert(&mut self, srv: &TestServer) -> String {
        let n = self.next();
        let c = Condition {
            kind: AlertKind::StockOut,
            subject: Subject { facility_id: self.w.c.clone(), product_id: format!("p{n}"), ..Default::default() },
            severity: Severity::Alarm,
            start: Utc::now(),
            through: Utc::now(),
            details: Details { summary: format!("test alert {n}"), ..Default::default() },
        };
        srv.app.raise_alert_event(&c).await.unwrap().unwrap().alert.id
    }

    async fn ack(&mut self, id: &str) {
        let r = pb::AcknowledgeAlertRequest { id: id.into(), comment: "on it".into(), request_id: String::new() };
        self.alerts.acknowledge_alert(authed(&self.tok(), r)).await.unwrap();
    }

    async fn webhook(&mut self, rid: &str, url: &str, scope: &str) -> Answer {
        let w = pb::Webhook { url: url.into(), scope_facility_id: scope.into(), ..Default::default() };
        let r = pb::CreateWebhookRequest { webhook: Some(w), secret: String::new(), request_id: rid.into() };
        answer(self.alerts.create_webhook(authed(&self.tok(), r)).await)
    }

    /// A pending exposure at CU whose freeze alarm has ended.
    async fn exposure(&mut self, srv: &TestServer) -> String {
        let start = self.clock;
        let mut readings = Vec::new();
        // Below −0.5 °C for 62 minutes opens a FREEZE alarm; back at +5 °C ends it.
        for (min, c) in [(0, -3.0), (31, -3.0), (62, -3.0), (63, 5.0)] {
            readings.push((self.seq, start + chrono::Duration::minutes(min), c));
            self.seq += 1;
        }
        send_readings(srv, &self.dev.0, &self.dev.1, &readings).await;
        self.clock = start + chrono::Duration::minutes(120);
        let r = pb::ListExposuresRequest {
            states: vec![pb::ExposureState::Pending as i32],
            page_size: 1000,
            ..Default::default()
        };
        let pending = self.w.stock.list_exposures(authed(&self.tok(), r)).await.unwrap().into_inner().exposures;
        pending
            .iter()
            .find(|x| x.storage_unit_id == self.w.cu)
            .map(|x| x.id.clone())
            .expect("a freeze exposes CU's stock")
    }

    async fn assess(&mut self, id: &str, rid: &str) -> Answer {
        let r = pb::RecordExposureAssessmentRequest {
            exposure_id: id.into(),
            decision: pb::ExposureDecision::Release as i32,
            comment: "fine".into(),
            request_id: rid.into(),
            ..Default::default()
        };
        answer(self.w.stock.record_exposure_assessment(authed(&self.tok(), r)).await)
    }

    /// An entry written by a one-vial adjustment at NU1, reversed already when `reversed`.
    async fn entry(&mut self, reversed: bool) -> String {
        let r = pb::AdjustStockRequest {
            storage_unit_id: self.w.nu1.clone(),
            lot_ref: Some(pb::adjust_stock_request::LotRef::LotId(self.w.lots[0].clone())),
            quantity_vials: -1,
            reason: pb::AdjustmentReason::Broken as i32,
            ..Default::default()
        };
        let id = self.w.stock.adjust_stock(authed(&self.tok(), r)).await.unwrap().into_inner().id;
        if reversed {
            self.reverse(&id, "").await.unwrap();
        }
        id
    }

    async fn reverse(&mut self, id: &str, rid: &str) -> Answer {
        let r =
            pb::ReverseLedgerEntryRequest { entry_id: id.into(), comment: "mistake".into(), request_id: rid.into() };
        answer(self.w.stock.reverse_ledger_entry(authed(&self.tok(), r)).await)
    }

    /// Makes what a case's request needs and returns its target (an id, or a distinguishing text).
    async fn prep(&mut self, srv: &TestServer, rpc: &str, kind: Kind) -> String {
        let n = self.next();
        match (rpc, kind) {
            ("RevokeToken", Kind::Ok) => {
                let r = pb::CreateTokenRequest {
                    role: pb::Role::DepotManager as i32,
                    scope_facility_id: self.w.d.clone(),
                    description: format!("to revoke {n}"),
                    ..Default::default()
                };
                self.admin.create_token(authed(&self.tok(), r)).await.unwrap().into_inner().token.unwrap().id
            }
            ("AcknowledgeAlert" | "ResolveAlert", Kind::Ok) => self.alert(srv).await,
            ("AcknowledgeAlert", Kind::Refused) => {
                let id = self.alert(srv).await;
                self.ack(&id).await;
                id
            }
            ("ResolveAlert", Kind::Refused) => {
                let id = self.alert(srv).await;
                let r = pb::ResolveAlertRequest {
                    id: id.clone(),
                    resolution: pb::AlertResolution::PowerRestored as i32,
                    comment: "done".into(),
                    request_id: String::new(),
                };
                self.alerts.resolve_alert(authed(&self.tok(), r)).await.unwrap();
                id
            }
            ("DeleteWebhook", Kind::Ok) => {
                let created = self.webhook("", &format!("https://hooks.example.org/{n}"), "").await.unwrap();
                created.split("id: \"").nth(1).and_then(|s| s.split('"').next()).unwrap().to_owned()
            }
            ("DispatchShipment", Kind::Ok) | ("CancelShipment", Kind::Ok) => self.draft(1).await,
            // A source unit named: the draft is made whatever the stock; the dispatch meets it.
            ("DispatchShipment", Kind::Refused) => self.draft(1_000_000).await,
            ("ReceiveShipment", Kind::Ok) => self.dispatched().await,
            ("ReceiveShipment", Kind::Refused) => self.draft(1).await,
            ("CancelShipment", Kind::Refused) => {
                let id = self.draft(1).await;
                let r = pb::CancelShipmentRequest {
                    shipment_id: id.clone(),
                    comment: "no".into(),
                    request_id: String::new(),
                };
                self.w.stock.cancel_shipment(authed(&self.tok(), r)).await.unwrap();
                id
            }
            ("ReverseLedgerEntry", kind) => self.entry(kind == Kind::Refused).await,
            ("RecordExposureAssessment", Kind::Ok) => self.exposure(srv).await,
            ("RecordExposureAssessment", Kind::Refused) => {
                let id = self.exposure(srv).await;
                self.assess(&id, "").await.unwrap();
                id
            }
            _ => format!("{n}"),
        }
    }

    /// Sends the case's request for `target` with `rid`.
    async fn send(&mut self, rpc: &str, kind: Kind, target: &str, rid: &str) -> Answer {
        let tok = self.tok();
        let ok = kind == Kind::Ok;
        let missing = "0190f3e2-7c1a-7abc-8def-0123456789ab".to_owned();
        let rid = rid.to_owned();
        let w = &self.w;
        match rpc {
            "CreateFacility" => {
                let code = if ok { format!("DX{target}") } else { "ST".into() };
                let f = pb::Facility {
                    parent_id: w.n.clone(),
                    kind: pb::FacilityKind::StateStore as i32,
                    name: code.clone(),
                    code,
                    ..Default::default()
                };
                answer(
                    self.fac
                        .create_facility(authed(&tok, pb::CreateFacilityRequest { facility: Some(f), request_id: rid }))
                        .await,
                )
            }
            "UpdateFacility" => {
                let id = if ok { w.c.clone() } else { missing };
                let f = pb::Facility { id, name: format!("C {target}"), ..Default::default() };
                let r =
                    pb::UpdateFacilityRequest { facility: Some(f), update_mask: vec!["name".into()], request_id: rid };
                answer(self.fac.update_facility(authed(&tok, r)).await)
            }
            "CreateStorageUnit" => {
                let name = if ok { format!("U{target}") } else { "DU".into() };
                let u = pb::StorageUnit {
                    facility_id: w.d.clone(),
                    kind: 1,
                    name,
                    temperature_profile: 1,
                    ..Default::default()
                };
                let r = pb::CreateStorageUnitRequest { storage_unit: Some(u), request_id: rid };
                answer(self.fac.create_storage_unit(authed(&tok, r)).await)
            }
            "UpdateStorageUnit" => {
                let (id, name) =
                    if ok { (w.du.clone(), format!("DU {target}")) } else { (w.nu2.clone(), "NU1".into()) };
                let u = pb::StorageUnit { id, name, ..Default::default() };
                let r = pb::UpdateStorageUnitRequest {
                    storage_unit: Some(u),
                    update_mask: vec!["name".into()],
                    request_id: rid,
                };
                answer(self.fac.update_storage_unit(authed(&tok, r)).await)
            }
            "CreateProduct" => {
                let code = if ok { format!("P{target}") } else { "PENTA10".into() };
                let p = pb::Product {
                    code: code.clone(),
                    name: code.clone(),
                    vaccine: code,
                    doses_per_vial: 10,
                    presentation: pb::Presentation::Liquid as i32,
                    vvm_type: pb::VvmType::Vvm14 as i32,
                    temperature_profile: 1,
                    ..Default::default()
                };
                answer(
                    self.cat
                        .create_product(authed(&tok, pb::CreateProductRequest { product: Some(p), request_id: rid }))
                        .await,
                )
            }
            "UpdateProduct" => {
                let id = if ok { w.product.clone() } else { missing };
                let p = pb::Product { id, name: format!("Penta {target}"), ..Default::default() };
                let r =
                    pb::UpdateProductRequest { product: Some(p), update_mask: vec!["name".into()], request_id: rid };
                answer(self.cat.update_product(authed(&tok, r)).await)
            }
            "CreateLot" => {
                let lot_number = if ok { format!("L{target}") } else { "A1".into() };
                let l = pb::Lot {
                    product_id: w.product.clone(),
                    lot_number,
                    expiry: Some(pb::Date { year: 2031, month: 1, day: 31 }),
                    ..Default::default()
                };
                answer(self.cat.create_lot(authed(&tok, pb::CreateLotRequest { lot: Some(l), request_id: rid })).await)
            }
            "CreateToken" => {
                let r = pb::CreateTokenRequest {
                    role: pb::Role::DepotManager as i32,
                    scope_facility_id: if ok { w.d.clone() } else { missing },
                    description: format!("token {target}"),
                    request_id: rid,
                    ..Default::default()
                };
                answer(self.admin.create_token(authed(&tok, r)).await)
            }
            "RevokeToken" => {
                let id = if ok { target.to_owned() } else { "0123456789abcdef0123456789abcdef".into() };
                answer(self.admin.revoke_token(authed(&tok, pb::RevokeTokenRequest { id, request_id: rid })).await)
            }
            "AcknowledgeAlert" => {
                let r = pb::AcknowledgeAlertRequest { id: target.into(), comment: "on it".into(), request_id: rid };
                answer(self.alerts.acknowledge_alert(authed(&tok, r)).await)
            }
            "ResolveAlert" => {
                let r = pb::ResolveAlertRequest {
                    id: target.into(),
                    resolution: pb::AlertResolution::UnitRepaired as i32,
                    comment: "fixed".into(),
                    request_id: rid,
                };
                answer(self.alerts.resolve_alert(authed(&tok, r)).await)
            }
            "CreateWebhook" => {
                let scope = if ok { String::new() } else { missing };
                self.webhook(&rid, &format!("https://hooks.example.org/w{target}"), &scope).await
            }
            "DeleteWebhook" => {
                let id = if ok { target.to_owned() } else { missing };
                answer(self.alerts.delete_webhook(authed(&tok, pb::DeleteWebhookRequest { id, request_id: rid })).await)
            }
            "RegisterDevice" => {
                let serial = if ok { format!("SN-IDEM-{target}") } else { self.serial.clone() };
                let d = pb::Device {
                    serial,
                    name: "logger".into(),
                    model: "Model A".into(),
                    facility_id: w.c.clone(),
                    probes: vec![pb::Probe { index: 0, storage_unit_id: w.cu.clone(), label: "p".into() }],
                    expected_interval: Some(prost_types::Duration { seconds: 1800, nanos: 0 }),
                    ..Default::default()
                };
                answer(
                    self.tel
                        .register_device(authed(&tok, pb::RegisterDeviceRequest { device: Some(d), request_id: rid }))
                        .await,
                )
            }
            "UpdateDevice" => {
                let id = if ok { self.dev.0.clone() } else { missing };
                let d = pb::Device { id, name: format!("logger {target}"), ..Default::default() };
                let r = pb::UpdateDeviceRequest { device: Some(d), update_mask: vec!["name".into()], request_id: rid };
                answer(self.tel.update_device(authed(&tok, r)).await)
            }
            "RotateDeviceKey" => {
                let id = if ok { self.dev.0.clone() } else { missing };
                let r = pb::RotateDeviceKeyRequest { id, reset_sequence: false, request_id: rid };
                let a = answer(self.tel.rotate_device_key(authed(&tok, r)).await);
                if ok && let Ok(text) = &a {
                    // The logger keeps signing with the key it was given.
                    let key = text.split("key: [").nth(1).and_then(|s| s.split(']').next()).unwrap();
                    self.dev.1 = key.split(", ").map(|b| b.parse().unwrap()).collect();
                }
                a
            }
            "ReceiveFromSupplier" => {
                let line = pb::SupplierReceiptLine {
                    lot_ref: Some(pb::supplier_receipt_line::LotRef::LotId(w.lots[0].clone())),
                    vials: 10,
                    ..Default::default()
                };
                let r = pb::ReceiveFromSupplierRequest {
                    storage_unit_id: if ok { w.nu1.clone() } else { self.off.clone() },
                    lines: vec![line],
                    comment: format!("delivery {target}"),
                    request_id: rid,
                    ..Default::default()
                };
                answer(self.w.stock.receive_from_supplier(authed(&tok, r)).await)
            }
            "CreateShipment" => {
                let r = pb::CreateShipmentRequest {
                    from_facility_id: w.n.clone(),
                    to_facility_id: w.d.clone(),
                    lines: vec![pb::CreateShipmentLine {
                        lot_ref: Some(pb::create_shipment_line::LotRef::LotId(w.lots[0].clone())),
                        vials: if ok { 5 } else { 10_000_000 },
                        ..Default::default()
                    }],
                    reference: format!("S{target}"),
                    ..Default::default()
                };
                let r = pb::CreateShipmentRequest { request_id: rid, ..r };
                answer(self.w.stock.create_shipment(authed(&tok, r)).await)
            }
            "DispatchShipment" => {
                let r = pb::DispatchShipmentRequest { shipment_id: target.into(), request_id: rid };
                answer(self.w.stock.dispatch_shipment(authed(&tok, r)).await)
            }
            "ReceiveShipment" => {
                let r = pb::ReceiveShipmentRequest {
                    shipment_id: target.into(),
                    storage_unit_id: w.du.clone(),
                    accept_unlisted_in_full: true,
                    request_id: rid,
                    ..Default::default()
                };
                answer(self.w.stock.receive_shipment(authed(&tok, r)).await)
            }
            "CancelShipment" => {
                let r = pb::CancelShipmentRequest {
                    shipment_id: target.into(),
                    comment: "not needed".into(),
                    request_id: rid,
                };
                answer(self.w.stock.cancel_shipment(authed(&tok, r)).await)
            }
            "TransferStock" => {
                let r = pb::TransferStockRequest {
                    from_storage_unit_id: w.nu1.clone(),
                    to_storage_unit_id: w.nu2.clone(),
                    lot_id: w.lots[0].clone(),
                    vials: if ok { 1 } else { 10_000_000 },
                    comment: format!("move {target}"),
                    request_id: rid,
                };
                answer(self.w.stock.transfer_stock(authed(&tok, r)).await)
            }
            "AdjustStock" => {
                let r = pb::AdjustStockRequest {
                    storage_unit_id: w.nu1.clone(),
                    lot_ref: Some(pb::adjust_stock_request::LotRef::LotId(w.lots[1].clone())),
                    quantity_vials: if ok { -1 } else { -10_000_000 },
                    reason: pb::AdjustmentReason::Broken as i32,
                    comment: format!("adjust {target}"),
                    request_id: rid,
                };
                answer(self.w.stock.adjust_stock(authed(&tok, r)).await)
            }
            "RecordPhysicalCount" => {
                let r = pb::RecordPhysicalCountRequest {
                    facility_id: w.n.clone(),
                    lines: vec![pb::PhysicalCountLine {
                        storage_unit_id: if ok { w.nu2.clone() } else { self.off.clone() },
                        lot_ref: Some(pb::physical_count_line::LotRef::LotId(w.lots[0].clone())),
                        counted_vials: 5_000 + i64::from(target.parse::<u32>().unwrap_or(0)),
                        vvm_stage: 1,
                    }],
                    comment: format!("count {target}"),
                    request_id: rid,
                    ..Default::default()
                };
                answer(self.w.stock.record_physical_count(authed(&tok, r)).await)
            }
            "SubmitSessionReport" => {
                let day = Utc::now().date_naive() - chrono::Days::new(1);
                use chrono::Datelike as _;
                let r = pb::SubmitSessionReportRequest {
                    session_report: Some(pb::SessionReport {
                        facility_id: w.s.clone(),
                        storage_unit_id: w.cu.clone(),
                        session_date: Some(pb::Date {
                            year: day.year(),
                            month: day.month() as i32,
                            day: day.day() as i32,
                        }),
                        lines: vec![pb::SessionReportLine {
                            lot_ref: Some(pb::session_report_line::LotRef::LotId(w.lots[0].clone())),
                            vials_issued: if ok { 1 } else { 100_000 },
                            vials_opened: 1,
                            doses_administered: 10,
                            unopened_vials_returned: if ok { 0 } else { 99_999 },
                            ..Default::default()
                        }],
                        comment: format!("session {target}"),
                        ..Default::default()
                    }),
                    request_id: rid,
                };
                answer(self.w.stock.submit_session_report(authed(&tok, r)).await)
            }
            "ReverseLedgerEntry" => self.reverse(target, &rid).await,
            "SetStockPolicy" => {
                // (a) and (b) prepare consecutive targets: each sets a policy row of its own.
                let n = target.parse::<u32>().unwrap_or(1);
                let p = pb::StockPolicy {
                    facility_id: if n % 2 == 0 { w.d.clone() } else { w.c.clone() },
                    product_id: if ok { w.product.clone() } else { missing },
                    min_doses: 10 * i64::from(target.parse::<u32>().unwrap_or(1)),
                    max_doses: 100 * i64::from(target.parse::<u32>().unwrap_or(1)),
                    ..Default::default()
                };
                answer(
                    self.w
                        .stock
                        .set_stock_policy(authed(&tok, pb::SetStockPolicyRequest { policy: Some(p), request_id: rid }))
                        .await,
                )
            }
            "RecordExposureAssessment" => self.assess(target, &rid).await,
            other => panic!("no case for {other}"),
        }
    }

    /// Everything the API shows of the state, for "changes nothing".
    async fn state(&mut self) -> String {
        self.state_and_sizes().await.0
    }

    /// How many objects of each kind the API shows (balances aside: a row appears on first use),
    /// to tell what one call adds.
    async fn sizes(&mut self) -> Vec<usize> {
        self.state_and_sizes().await.1
    }

    async fn state_and_sizes(&mut self) -> (String, Vec<usize>) {
        let tok = self.tok();
        let mut out = String::new();
        let mut sizes = Vec::new();
        let mut add = |name: &str, v: &dyn Debug, n: usize| {
            out.push_str(&format!("{name}: {v:?}\n"));
            if name != "balances" {
                sizes.push(n);
            }
        };
        let f = pb::ListFacilitiesRequest { page_size: 1000, include_inactive: true, ..Default::default() };
        let v = self.fac.list_facilities(authed(&tok, f)).await.unwrap().into_inner().facilities;
        add("facilities", &v, v.len());
        let u = pb::ListStorageUnitsRequest { page_size: 1000, include_inactive: true, ..Default::default() };
        let v = self.fac.list_storage_units(authed(&tok, u)).await.unwrap().into_inner().storage_units;
        add("units", &v, v.len());
        let p = pb::ListProductsRequest { page_size: 1000, include_inactive: true, ..Default::default() };
        let v = self.cat.list_products(authed(&tok, p)).await.unwrap().into_inner().products;
        add("products", &v, v.len());
        let l = pb::ListLotsRequest { page_size: 1000, ..Default::default() };
        let v = self.cat.list_lots(authed(&tok, l)).await.unwrap().into_inner().lots;
        add("lots", &v, v.len());
        let t = pb::ListTokensRequest { page_size: 1000, include_revoked: true, ..Default::default() };
        let v = self.admin.list_tokens(authed(&tok, t)).await.unwrap().into_inner().tokens;
        add("tokens", &v, v.len());
        let d = pb::ListDevicesRequest { page_size: 1000, include_inactive: true, ..Default::default() };
        let v = self.tel.list_devices(authed(&tok, d)).await.unwrap().into_inner().devices;
        add("devices", &v, v.len());
        let h = pb::ListWebhooksRequest { page_size: 1000, ..Default::default() };
        let v = self.alerts.list_webhooks(authed(&tok, h)).await.unwrap().into_inner().webhooks;
        add("webhooks", &v, v.len());
        let a = pb::ListAlertsRequest { page_size: 1000, ..Default::default() };
        let v = self.alerts.list_alerts(authed(&tok, a)).await.unwrap().into_inner().alerts;
        add("alerts", &v, v.len());
        let s = pb::ListShipmentsRequest { page_size: 1000, ..Default::default() };
        let v = self.w.stock.list_shipments(authed(&tok, s)).await.unwrap().into_inner().shipments;
        add("shipments", &v, v.len());
        let e = pb::ListLedgerEntriesRequest { page_size: 1000, ..Default::default() };
        let v = self.w.stock.list_ledger_entries(authed(&tok, e)).await.unwrap().into_inner().entries;
        add("entries", &v, v.len());
        let b = pb::ListBalancesRequest { page_size: 1000, include_zero: true, ..Default::default() };
        let v = self.w.stock.list_balances(authed(&tok, b)).await.unwrap().into_inner().balances;
        add("balances", &v, v.len());
        let p = pb::ListStockPoliciesRequest { page_size: 1000, ..Default::default() };
        let v = self.w.stock.list_stock_policies(authed(&tok, p)).await.unwrap().into_inner().policies;
        add("policies", &v, v.len());
        let x = pb::ListExposuresRequest { page_size: 1000, ..Default::default() };
        let v = self.w.stock.list_exposures(authed(&tok, x)).await.unwrap().into_inner().exposures;
        add("exposures", &v, v.len());
        (out, sizes)
    }
}

/// (a) and (b) for every case, success and refusal, on every engine.
#[tokio::test]
async fn every_mutation_answers_a_retry_and_a_twin_as_the_first_call() {
    for db in TestDb::all() {
        let srv = TestServer::start(db).await;
        let name = srv.db.name();
        let mut cx = Cx::new(&srv).await;
        for (_, rpc) in CASES {
            for kind in [Kind::Ok, Kind::Refused] {
                let what = format!("{name} {rpc} {kind:?}");
                // (a) A sequential retry.
                let target = cx.prep(&srv, rpc, kind).await;
                let (before, sizes_before) = (cx.state().await, cx.sizes().await);
                let rid = format!("{rpc}-{kind:?}-a");
                let first = cx.send(rpc, kind, &target, &rid).await;
                assert_eq!(first.is_ok(), kind == Kind::Ok, "{what}: {first:?}");
                let after = cx.state().await;
                let added: Vec<i64> =
                    cx.sizes().await.iter().zip(&sizes_before).map(|(a, b)| *a as i64 - *b as i64).collect();
                if kind == Kind::Refused {
                    assert_eq!(after, before, "{what}: a refusal changed something");
                }
                let again = cx.send(rpc, kind, &target, &rid).await;
                assert_eq!(again, first, "{what}: a retry answers as the first call did");
                assert_eq!(cx.state().await, after, "{what}: a retry changed something");

                // (b) Two identical calls at once.
                let target = cx.prep(&srv, rpc, kind).await;
                let sizes_before = cx.sizes().await;
                let rid = format!("{rpc}-{kind:?}-b");
                let mut twin = cx.twin();
                let (one, two) = tokio::join!(cx.send(rpc, kind, &target, &rid), twin.send(rpc, kind, &target, &rid));
                assert_eq!(one.is_ok(), kind == Kind::Ok, "{what}: {one:?}");
                assert_eq!(one, two, "{what}: twins answer alike");
                let added_b: Vec<i64> =
                    cx.sizes().await.iter().zip(&sizes_before).map(|(a, b)| *a as i64 - *b as i64).collect();
                assert_eq!(added_b, added, "{what}: twins change as much as one call");
            }
        }
        srv.stop().await;
    }
}

/// The answer recorded under a request_id (one caller's, in these tests).
async fn recorded(srv: &TestServer, rid: &str) -> String {
    let q = "SELECT response FROM idempotency_keys WHERE request_id = $1";
    match &srv.db {
        TestDb::Sqlite => {
            let pool = sqlx::SqlitePool::connect(&srv.database_url).await.unwrap();
            let r = sqlx::query_scalar(q).bind(rid).fetch_one(&pool).await.unwrap();
            pool.close().await;
            r
        }
        TestDb::Postgres(_) => {
            let pool = sqlx::PgPool::connect(&srv.database_url).await.unwrap();
            let r = sqlx::query_scalar(q).bind(rid).fetch_one(&pool).await.unwrap();
            pool.close().await;
            r
        }
    }
}

/// What the first call answered stands, whatever changed since: stock that ran out, a unit back
/// in service, stock that arrived. A fresh request_id shows that the change does matter.
#[tokio::test]
async fn a_retry_answers_as_the_first_call_after_the_state_changed() {
    for db in TestDb::all() {
        let dir = tempfile::tempdir().unwrap();
        let srv = TestServer::start_reachable(db, dir.path()).await;
        let name = srv.db.name();
        let mut cx = Cx::new(&srv).await;

        // A transfer of lot B2, then the rest of it leaves the unit: the retry still gets the
        // transfer. (A lot's expiry is fixed, and cached as such; time is what expires it.)
        let transfer = |rid: &str, vials: i64| pb::TransferStockRequest {
            from_storage_unit_id: cx.w.nu1.clone(),
            to_storage_unit_id: cx.w.nu2.clone(),
            lot_id: cx.w.lots[1].clone(),
            vials,
            comment: String::new(),
            request_id: rid.into(),
        };
        let (t1, t2) = (transfer("t-1", 3), transfer("t-2", 3));
        let done = cx.w.stock.transfer_stock(authed(&cx.tok(), t1.clone())).await;
        let done = done.unwrap_or_else(|e| panic!("{name}: {e:?}")).into_inner();
        let first: Answer = Ok(format!("{done:?}"));
        let left = done.out_entry.map_or(0, |e| e.balance_after_vials);
        assert!(left > 0, "{name}: stock is left to move");
        let drain = answer(cx.w.stock.transfer_stock(authed(&cx.tok(), transfer("t-drain", left))).await);
        assert!(drain.is_ok(), "{name}: {drain:?}");
        let before = cx.state().await;
        assert_eq!(
            answer(cx.w.stock.transfer_stock(authed(&cx.tok(), t1)).await),
            first,
            "{name}: after the stock ran out"
        );
        assert_eq!(cx.state().await, before, "{name}");
        let fresh = answer(cx.w.stock.transfer_stock(authed(&cx.tok(), t2)).await);
        assert_eq!(fresh.unwrap_err().1, "INSUFFICIENT_STOCK", "{name}: the unit holds none of the lot now");

        // A delivery into a unit out of service, then the unit is back: the retry is still refused.
        let off = cx.off.clone();
        let delivery = cx.send("ReceiveFromSupplier", Kind::Refused, "x", "r-1").await;
        assert_eq!(delivery.clone().unwrap_err().1, "STORAGE_UNIT_INACTIVE", "{name}");
        cx.set_active(&off, true).await;
        let before = cx.state().await;
        assert_eq!(
            cx.send("ReceiveFromSupplier", Kind::Refused, "x", "r-1").await,
            delivery,
            "{name}: back in service"
        );
        assert_eq!(cx.state().await, before, "{name}");
        assert!(cx.send("ReceiveFromSupplier", Kind::Refused, "x", "r-2").await.is_ok(), "{name}: in service now");

        // A dispatch short of stock, then the stock arrives: the retry is still short; so is its
        // twin sent at once with the arrival (whichever runs first, both answer alike).
        let short = cx.draft(50_000).await;
        let refused = cx.send("DispatchShipment", Kind::Refused, &short, "d-1").await;
        assert_eq!(refused.clone().unwrap_err().1, "INSUFFICIENT_STOCK", "{name}");
        let nu1 = cx.w.nu1.clone();
        receive(&mut cx.w, &nu1, 0, 100_000, "").await.unwrap();
        assert_eq!(cx.send("DispatchShipment", Kind::Refused, &short, "d-1").await, refused, "{name}: stock arrived");
        assert!(cx.send("DispatchShipment", Kind::Refused, &short, "d-2").await.is_ok(), "{name}: enough stock now");
        srv.stop().await;
    }
}

/// A secret shown once (a token's bearer string, a device key, a webhook secret) is shown again to
/// a retry by the same token, also after the object changed; another token's call with the same
/// request_id is another request; and the database never holds the secret readable.
#[tokio::test]
async fn secrets_are_shown_again_to_the_same_token_only() {
    for db in TestDb::all() {
        let dir = tempfile::tempdir().unwrap();
        let srv = TestServer::start_reachable(db, dir.path()).await;
        let name = srv.db.name();
        let mut cx = Cx::new(&srv).await;
        let tok = cx.tok();
        let create = |rid: &str| pb::CreateTokenRequest {
            role: pb::Role::Admin as i32,
            description: "second admin".into(),
            request_id: rid.into(),
            ..Default::default()
        };
        let first = cx.admin.create_token(authed(&tok, create("tok-1"))).await.unwrap().into_inner();
        let again = cx.admin.create_token(authed(&tok, create("tok-1"))).await.unwrap().into_inner();
        assert_eq!(again, first, "{name}: the same token, with its bearer string");
        let me = cx.admin.who_am_i(authed(&again.secret, pb::WhoAmIRequest::default())).await.unwrap().into_inner();
        assert_eq!(Some(me), first.token.clone(), "{name}: the bearer string shown again works");
        // The secret is URL-safe base64, which may itself hold '_': split as the server does.
        let (_, secret_part) = vaxtrace_server::domain::token::split(&first.secret).unwrap();
        assert!(!recorded(&srv, "tok-1").await.contains(secret_part), "{name}: the bearer is sealed in the database");
        // The second admin's call with the same request_id is its own request.
        let other = cx.admin.create_token(authed(&first.secret, create("tok-1"))).await.unwrap().into_inner();
        assert_ne!(other.token.as_ref().map(|t| &t.id), first.token.as_ref().map(|t| &t.id), "{name}");
        assert_ne!(other.secret, first.secret, "{name}");

        // A device key, still the first one after a rotation since.
        let reg = cx.send("RegisterDevice", Kind::Ok, "secret", "dev-1").await.unwrap();
        let id = reg.split("id: \"").nth(1).and_then(|s| s.split('"').next()).unwrap().to_owned();
        let r = pb::RotateDeviceKeyRequest { id, reset_sequence: false, request_id: String::new() };
        cx.tel.rotate_device_key(authed(&tok, r)).await.unwrap();
        assert_eq!(cx.send("RegisterDevice", Kind::Ok, "secret", "dev-1").await, Ok(reg), "{name}");

        // A webhook secret, still shown after the webhook was deleted.
        let hook = cx.webhook("hook-1", "https://hooks.example.org/secret", "").await.unwrap();
        let id = hook.split("id: \"").nth(1).and_then(|s| s.split('"').next()).unwrap().to_owned();
        assert!(hook.contains("secret: \""), "{name}: {hook}");
        cx.alerts
            .delete_webhook(authed(&tok, pb::DeleteWebhookRequest { id, request_id: String::new() }))
            .await
            .unwrap();
        assert_eq!(cx.webhook("hook-1", "https://hooks.example.org/secret", "").await, Ok(hook), "{name}");
        srv.stop().await;
    }
}

/// A RecordPhysicalCount answer recorded before whole answers were kept (a plain list of the
/// correction entries) is read on a retry, not met with an internal error.
#[tokio::test]
async fn a_count_recorded_by_an_older_version_is_read_on_retry() {
    for db in TestDb::all() {
        let dir = tempfile::tempdir().unwrap();
        let srv = TestServer::start_reachable(db, dir.path()).await;
        let name = srv.db.name();
        let mut cx = Cx::new(&srv).await;
        let first = cx.send("RecordPhysicalCount", Kind::Ok, "7", "count-1").await;
        assert!(first.is_ok(), "{name}: {first:?}");
        // The old format: the entries the count wrote, as a list.
        let now: serde_json::Value = serde_json::from_str(&recorded(&srv, "count-1").await).unwrap();
        let entries: Vec<_> = now[1].as_array().unwrap().iter().map(|r| r["correction"].clone()).collect();
        assert!(entries.iter().all(|e| e.is_object()), "{name}: every line corrected something: {now}");
        let old = serde_json::Value::Array(entries).to_string().replace('\'', "''");
        srv.exec_sql(&format!("UPDATE idempotency_keys SET response = '{old}' WHERE request_id = 'count-1'")).await;
        let before = cx.state().await;
        assert_eq!(cx.send("RecordPhysicalCount", Kind::Ok, "7", "count-1").await, first, "{name}");
        assert_eq!(cx.state().await, before, "{name}: the retry changed nothing");
        srv.stop().await;
    }
}

/// A request_id names one request: CreateShipment again under it with another expected arrival
/// or comment is refused as a reuse, not answered with the first shipment.
#[tokio::test]
async fn a_shipment_request_id_reused_with_other_dates_or_comment_is_refused() {
    for db in TestDb::all() {
        let srv = TestServer::start(db).await;
        let name = srv.db.name();
        let mut w = vaxtrace_tests::world::world(&srv).await;
        let tok = w.tok.clone();
        let date = |d: i32| Some(pb::Date { year: 2030, month: 1, day: d });
        let ship = |expected_arrival: Option<pb::Date>, comment: &str| pb::CreateShipmentRequest {
            from_facility_id: w.n.clone(),
            to_facility_id: w.d.clone(),
            lines: vec![pb::CreateShipmentLine {
                lot_ref: Some(pb::create_shipment_line::LotRef::LotId(w.lots[0].clone())),
                vials: 5,
                source_storage_unit_id: w.nu1.clone(),
            }],
            expected_arrival_date: expected_arrival,
            comment: comment.into(),
            request_id: "ship-1".into(),
            ..Default::default()
        };
        let (first, again, later, other) =
            (ship(date(10), "by road"), ship(date(10), "by road"), ship(date(20), "by road"), ship(date(10), "by air"));
        let s1 = w.stock.create_shipment(authed(&tok, first)).await.unwrap().into_inner();
        let s2 = w.stock.create_shipment(authed(&tok, again)).await.unwrap().into_inner();
        assert_eq!(s2.id, s1.id, "{name}: the same request answers the same shipment");
        for (what, r) in [("expected arrival", later), ("comment", other)] {
            let e = w.stock.create_shipment(authed(&tok, r)).await.unwrap_err();
            assert_eq!(vaxtrace_tests::reason(&e), "REQUEST_ID_REUSED", "{name}: another {what}: {e}");
        }
        srv.stop().await;
    }
}
