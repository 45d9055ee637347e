//! The authorization matrix: every RPC of every vaxtrace service (read from the compiled proto
//! descriptors, so a new RPC without an entry here fails the test) × every role × a target inside
//! and outside the caller's scope, on every engine. Then: unfiltered lists and reports never return
//! rows outside the scope, and page tokens cannot widen it.
//!
//! The expected policy ([`expected`]) is written from the README's role table and the issue, not
//! from the server's code. It is the source of truth the README points to.
#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::fmt::Debug;
use std::time::Duration;

use chrono::{DateTime, Utc};
use prost::Message as _;
use tonic::transport::Channel;
use tonic::{Code, Status};
use vaxtrace_proto::v1 as pb;
use vaxtrace_proto::v1::admin_service_client::AdminServiceClient;
use vaxtrace_proto::v1::alert_service_client::AlertServiceClient;
use vaxtrace_proto::v1::catalog_service_client::CatalogServiceClient;
use vaxtrace_proto::v1::facility_service_client::FacilityServiceClient;
use vaxtrace_proto::v1::report_service_client::ReportServiceClient;
use vaxtrace_proto::v1::stock_service_client::StockServiceClient;
use vaxtrace_proto::v1::telemetry_service_client::TelemetryServiceClient;
use vaxtrace_server::domain::alert::{AlertKind, Condition, Details, Severity, Subject};
use vaxtrace_tests::world::{register_logger, send_readings, token};
use vaxtrace_tests::{TestDb, TestServer, authed, reason};

macro_rules! rpcs {
    ($($svc:literal => [$($m:ident),* $(,)?]),* $(,)?) => {
        /// One RPC of the API.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        enum Rpc { $($($m,)*)* }
        /// Every RPC with an entry in the matrix: (rpc, full service name, method name).
        const RPCS: &[(Rpc, &str, &str)] = &[$($((Rpc::$m, concat!("vaxtrace.v1.", $svc), stringify!($m)),)*)*];
    };
}

rpcs! {
    "FacilityService" => [CreateFacility, GetFacility, ListFacilities, UpdateFacility,
        CreateStorageUnit, GetStorageUnit, ListStorageUnits, UpdateStorageUnit],
    "CatalogService" => [CreateProduct, GetProduct, ListProducts, UpdateProduct, CreateLot, GetLot, ListLots],
    "AdminService" => [CreateToken, ListTokens, RevokeToken, WhoAmI],
    "StockService" => [ReceiveFromSupplier, CreateShipment, DispatchShipment, ReceiveShipment, CancelShipment,
        GetShipment, ListShipments, TransferStock, AdjustStock, RecordPhysicalCount, SubmitSessionReport,
        ReverseLedgerEntry, ListBalances, ListLedgerEntries, SuggestAllocation, SetStockPolicy,
        ListStockPolicies, RecordExposureAssessment, ListExposures],
    "ReportService" => [StockOnHandReport, WastageReport, ExpiryRiskReport, ExportReportCsv, ExportEpcis],
    "AlertService" => [ListAlerts, GetAlert, AcknowledgeAlert, ResolveAlert, WatchAlerts,
        CreateWebhook, ListWebhooks, DeleteWebhook],
    "TelemetryService" => [RegisterDevice, GetDevice, ListDevices, UpdateDevice, RotateDeviceKey,
        ListReadings, QueryReadings, GetLatestReadings],
}

/// What a cell must answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    /// Success.
    Ok,
    /// PERMISSION_DENIED: the project's one answer for "not yours" (and for "missing" to a scoped caller).
    Denied,
    /// A refusal after authorization passed: this code with this ErrorInfo reason.
    Refused(Code, &'static str),
}

/// The policy: may `role` call `rpc` on a target its scope `covers`? Written independently of
/// the server. Devices only ingest (over MQTT) and ask who they are; the catalogue is national.
fn expected(rpc: Rpc, role: pb::Role, covers: bool) -> Outcome {
    use Rpc::*;
    use pb::Role::*;
    let reader = role != Device;
    let officer = matches!(role, Admin | NationalOfficer | DistrictOfficer);
    let stock_writer = officer || role == DepotManager;
    let allowed = match rpc {
        WhoAmI => true,
        CreateToken | ListTokens | RevokeToken => role == Admin,
        GetProduct | ListProducts | GetLot | ListLots => reader,
        CreateProduct | UpdateProduct | CreateLot => matches!(role, Admin | NationalOfficer),
        GetFacility | ListFacilities | GetStorageUnit | ListStorageUnits => reader && covers,
        CreateFacility | UpdateFacility => officer && covers,
        // Depot managers look after the units of their own store.
        CreateStorageUnit | UpdateStorageUnit => stock_writer && covers,
        GetShipment | ListShipments | ListBalances | ListLedgerEntries | SuggestAllocation | ListStockPolicies => {
            reader && covers
        }
        // These take no facility (the API filters exposures by state only): the scope filters the
        // rows, which `unfiltered_lists_stay_in_scope` checks.
        ListExposures => reader,
        ListWebhooks => officer,
        ReceiveFromSupplier | CreateShipment | DispatchShipment | ReceiveShipment | CancelShipment | TransferStock
        | AdjustStock | RecordPhysicalCount | SubmitSessionReport | ReverseLedgerEntry => stock_writer && covers,
        // Min/max levels and the assessment of exposed stock are the officers' call.
        SetStockPolicy | RecordExposureAssessment => officer && covers,
        StockOnHandReport | WastageReport | ExpiryRiskReport | ExportReportCsv | ExportEpcis => reader && covers,
        ListAlerts | GetAlert | WatchAlerts => reader && covers,
        // Depot managers acknowledge ("we are on it"); officers resolve.
        AcknowledgeAlert => stock_writer && covers,
        ResolveAlert => officer && covers,
        CreateWebhook | DeleteWebhook => officer && covers,
        RegisterDevice | UpdateDevice | RotateDeviceKey => officer && covers,
        GetDevice | ListDevices | ListReadings | QueryReadings | GetLatestReadings => reader && covers,
    };
    if allowed { Outcome::Ok } else { Outcome::Denied }
}

/// The RPCs of package vaxtrace.v1 in the compiled descriptor set: (service, method).
fn descriptor_rpcs() -> Vec<(String, String)> {
    let fds = prost_types::FileDescriptorSet::decode(vaxtrace_proto::FILE_DESCRIPTOR_SET).unwrap();
    let mut out = Vec::new();
    for f in fds.file.iter().filter(|f| f.package() == "vaxtrace.v1") {
        for s in &f.service {
            for m in &s.method {
                out.push((format!("vaxtrace.v1.{}", s.name()), m.name().to_owned()));
            }
        }
    }
    out
}

#[test]
fn every_rpc_of_the_descriptors_has_a_matrix_entry() {
    let described = descriptor_rpcs();
    assert!(described.len() >= 59, "the descriptor set lists {} RPCs", described.len());
    let missing: Vec<_> = described
        .iter()
        .filter(|(s, m)| !RPCS.iter().any(|(_, rs, rm)| rs == s && rm == m))
        .map(|(s, m)| format!("{s}/{m}"))
        .collect();
    assert!(missing.is_empty(), "RPCs without an authorization matrix entry: {missing:?}");
    let stale: Vec<_> = RPCS.iter().filter(|(_, s, m)| !described.iter().any(|(ds, dm)| ds == s && dm == m)).collect();
    assert!(stale.is_empty(), "matrix entries for RPCs the protos no longer have: {stale:?}");
}

#[derive(Debug, Clone)]
struct Clients {
    fac: FacilityServiceClient<Channel>,
    cat: CatalogServiceClient<Channel>,
    adm: AdminServiceClient<Channel>,
    stock: StockServiceClient<Channel>,
    rep: ReportServiceClient<Channel>,
    alert: AlertServiceClient<Channel>,
    tel: TelemetryServiceClient<Channel>,
}

impl Clients {
    fn new(ch: &Channel) -> Self {
        Clients {
            fac: FacilityServiceClient::new(ch.clone()),
            cat: CatalogServiceClient::new(ch.clone()),
            adm: AdminServiceClient::new(ch.clone()),
            stock: StockServiceClient::new(ch.clone()),
            rep: ReportServiceClient::new(ch.clone()),
            alert: AlertServiceClient::new(ch.clone()),
            tel: TelemetryServiceClient::new(ch.clone()),
        }
    }
}

/// One state's branch of the tree: state store ST (unit SU) > district store D (unit DU) >
/// cold-chain point C (units CUA, CUB for stock, CX: a fridge with a logger) > session site S.
#[derive(Debug, Clone, Default)]
struct Branch {
    st: String,
    d: String,
    c: String,
    s: String,
    su: String,
    du: String,
    cua: String,
    cub: String,
    cx: String,
    dev: String,
    key: Vec<u8>,
    /// Reading time of the logger's next reading, and its next seq.
    clock: Option<DateTime<Utc>>,
    seq: u64,
    /// A draft shipment C -> D and an open alert at C, to read.
    shipment: String,
    alert: String,
}

impl Branch {
    /// Every id of the branch that a caller scoped to the other branch must never see.
    fn ids(&self) -> Vec<String> {
        [&self.st, &self.d, &self.c, &self.s, &self.su, &self.du, &self.cua, &self.cub, &self.cx, &self.dev]
            .into_iter()
            .cloned()
            .collect()
    }
}

/// A caller of the matrix.
#[derive(Debug, Clone)]
struct Who {
    label: &'static str,
    role: pb::Role,
    tok: String,
    /// The scope facility; None = the whole tree.
    scope: Option<String>,
    /// Where this caller books a supplier delivery "inside": a supply store in scope if any;
    /// otherwise its own store, which is refused for not being a supply store.
    supply_unit: String,
}

#[derive(Debug)]
struct World {
    admin: String,
    cl: Clients,
    n: String,
    product: String,
    lot: String,
    /// A lot expiring within the expiry-risk window.
    lot_soon: String,
    one: Branch,
    two: Branch,
    callers: Vec<Who>,
}

fn ts(t: DateTime<Utc>) -> prost_types::Timestamp {
    prost_types::Timestamp { seconds: t.timestamp(), nanos: 0 }
}

fn date(d: chrono::NaiveDate) -> pb::Date {
    use chrono::Datelike as _;
    pb::Date { year: d.year(), month: i32::try_from(d.month()).unwrap(), day: i32::try_from(d.day()).unwrap() }
}

fn month_ago() -> pb::Date {
    date(Utc::now().date_naive() - chrono::Days::new(30))
}

fn today() -> pb::Date {
    date(Utc::now().date_naive())
}

impl World {
    fn branch(&self, inside: bool) -> Branch {
        if inside { self.one.clone() } else { self.two.clone() }
    }

    fn next(&self) -> u64 {
        static SEQ: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1
    }

    async fn facility(&self, parent: &str, kind: pb::FacilityKind, code: &str) -> String {
        let f = pb::Facility {
            parent_id: parent.into(),
            kind: kind as i32,
            code: code.into(),
            name: code.into(),
            ..Default::default()
        };
        let r = pb::CreateFacilityRequest { facility: Some(f), request_id: String::new() };
        self.cl.fac.clone().create_facility(authed(&self.admin, r)).await.unwrap().into_inner().id
    }

    async fn unit(&self, facility: &str, name: &str) -> String {
        let u = pb::StorageUnit {
            facility_id: facility.into(),
            kind: pb::StorageUnitKind::Ilr as i32,
            name: name.into(),
            temperature_profile: pb::TemperatureProfile::Refrigerated as i32,
            ..Default::default()
        };
        let r = pb::CreateStorageUnitRequest { storage_unit: Some(u), request_id: String::new() };
        self.cl.fac.clone().create_storage_unit(authed(&self.admin, r)).await.unwrap().into_inner().id
    }

    /// Books `vials` of the lot into a unit (a FOUND adjustment); returns the entry id.
    async fn stock(&self, unit: &str, vials: i64) -> String {
        self.stock_of(unit, &self.lot, vials).await
    }

    async fn stock_of(&self, unit: &str, lot: &str, vials: i64) -> String {
        let r = pb::AdjustStockRequest {
            storage_unit_id: unit.into(),
            lot_ref: Some(pb::adjust_stock_request::LotRef::LotId(lot.to_owned())),
            quantity_vials: vials,
            reason: pb::AdjustmentReason::Found as i32,
            comment: "test stock".into(),
            request_id: String::new(),
        };
        self.cl.stock.clone().adjust_stock(authed(&self.admin, r)).await.unwrap().into_inner().id
    }

    /// A draft shipment of one vial from `from` (out of `unit`) to `to`.
    async fn draft(&self, from: &str, unit: &str, to: &str) -> String {
        let r = pb::CreateShipmentRequest {
            from_facility_id: from.into(),
            to_facility_id: to.into(),
            lines: vec![pb::CreateShipmentLine {
                lot_ref: Some(pb::create_shipment_line::LotRef::LotId(self.lot.clone())),
                vials: 1,
                source_storage_unit_id: unit.into(),
            }],
            ..Default::default()
        };
        self.cl.stock.clone().create_shipment(authed(&self.admin, r)).await.unwrap().into_inner().id
    }

    async fn dispatched(&self, from: &str, unit: &str, to: &str) -> String {
        let id = self.draft(from, unit, to).await;
        let r = pb::DispatchShipmentRequest { shipment_id: id.clone(), request_id: String::new() };
        self.cl.stock.clone().dispatch_shipment(authed(&self.admin, r)).await.unwrap();
        id
    }

    /// Raises a fresh open alert at `facility`; returns its id.
    async fn alert(&self, srv: &TestServer, facility: &str) -> String {
        let n = self.next();
        let c = Condition {
            kind: AlertKind::StockOut,
            subject: Subject { facility_id: facility.into(), product_id: format!("p{n}"), ..Default::default() },
            severity: Severity::Alarm,
            start: Utc::now(),
            through: Utc::now(),
            details: Details { summary: format!("test alert {n}"), ..Default::default() },
        };
        srv.app.raise_alert_event(&c).await.unwrap().unwrap().alert.id
    }

    async fn pending_exposures(&self, unit: &str) -> Vec<pb::Exposure> {
        let r = pb::ListExposuresRequest {
            states: vec![pb::ExposureState::Pending as i32],
            page_size: 1000,
            ..Default::default()
        };
        let all = self.cl.stock.clone().list_exposures(authed(&self.admin, r)).await.unwrap().into_inner().exposures;
        all.into_iter().filter(|x| x.storage_unit_id == unit).collect()
    }

    /// An exposure at the branch's fridge whose alarm has ended, not yet assessed: one left by an
    /// earlier refused cell, or a new freeze episode from the logger.
    async fn ended_exposure(&mut self, srv: &TestServer, inside: bool) -> String {
        let b = self.branch(inside);
        let pending = self.pending_exposures(&b.cx).await;
        if let Some(x) = pending.first() {
            return x.id.clone();
        }
        let start = b.clock.unwrap();
        let mut seq = b.seq;
        let mut readings = Vec::new();
        // Below −0.5 °C for 62 minutes opens a FREEZE alarm; back at +5 °C ends it.
        for (min, c) in [(0, -3.0), (31, -3.0), (62, -3.0), (63, 5.0)] {
            readings.push((seq, start + chrono::Duration::minutes(min), c));
            seq += 1;
        }
        send_readings(srv, &b.dev, &b.key, &readings).await;
        let br = if inside { &mut self.one } else { &mut self.two };
        br.clock = Some(start + chrono::Duration::minutes(120));
        br.seq = seq;
        let pending = self.pending_exposures(&b.cx).await;
        pending.first().map(|x| x.id.clone()).expect("a freeze episode exposes the fridge's stock")
    }
}

async fn branch(w: &mut World, srv: &TestServer, k: &str) -> Branch {
    use pb::FacilityKind as K;
    let n = w.n.clone();
    let st = w.facility(&n, K::StateStore, &format!("ST{k}")).await;
    let d = w.facility(&st, K::DistrictStore, &format!("D{k}")).await;
    let c = w.facility(&d, K::ColdChainPoint, &format!("C{k}")).await;
    let s = w.facility(&c, K::SessionSite, &format!("S{k}")).await;
    let su = w.unit(&st, "SU").await;
    let du = w.unit(&d, "DU").await;
    let cua = w.unit(&c, "CUA").await;
    let cub = w.unit(&c, "CUB").await;
    let cx = w.unit(&c, "CX").await;
    for u in [&du, &cua, &cub] {
        w.stock(u, 100_000).await;
    }
    w.stock(&cx, 10).await;
    w.stock_of(&cub, &w.lot_soon, 20).await;
    let (dev, key) = register_logger(srv, &w.admin, &c, &cx, 1800).await;
    let shipment = w.draft(&c, &cua, &d).await;
    let alert = w.alert(srv, &c).await;
    w.alert(srv, &c).await;
    let clock = Some(Utc::now() - chrono::Duration::days(10));
    Branch { st, d, c, s, su, du, cua, cub, cx, dev, key, clock, seq: 1, shipment, alert }
}

async fn world(srv: &TestServer) -> World {
    let ch = srv.channel().await;
    let admin = srv.admin_token.clone();
    let mut w = World {
        admin: admin.clone(),
        cl: Clients::new(&ch),
        n: String::new(),
        product: String::new(),
        lot: String::new(),
        lot_soon: String::new(),
        one: Branch::default(),
        two: Branch::default(),
        callers: Vec::new(),
    };
    w.n = w.facility("", pb::FacilityKind::NationalStore, "N").await;
    let p = pb::Product {
        code: "PENTA1".into(),
        name: "Penta".into(),
        vaccine: "Penta".into(),
        doses_per_vial: 10,
        presentation: pb::Presentation::Liquid as i32,
        vvm_type: pb::VvmType::Vvm14 as i32,
        temperature_profile: pb::TemperatureProfile::Refrigerated as i32,
        ..Default::default()
    };
    let r = pb::CreateProductRequest { product: Some(p), request_id: String::new() };
    w.product = w.cl.cat.create_product(authed(&admin, r)).await.unwrap().into_inner().id;
    let l = pb::Lot {
        product_id: w.product.clone(),
        lot_number: "A1".into(),
        expiry: Some(pb::Date { year: 2031, month: 6, day: 30 }),
        ..Default::default()
    };
    let r = pb::CreateLotRequest { lot: Some(l), request_id: String::new() };
    w.lot = w.cl.cat.create_lot(authed(&admin, r)).await.unwrap().into_inner().id;
    let soon = Utc::now().date_naive() + chrono::Days::new(200);
    let l = pb::Lot {
        product_id: w.product.clone(),
        lot_number: "S1".into(),
        expiry: Some(date(soon)),
        ..Default::default()
    };
    let r = pb::CreateLotRequest { lot: Some(l), request_id: String::new() };
    w.lot_soon = w.cl.cat.create_lot(authed(&admin, r)).await.unwrap().into_inner().id;
    w.one = branch(&mut w, srv, "1").await;
    w.two = branch(&mut w, srv, "2").await;
    let one = w.one.clone();
    let device = pb::CreateTokenRequest {
        role: pb::Role::Device as i32,
        scope_facility_id: one.c.clone(),
        device_id: one.dev.clone(),
        description: "logger".into(),
        ..Default::default()
    };
    let device = w.cl.adm.create_token(authed(&admin, device)).await.unwrap().into_inner().secret;
    use pb::Role as R;
    w.callers = vec![
        Who { label: "admin", role: R::Admin, tok: admin.clone(), scope: None, supply_unit: one.su.clone() },
        Who {
            label: "national officer",
            role: R::NationalOfficer,
            tok: token(srv, &admin, R::NationalOfficer, "").await,
            scope: None,
            supply_unit: one.su.clone(),
        },
        Who {
            label: "national officer of state 1",
            role: R::NationalOfficer,
            tok: token(srv, &admin, R::NationalOfficer, &one.st).await,
            scope: Some(one.st.clone()),
            supply_unit: one.su.clone(),
        },
        Who {
            label: "district officer of D1",
            role: R::DistrictOfficer,
            tok: token(srv, &admin, R::DistrictOfficer, &one.d).await,
            scope: Some(one.d.clone()),
            supply_unit: one.du.clone(),
        },
        Who {
            label: "depot manager of C1",
            role: R::DepotManager,
            tok: token(srv, &admin, R::DepotManager, &one.c).await,
            scope: Some(one.c.clone()),
            supply_unit: one.cua.clone(),
        },
        Who {
            label: "device at C1",
            role: R::Device,
            tok: device,
            scope: Some(one.c.clone()),
            supply_unit: one.cx.clone(),
        },
    ];
    // Exposures (and their alerts) exist in both branches before anything is asked.
    w.ended_exposure(srv, true).await;
    w.ended_exposure(srv, false).await;
    w
}

fn text<T: Debug>(r: Result<tonic::Response<T>, Status>) -> Result<String, Status> {
    r.map(|r| format!("{:?}", r.into_inner()))
}

/// Reads a finite stream of byte chunks to its end.
async fn chunks<T>(
    r: Result<tonic::Response<tonic::Streaming<T>>, Status>,
    data: impl Fn(T) -> Vec<u8>,
) -> Result<String, Status> {
    let mut s = r?.into_inner();
    let mut out = Vec::new();
    while let Some(c) = s.message().await? {
        out.extend(data(c));
    }
    Ok(String::from_utf8_lossy(&out).into_owned())
}

/// Calls `rpc` as `who` on the inside (branch one) or outside (branch two) target; preparing the
/// objects the call acts on as admin first. Returns what the caller got to see, as text.
async fn call(srv: &TestServer, w: &mut World, rpc: Rpc, who: &Who, inside: bool) -> Result<String, Status> {
    let b = w.branch(inside);
    let mut cl = w.cl.clone();
    let tok = who.tok.as_str();
    let n = w.next();
    let lot = w.lot.clone();
    let product = w.product.clone();
    let now = Utc::now();
    match rpc {
        Rpc::CreateFacility => {
            let f = pb::Facility {
                parent_id: b.c.clone(),
                kind: pb::FacilityKind::SessionSite as i32,
                code: format!("SS{n}"),
                name: format!("Site {n}"),
                ..Default::default()
            };
            text(
                cl.fac
                    .create_facility(authed(
                        tok,
                        pb::CreateFacilityRequest { facility: Some(f), request_id: String::new() },
                    ))
                    .await,
            )
        }
        Rpc::GetFacility => text(cl.fac.get_facility(authed(tok, pb::GetFacilityRequest { id: b.c })).await),
        Rpc::ListFacilities => text(
            cl.fac
                .list_facilities(authed(tok, pb::ListFacilitiesRequest { ancestor_id: b.c, ..Default::default() }))
                .await,
        ),
        Rpc::UpdateFacility => {
            let f = pb::Facility { id: b.s, name: format!("Site renamed {n}"), ..Default::default() };
            let r = pb::UpdateFacilityRequest {
                facility: Some(f),
                update_mask: vec!["name".into()],
                request_id: String::new(),
            };
            text(cl.fac.update_facility(authed(tok, r)).await)
        }
        Rpc::CreateStorageUnit => {
            let u = pb::StorageUnit {
                facility_id: b.c,
                kind: pb::StorageUnitKind::ColdBox as i32,
                name: format!("Carrier {n}"),
                temperature_profile: pb::TemperatureProfile::Refrigerated as i32,
                ..Default::default()
            };
            text(
                cl.fac
                    .create_storage_unit(authed(
                        tok,
                        pb::CreateStorageUnitRequest { storage_unit: Some(u), request_id: String::new() },
                    ))
                    .await,
            )
        }
        Rpc::GetStorageUnit => {
            text(cl.fac.get_storage_unit(authed(tok, pb::GetStorageUnitRequest { id: b.cua })).await)
        }
        Rpc::ListStorageUnits => text(
            cl.fac
                .list_storage_units(authed(tok, pb::ListStorageUnitsRequest { facility_id: b.c, ..Default::default() }))
                .await,
        ),
        Rpc::UpdateStorageUnit => {
            let u = pb::StorageUnit { id: b.cub, name: format!("CUB {n}"), ..Default::default() };
            let r = pb::UpdateStorageUnitRequest {
                storage_unit: Some(u),
                update_mask: vec!["name".into()],
                request_id: String::new(),
            };
            text(cl.fac.update_storage_unit(authed(tok, r)).await)
        }
        Rpc::CreateProduct => {
            let p = pb::Product {
                code: format!("P{n}"),
                name: format!("P{n}"),
                vaccine: "MR".into(),
                doses_per_vial: 10,
                presentation: pb::Presentation::Lyophilised as i32,
                vvm_type: pb::VvmType::Vvm14 as i32,
                temperature_profile: pb::TemperatureProfile::Refrigerated as i32,
                ..Default::default()
            };
            text(
                cl.cat
                    .create_product(authed(
                        tok,
                        pb::CreateProductRequest { product: Some(p), request_id: String::new() },
                    ))
                    .await,
            )
        }
        Rpc::GetProduct => text(cl.cat.get_product(authed(tok, pb::GetProductRequest { id: product })).await),
        Rpc::ListProducts => text(cl.cat.list_products(authed(tok, pb::ListProductsRequest::default())).await),
        Rpc::UpdateProduct => {
            let p = pb::Product { id: product, name: format!("Penta {n}"), ..Default::default() };
            let r = pb::UpdateProductRequest {
                product: Some(p),
                update_mask: vec!["name".into()],
                request_id: String::new(),
            };
            text(cl.cat.update_product(authed(tok, r)).await)
        }
        Rpc::CreateLot => {
            let l = pb::Lot {
                product_id: product,
                lot_number: format!("L{n}"),
                expiry: Some(pb::Date { year: 2030, month: 1, day: 31 }),
                ..Default::default()
            };
            text(cl.cat.create_lot(authed(tok, pb::CreateLotRequest { lot: Some(l), request_id: String::new() })).await)
        }
        Rpc::GetLot => text(cl.cat.get_lot(authed(tok, pb::GetLotRequest { id: lot })).await),
        Rpc::ListLots => text(cl.cat.list_lots(authed(tok, pb::ListLotsRequest::default())).await),
        Rpc::CreateToken => {
            let r = pb::CreateTokenRequest {
                role: pb::Role::DepotManager as i32,
                scope_facility_id: b.c,
                description: format!("depot {n}"),
                ..Default::default()
            };
            text(cl.adm.create_token(authed(tok, r)).await)
        }
        Rpc::ListTokens => text(cl.adm.list_tokens(authed(tok, pb::ListTokensRequest::default())).await),
        Rpc::RevokeToken => {
            let victim = token(srv, &w.admin, pb::Role::DepotManager, &b.c).await;
            let me = cl.adm.who_am_i(authed(&victim, pb::WhoAmIRequest {})).await.unwrap().into_inner().id;
            text(cl.adm.revoke_token(authed(tok, pb::RevokeTokenRequest { id: me, request_id: String::new() })).await)
        }
        Rpc::WhoAmI => text(cl.adm.who_am_i(authed(tok, pb::WhoAmIRequest {})).await),
        Rpc::ReceiveFromSupplier => {
            let unit = if inside { who.supply_unit.clone() } else { b.su };
            let r = pb::ReceiveFromSupplierRequest {
                storage_unit_id: unit,
                lines: vec![pb::SupplierReceiptLine {
                    lot_ref: Some(pb::supplier_receipt_line::LotRef::LotId(lot)),
                    vials: 10,
                    ..Default::default()
                }],
                supplier: "UNICEF SD".into(),
                ..Default::default()
            };
            text(cl.stock.receive_from_supplier(authed(tok, r)).await)
        }
        Rpc::CreateShipment => {
            // Back to the parent store: the destination may lie outside the sender's scope.
            let r = pb::CreateShipmentRequest {
                from_facility_id: b.c,
                to_facility_id: b.d,
                lines: vec![pb::CreateShipmentLine {
                    lot_ref: Some(pb::create_shipment_line::LotRef::LotId(lot)),
                    vials: 1,
                    source_storage_unit_id: b.cua,
                }],
                ..Default::default()
            };
            text(cl.stock.create_shipment(authed(tok, r)).await)
        }
        Rpc::DispatchShipment => {
            let id = w.draft(&b.c, &b.cua, &b.d).await;
            text(
                cl.stock
                    .dispatch_shipment(authed(
                        tok,
                        pb::DispatchShipmentRequest { shipment_id: id, request_id: String::new() },
                    ))
                    .await,
            )
        }
        Rpc::ReceiveShipment => {
            let id = w.dispatched(&b.d, &b.du, &b.c).await;
            let r = pb::ReceiveShipmentRequest {
                shipment_id: id,
                storage_unit_id: b.cua,
                accept_unlisted_in_full: true,
                ..Default::default()
            };
            text(cl.stock.receive_shipment(authed(tok, r)).await)
        }
        Rpc::CancelShipment => {
            let id = w.draft(&b.c, &b.cua, &b.d).await;
            let r =
                pb::CancelShipmentRequest { shipment_id: id, comment: "not needed".into(), request_id: String::new() };
            text(cl.stock.cancel_shipment(authed(tok, r)).await)
        }
        Rpc::GetShipment => text(cl.stock.get_shipment(authed(tok, pb::GetShipmentRequest { id: b.shipment })).await),
        Rpc::ListShipments => text(
            cl.stock
                .list_shipments(authed(tok, pb::ListShipmentsRequest { facility_id: b.c, ..Default::default() }))
                .await,
        ),
        Rpc::TransferStock => {
            let r = pb::TransferStockRequest {
                from_storage_unit_id: b.cua,
                to_storage_unit_id: b.cub,
                lot_id: lot,
                vials: 1,
                ..Default::default()
            };
            text(cl.stock.transfer_stock(authed(tok, r)).await)
        }
        Rpc::AdjustStock => {
            let r = pb::AdjustStockRequest {
                storage_unit_id: b.cua,
                lot_ref: Some(pb::adjust_stock_request::LotRef::LotId(lot)),
                quantity_vials: -1,
                reason: pb::AdjustmentReason::Broken as i32,
                comment: "dropped".into(),
                request_id: String::new(),
            };
            text(cl.stock.adjust_stock(authed(tok, r)).await)
        }
        Rpc::RecordPhysicalCount => {
            let r = pb::RecordPhysicalCountRequest {
                facility_id: b.c,
                lines: vec![pb::PhysicalCountLine {
                    storage_unit_id: b.cub,
                    lot_ref: Some(pb::physical_count_line::LotRef::LotId(lot)),
                    counted_vials: 50_000,
                    ..Default::default()
                }],
                ..Default::default()
            };
            text(cl.stock.record_physical_count(authed(tok, r)).await)
        }
        Rpc::SubmitSessionReport => {
            let report = pb::SessionReport {
                facility_id: b.s,
                storage_unit_id: b.cua,
                session_date: Some(today()),
                lines: vec![pb::SessionReportLine {
                    lot_ref: Some(pb::session_report_line::LotRef::LotId(lot)),
                    vials_issued: 2,
                    vials_opened: 2,
                    doses_administered: 15,
                    ..Default::default()
                }],
                ..Default::default()
            };
            let r = pb::SubmitSessionReportRequest { session_report: Some(report), request_id: String::new() };
            text(cl.stock.submit_session_report(authed(tok, r)).await)
        }
        Rpc::ReverseLedgerEntry => {
            let entry = w.stock(&b.cub, 1).await;
            let r = pb::ReverseLedgerEntryRequest {
                entry_id: entry,
                comment: "typed twice".into(),
                request_id: String::new(),
            };
            text(cl.stock.reverse_ledger_entry(authed(tok, r)).await)
        }
        Rpc::ListBalances => text(
            cl.stock
                .list_balances(authed(tok, pb::ListBalancesRequest { facility_id: b.c, ..Default::default() }))
                .await,
        ),
        Rpc::ListLedgerEntries => text(
            cl.stock
                .list_ledger_entries(authed(
                    tok,
                    pb::ListLedgerEntriesRequest { facility_id: b.c, page_size: 20, ..Default::default() },
                ))
                .await,
        ),
        Rpc::SuggestAllocation => {
            let r = pb::SuggestAllocationRequest {
                facility_id: b.c,
                product_id: product,
                doses: 100,
                ..Default::default()
            };
            text(cl.stock.suggest_allocation(authed(tok, r)).await)
        }
        Rpc::SetStockPolicy => {
            let p = pb::StockPolicy {
                facility_id: b.c,
                product_id: product,
                min_doses: 100,
                max_doses: 1000 + i64::try_from(n).unwrap(),
                ..Default::default()
            };
            text(
                cl.stock
                    .set_stock_policy(authed(
                        tok,
                        pb::SetStockPolicyRequest { policy: Some(p), request_id: String::new() },
                    ))
                    .await,
            )
        }
        Rpc::ListStockPolicies => text(
            cl.stock
                .list_stock_policies(authed(
                    tok,
                    pb::ListStockPoliciesRequest { facility_id: b.c, ..Default::default() },
                ))
                .await,
        ),
        Rpc::RecordExposureAssessment => {
            let id = w.ended_exposure(srv, inside).await;
            let r = pb::RecordExposureAssessmentRequest {
                exposure_id: id,
                decision: pb::ExposureDecision::Release as i32,
                comment: "shake test passed".into(),
                ..Default::default()
            };
            text(cl.stock.record_exposure_assessment(authed(tok, r)).await)
        }
        Rpc::ListExposures => text(cl.stock.list_exposures(authed(tok, pb::ListExposuresRequest::default())).await),
        Rpc::StockOnHandReport => text(
            cl.rep
                .stock_on_hand_report(authed(
                    tok,
                    pb::StockOnHandReportRequest { facility_id: b.c, ..Default::default() },
                ))
                .await,
        ),
        Rpc::WastageReport => text(
            cl.rep
                .wastage_report(authed(
                    tok,
                    pb::WastageReportRequest {
                        facility_id: b.c,
                        start_date: Some(month_ago()),
                        end_date: Some(today()),
                        ..Default::default()
                    },
                ))
                .await,
        ),
        Rpc::ExpiryRiskReport => text(
            cl.rep
                .expiry_risk_report(authed(
                    tok,
                    pb::ExpiryRiskReportRequest {
                        facility_id: b.c,
                        within_days: 730,
                        include_expired: true,
                        ..Default::default()
                    },
                ))
                .await,
        ),
        Rpc::ExportReportCsv => {
            let r = pb::ExportReportCsvRequest {
                report: Some(pb::export_report_csv_request::Report::LedgerEntries(pb::ListLedgerEntriesRequest {
                    facility_id: b.c,
                    ..Default::default()
                })),
            };
            chunks(cl.rep.export_report_csv(authed(tok, r)).await, |c| c.data).await
        }
        Rpc::ExportEpcis => {
            let r = pb::ExportEpcisRequest {
                facility_id: b.c,
                start_time: Some(ts(now - chrono::Duration::days(30))),
                end_time: Some(ts(now + chrono::Duration::days(1))),
            };
            chunks(cl.rep.export_epcis(authed(tok, r)).await, |c| c.data).await
        }
        Rpc::ListAlerts => text(
            cl.alert.list_alerts(authed(tok, pb::ListAlertsRequest { ancestor_id: b.c, ..Default::default() })).await,
        ),
        Rpc::GetAlert => text(cl.alert.get_alert(authed(tok, pb::GetAlertRequest { id: b.alert })).await),
        Rpc::AcknowledgeAlert => {
            let id = w.alert(srv, &b.c).await;
            let r = pb::AcknowledgeAlertRequest { id, comment: "on it".into(), request_id: String::new() };
            text(cl.alert.acknowledge_alert(authed(tok, r)).await)
        }
        Rpc::ResolveAlert => {
            let id = w.alert(srv, &b.c).await;
            let r = pb::ResolveAlertRequest {
                id,
                resolution: pb::AlertResolution::StockReplenished as i32,
                comment: "delivered".into(),
                request_id: String::new(),
            };
            text(cl.alert.resolve_alert(authed(tok, r)).await)
        }
        Rpc::WatchAlerts => {
            // From the first event on, so the branch's events are replayed at once.
            let r = pb::WatchAlertsRequest { after_event_id: 1, ancestor_id: b.c, ..Default::default() };
            let mut s = cl.alert.watch_alerts(authed(tok, r)).await?.into_inner();
            let first = tokio::time::timeout(Duration::from_secs(20), s.message())
                .await
                .map_err(|_| Status::deadline_exceeded("no event replayed within 20 s"))??
                .ok_or_else(|| Status::unknown("the stream ended without an event"))?;
            Ok(format!("{first:?}"))
        }
        Rpc::CreateWebhook => {
            let h = pb::Webhook {
                scope_facility_id: b.d,
                // Loopback: nothing delivers in this test, and if something did it stays on the machine.
                url: format!("https://127.0.0.1:9/hook/{n}"),
                ..Default::default()
            };
            text(
                cl.alert
                    .create_webhook(authed(tok, pb::CreateWebhookRequest { webhook: Some(h), ..Default::default() }))
                    .await,
            )
        }
        Rpc::ListWebhooks => text(cl.alert.list_webhooks(authed(tok, pb::ListWebhooksRequest::default())).await),
        Rpc::DeleteWebhook => {
            let h = pb::Webhook {
                scope_facility_id: b.d,
                url: format!("https://127.0.0.1:9/del/{n}"),
                ..Default::default()
            };
            let r = pb::CreateWebhookRequest { webhook: Some(h), ..Default::default() };
            let id = cl.alert.create_webhook(authed(&w.admin, r)).await.unwrap().into_inner().webhook.unwrap().id;
            text(cl.alert.delete_webhook(authed(tok, pb::DeleteWebhookRequest { id, request_id: String::new() })).await)
        }
        Rpc::RegisterDevice => {
            let d = pb::Device {
                serial: format!("SN-{n}"),
                name: "logger".into(),
                model: "M".into(),
                facility_id: b.c,
                probes: vec![pb::Probe { index: 0, storage_unit_id: b.cub, label: "p0".into() }],
                expected_interval: Some(prost_types::Duration { seconds: 300, nanos: 0 }),
                ..Default::default()
            };
            text(
                cl.tel
                    .register_device(authed(
                        tok,
                        pb::RegisterDeviceRequest { device: Some(d), request_id: String::new() },
                    ))
                    .await,
            )
        }
        Rpc::GetDevice => text(cl.tel.get_device(authed(tok, pb::GetDeviceRequest { id: b.dev })).await),
        Rpc::ListDevices => text(
            cl.tel.list_devices(authed(tok, pb::ListDevicesRequest { facility_id: b.c, ..Default::default() })).await,
        ),
        Rpc::UpdateDevice => {
            let d = pb::Device { id: b.dev, name: format!("logger {n}"), ..Default::default() };
            let r = pb::UpdateDeviceRequest {
                device: Some(d),
                update_mask: vec!["name".into()],
                request_id: String::new(),
            };
            text(cl.tel.update_device(authed(tok, r)).await)
        }
        Rpc::RotateDeviceKey => {
            let (id, _) = register_logger(srv, &w.admin, &b.c, &b.cub, 300).await;
            text(cl.tel.rotate_device_key(authed(tok, pb::RotateDeviceKeyRequest { id, ..Default::default() })).await)
        }
        Rpc::ListReadings => {
            let r = pb::ListReadingsRequest {
                storage_unit_id: b.cx,
                start_time: Some(ts(now - chrono::Duration::days(11))),
                end_time: Some(ts(now)),
                ..Default::default()
            };
            text(cl.tel.list_readings(authed(tok, r)).await)
        }
        Rpc::QueryReadings => {
            let hour = now.timestamp() / 3600 * 3600;
            let r = pb::QueryReadingsRequest {
                storage_unit_id: b.cx,
                start_time: Some(prost_types::Timestamp { seconds: hour - 11 * 86_400, nanos: 0 }),
                end_time: Some(prost_types::Timestamp { seconds: hour, nanos: 0 }),
                bucket: Some(prost_types::Duration { seconds: 3600, nanos: 0 }),
            };
            text(cl.tel.query_readings(authed(tok, r)).await)
        }
        Rpc::GetLatestReadings => text(
            cl.tel
                .get_latest_readings(authed(
                    tok,
                    pb::GetLatestReadingsRequest { ancestor_id: b.c, ..Default::default() },
                ))
                .await,
        ),
    }
}

#[tokio::test]
async fn authorization_matrix_every_rpc_role_and_scope() {
    for db in TestDb::all() {
        let srv = TestServer::start(db).await;
        let mut w = world(&srv).await;
        let forbidden: Vec<String> = w.two.ids();
        let callers = w.callers.clone();
        let mut failures = Vec::new();
        let mut cells = 0;
        for (svc, method) in descriptor_rpcs() {
            let rpc = RPCS
                .iter()
                .find(|(_, s, m)| *s == svc && *m == method)
                .map(|r| r.0)
                .unwrap_or_else(|| panic!("{svc}/{method} has no entry in the authorization matrix"));
            for who in &callers {
                for inside in [true, false] {
                    cells += 1;
                    let covers = inside || who.scope.is_none();
                    let mut want = expected(rpc, who.role, covers);
                    if rpc == Rpc::ReceiveFromSupplier && want == Outcome::Ok && inside && who.supply_unit != w.one.su {
                        want = Outcome::Refused(Code::FailedPrecondition, "NOT_A_SUPPLY_STORE");
                    }
                    let got = call(&srv, &mut w, rpc, who, inside).await;
                    let side = if inside { "inside" } else { "outside" };
                    match (&want, &got) {
                        (Outcome::Ok, Ok(seen)) => {
                            if who.scope.is_some() {
                                for id in forbidden.iter().filter(|id| seen.contains(id.as_str())) {
                                    failures
                                        .push(format!("{method} by {} ({side}) shows out-of-scope id {id}", who.label));
                                }
                            }
                        }
                        (Outcome::Denied, Err(e)) if e.code() == Code::PermissionDenied => {}
                        (Outcome::Refused(code, why), Err(e)) if e.code() == *code && reason(e) == *why => {}
                        _ => failures.push(format!(
                            "{method} by {} ({side}): expected {want:?}, got {:?}",
                            who.label,
                            got.as_ref().map(|_| "OK").map_err(|e| (e.code(), e.message().to_owned()))
                        )),
                    }
                }
            }
        }
        assert!(
            failures.is_empty(),
            "{}: {} of {cells} cells wrong:\n{}",
            srv.db.name(),
            failures.len(),
            failures.join("\n")
        );
        assert_eq!(cells, RPCS.len() * callers.len() * 2);

        unfiltered_lists_stay_in_scope(&srv, &mut w).await;
        page_tokens_cannot_widen_a_scope(&srv, &mut w).await;
        missing_objects_look_like_hidden_ones(&mut w).await;
        srv.stop().await;
    }
}

/// Facility id -> the ids of it and its ancestors, read as admin (cached).
struct Tree<'a> {
    w: &'a World,
    paths: HashMap<String, Vec<String>>,
}

impl Tree<'_> {
    async fn covers(&mut self, scope: &str, facility: &str) -> bool {
        if facility.is_empty() {
            return false;
        }
        if !self.paths.contains_key(facility) {
            let mut fac = self.w.cl.fac.clone();
            let f = fac
                .get_facility(authed(&self.w.admin, pb::GetFacilityRequest { id: facility.into() }))
                .await
                .unwrap()
                .into_inner();
            let mut ids = f.ancestor_ids;
            ids.push(f.id);
            self.paths.insert(facility.to_owned(), ids);
        }
        self.paths[facility].iter().any(|id| id == scope)
    }
}

/// The facilities of every row an unfiltered list or report answers `tok` (all pages).
async fn listed(w: &World, rpc: Rpc, tok: &str) -> Vec<Vec<String>> {
    let mut cl = w.cl.clone();
    let mut out = Vec::new();
    let mut page_token = String::new();
    loop {
        let pt = page_token.clone();
        let next = match rpc {
            Rpc::ListFacilities => {
                let r = cl
                    .fac
                    .list_facilities(authed(tok, pb::ListFacilitiesRequest { page_token: pt, ..Default::default() }))
                    .await
                    .unwrap()
                    .into_inner();
                out.extend(r.facilities.into_iter().map(|f| vec![f.id]));
                r.next_page_token
            }
            Rpc::ListStorageUnits => {
                let r = cl
                    .fac
                    .list_storage_units(authed(
                        tok,
                        pb::ListStorageUnitsRequest { page_token: pt, ..Default::default() },
                    ))
                    .await
                    .unwrap()
                    .into_inner();
                out.extend(r.storage_units.into_iter().map(|u| vec![u.facility_id]));
                r.next_page_token
            }
            Rpc::ListShipments => {
                let r = cl
                    .stock
                    .list_shipments(authed(tok, pb::ListShipmentsRequest { page_token: pt, ..Default::default() }))
                    .await
                    .unwrap()
                    .into_inner();
                out.extend(r.shipments.into_iter().map(|s| vec![s.from_facility_id, s.to_facility_id]));
                r.next_page_token
            }
            Rpc::ListBalances => {
                let r = cl
                    .stock
                    .list_balances(authed(
                        tok,
                        pb::ListBalancesRequest { page_token: pt, include_zero: true, ..Default::default() },
                    ))
                    .await
                    .unwrap()
                    .into_inner();
                out.extend(r.balances.into_iter().map(|b| vec![b.facility_id]));
                r.next_page_token
            }
            Rpc::ListLedgerEntries => {
                let r = cl
                    .stock
                    .list_ledger_entries(authed(
                        tok,
                        pb::ListLedgerEntriesRequest { page_token: pt, page_size: 1000, ..Default::default() },
                    ))
                    .await
                    .unwrap()
                    .into_inner();
                out.extend(r.entries.into_iter().map(|e| vec![e.facility_id]));
                r.next_page_token
            }
            Rpc::ListStockPolicies => {
                let r = cl
                    .stock
                    .list_stock_policies(authed(
                        tok,
                        pb::ListStockPoliciesRequest { page_token: pt, ..Default::default() },
                    ))
                    .await
                    .unwrap()
                    .into_inner();
                out.extend(r.policies.into_iter().map(|p| vec![p.facility_id]));
                r.next_page_token
            }
            Rpc::ListExposures => {
                let r = cl
                    .stock
                    .list_exposures(authed(tok, pb::ListExposuresRequest { page_token: pt, ..Default::default() }))
                    .await
                    .unwrap()
                    .into_inner();
                out.extend(r.exposures.into_iter().map(|x| vec![x.facility_id]));
                r.next_page_token
            }
            Rpc::ListAlerts => {
                let r = cl
                    .alert
                    .list_alerts(authed(tok, pb::ListAlertsRequest { page_token: pt, ..Default::default() }))
                    .await
                    .unwrap()
                    .into_inner();
                out.extend(r.alerts.into_iter().map(|a| vec![a.subject.unwrap_or_default().facility_id]));
                r.next_page_token
            }
            Rpc::ListWebhooks => {
                let r = cl
                    .alert
                    .list_webhooks(authed(tok, pb::ListWebhooksRequest { page_token: pt, ..Default::default() }))
                    .await
                    .unwrap()
                    .into_inner();
                out.extend(r.webhooks.into_iter().map(|h| vec![h.scope_facility_id]));
                r.next_page_token
            }
            Rpc::ListDevices => {
                let r = cl
                    .tel
                    .list_devices(authed(tok, pb::ListDevicesRequest { page_token: pt, ..Default::default() }))
                    .await
                    .unwrap()
                    .into_inner();
                out.extend(r.devices.into_iter().map(|d| vec![d.facility_id]));
                r.next_page_token
            }
            Rpc::GetLatestReadings => {
                let r = cl
                    .tel
                    .get_latest_readings(authed(
                        tok,
                        pb::GetLatestReadingsRequest { page_token: pt, ..Default::default() },
                    ))
                    .await
                    .unwrap()
                    .into_inner();
                out.extend(r.latest.into_iter().map(|l| vec![l.facility_id]));
                r.next_page_token
            }
            Rpc::StockOnHandReport => {
                let r = cl
                    .rep
                    .stock_on_hand_report(authed(
                        tok,
                        pb::StockOnHandReportRequest {
                            page_token: pt,
                            group_by: vec![pb::ReportDimension::Facility as i32],
                            facility_grouping: Some(pb::FacilityGrouping { depth: 5 }),
                            ..Default::default()
                        },
                    ))
                    .await
                    .unwrap()
                    .into_inner();
                out.extend(r.rows.into_iter().map(|x| vec![x.facility_id]));
                r.next_page_token
            }
            Rpc::WastageReport => {
                let r = cl
                    .rep
                    .wastage_report(authed(
                        tok,
                        pb::WastageReportRequest {
                            page_token: pt,
                            facility_grouping: Some(pb::FacilityGrouping { depth: 5 }),
                            start_date: Some(month_ago()),
                            end_date: Some(today()),
                            ..Default::default()
                        },
                    ))
                    .await
                    .unwrap()
                    .into_inner();
                out.extend(r.rows.into_iter().map(|x| vec![x.facility_id]));
                r.next_page_token
            }
            Rpc::ExpiryRiskReport => {
                let r = cl
                    .rep
                    .expiry_risk_report(authed(
                        tok,
                        pb::ExpiryRiskReportRequest {
                            page_token: pt,
                            within_days: 730,
                            include_expired: true,
                            ..Default::default()
                        },
                    ))
                    .await
                    .unwrap()
                    .into_inner();
                out.extend(r.rows.into_iter().map(|x| vec![x.facility_id]));
                r.next_page_token
            }
            other => panic!("{other:?} is not an unfiltered listing"),
        };
        if next.is_empty() {
            return out;
        }
        page_token = next;
    }
}

/// The listings that take no target, with the rows' facilities.
const LISTINGS: [Rpc; 14] = [
    Rpc::ListFacilities,
    Rpc::ListStorageUnits,
    Rpc::ListShipments,
    Rpc::ListBalances,
    Rpc::ListLedgerEntries,
    Rpc::ListStockPolicies,
    Rpc::ListExposures,
    Rpc::ListAlerts,
    Rpc::ListWebhooks,
    Rpc::ListDevices,
    Rpc::GetLatestReadings,
    Rpc::StockOnHandReport,
    Rpc::WastageReport,
    Rpc::ExpiryRiskReport,
];

/// Without filters every listing answers a scoped caller its scope only, while the admin's shows
/// rows of the other branch too (so the check has something to leave out); WatchAlerts likewise.
async fn unfiltered_lists_stay_in_scope(srv: &TestServer, w: &mut World) {
    let db = srv.db.name();
    let scoped: Vec<Who> =
        w.callers.iter().filter(|c| c.scope.is_some() && c.role != pb::Role::Device).cloned().collect();
    let mut tree = Tree { w, paths: HashMap::new() };
    for rpc in LISTINGS {
        let all = listed(tree.w, rpc, &tree.w.admin).await;
        let two = tree.w.two.st.clone();
        let mut outside = 0;
        for row in &all {
            if tree.covers(&two, &row[0]).await {
                outside += 1;
            }
        }
        assert!(outside > 0, "{db}: {rpc:?}: the admin sees rows of state 2");
        for who in &scoped {
            let scope = who.scope.clone().unwrap();
            if rpc == Rpc::ListWebhooks && who.role == pb::Role::DepotManager {
                continue; // depot managers may not list webhooks at all (the matrix checks that)
            }
            let rows = listed(tree.w, rpc, &who.tok).await;
            assert!(!rows.is_empty(), "{db}: {rpc:?} for {}: rows in scope are listed", who.label);
            for row in rows {
                let mut any = false;
                for f in &row {
                    any |= tree.covers(&scope, f).await;
                }
                assert!(any, "{db}: {rpc:?} for {} lists a row of {row:?}, outside its scope", who.label);
            }
        }
    }
    // WatchAlerts without a filter: replay everything, then a marker event in scope; nothing
    // before the marker may lie outside the scope.
    for who in &scoped {
        let scope = who.scope.clone().unwrap();
        let r = pb::WatchAlertsRequest { after_event_id: 1, ..Default::default() };
        let mut s = tree.w.cl.alert.clone().watch_alerts(authed(&who.tok, r)).await.unwrap().into_inner();
        let marker = tree.w.alert(srv, &tree.w.one.c).await;
        let mut seen = 0;
        loop {
            let ev = tokio::time::timeout(Duration::from_secs(20), s.message()).await.unwrap().unwrap().unwrap();
            let a = ev.alert.unwrap();
            let f = a.subject.unwrap_or_default().facility_id;
            assert!(tree.covers(&scope, &f).await, "{db}: WatchAlerts for {} sent an event of {f}", who.label);
            seen += 1;
            if a.id == marker {
                break;
            }
        }
        assert!(seen > 1, "{db}: WatchAlerts replayed the scope's events for {}", who.label);
    }
}

/// One page of a listing with a page token and (for the filter check) a filter facility; returns
/// the rows' facilities and the next token.
async fn page(
    w: &World,
    rpc: Rpc,
    tok: &str,
    page_token: &str,
    filter: &str,
) -> Result<(Vec<Vec<String>>, String), Status> {
    let mut cl = w.cl.clone();
    let pt = page_token.to_owned();
    let f = filter.to_owned();
    Ok(match rpc {
        Rpc::ListFacilities => {
            let r = cl
                .fac
                .list_facilities(authed(
                    tok,
                    pb::ListFacilitiesRequest { page_size: 1, page_token: pt, ancestor_id: f, ..Default::default() },
                ))
                .await?
                .into_inner();
            (r.facilities.into_iter().map(|x| vec![x.id]).collect(), r.next_page_token)
        }
        Rpc::ListStorageUnits => {
            let r = cl
                .fac
                .list_storage_units(authed(
                    tok,
                    pb::ListStorageUnitsRequest { page_size: 1, page_token: pt, ancestor_id: f, ..Default::default() },
                ))
                .await?
                .into_inner();
            (r.storage_units.into_iter().map(|x| vec![x.facility_id]).collect(), r.next_page_token)
        }
        Rpc::ListShipments => {
            let r = cl
                .stock
                .list_shipments(authed(
                    tok,
                    pb::ListShipmentsRequest { page_size: 1, page_token: pt, facility_id: f, ..Default::default() },
                ))
                .await?
                .into_inner();
            (r.shipments.into_iter().map(|x| vec![x.from_facility_id, x.to_facility_id]).collect(), r.next_page_token)
        }
        Rpc::ListBalances => {
            let r = cl
                .stock
                .list_balances(authed(
                    tok,
                    pb::ListBalancesRequest { page_size: 1, page_token: pt, ancestor_id: f, ..Default::default() },
                ))
                .await?
                .into_inner();
            (r.balances.into_iter().map(|x| vec![x.facility_id]).collect(), r.next_page_token)
        }
        Rpc::ListLedgerEntries => {
            let r = cl
                .stock
                .list_ledger_entries(authed(
                    tok,
                    pb::ListLedgerEntriesRequest { page_size: 1, page_token: pt, ancestor_id: f, ..Default::default() },
                ))
                .await?
                .into_inner();
            (r.entries.into_iter().map(|x| vec![x.facility_id]).collect(), r.next_page_token)
        }
        Rpc::ListStockPolicies => {
            let r = cl
                .stock
                .list_stock_policies(authed(
                    tok,
                    pb::ListStockPoliciesRequest { page_size: 1, page_token: pt, facility_id: f, ..Default::default() },
                ))
                .await?
                .into_inner();
            (r.policies.into_iter().map(|x| vec![x.facility_id]).collect(), r.next_page_token)
        }
        Rpc::ListExposures => {
            // Exposures filter by state only: any filter stands for PENDING.
            let states = if f.is_empty() { Vec::new() } else { vec![pb::ExposureState::Pending as i32] };
            let r = cl
                .stock
                .list_exposures(authed(
                    tok,
                    pb::ListExposuresRequest { page_size: 1, page_token: pt, states, ..Default::default() },
                ))
                .await?
                .into_inner();
            (r.exposures.into_iter().map(|x| vec![x.facility_id]).collect(), r.next_page_token)
        }
        Rpc::ListAlerts => {
            let r = cl
                .alert
                .list_alerts(authed(
                    tok,
                    pb::ListAlertsRequest { page_size: 1, page_token: pt, ancestor_id: f, ..Default::default() },
                ))
                .await?
                .into_inner();
            (r.alerts.into_iter().map(|x| vec![x.subject.unwrap_or_default().facility_id]).collect(), r.next_page_token)
        }
        Rpc::ListDevices => {
            let r = cl
                .tel
                .list_devices(authed(
                    tok,
                    pb::ListDevicesRequest { page_size: 1, page_token: pt, ancestor_id: f, ..Default::default() },
                ))
                .await?
                .into_inner();
            (r.devices.into_iter().map(|x| vec![x.facility_id]).collect(), r.next_page_token)
        }
        Rpc::GetLatestReadings => {
            let r = cl
                .tel
                .get_latest_readings(authed(
                    tok,
                    pb::GetLatestReadingsRequest { page_size: 1, page_token: pt, ancestor_id: f },
                ))
                .await?
                .into_inner();
            (r.latest.into_iter().map(|x| vec![x.facility_id]).collect(), r.next_page_token)
        }
        Rpc::StockOnHandReport => {
            let r = cl
                .rep
                .stock_on_hand_report(authed(
                    tok,
                    pb::StockOnHandReportRequest {
                        page_size: 1,
                        page_token: pt,
                        facility_id: f,
                        group_by: vec![pb::ReportDimension::Facility as i32],
                        facility_grouping: Some(pb::FacilityGrouping { depth: 5 }),
                        ..Default::default()
                    },
                ))
                .await?
                .into_inner();
            (r.rows.into_iter().map(|x| vec![x.facility_id]).collect(), r.next_page_token)
        }
        Rpc::WastageReport => {
            let r = cl
                .rep
                .wastage_report(authed(
                    tok,
                    pb::WastageReportRequest {
                        page_size: 1,
                        page_token: pt,
                        facility_id: f,
                        facility_grouping: Some(pb::FacilityGrouping { depth: 5 }),
                        start_date: Some(month_ago()),
                        end_date: Some(today()),
                        ..Default::default()
                    },
                ))
                .await?
                .into_inner();
            (r.rows.into_iter().map(|x| vec![x.facility_id]).collect(), r.next_page_token)
        }
        Rpc::ExpiryRiskReport => {
            let r = cl
                .rep
                .expiry_risk_report(authed(
                    tok,
                    pb::ExpiryRiskReportRequest {
                        page_size: 1,
                        page_token: pt,
                        facility_id: f,
                        within_days: 730,
                        include_expired: true,
                        ..Default::default()
                    },
                ))
                .await?
                .into_inner();
            (r.rows.into_iter().map(|x| vec![x.facility_id]).collect(), r.next_page_token)
        }
        Rpc::ListWebhooks => {
            let r = cl
                .alert
                .list_webhooks(authed(tok, pb::ListWebhooksRequest { page_size: 1, page_token: pt }))
                .await?
                .into_inner();
            (r.webhooks.into_iter().map(|x| vec![x.scope_facility_id]).collect(), r.next_page_token)
        }
        other => panic!("{other:?} is not a paged listing"),
    })
}

/// Every page token the admin gets, walking a listing page by page, handed to the district
/// officer: it is refused (INVALID_ARGUMENT) or answers rows of the district only. A token from
/// another filter is refused, and so are tampered and garbage tokens, with a clear message.
async fn page_tokens_cannot_widen_a_scope(srv: &TestServer, w: &mut World) {
    let db = srv.db.name();
    let district = w.callers.iter().find(|c| c.role == pb::Role::DistrictOfficer).cloned().unwrap();
    let scope = district.scope.clone().unwrap();
    let mut tree = Tree { w, paths: HashMap::new() };
    for rpc in LISTINGS {
        let mut admin_token = String::new();
        let mut pages = 0;
        let mut tried = 0;
        loop {
            let (_, next) = page(tree.w, rpc, &tree.w.admin, &admin_token, "").await.unwrap();
            pages += 1;
            if next.is_empty() || pages > 400 {
                break;
            }
            match page(tree.w, rpc, &district.tok, &next, "").await {
                Ok((rows, _)) => {
                    for row in rows {
                        let mut any = false;
                        for f in &row {
                            any |= tree.covers(&scope, f).await;
                        }
                        assert!(any, "{db}: {rpc:?}: the admin's page token showed the district {row:?}");
                    }
                }
                Err(e) => assert_eq!(e.code(), Code::InvalidArgument, "{db}: {rpc:?}: {e:?}"),
            }
            tried += 1;
            admin_token = next;
        }
        assert!(tried > 0, "{db}: {rpc:?}: the admin's listing has more than one page");

        // The district's own token, under other filters, is refused.
        let (_, own) = page(tree.w, rpc, &district.tok, "", "").await.unwrap();
        if !own.is_empty() && rpc != Rpc::ListWebhooks {
            // C1: a narrower filter than the district's whole scope, for every listing.
            let other = tree.w.one.c.clone();
            let e = page(tree.w, rpc, &district.tok, &own, &other).await.unwrap_err();
            assert_eq!((e.code(), reason(&e).as_str()), (Code::InvalidArgument, "INVALID_PAGE_TOKEN"), "{db}: {rpc:?}");
        }
        for bad in [
            "garbage",
            "!!!",
            "bm8tc2VwYXJhdG9y",
            &format!("{admin_token}x"),
            &admin_token.replacen(|c: char| c.is_ascii_alphanumeric(), "_", 3),
        ] {
            if bad.is_empty() {
                continue;
            }
            match page(tree.w, rpc, &district.tok, bad, "").await {
                Err(e) => {
                    assert_eq!(
                        (e.code(), reason(&e).as_str()),
                        (Code::InvalidArgument, "INVALID_PAGE_TOKEN"),
                        "{db}: {rpc:?} {bad:?}"
                    );
                    assert!(e.message().contains("page_token"), "{db}: {rpc:?}: {}", e.message());
                }
                Ok((rows, _)) => {
                    // A token that still decodes is only a cursor: the scope is applied anyway.
                    for row in rows {
                        let mut any = false;
                        for f in &row {
                            any |= tree.covers(&scope, f).await;
                        }
                        assert!(any, "{db}: {rpc:?}: tampered token {bad:?} showed {row:?}");
                    }
                }
            }
        }
    }
}

/// A scoped caller gets PERMISSION_DENIED alike for an object outside its scope and for one that
/// does not exist, so it learns nothing about the rest of the tree.
async fn missing_objects_look_like_hidden_ones(w: &mut World) {
    let district = w.callers.iter().find(|c| c.role == pb::Role::DistrictOfficer).cloned().unwrap();
    let tok = district.tok.as_str();
    let mut cl = w.cl.clone();
    let two = w.two.clone();
    let missing = "0190f3e2-7c1a-7abc-8def-0123456789ab";
    for (what, use_missing) in [("hidden", false), ("missing", true)] {
        let id = |of: &str| if use_missing { missing.to_owned() } else { of.to_owned() };
        let got = [
            ("facility", cl.fac.get_facility(authed(tok, pb::GetFacilityRequest { id: id(&two.c) })).await.map(drop)),
            (
                "unit",
                cl.fac.get_storage_unit(authed(tok, pb::GetStorageUnitRequest { id: id(&two.cua) })).await.map(drop),
            ),
            (
                "shipment",
                cl.stock.get_shipment(authed(tok, pb::GetShipmentRequest { id: id(&two.shipment) })).await.map(drop),
            ),
            ("alert", cl.alert.get_alert(authed(tok, pb::GetAlertRequest { id: id(&two.alert) })).await.map(drop)),
            ("device", cl.tel.get_device(authed(tok, pb::GetDeviceRequest { id: id(&two.dev) })).await.map(drop)),
        ];
        for (kind, r) in got {
            let code = r.map_err(|e| e.code());
            assert_eq!(code, Err(Code::PermissionDenied), "a {what} {kind} for the district officer");
        }
    }
}
