//! The stock desk, on both engines: resubmitted forms act once, refused forms come back filled in,
//! scope and anti-forgery over plain HTTP; and a depot day in headless Chromium at phone size — a
//! district store ships with the EEFO suggestion, a cold-chain point receives it with one
//! discrepancy, issues to a session site and files the session report, whose wastage the desk
//! shows exactly as `ReportService` computes it; a form filled with the link down is kept in the
//! browser and sent once the link returns.
#![allow(clippy::unwrap_used)]

use chrono::{Datelike as _, Utc};
use vaxtrace_proto::v1 as pb;
use vaxtrace_tests::browser::Browser;
use vaxtrace_tests::web::{Page, Web};
use vaxtrace_tests::world::{World, check_ledger, receive, ship, token, world};
use vaxtrace_tests::{TestDb, TestServer, authed};

/// GTIN of the test product's packs (valid check digit).
const GTIN: &str = "09506000134352";
/// Pages must stay small for a slow rural link.
const PAGE_LIMIT: usize = 100_000;

/// A world whose district store D holds 100 vials of A1 (2031) and 50 of B2 (2027) in DU, and
/// whose product packs carry a GTIN.
async fn stocked(srv: &TestServer) -> World {
    let mut w = world(srv).await;
    let (nu1, n, d, du) = (w.nu1.clone(), w.n.clone(), w.d.clone(), w.du.clone());
    receive(&mut w, &nu1, 0, 100, "").await.unwrap();
    receive(&mut w, &nu1, 1, 50, "").await.unwrap();
    ship(&mut w, &n, &d, &du, 0, 100).await;
    ship(&mut w, &n, &d, &du, 1, 50).await;
    let mut cat = pb::catalog_service_client::CatalogServiceClient::new(srv.channel().await);
    let mut p =
        cat.get_product(authed(&w.tok, pb::GetProductRequest { id: w.product.clone() })).await.unwrap().into_inner();
    p.gtins = vec![GTIN.into()];
    cat.update_product(authed(
        &w.tok,
        pb::UpdateProductRequest { product: Some(p), update_mask: vec!["gtins".into()], request_id: String::new() },
    ))
    .await
    .unwrap();
    w
}

async fn entries(w: &mut World) -> Vec<pb::LedgerEntry> {
    let r = pb::ListLedgerEntriesRequest { page_size: 1000, ..Default::default() };
    w.stock.list_ledger_entries(authed(&w.tok, r)).await.unwrap().into_inner().entries
}

async fn balance(w: &mut World, unit: &str, lot: usize) -> i64 {
    let r = pb::ListBalancesRequest {
        storage_unit_id: unit.into(),
        lot_id: w.lots[lot].clone(),
        page_size: 10,
        ..Default::default()
    };
    w.stock.list_balances(authed(&w.tok, r)).await.unwrap().into_inner().balances.first().map_or(0, |b| b.vials)
}

/// The hidden fields of the first form posting to `action`.
fn keys(p: &Page, action: &str) -> (String, String) {
    let form = p.body.split_once(&format!("action=\"{action}\"")).map(|(_, r)| r).unwrap_or_default();
    let field = |name: &str| {
        let marker = format!("name=\"{name}\" value=\"");
        form.split_once(&marker).and_then(|(_, r)| r.split_once('"')).map(|(v, _)| v.to_owned()).unwrap_or_default()
    };
    (field("csrf"), field("request_id"))
}

#[tokio::test]
async fn desk_forms_act_once_and_keep_what_was_typed() {
    for db in TestDb::all() {
        let srv = TestServer::start(db).await;
        let name = srv.db.name();
        let mut w = stocked(&srv).await;
        let dm = token(&srv, &w.tok, pb::Role::DepotManager, &w.d).await;
        let (du, d, product) = (w.du.clone(), w.d.clone(), w.product.clone());
        let mut web = Web::new(srv.addr);
        web.sign_in(&dm).await;

        // A depot manager starts at the desk of its own store.
        assert_eq!(web.get("/").await.header("location"), "/desk", "{name}");
        let home = web.get("/desk").await;
        assert_eq!(home.status, 200, "{name}: {}", home.body);
        assert!(home.body.contains(">A1<") && home.body.contains(">B2<"), "{name}: lots on hand");
        assert!(home.body.len() < PAGE_LIMIT, "{name}: {} bytes", home.body.len());
        // Another store's desk is outside the scope.
        assert_eq!(web.get(&format!("/desk?facility={}", w.n)).await.status, 403, "{name}");
        // A page start past the end (or at the largest number) is an empty page, not a panic.
        for from in ["150", &usize::MAX.to_string()] {
            let p = web.get(&format!("/desk?from={from}")).await;
            assert_eq!(p.status, 200, "{name}: from={from}: {}", p.body);
            let p = web.get(&format!("/desk/count?from={from}")).await;
            assert_eq!(p.status, 200, "{name}: count from={from}: {}", p.body);
        }

        // A session report whose site is not one the form offers (here the cold-chain point
        // below, a facility in scope but no session site of this store) is refused, with the
        // value kept and marked, and nothing is filed.
        let page = web.get("/desk/session").await;
        let (csrf, rid) = keys(&page, "/desk/session");
        let today = Utc::now().date_naive().to_string();
        let a1 = format!("{du}:{}", w.lots[0]);
        let c = w.c.clone();
        let elsewhere = [
            ("csrf", csrf.as_str()),
            ("request_id", rid.as_str()),
            ("facility", d.as_str()),
            ("site", c.as_str()),
            ("session_date", today.as_str()),
            ("storage_unit_id", du.as_str()),
            ("lines[0].stock", a1.as_str()),
            ("lines[0].vials_issued", "3"),
            ("lines[0].vials_opened", "3"),
            ("lines[0].doses_administered", "25"),
        ];
        let before = entries(&mut w).await.len();
        let p = web.post("/desk/session", &elsewhere).await;
        assert_eq!(p.status, 400, "{name}: {}", p.body);
        assert!(p.body.contains(r#"id="form-error""#), "{name}");
        assert!(
            p.body.contains(r#"<select id="site" name="site" aria-invalid="true""#),
            "{name}: the site is marked: {}",
            p.body
        );
        assert!(p.body.contains(&format!(r#"<option value="{c}" selected>"#)), "{name}: the site is kept as sent");
        assert!(p.body.contains(r#"value="25""#), "{name}: the figures are kept");
        assert_eq!(entries(&mut w).await.len(), before, "{name}: nothing filed");
        assert_eq!(balance(&mut w, &du, 0).await, 100, "{name}");

        // An adjustment: sent twice with the same request_id, it is written once and both
        // answers show the same result.
        let page = web.get("/desk/adjust").await;
        assert!(page.body.len() < PAGE_LIMIT, "{name}");
        let (csrf, rid) = keys(&page, "/desk/adjust");
        assert!(!csrf.is_empty() && !rid.is_empty(), "{name}");
        let stock = format!("{}:{}", w.du, w.lots[1]);
        let form = [
            ("csrf", csrf.as_str()),
            ("request_id", rid.as_str()),
            ("facility", d.as_str()),
            ("stock", stock.as_str()),
            ("reason", "5"),
            ("direction", "-"),
            ("vials", "2"),
            ("comment", "dropped a box"),
        ];
        let before = entries(&mut w).await.len();
        let first = web.post("/desk/adjust", &form).await;
        assert_eq!(first.status, 200, "{name}: {}", first.body);
        assert!(first.body.contains("notice ok"), "{name}");
        assert_eq!(entries(&mut w).await.len(), before + 1, "{name}");
        assert_eq!(balance(&mut w, &du, 1).await, 48, "{name}");
        let again = web.post("/desk/adjust", &form).await;
        assert_eq!(again.status, 200, "{name}: a resubmitted form is answered: {}", again.body);
        assert!(again.body.contains("notice ok") && again.body.contains("<strong>-2 "), "{name}");
        assert_eq!(entries(&mut w).await.len(), before + 1, "{name}: the same request_id acts once");
        assert_eq!(balance(&mut w, &du, 1).await, 48, "{name}");

        // A refused form comes back with what was typed, the field marked, nothing written.
        let (csrf, rid) = keys(&web.get("/desk/adjust").await, "/desk/adjust");
        let lost = [
            ("csrf", csrf.as_str()),
            ("request_id", rid.as_str()),
            ("facility", d.as_str()),
            ("stock", stock.as_str()),
            ("reason", "9"),
            ("direction", "-"),
            ("vials", "7"),
            ("comment", ""),
        ];
        let p = web.post("/desk/adjust", &lost).await;
        assert_eq!(p.status, 400, "{name}: {}", p.body);
        assert!(p.body.contains("id=\"form-error\""), "{name}");
        assert!(
            p.body.contains(r#"name="vials" type="number" inputmode="numeric" min="0" step="1" value="7""#),
            "{name}"
        );
        assert!(p.body.contains(r#"<option value="9" selected>"#), "{name}: the reason is kept");
        assert!(p.body.contains(r#"name="comment" maxlength="1000" rows="2" aria-invalid="true""#), "{name}");
        assert_ne!(keys(&p, "/desk/adjust").1, rid, "{name}: a refused form comes back with a new request_id");
        assert_eq!(entries(&mut w).await.len(), before + 1, "{name}");
        // A typed number that is not one is refused the same way.
        let mut bad = lost;
        bad[6] = ("vials", "seven");
        bad[7] = ("comment", "fell");
        let p = web.post("/desk/adjust", &bad).await;
        assert_eq!(p.status, 400, "{name}");
        assert!(p.body.contains("value=\"seven\"") && p.body.contains(r#"name="vials" type="number" inputmode="numeric" min="0" step="1" value="seven" required aria-invalid="true""#), "{name}");

        // A form without this session's anti-forgery value changes nothing.
        let mut forged = form;
        forged[0] = ("csrf", "forged");
        forged[1] = ("request_id", "another");
        assert_eq!(web.post("/desk/adjust", &forged).await.status, 403, "{name}");
        assert_eq!(entries(&mut w).await.len(), before + 1, "{name}");

        // Issue and ship: the suggestion's form creates and dispatches one shipment, however
        // often it is sent.
        let c = w.c.clone();
        let page = web.get(&format!("/desk/issue?to={c}&product={}&doses=100", w.product)).await;
        assert_eq!(page.status, 200, "{name}: {}", page.body);
        assert!(page.body.len() < PAGE_LIMIT, "{name}");
        let (csrf, rid) = keys(&page, "/desk/issue");
        let b2 = format!("{}:{}", w.du, w.lots[1]);
        let a1 = format!("{}:{}", w.du, w.lots[0]);
        let ship_form = [
            ("csrf", csrf.as_str()),
            ("request_id", rid.as_str()),
            ("facility", d.as_str()),
            ("to", c.as_str()),
            ("product", product.as_str()),
            ("doses", "100"),
            ("lines[0].stock", b2.as_str()),
            ("lines[0].vials", "10"),
            ("lines[1].stock", a1.as_str()),
            ("lines[1].vials", "0"),
            ("reference", "IV-1"),
            ("expected_arrival", ""),
            ("comment", ""),
        ];
        for attempt in 0..2 {
            let p = web.post("/desk/issue", &ship_form).await;
            assert_eq!(p.status, 200, "{name} #{attempt}: {}", p.body);
            assert!(p.body.contains("notice ok"), "{name} #{attempt}");
        }
        let r =
            pb::ListShipmentsRequest { facility_id: w.d.clone(), direction: 2, page_size: 10, ..Default::default() };
        let out = w.stock.list_shipments(authed(&w.tok, r)).await.unwrap().into_inner().shipments;
        assert_eq!(out.len(), 1, "{name}: one shipment");
        assert_eq!(out[0].state, pb::ShipmentState::Dispatched as i32, "{name}");
        assert_eq!(balance(&mut w, &du, 1).await, 38, "{name}: dispatched once");

        // More vials than the store holds: refused, the form comes back with the vials typed.
        let page = web.get(&format!("/desk/issue?to={c}&product={}&doses=100", w.product)).await;
        let (csrf, rid) = keys(&page, "/desk/issue");
        let mut too_many = ship_form;
        too_many[0] = ("csrf", csrf.as_str());
        too_many[1] = ("request_id", rid.as_str());
        too_many[7] = ("lines[0].vials", "999");
        let p = web.post("/desk/issue", &too_many).await;
        assert!(p.status >= 400, "{name}: {}", p.body);
        assert!(p.body.contains("value=\"999\""), "{name}: the typed vials are kept");
        let r = pb::ListShipmentsRequest {
            facility_id: d.clone(),
            direction: 2,
            states: vec![pb::ShipmentState::Draft as i32],
            page_size: 10,
            ..Default::default()
        };
        let drafts = w.stock.list_shipments(authed(&w.tok, r)).await.unwrap().into_inner().shipments;
        assert!(drafts.is_empty(), "{name}: a refused dispatch leaves no draft behind");
        assert_eq!(balance(&mut w, &du, 1).await, 38, "{name}");

        // A draft made elsewhere (over gRPC) waits on the home page; dispatched from its page
        // twice, it leaves once; cancelled, its vials come back.
        let req = pb::CreateShipmentRequest {
            from_facility_id: d.clone(),
            to_facility_id: c.clone(),
            lines: vec![pb::CreateShipmentLine {
                lot_ref: Some(pb::create_shipment_line::LotRef::LotId(w.lots[0].clone())),
                vials: 4,
                ..Default::default()
            }],
            ..Default::default()
        };
        let draft = w.stock.create_shipment(authed(&w.tok, req)).await.unwrap().into_inner().id;
        let home = web.get("/desk").await;
        assert!(home.body.contains(&format!("data-id=\"{draft}\"")) && home.body.contains("Draft"), "{name}");
        let page = web.get(&format!("/desk/shipments/{draft}")).await;
        assert_eq!(page.status, 200, "{name}");
        let action = format!("/desk/shipments/{draft}/dispatch");
        let (csrf, rid) = keys(&page, &action);
        let go = [("csrf", csrf.as_str()), ("request_id", rid.as_str()), ("facility", d.as_str())];
        for _ in 0..2 {
            let p = web.post(&action, &go).await;
            assert_eq!(p.status, 200, "{name}: {}", p.body);
        }
        assert_eq!(balance(&mut w, &du, 0).await, 96, "{name}: dispatched once");
        let action = format!("/desk/shipments/{draft}/cancel");
        let page = web.get(&format!("/desk/shipments/{draft}")).await;
        let (csrf, rid) = keys(&page, &action);
        let stop = [
            ("csrf", csrf.as_str()),
            ("request_id", rid.as_str()),
            ("facility", d.as_str()),
            ("comment", "wrong store"),
        ];
        let p = web.post(&action, &stop).await;
        assert_eq!(p.status, 200, "{name}: {}", p.body);
        assert_eq!(balance(&mut w, &du, 0).await, 100, "{name}: back in stock");

        check_ledger(&mut w, name).await;
        srv.stop().await;
    }
}

/// "Below minimum" on the desk is the store's own usable stock against its policy, as the alert
/// engine counts it: stock already sent down to a cold-chain point does not keep the district
/// store off the list.
#[tokio::test]
async fn below_minimum_counts_the_stores_own_stock() {
    for db in TestDb::all() {
        let srv = TestServer::start(db).await;
        let name = srv.db.name();
        let mut w = stocked(&srv).await;
        let (d, c, cu, product) = (w.d.clone(), w.c.clone(), w.cu.clone(), w.product.clone());
        // D keeps 50 vials of B2 (500 doses); 100 vials of A1 (1,000 doses) go down to C.
        ship(&mut w, &d, &c, &cu, 0, 100).await;
        let policy = pb::StockPolicy {
            facility_id: d.clone(),
            product_id: product.clone(),
            min_doses: 1000,
            max_doses: 3000,
            ..Default::default()
        };
        let r = pb::SetStockPolicyRequest { policy: Some(policy), request_id: String::new() };
        w.stock.set_stock_policy(authed(&w.tok, r)).await.unwrap();
        let dm = token(&srv, &w.tok, pb::Role::DepotManager, &d).await;
        let mut web = Web::new(srv.addr);
        web.sign_in(&dm).await;
        let home = web.get("/desk").await;
        assert_eq!(home.status, 200, "{name}: {}", home.body);
        let list = home.body.split_once(r#"<ul class="plain below-min">"#).map(|(_, r)| r).unwrap_or_default();
        let list = list.split_once("</ul>").map(|(l, _)| l).unwrap_or_default();
        assert!(list.contains(": 500 ") && list.contains("min 1,000"), "{name}: {list:?} in {}", home.body);
        srv.stop().await;
    }
}

async fn balances(w: &mut World, unit: &str) -> Vec<pb::Balance> {
    let r = pb::ListBalancesRequest { storage_unit_id: unit.into(), page_size: 100, ..Default::default() };
    w.stock.list_balances(authed(&w.tok, r)).await.unwrap().into_inner().balances
}

#[tokio::test]
async fn store_pages_book_receipts_counts_transfers_and_sessions() {
    for db in TestDb::all() {
        let srv = TestServer::start(db).await;
        let name = srv.db.name();
        let mut w = stocked(&srv).await;
        let (n, nu1, nu2, d, du) = (w.n.clone(), w.nu1.clone(), w.nu2.clone(), w.d.clone(), w.du.clone());
        let product = w.product.clone();
        let mut web = Web::new(srv.addr);
        web.sign_in(&w.tok).await;

        // An admin picks the store first.
        let p = web.get("/desk").await;
        assert_eq!(p.status, 200, "{name}");
        assert!(p.body.contains(r#"<select id="facility" name="facility""#), "{name}: the picker");
        let p = web.get(&format!("/desk?facility={n}")).await;
        assert!(p.body.contains("/desk/supplier?facility="), "{name}: a national store books supplier deliveries");

        // A supplier delivery: one pack scanned (a new lot), one lot typed.
        let page = web.get(&format!("/desk/supplier?facility={n}")).await;
        assert!(page.body.len() < PAGE_LIMIT, "{name}");
        let (csrf, rid) = keys(&page, "/desk/supplier");
        let scan = format!("(01){GTIN}(17)291231(10)NEW-9");
        let mut delivery = vec![
            ("csrf", csrf.as_str()),
            ("request_id", rid.as_str()),
            ("facility", n.as_str()),
            ("storage_unit_id", nu2.as_str()),
            ("supplier", "UNICEF SD"),
            ("reference", "PO-7"),
            ("lines[0].scan", scan.as_str()),
            ("lines[0].vials", "20"),
            ("lines[0].vvm_stage", "1"),
            ("lines[1].scan", ""),
            ("lines[1].product", product.as_str()),
            ("lines[1].lot_number", "TYPED-1"),
            ("lines[1].expiry", ""),
            ("lines[1].vials", "5"),
            ("lines[1].vvm_stage", "0"),
            ("lines[2].scan", ""),
            ("lines[2].lot_number", ""),
            ("lines[2].vials", ""),
            ("comment", ""),
        ];
        // A typed lot without its expiry is refused; the line is marked and nothing is booked.
        let p = web.post("/desk/supplier", &delivery).await;
        assert_eq!(p.status, 400, "{name}: {}", p.body);
        assert!(p.body.contains(r#"name="lines[1].expiry" type="date" value="" aria-invalid="true""#), "{name}");
        assert!(p.body.contains(&format!("value=\"{scan}\"")), "{name}: the scan is kept");
        assert!(balances(&mut w, &nu2).await.is_empty(), "{name}");
        let (csrf, rid) = keys(&p, "/desk/supplier");
        delivery[0] = ("csrf", csrf.as_str());
        delivery[1] = ("request_id", rid.as_str());
        delivery[12] = ("lines[1].expiry", "2030-01-31");
        for attempt in 0..2 {
            let p = web.post("/desk/supplier", &delivery).await;
            assert_eq!(p.status, 200, "{name} #{attempt}: {}", p.body);
            assert!(p.body.contains("NEW-9") && p.body.contains("TYPED-1"), "{name}");
        }
        let got = balances(&mut w, &nu2).await;
        let mut lots: Vec<(String, i64)> = got.iter().map(|b| (b.lot_number.clone(), b.vials)).collect();
        lots.sort();
        assert_eq!(lots, vec![("NEW-9".into(), 20), ("TYPED-1".into(), 5)], "{name}: booked once");
        let new9 = got.iter().find(|b| b.lot_number == "NEW-9").unwrap().lot_id.clone();
        let typed = got.iter().find(|b| b.lot_number == "TYPED-1").unwrap().lot_id.clone();

        // A transfer between the store's units, sent twice.
        let page = web.get(&format!("/desk/transfer?facility={n}")).await;
        let (csrf, rid) = keys(&page, "/desk/transfer");
        let from = format!("{nu2}:{new9}");
        let move_form = [
            ("csrf", csrf.as_str()),
            ("request_id", rid.as_str()),
            ("facility", n.as_str()),
            ("stock", from.as_str()),
            ("scan", ""),
            ("unit", nu2.as_str()),
            ("to", nu1.as_str()),
            ("vials", "5"),
            ("comment", ""),
        ];
        for _ in 0..2 {
            let p = web.post("/desk/transfer", &move_form).await;
            assert_eq!(p.status, 200, "{name}: {}", p.body);
        }
        assert_eq!(balances(&mut w, &nu1).await.iter().map(|b| b.vials).sum::<i64>(), 5, "{name}: moved once");

        // A count: one lot counted short, the others left blank (not counted).
        let page = web.get(&format!("/desk/count?facility={n}")).await;
        assert!(page.body.contains("TYPED-1") && page.body.len() < PAGE_LIMIT, "{name}");
        let (csrf, rid) = keys(&page, "/desk/count");
        let counted = format!("{nu2}:{typed}");
        let count_form = [
            ("csrf", csrf.as_str()),
            ("request_id", rid.as_str()),
            ("facility", n.as_str()),
            ("lines[0].stock", counted.as_str()),
            ("lines[0].counted_vials", "4"),
            ("lines[0].vvm_stage", "0"),
            ("lines[1].stock", from.as_str()),
            ("lines[1].counted_vials", ""),
            ("lines[1].vvm_stage", "0"),
            ("comment", "monthly count"),
        ];
        for _ in 0..2 {
            let p = web.post("/desk/count", &count_form).await;
            assert_eq!(p.status, 200, "{name}: {}", p.body);
            assert!(p.body.contains("-1 ⚠"), "{name}: the difference is shown");
        }
        let left: i64 = balances(&mut w, &nu2).await.iter().map(|b| b.vials).sum();
        assert_eq!(left, 15 + 4, "{name}: corrected once, other lots untouched");

        // A fixed session at the district store, filed twice: booked once.
        let page = web.get(&format!("/desk/session?facility={d}")).await;
        assert_eq!(page.status, 200, "{name}");
        let (csrf, rid) = keys(&page, "/desk/session");
        let today = Utc::now().date_naive().to_string();
        let a1 = format!("{du}:{}", w.lots[0]);
        let b2 = format!("{du}:{}", w.lots[1]);
        let session = [
            ("csrf", csrf.as_str()),
            ("request_id", rid.as_str()),
            ("facility", d.as_str()),
            ("site", d.as_str()),
            ("session_date", today.as_str()),
            ("storage_unit_id", du.as_str()),
            ("lines[0].stock", a1.as_str()),
            ("lines[0].vials_issued", "3"),
            ("lines[0].vials_opened", "3"),
            ("lines[0].doses_administered", "25"),
            // A lot the issue page handed over but the session did not need: no figures, not filed.
            ("lines[1].stock", b2.as_str()),
            ("lines[1].vials_issued", "0"),
            ("lines[2].stock", ""),
            ("lines[2].vials_issued", ""),
            ("comment", ""),
        ];
        let before = entries(&mut w).await.len();
        for _ in 0..2 {
            let p = web.post("/desk/session", &session).await;
            assert_eq!(p.status, 200, "{name}: {}", p.body);
            assert!(p.body.contains("data-issued=\"30\" data-given=\"25\""), "{name}");
        }
        assert_eq!(entries(&mut w).await.len(), before + 1, "{name}: one session issue entry");
        assert_eq!(balance(&mut w, &du, 0).await, 97, "{name}");
        assert_eq!(balance(&mut w, &du, 1).await, 50, "{name}: the empty line booked nothing");

        // A big store stays small on the wire: 150 lots in one unit are shown page by page.
        let lines = (0..150)
            .map(|i| pb::SupplierReceiptLine {
                lot_ref: Some(pb::supplier_receipt_line::LotRef::NewLot(pb::NewLot {
                    product_id: product.clone(),
                    lot_number: format!("BULK-{i:03}"),
                    manufacturer: "Serum Institute".into(),
                    expiry: Some(pb::Date { year: 2030, month: 1 + i % 12, day: 1 + i % 28 }),
                    ..Default::default()
                })),
                vials: 10 + i64::from(i),
                ..Default::default()
            })
            .collect();
        let r = pb::ReceiveFromSupplierRequest { storage_unit_id: nu1.clone(), lines, ..Default::default() };
        w.stock.receive_from_supplier(authed(&w.tok, r)).await.unwrap();
        let home = web.get(&format!("/desk?facility={n}")).await;
        assert!(home.body.len() < PAGE_LIMIT, "{name}: home {} bytes", home.body.len());
        assert!(home.body.contains("/desk?from=100&amp;facility="), "{name}: the rest is a page further");
        let count = web.get(&format!("/desk/count?facility={n}&unit={nu1}")).await;
        assert!(count.body.len() < PAGE_LIMIT, "{name}: count {} bytes", count.body.len());
        assert!(count.body.contains("from=50"), "{name}");
        assert!(!count.body.contains("name=\"complete\""), "{name}: a unit split over pages is not counted complete");
        let session = web.get(&format!("/desk/session?facility={n}")).await;
        assert!(session.body.len() < PAGE_LIMIT, "{name}: session {} bytes", session.body.len());

        check_ledger(&mut w, name).await;
        srv.stop().await;
    }
}

/// Sets a select's or input's value as a person would, and tells the page.
async fn set(b: &Browser, css: &str, value: &str) {
    b.find(css).await;
    let script = format!(
        "const e = document.querySelector({css:?}); e.value = {value:?}; e.dispatchEvent(new Event('change', {{bubbles: true}})); return e.value;"
    );
    assert_eq!(b.eval(&script).await, serde_json::json!(value), "{css}");
}

async fn small(b: &Browser, what: &str) {
    let n = b.source().await.len();
    assert!(n < PAGE_LIMIT, "{what}: {n} bytes");
}

async fn sign_in(b: &Browser, base: &str, token: &str) {
    b.goto(&format!("{base}/")).await;
    let field = b.wait_for("#token", 10).await;
    b.type_into(&field, token).await;
    b.click(&b.find("form button").await).await;
    b.wait_for("nav.actions", 10).await;
}

#[tokio::test]
async fn a_depot_day_in_chromium() {
    for db in TestDb::all() {
        let Some(b) = Browser::start("a_depot_day_in_chromium", 390, 844).await else {
            return;
        };
        let srv = TestServer::start(db).await;
        let name = srv.db.name();
        let base = format!("http://{}", srv.addr);
        let mut w = stocked(&srv).await;
        let (d, c, s, cu) = (w.d.clone(), w.c.clone(), w.s.clone(), w.cu.clone());
        let dm_d = token(&srv, &w.tok, pb::Role::DepotManager, &d).await;
        let dm_c = token(&srv, &w.tok, pb::Role::DepotManager, &c).await;
        let shot = |what: &str| format!("desk-{what}-{name}");
        b.phone(390, 844).await;

        // The district store's manager ships 600 doses to the cold-chain point, as suggested:
        // all of B2 (expires first), the rest from A1.
        sign_in(&b, &base, &dm_d).await;
        assert!(b.url().await.ends_with("/desk"), "{name}");
        small(&b, "home").await;
        b.screenshot(&shot("home-district")).await;
        b.click(&b.find("nav.actions a[href^='/desk/issue']").await).await;
        set(&b, "#to", &c).await;
        set(&b, "#product", &w.product).await;
        b.type_into(&b.find("#doses").await, "600").await;
        b.click(&b.find("form[action='/desk/issue'][method=get] button").await).await;
        b.wait_for("ol.eefo", 10).await;
        let order = b.eval("return [...document.querySelectorAll('ol.eefo li')].map(li => li.dataset.lot + ':' + li.dataset.reason);").await;
        assert_eq!(order, serde_json::json!(["B2:EarliestExpiry", "A1:EarliestExpiry"]), "{name}");
        let vials =
            b.eval("return [...document.querySelectorAll('ol.eefo input[type=number]')].map(i => i.value);").await;
        assert_eq!(vials, serde_json::json!(["50", "10"]), "{name}");
        small(&b, "suggestion").await;
        b.screenshot(&shot("issue-suggestion")).await;
        b.type_into(&b.find("#reference").await, "IV-2026-118").await;
        b.click(&b.find("form[action='/desk/issue'][method=post] button.big").await).await;
        b.wait_for(".notice.ok", 10).await;
        b.screenshot(&shot("shipped")).await;
        let r = pb::ListShipmentsRequest { facility_id: c.clone(), direction: 1, page_size: 10, ..Default::default() };
        let inbound = w.stock.list_shipments(authed(&w.tok, r)).await.unwrap().into_inner().shipments;
        assert_eq!(inbound.len(), 1, "{name}");
        assert_eq!(inbound[0].state, pb::ShipmentState::Dispatched as i32, "{name}");
        assert_eq!(inbound[0].total_doses, 600, "{name}");

        // The cold-chain point's manager receives it: the scanner finds A1's line; two vials of
        // B2 arrived broken.
        b.click(&b.find("form[action='/signout'] button").await).await;
        b.wait_for("#token", 10).await;
        sign_in(&b, &base, &dm_c).await;
        b.click(&b.find("nav.actions a[href^='/desk/receive']").await).await;
        b.click(&b.wait_for("li.shipment a.button", 10).await).await;
        b.wait_for("form[action$='/receive']", 10).await;
        let find = b.find("#find").await;
        b.type_into(&find, &format!("(01){GTIN}(17)310630(10)A1\n")).await;
        b.wait_for("fieldset.found[data-lot='A1']", 5).await;
        let line = b
            .eval("return [...document.querySelectorAll('fieldset[data-lot]')].findIndex(f => f.dataset.lot === 'B2');")
            .await;
        let i = line.as_i64().unwrap();
        let received = b.find(&format!("#lines-{i}--received_vials")).await;
        b.clear(&received).await;
        b.type_into(&received, "48").await;
        set(&b, &format!("#lines-{i}--discrepancy_reason"), "2").await;
        b.type_into(&b.find(&format!("#lines-{i}--comment")).await, "two vials cracked").await;
        small(&b, "receive").await;
        b.screenshot(&shot("receive")).await;
        b.click(&b.find("form[action$='/receive'] button.big").await).await;
        b.wait_for(".notice.ok", 10).await;
        assert!(
            b.source().await.contains("two vials cracked") || b.text(&b.find("main").await).await.contains("2"),
            "{name}"
        );
        b.screenshot(&shot("received")).await;
        let sh = pb::GetShipmentRequest { id: inbound[0].id.clone() };
        let sh = w.stock.get_shipment(authed(&w.tok, sh)).await.unwrap().into_inner();
        assert_eq!(sh.state, pb::ShipmentState::Received as i32, "{name}");
        let got: Vec<i64> = sh.lines.iter().map(|l| l.received_vials).collect();
        assert_eq!(got.iter().sum::<i64>(), 58, "{name}: {got:?}");
        let loss =
            entries(&mut w).await.into_iter().find(|e| e.kind == pb::LedgerEntryKind::TransitLoss as i32).unwrap();
        assert_eq!((loss.quantity_vials, loss.discrepancy_reason), (-2, 2), "{name}");
        assert_eq!(balance(&mut w, &cu, 1).await, 48, "{name}");

        // Issue to the session site with the EEFO suggestion; the report is filed after the
        // session: 10 vials out, 8 opened, 2 back unopened, 70 doses given.
        b.goto(&format!("{base}/desk/issue")).await;
        set(&b, "#to", &s).await;
        set(&b, "#product", &w.product).await;
        b.type_into(&b.find("#doses").await, "100").await;
        b.click(&b.find("form[action='/desk/issue'][method=get] button").await).await;
        b.wait_for("ol.eefo", 10).await;
        let first = b.eval("const li = document.querySelector('ol.eefo li'); return [li.dataset.lot, li.dataset.reason, li.querySelector('input[type=number]').value];").await;
        assert_eq!(first, serde_json::json!(["B2", "EarliestExpiry", "10"]), "{name}");
        b.screenshot(&shot("issue-to-site")).await;
        b.click(&b.find("form[action='/desk/session'] button.big").await).await;
        b.wait_for("form[action='/desk/session'][method=post]", 10).await;
        let stock = format!("{cu}:{}", w.lots[1]);
        let prefilled = b.eval("return [document.querySelector('#lines-0--stock').value, document.querySelector('#lines-0--vials_issued').value, document.querySelector('#site').value];").await;
        assert_eq!(prefilled, serde_json::json!([stock, "10", s]), "{name}");
        b.type_into(&b.find("#lines-0--vials_opened").await, "8").await;
        b.type_into(&b.find("#lines-0--unopened_vials_returned").await, "2").await;
        b.type_into(&b.find("#lines-0--doses_administered").await, "70").await;
        small(&b, "session form").await;
        b.screenshot(&shot("session-form")).await;
        b.click(&b.find("form[action='/desk/session'] button.big").await).await;
        b.wait_for(".notice.ok", 10).await;
        let shown = b.find("p.session-wastage").await;
        assert!(b.text(&shown).await.contains("12.5 %"), "{name}");
        b.screenshot(&shot("session-filed")).await;

        // The desk's wastage is the Stock issue's report, figure for figure.
        b.goto(&format!("{base}/desk")).await;
        let row = b.wait_for(&format!("table.wastage tr[data-product='{}']", w.product), 10).await;
        b.eval("document.querySelector('table.wastage').scrollIntoView(); return 0;").await;
        b.screenshot(&shot("home-wastage")).await;
        let today = Utc::now().date_naive();
        let mut rep = pb::report_service_client::ReportServiceClient::new(srv.channel().await);
        let rows = rep
            .wastage_report(authed(
                &w.tok,
                pb::WastageReportRequest {
                    facility_id: c.clone(),
                    product_id: w.product.clone(),
                    start_date: Some(pb::Date { year: today.year(), month: today.month() as i32, day: 1 }),
                    end_date: Some(pb::Date {
                        year: today.year(),
                        month: today.month() as i32,
                        day: today.day() as i32,
                    }),
                    ..Default::default()
                },
            ))
            .await
            .unwrap()
            .into_inner()
            .rows;
        assert_eq!(rows.len(), 1, "{name}: {rows:?}");
        let cell = |css: &'static str| {
            let b = &b;
            async move { b.text(&b.find(&format!("table.wastage tr[data-product] {css}")).await).await }
        };
        let _ = row;
        assert_eq!(cell("td.issued").await, rows[0].doses_issued.to_string(), "{name}");
        assert_eq!(cell("td.given").await, rows[0].doses_administered.to_string(), "{name}");
        let bp = b.eval("return document.querySelector('table.wastage td.rate').dataset.bp;").await;
        assert_eq!(bp, serde_json::json!(rows[0].wastage_rate_bp.unwrap().to_string()), "{name}");
        assert_eq!((rows[0].doses_issued, rows[0].doses_administered, rows[0].wastage_rate_bp), (80, 70, Some(1250)));

        // The link drops while an adjustment is filled in: the form stays as typed, says it was
        // not sent, waits in the browser, and goes (once) when the link returns.
        b.goto(&format!("{base}/desk/adjust")).await;
        set(&b, "#stock", &stock).await;
        set(&b, "#reason", "5").await;
        b.type_into(&b.find("#vials").await, "1").await;
        b.type_into(&b.find("#comment").await, "vial cracked in the fridge").await;
        b.eval(
            "window.__fetch = window.fetch; window.fetch = () => Promise.reject(new TypeError('offline')); return 0;",
        )
        .await;
        let before = entries(&mut w).await.len();
        b.click(&b.find("form[action='/desk/adjust'] button.big").await).await;
        b.wait_for("#queue-note.error", 5).await;
        assert_eq!(b.eval("return document.querySelector('#vials').value;").await, serde_json::json!("1"), "{name}");
        assert_eq!(b.eval("return JSON.parse(localStorage.getItem('vxt-queue')).length;").await, serde_json::json!(1));
        b.screenshot(&shot("offline-kept")).await;
        assert_eq!(entries(&mut w).await.len(), before, "{name}: nothing sent yet");
        // The link is back but a proxy answers 503 while the app restarts: the waiting form is
        // not dropped, and pressing the button keeps the page and the form as typed.
        b.eval(
            "window.fetch = () => Promise.resolve(new Response('<html><body><h1>503 Service Unavailable</h1></body></html>', {status: 503, headers: {'Content-Type': 'text/html'}})); window.dispatchEvent(new Event('online')); return 0;",
        )
        .await;
        let mut shown = String::new();
        for _ in 0..50 {
            shown = b
                .eval("return document.querySelector('#queue-note').textContent;")
                .await
                .as_str()
                .unwrap_or_default()
                .to_owned();
            if shown.ends_with("503") {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        assert!(shown.ends_with("503"), "{name}: {shown}");
        assert_eq!(b.eval("return JSON.parse(localStorage.getItem('vxt-queue')).length;").await, serde_json::json!(1));
        b.click(&b.find("form[action='/desk/adjust'] button.big").await).await;
        b.wait_for("#queue-note.error", 5).await;
        for _ in 0..50 {
            if b.eval(r#"return !document.querySelector("form[action='/desk/adjust'] button.big").disabled;"#).await
                == serde_json::json!(true)
            {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        assert_eq!(b.eval("return document.querySelector('#vials').value;").await, serde_json::json!("1"), "{name}");
        assert_eq!(
            b.eval("return document.querySelector('#comment').value;").await,
            serde_json::json!("vial cracked in the fridge"),
            "{name}: the page was not replaced"
        );
        assert_eq!(b.eval("return JSON.parse(localStorage.getItem('vxt-queue')).length;").await, serde_json::json!(1));
        assert_eq!(entries(&mut w).await.len(), before, "{name}: nothing sent yet");
        b.eval("window.fetch = window.__fetch; window.dispatchEvent(new Event('online')); return 0;").await;
        b.wait_for("#queue-note.ok", 10).await;
        assert_eq!(b.eval("return JSON.parse(localStorage.getItem('vxt-queue')).length;").await, serde_json::json!(0));
        assert_eq!(entries(&mut w).await.len(), before + 1, "{name}: sent once");
        // Pressing the button again (same request_id) shows the result and writes nothing more.
        b.click(&b.find("form[action='/desk/adjust'] button.big").await).await;
        b.wait_for(".notice.ok:not(#queue-note)", 10).await;
        assert_eq!(entries(&mut w).await.len(), before + 1, "{name}: still once");
        b.screenshot(&shot("offline-sent")).await;

        // The same desk in Hindi.
        b.goto(&format!("{base}/desk")).await;
        b.click(&b.find("a[href='/lang/hi']").await).await;
        b.wait_for("html[lang=hi] nav.actions", 10).await;
        assert!(b.source().await.contains("स्टॉक डेस्क"), "{name}");
        b.screenshot(&shot("home-hindi")).await;

        // A waiting form older than a session is dropped, not sent; one still waiting when its
        // person signs out goes with them.
        let queue_offline = async || {
            b.goto(&format!("{base}/desk/adjust")).await;
            set(&b, "#stock", &stock).await;
            set(&b, "#reason", "5").await;
            b.type_into(&b.find("#vials").await, "1").await;
            b.type_into(&b.find("#comment").await, "cracked").await;
            b.eval("window.fetch = () => Promise.reject(new TypeError('offline')); return 0;").await;
            b.click(&b.find("form[action='/desk/adjust'] button.big").await).await;
            b.wait_for("#queue-note.error", 5).await;
            assert_eq!(
                b.eval("return JSON.parse(localStorage.getItem('vxt-queue')).length;").await,
                serde_json::json!(1)
            );
        };
        let before = entries(&mut w).await.len();
        queue_offline().await;
        b.eval("const q = JSON.parse(localStorage.getItem('vxt-queue')); q[0].at -= 13 * 3600 * 1000; localStorage.setItem('vxt-queue', JSON.stringify(q)); return 0;").await;
        b.goto(&format!("{base}/desk")).await;
        b.wait_for("nav.actions", 10).await;
        assert_eq!(
            b.eval("return JSON.parse(localStorage.getItem('vxt-queue')).length;").await,
            serde_json::json!(0),
            "{name}"
        );
        queue_offline().await;
        b.click(&b.find("form[action='/signout'] button").await).await;
        b.wait_for("#token", 10).await;
        assert_eq!(
            b.eval("return JSON.parse(localStorage.getItem('vxt-queue')).length;").await,
            serde_json::json!(0),
            "{name}"
        );
        assert_eq!(entries(&mut w).await.len(), before, "{name}: neither was sent");

        check_ledger(&mut w, name).await;
        b.quit().await;
        srv.stop().await;
    }
}
