//! The server's bounds (README, *Limits*): request size, page size, concurrent calls and alert
//! streams, and the size of a form post; each is refused cleanly and the server keeps serving.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use tonic::Code;
use vaxtrace_proto::v1 as pb;
use vaxtrace_proto::v1::admin_service_client::AdminServiceClient;
use vaxtrace_proto::v1::alert_service_client::AlertServiceClient;
use vaxtrace_proto::v1::facility_service_client::FacilityServiceClient;
use vaxtrace_server::limits::Limits;
use vaxtrace_tests::web::Web;
use vaxtrace_tests::world::{receive, ship, token, world};
use vaxtrace_tests::{TestDb, TestServer, authed, reason};

/// Retries `f` until it succeeds, for the release of a place that happens when the server notices
/// a closed stream (liveness only: the deadline is generous).
async fn eventually<T>(what: &str, mut f: impl AsyncFnMut() -> Result<T, tonic::Status>) -> T {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        match f().await {
            Ok(v) => return v,
            Err(e) => {
                assert_eq!(e.code(), Code::ResourceExhausted, "{what}: {e:?}");
                assert!(tokio::time::Instant::now() < deadline, "{what}: still refused after 30 s");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

#[tokio::test]
async fn an_oversized_request_is_refused_and_the_server_keeps_serving() {
    let srv = TestServer::start(TestDb::Sqlite).await;
    let ch = srv.channel().await;
    let mut fac = FacilityServiceClient::new(ch.clone());
    let mut adm = AdminServiceClient::new(ch);
    let a = srv.admin_token.clone();
    let max = vaxtrace_server::grpc::MAX_REQUEST_BYTES;
    let big = pb::ListFacilitiesRequest { name_contains: "x".repeat(max + 1), ..Default::default() };
    let e = fac.list_facilities(authed(&a, big)).await.unwrap_err();
    assert_eq!(e.code(), Code::OutOfRange, "{e:?}");
    assert!(e.message().contains("too large"), "{}", e.message());
    // Just under the bound the message is decoded and judged on its content.
    let under = pb::ListFacilitiesRequest { name_contains: "x".repeat(max - 64), ..Default::default() };
    let e = fac.list_facilities(authed(&a, under)).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    assert!(e.message().contains("name_contains"), "{}", e.message());
    // The same connection still serves.
    adm.who_am_i(authed(&a, pb::WhoAmIRequest {})).await.unwrap();
    srv.stop().await;
}

#[tokio::test]
async fn page_sizes_are_clamped_and_negative_ones_refused() {
    for db in TestDb::all() {
        let srv = TestServer::start(db).await;
        let ch = srv.channel().await;
        let mut fac = FacilityServiceClient::new(ch.clone());
        let a = srv.admin_token.clone();
        let mut mk = async |parent: &str, kind: pb::FacilityKind, code: String| {
            let f = pb::Facility {
                parent_id: parent.into(),
                kind: kind as i32,
                name: code.clone(),
                code,
                ..Default::default()
            };
            let r = pb::CreateFacilityRequest { facility: Some(f), request_id: String::new() };
            fac.create_facility(authed(&a, r)).await.unwrap().into_inner().id
        };
        let n = mk("", pb::FacilityKind::NationalStore, "N".into()).await;
        for i in 0..1000 {
            mk(&n, pb::FacilityKind::StateStore, format!("S{i}")).await;
        }
        let mut fac = FacilityServiceClient::new(srv.channel().await);
        let list = async |fac: &mut FacilityServiceClient<_>, size: i32| {
            fac.list_facilities(authed(&a, pb::ListFacilitiesRequest { page_size: size, ..Default::default() })).await
        };
        let huge = list(&mut fac, 1_000_000).await.unwrap().into_inner();
        assert_eq!(huge.facilities.len(), 1000, "{}: the maximum page size is 1000", srv.db.name());
        assert!(!huge.next_page_token.is_empty(), "{}: the 1001st facility is on the next page", srv.db.name());
        assert_eq!(list(&mut fac, 0).await.unwrap().into_inner().facilities.len(), 100, "the default page size");

        // Every paged RPC refuses a negative page size, naming the field.
        let (w, u) = (pb::ListWebhooksRequest { page_size: -1, ..Default::default() }, n.clone());
        let mut alerts = AlertServiceClient::new(srv.channel().await);
        let mut adm = AdminServiceClient::new(srv.channel().await);
        let mut stock = vaxtrace_proto::v1::stock_service_client::StockServiceClient::new(srv.channel().await);
        let mut cat = vaxtrace_proto::v1::catalog_service_client::CatalogServiceClient::new(srv.channel().await);
        let mut tel = vaxtrace_proto::v1::telemetry_service_client::TelemetryServiceClient::new(srv.channel().await);
        let mut rep = vaxtrace_proto::v1::report_service_client::ReportServiceClient::new(srv.channel().await);
        let unit = {
            let s = pb::StorageUnit {
                facility_id: u,
                kind: 1,
                name: "U".into(),
                temperature_profile: 1,
                ..Default::default()
            };
            let r = pb::CreateStorageUnitRequest { storage_unit: Some(s), request_id: String::new() };
            fac.create_storage_unit(authed(&a, r)).await.unwrap().into_inner().id
        };
        let neg = -1;
        let results: Vec<(&str, Result<(), tonic::Status>)> = vec![
            ("ListFacilities", list(&mut fac, neg).await.map(drop)),
            (
                "ListStorageUnits",
                fac.list_storage_units(authed(
                    &a,
                    pb::ListStorageUnitsRequest { page_size: neg, ..Default::default() },
                ))
                .await
                .map(drop),
            ),
            (
                "ListProducts",
                cat.list_products(authed(&a, pb::ListProductsRequest { page_size: neg, ..Default::default() }))
                    .await
                    .map(drop),
            ),
            (
                "ListLots",
                cat.list_lots(authed(&a, pb::ListLotsRequest { page_size: neg, ..Default::default() })).await.map(drop),
            ),
            (
                "ListTokens",
                adm.list_tokens(authed(&a, pb::ListTokensRequest { page_size: neg, ..Default::default() }))
                    .await
                    .map(drop),
            ),
            (
                "ListShipments",
                stock
                    .list_shipments(authed(&a, pb::ListShipmentsRequest { page_size: neg, ..Default::default() }))
                    .await
                    .map(drop),
            ),
            (
                "ListBalances",
                stock
                    .list_balances(authed(&a, pb::ListBalancesRequest { page_size: neg, ..Default::default() }))
                    .await
                    .map(drop),
            ),
            (
                "ListLedgerEntries",
                stock
                    .list_ledger_entries(authed(
                        &a,
                        pb::ListLedgerEntriesRequest { page_size: neg, ..Default::default() },
                    ))
                    .await
                    .map(drop),
            ),
            (
                "ListStockPolicies",
                stock
                    .list_stock_policies(authed(
                        &a,
                        pb::ListStockPoliciesRequest { page_size: neg, ..Default::default() },
                    ))
                    .await
                    .map(drop),
            ),
            (
                "ListExposures",
                stock
                    .list_exposures(authed(&a, pb::ListExposuresRequest { page_size: neg, ..Default::default() }))
                    .await
                    .map(drop),
            ),
            (
                "ListAlerts",
                alerts
                    .list_alerts(authed(&a, pb::ListAlertsRequest { page_size: neg, ..Default::default() }))
                    .await
                    .map(drop),
            ),
            ("ListWebhooks", alerts.list_webhooks(authed(&a, w)).await.map(drop)),
            (
                "ListDevices",
                tel.list_devices(authed(&a, pb::ListDevicesRequest { page_size: neg, ..Default::default() }))
                    .await
                    .map(drop),
            ),
            (
                "ListReadings",
                tel.list_readings(authed(
                    &a,
                    pb::ListReadingsRequest {
                        page_size: neg,
                        storage_unit_id: unit,
                        start_time: Some(prost_types::Timestamp { seconds: 1_700_000_000, nanos: 0 }),
                        end_time: Some(prost_types::Timestamp { seconds: 1_700_003_600, nanos: 0 }),
                        ..Default::default()
                    },
                ))
                .await
                .map(drop),
            ),
            (
                "GetLatestReadings",
                tel.get_latest_readings(authed(
                    &a,
                    pb::GetLatestReadingsRequest { page_size: neg, ..Default::default() },
                ))
                .await
                .map(drop),
            ),
            (
                "StockOnHandReport",
                rep.stock_on_hand_report(authed(
                    &a,
                    pb::StockOnHandReportRequest { page_size: neg, ..Default::default() },
                ))
                .await
                .map(drop),
            ),
            (
                "WastageReport",
                rep.wastage_report(authed(
                    &a,
                    pb::WastageReportRequest {
                        page_size: neg,
                        start_date: Some(pb::Date { year: 2026, month: 1, day: 1 }),
                        end_date: Some(pb::Date { year: 2026, month: 2, day: 1 }),
                        ..Default::default()
                    },
                ))
                .await
                .map(drop),
            ),
            (
                "ExpiryRiskReport",
                rep.expiry_risk_report(authed(
                    &a,
                    pb::ExpiryRiskReportRequest { page_size: neg, within_days: 90, ..Default::default() },
                ))
                .await
                .map(drop),
            ),
        ];
        for (rpc, r) in results {
            let e = r.expect_err(rpc);
            assert_eq!(e.code(), Code::InvalidArgument, "{} {rpc}: {e:?}", srv.db.name());
            assert!(e.message().contains("page_size"), "{} {rpc}: {}", srv.db.name(), e.message());
        }
        srv.stop().await;
    }
}

async fn watch(
    alerts: &mut AlertServiceClient<tonic::transport::Channel>,
    tok: &str,
) -> Result<tonic::Streaming<pb::AlertEvent>, tonic::Status> {
    alerts.watch_alerts(authed(tok, pb::WatchAlertsRequest::default())).await.map(|r| r.into_inner())
}

#[tokio::test]
async fn alert_streams_are_capped_per_token_and_per_server() {
    let limits = Limits { max_concurrent_calls: 64, max_watch_streams_per_token: 2, max_watch_streams: 3 };
    let srv = TestServer::start_with_limits(TestDb::Sqlite, limits).await;
    let a = srv.admin_token.clone();
    let mut alerts = AlertServiceClient::new(srv.channel().await);
    let b = token(&srv, &a, pb::Role::NationalOfficer, "").await;
    let c = token(&srv, &a, pb::Role::NationalOfficer, "").await;

    let first = watch(&mut alerts, &a).await.unwrap();
    let _second = watch(&mut alerts, &a).await.unwrap();
    let e = watch(&mut alerts, &a).await.unwrap_err();
    assert_eq!((e.code(), reason(&e).as_str()), (Code::ResourceExhausted, "TOO_MANY_STREAMS"), "{e:?}");
    assert!(e.message().contains("close one"), "{}", e.message());
    // Another token still has room, up to the server's bound.
    let _third = watch(&mut alerts, &b).await.unwrap();
    let e = watch(&mut alerts, &c).await.unwrap_err();
    assert_eq!((e.code(), reason(&e).as_str()), (Code::ResourceExhausted, "TOO_MANY_STREAMS"), "{e:?}");
    // Unary calls are not affected.
    AdminServiceClient::new(srv.channel().await).who_am_i(authed(&c, pb::WhoAmIRequest {})).await.unwrap();
    // Closing a stream frees its place.
    drop(first);
    eventually("a stream after one closed", async || watch(&mut alerts, &c).await).await;
    srv.stop().await;
}

#[tokio::test]
async fn calls_beyond_the_concurrency_bound_are_refused_until_one_ends() {
    let limits = Limits { max_concurrent_calls: 3, max_watch_streams_per_token: 10, max_watch_streams: 10 };
    let srv = TestServer::start_with_limits(TestDb::Sqlite, limits).await;
    let a = srv.admin_token.clone();
    let mut alerts = AlertServiceClient::new(srv.channel().await);
    let mut adm = AdminServiceClient::new(srv.channel().await);
    // Below the bound calls come and go.
    for _ in 0..10 {
        adm.who_am_i(authed(&a, pb::WhoAmIRequest {})).await.unwrap();
    }
    // An open stream holds its place until it ends: three fill the server.
    let mut open = Vec::new();
    for _ in 0..3 {
        open.push(watch(&mut alerts, &a).await.unwrap());
    }
    let e = adm.who_am_i(authed(&a, pb::WhoAmIRequest {})).await.unwrap_err();
    assert_eq!(e.code(), Code::ResourceExhausted, "{e:?}");
    assert!(e.message().contains("calls in progress"), "{}", e.message());
    assert_eq!(watch(&mut alerts, &a).await.unwrap_err().code(), Code::ResourceExhausted);
    // Plain HTTP is not counted.
    let health = Web::new(srv.addr).get("/healthz").await;
    assert_eq!(health.status, 200);
    open.pop();
    eventually("a call after a stream ended", async || adm.who_am_i(authed(&a, pb::WhoAmIRequest {})).await).await;
    srv.stop().await;
}

#[tokio::test]
async fn an_oversized_form_is_refused_with_413_and_nothing_is_stored() {
    for db in TestDb::all() {
        let srv = TestServer::start(db).await;
        let name = srv.db.name();
        let mut w = world(&srv).await;
        let (nu1, n, d, du) = (w.nu1.clone(), w.n.clone(), w.d.clone(), w.du.clone());
        receive(&mut w, &nu1, 1, 100, "").await.unwrap();
        ship(&mut w, &n, &d, &du, 1, 50).await;
        let entries = async |w: &mut vaxtrace_tests::world::World| {
            let r = pb::ListLedgerEntriesRequest { page_size: 1000, ..Default::default() };
            w.stock.list_ledger_entries(authed(&w.tok, r)).await.unwrap().into_inner().entries.len()
        };
        let pad = "x".repeat(vaxtrace_server::limits::MAX_FORM_BYTES + 1);

        // Sign-in: refused before the token is read, so no session.
        let mut web = Web::new(srv.addr);
        let p = web.post("/signin", &[("token", srv.admin_token.as_str()), ("pad", pad.as_str())]).await;
        assert_eq!(p.status, 413, "{name}");
        assert!(p.header("set-cookie").is_empty(), "{name}: no session from a refused sign-in");

        let depot = token(&srv, &w.tok, pb::Role::DepotManager, &d).await;
        assert_eq!(web.sign_in(&depot).await.status / 100, 3, "{name}: signed in");
        let page = web.get("/desk/adjust").await;
        let form = page.body.split_once("action=\"/desk/adjust\"").map(|(_, r)| r.to_owned()).unwrap_or_default();
        let field = |name: &str| {
            let marker = format!("name=\"{name}\" value=\"");
            form.split_once(&marker).and_then(|(_, r)| r.split_once('"')).map(|(v, _)| v.to_owned()).unwrap_or_default()
        };
        let (csrf, rid) = (field("csrf"), field("request_id"));
        let stock = format!("{du}:{}", w.lots[1]);
        let mut fields = vec![
            ("csrf", csrf.as_str()),
            ("request_id", rid.as_str()),
            ("facility", d.as_str()),
            ("stock", stock.as_str()),
            ("reason", "5"),
            ("direction", "-"),
            ("vials", "2"),
            ("comment", "dropped a box"),
            ("pad", pad.as_str()),
        ];
        let before = entries(&mut w).await;
        let p = web.post("/desk/adjust", &fields).await;
        assert_eq!(p.status, 413, "{name}");
        assert_eq!(entries(&mut w).await, before, "{name}: nothing stored");
        // The same form without the padding is accepted: the size alone was refused.
        fields.pop();
        let p = web.post("/desk/adjust", &fields).await;
        assert_eq!(p.status, 200, "{name}: {}", p.body);
        assert_eq!(entries(&mut w).await, before + 1, "{name}");
        srv.stop().await;
    }
}
