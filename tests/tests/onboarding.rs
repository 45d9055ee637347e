//! Onboarding a country, on every engine: a generated national-size country imports in one go
//! and a second import changes nothing; a file set with a dozen seeded errors is refused with
//! each error at its file, line and column and nothing written; an export imported into an
//! empty database exports the same bytes; the DHIS2 example keeps its uids; a dry run writes
//! nothing.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::time::Instant;

use vaxtrace_proto::v1 as pb;
use vaxtrace_server::App;
use vaxtrace_server::onboard::export::ExportOptions;
use vaxtrace_server::onboard::{self, ImportOptions, NoProgress, SourceFile};
use vaxtrace_tests::country::{Country, Size};
use vaxtrace_tests::{TestDb, TestServer, authed};

/// Counts every row of a paged gRPC listing.
macro_rules! count_all {
    ($client:expr, $method:ident, $m:ident :: $ty:ident { $($f:ident: $v:expr),* }, $field:ident, $tok:expr) => {{
        let mut n = 0usize;
        let mut page_token = String::new();
        loop {
            #[allow(clippy::needless_update)]
            let req = $m::$ty { page_size: 1000, page_token: page_token.clone(), $($f: $v,)* ..Default::default() };
            let resp = $client.$method(authed($tok, req)).await.expect(stringify!($method)).into_inner();
            n += resp.$field.len();
            if resp.next_page_token.is_empty() {
                break n;
            }
            page_token = resp.next_page_token;
        }
    }};
}

/// What the API shows of a country, for "nothing changed" checks.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Counts {
    facilities: usize,
    units: usize,
    products: usize,
    lots: usize,
    devices: usize,
    policies: usize,
    ledger: usize,
}

async fn counts(srv: &TestServer) -> Counts {
    let ch = srv.channel().await;
    let tok = srv.admin_token.as_str();
    let mut fac = pb::facility_service_client::FacilityServiceClient::new(ch.clone());
    let mut cat = pb::catalog_service_client::CatalogServiceClient::new(ch.clone());
    let mut tel = pb::telemetry_service_client::TelemetryServiceClient::new(ch.clone());
    let mut stock = pb::stock_service_client::StockServiceClient::new(ch);
    Counts {
        facilities: count_all!(
            fac,
            list_facilities,
            pb::ListFacilitiesRequest { include_inactive: true },
            facilities,
            tok
        ),
        units: count_all!(
            fac,
            list_storage_units,
            pb::ListStorageUnitsRequest { include_inactive: true },
            storage_units,
            tok
        ),
        products: count_all!(cat, list_products, pb::ListProductsRequest { include_inactive: true }, products, tok),
        lots: count_all!(cat, list_lots, pb::ListLotsRequest {}, lots, tok),
        devices: count_all!(tel, list_devices, pb::ListDevicesRequest { include_inactive: true }, devices, tok),
        policies: count_all!(stock, list_stock_policies, pb::ListStockPoliciesRequest {}, policies, tok),
        ledger: count_all!(stock, list_ledger_entries, pb::ListLedgerEntriesRequest {}, entries, tok),
    }
}

fn files_of(country: &Country) -> (tempfile::TempDir, Vec<SourceFile>) {
    let dir = tempfile::tempdir().unwrap();
    country.write(dir.path()).unwrap();
    let files = onboard::read_dir(dir.path()).unwrap();
    (dir, files)
}

async fn import(app: &App, files: &[SourceFile], dry_run: bool) -> vaxtrace_server::app::onboard::ImportOutcome {
    app.import_files(files, &ImportOptions::default(), dry_run, &NoProgress).await.expect("import runs")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_national_country_imports_once_and_a_second_import_changes_nothing() {
    let country = Country::generate(Size::NATIONAL);
    let (_dir, files) = files_of(&country);
    for db in TestDb::all() {
        let srv = TestServer::start(db.clone()).await;
        let before = counts(&srv).await;
        let t = Instant::now();
        let out = import(&srv.app, &files, false).await;
        let first = t.elapsed();
        assert!(out.problems.is_empty(), "{}: {:?}", db.name(), &out.problems[..out.problems.len().min(5)]);
        assert!(out.written);
        let s = out.summary;
        assert_eq!(
            (s.facilities.new, s.units.new, s.products.new, s.lots.new, s.balances.new, s.devices.new),
            (10_000, country.files["storage_units.csv"].len(), 20, 2_000, 2_000, 5_000),
            "{}",
            db.name()
        );
        assert_eq!(out.secrets.iter().filter(|s| s.kind == "device_key").count(), 5_000);
        assert_eq!(out.secrets.iter().filter(|s| s.kind == "token").count(), country.files["tokens.csv"].len());
        eprintln!(
            "{}: imported {} rows ({} written) in {:.2} s: validation {:.2} s, write {:.2} s ({:.0} rows/s)",
            db.name(),
            country.len(),
            out.rows_written,
            first.as_secs_f64(),
            out.validate_time.as_secs_f64(),
            out.write_time.as_secs_f64(),
            out.rows_written as f64 / out.write_time.as_secs_f64()
        );

        let after = counts(&srv).await;
        assert_eq!(after.facilities, before.facilities + 10_000, "{}", db.name());
        assert_eq!(after.units, country.files["storage_units.csv"].len());
        assert_eq!((after.products, after.lots, after.devices), (20, 2_000, 5_000));
        assert_eq!(after.policies, country.files["policies.csv"].len());
        assert_eq!(after.ledger, before.ledger + 2_000, "one RECEIPT per opening balance");

        // The ledger invariant holds for what the import booked: balance = Σ entries.
        let mut stock = pb::stock_service_client::StockServiceClient::new(srv.channel().await);
        let total: i64 = {
            let mut sum = 0;
            let mut page_token = String::new();
            loop {
                let req = pb::ListBalancesRequest { page_size: 1000, page_token, ..Default::default() };
                let r = stock.list_balances(authed(&srv.admin_token, req)).await.unwrap().into_inner();
                sum += r.balances.iter().map(|b| b.vials).sum::<i64>();
                if r.next_page_token.is_empty() {
                    break sum;
                }
                page_token = r.next_page_token;
            }
        };
        let expected: i64 = (0..2_000).map(|l| 1000 + l).sum();
        assert_eq!(total, expected);

        let t = Instant::now();
        let again = import(&srv.app, &files, false).await;
        assert!(again.problems.is_empty(), "{:?}", &again.problems[..again.problems.len().min(5)]);
        assert!(!again.written, "{}: a second import writes nothing", db.name());
        assert_eq!(again.summary.new_rows(), 0);
        assert_eq!(again.summary.facilities.unchanged, 10_000);
        assert_eq!(again.summary.balances.unchanged, 2_000);
        assert_eq!(again.summary.devices.unchanged, 5_000);
        assert!(again.secrets.is_empty());
        assert_eq!(counts(&srv).await, after, "{}: the second import changed nothing", db.name());
        eprintln!("{}: second import (all unchanged) in {:.2} s", db.name(), t.elapsed().as_secs_f64());
        srv.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dozen_seeded_errors_are_each_reported_at_their_line_and_nothing_is_written() {
    for db in TestDb::all() {
        let srv = TestServer::start(db.clone()).await;
        let base = Country::generate(Size::SMALL);
        let (_d, files) = files_of(&base);
        assert!(import(&srv.app, &files, false).await.problems.is_empty());
        let before = counts(&srv).await;
        let exported = srv.app.export_files(ExportOptions::default()).await.unwrap();

        let mut bad = base.clone();
        // A valid new row too: it must not be written either.
        bad.push("facilities.csv", &["NEW-OK", "S01-D01", "cold_chain_point", "New", "", "", "", "", ""]);
        let mut expected: BTreeSet<(String, u64, String)> = BTreeSet::new();
        let mut expect = |file: &str, line: u64, column: &str| {
            expected.insert((file.to_owned(), line, column.to_owned()));
        };
        let l = bad.push("facilities.csv", &["ORPHAN", "NOPE", "cold_chain_point", "Orphan", "", "", "", "", ""]);
        expect("facilities.csv", l, "parent_code"); // 1 unknown parent
        let l = bad.push("facilities.csv", &["S01", "NAT", "state_store", "Again", "", "", "", "", ""]);
        expect("facilities.csv", l, "code"); // 2 duplicate code
        let l = bad.push("facilities.csv", &["CYC-A", "CYC-B", "cold_chain_point", "A", "", "", "", "", ""]);
        expect("facilities.csv", l, "parent_code"); // 3 cycle in the tree …
        let l = bad.push("facilities.csv", &["CYC-B", "CYC-A", "cold_chain_point", "B", "", "", "", "", ""]);
        expect("facilities.csv", l, "parent_code"); // … reported on both rows
        let l = bad.push("facilities.csv", &["UPSIDE", "S01-D01-C00001", "district_store", "Up", "", "", "", "", ""]);
        expect("facilities.csv", l, "kind"); // 4 a district store under a cold-chain point
        let l = bad.push("storage_units.csv", &["NOWHERE", "ILR 9", "ilr", "refrigerated", "", ""]);
        expect("storage_units.csv", l, "facility_code"); // 5 unknown facility
        let l = bad.push(
            "products.csv",
            &["P99", "X", "X", "10", "liquid", "vvm14", "refrigerated", "", "", "09506000000016", ""],
        );
        expect("products.csv", l, "gtins"); // 6 bad GTIN check digit
        let l = bad.push("lots.csv", &["P01", "BADDATE", "2027-02-30", "", ""]);
        expect("lots.csv", l, "expiry"); // 7 bad date
        let l = bad.push("lots.csv", &["NOPROD", "L1", "2027-01-31", "", ""]);
        expect("lots.csv", l, "product_code"); // 8 unknown product
        let l = bad.push("opening_balances.csv", &["NAT", "WIC 1", "P01", "L00000", "-5"]);
        expect("opening_balances.csv", l, "vials"); // 9 negative quantity
        let l = bad.push("opening_balances.csv", &["NAT", "WIC 9", "P02", "L00001", "5"]);
        expect("opening_balances.csv", l, "unit_name"); // 10 unknown unit
        let l = bad.push("policies.csv", &["S01-D01", "P03", "900", "100"]);
        expect("policies.csv", l, "min_doses"); // 11 min above max
        let l = bad.push("devices.csv", &["LOG-FAST", "S01-D01-C00001", "", "", "10", "", "", ""]);
        expect("devices.csv", l, "expected_interval_secs"); // 12 interval out of range
        bad.push("probes.csv", &["LOG-FAST", "0", "ILR 1", ""]);
        bad.push("devices.csv", &["LOG-NEW", "S01-D01-C00005", "", "", "300", "", "", ""]);
        let l = bad.push("probes.csv", &["LOG-NEW", "0", "Fridge that is not there", ""]);
        expect("probes.csv", l, "unit_name"); // 13 unknown unit for a probe
        let l = bad.push("tokens.csv", &["king", "", "", "x"]);
        expect("tokens.csv", l, "role"); // 14 unknown role

        let (_d, files) = files_of(&bad);
        let out = import(&srv.app, &files, false).await;
        let got: BTreeSet<(String, u64, String)> =
            out.problems.iter().map(|p| (p.file.clone(), p.line, p.column.clone())).collect();
        assert_eq!(got, expected, "{}: {:#?}", db.name(), out.problems);
        assert_eq!(out.problems.len(), expected.len(), "one problem each: {:#?}", out.problems);
        assert!(out.problems.iter().any(|p| p.reason.contains("cycle in the tree: CYC-A → CYC-B → CYC-A")));
        assert!(!out.written);
        assert!(out.secrets.is_empty(), "no secret is issued when nothing is written");
        assert_eq!(counts(&srv).await, before, "{}: nothing was written", db.name());
        assert_eq!(srv.app.export_files(ExportOptions::default()).await.unwrap(), exported);
        srv.stop().await;
    }
}

/// A database with history (shipments, sessions, a logger, a policy), exported, imported into
/// an empty database and exported again, gives the same files byte for byte.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_export_imports_into_an_empty_database_as_the_same_data() {
    use vaxtrace_server::domain::telemetry::DeviceInput;
    for db in TestDb::all() {
        let a = vaxtrace_server::open(&db.url().await).await.unwrap();
        let (_, admin) = vaxtrace_server::demo::demo_admin(&a).await.unwrap();
        let seeded = vaxtrace_server::demo::seed(&a, &admin).await.unwrap();
        assert!(seeded.ledger_entries > 0);
        let snap = a.export_files(ExportOptions::default()).await.unwrap();
        let unit_row = String::from_utf8(snap[1].bytes.clone()).unwrap();
        assert!(unit_row.contains("ILR 1"));
        // A logger and a policy, through the API's own use cases.
        let fac = a
            .list_facilities(&admin, Default::default(), 1000, "")
            .await
            .unwrap()
            .items
            .into_iter()
            .find(|f| f.code == "MH-PUNE-HAVELI-PHC")
            .unwrap();
        let units = a.list_storage_units(&admin, &fac.id, "", false, 100, "").await.unwrap().items;
        let probes = units.iter().enumerate().map(|(i, u)| (i as u32, u.id.clone(), format!("p{i}"))).collect();
        let input = DeviceInput {
            serial: "RT-1".into(),
            name: "Round trip".into(),
            model: "m".into(),
            facility_id: fac.id.clone(),
            probes,
            expected_interval_secs: 120,
            unsigned_allowed: true,
            active: true,
        };
        a.register_device(&admin, "", input).await.unwrap();
        // Alarm overrides on one unit travel as the storage_units.csv override columns.
        let mut overrides = vaxtrace_server::domain::facility::StorageUnitInput::default();
        overrides.alarm_overrides.range_high_c = Some(12.5);
        overrides.alarm_overrides.heat_alarm_secs = Some(5400);
        overrides.alarm_overrides.no_data_secs = Some(45);
        a.update_storage_unit(&admin, "", &units[0].id, &overrides, &["alarm_overrides".into()]).await.unwrap();
        let products = a.list_products(&admin, false, 100, "").await.unwrap().items;
        a.set_policy(&admin, "", &fac.id, &products[0].id, 10, 90).await.unwrap();

        let opts = ExportOptions { include_device_keys: true };
        let first = a.export_files(opts).await.unwrap();
        let dir = tempfile::tempdir().unwrap();
        for f in &first {
            std::fs::write(dir.path().join(f.name), &f.bytes).unwrap();
        }
        let b = vaxtrace_server::open(&db.url().await).await.unwrap();
        let out = import(&b, &onboard::read_dir(dir.path()).unwrap(), false).await;
        assert!(out.problems.is_empty(), "{}: {:#?}", db.name(), out.problems);
        assert_eq!(out.summary.facilities.new, seeded.facilities);
        assert_eq!(out.summary.devices.new, 1);
        assert!(out.secrets.iter().all(|s| s.kind == "token"), "the logger keeps its exported key");
        let second = b.export_files(opts).await.unwrap();
        for (x, y) in first.iter().zip(&second) {
            assert_eq!(
                String::from_utf8_lossy(&x.bytes),
                String::from_utf8_lossy(&y.bytes),
                "{}: {} differs after the round trip",
                db.name(),
                x.name
            );
        }
        assert!(first.iter().all(|f| f.rows > 0), "every format carried data: {first:?}");
        let units_csv = String::from_utf8_lossy(&first[1].bytes);
        assert!(units_csv.contains(",12.5,90min,,,,,45s,"), "{}: the overrides were exported: {units_csv}", db.name());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dhis2_example_keeps_uids_as_external_ids_and_reimports_as_unchanged() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../onboarding/example-dhis2");
    let files = onboard::read_dir(std::path::Path::new(dir)).unwrap();
    for db in TestDb::all() {
        let app = vaxtrace_server::open(&db.url().await).await.unwrap();
        let out = import(&app, &files, false).await;
        assert!(out.problems.is_empty(), "{:#?}", out.problems);
        assert_eq!(out.summary.facilities.new, 10);
        let facilities = app.store().onboard_snapshot(false).await.unwrap().facilities;
        let by_uid = |uid: &str| facilities.iter().find(|f| f.external_id == uid).unwrap().clone();
        let sl = by_uid("ImspTQPwCqd");
        assert_eq!((sl.code.as_str(), sl.kind), ("OU_525", vaxtrace_server::domain::FacilityKind::NationalStore));
        let chc = by_uid("DiszpKrYNg8");
        assert_eq!(chc.kind, vaxtrace_server::domain::FacilityKind::ColdChainPoint);
        assert_eq!((chc.latitude, chc.longitude), (Some(8.1039), Some(-11.4197)));
        assert_eq!(chc.parent_id.as_deref(), Some(by_uid("YuQRtpLP10I").id.as_str()));
        assert!(chc.path.starts_with(&sl.path));
        let no_code = by_uid("zfDtPYSmQQw");
        assert_eq!(no_code.code, "zfDtPYSmQQw", "a unit without a code is known by its uid");
        assert!(!by_uid("ARZ4y5i4reU").active, "a closed unit is inactive");
        let again = import(&app, &files, false).await;
        assert!(again.problems.is_empty(), "{:#?}", again.problems);
        assert!(!again.written);
        assert_eq!(again.summary.facilities.unchanged, 10);

        // Another mapping of the same export is a change, reported, not applied.
        let opts = ImportOptions { levels: "3=skip".parse().unwrap() };
        let other = app.import_files(&files, &opts, false, &NoProgress).await.unwrap();
        assert!(!other.written);
        assert!(
            other.problems.iter().all(|p| p.reason.contains("already exists with other values")),
            "{:#?}",
            other.problems
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dry_run_checks_everything_and_writes_nothing() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../onboarding/example");
    let files = onboard::read_dir(std::path::Path::new(dir)).unwrap();
    for db in TestDb::all() {
        let app = vaxtrace_server::open(&db.url().await).await.unwrap();
        let out = import(&app, &files, true).await;
        assert!(out.problems.is_empty(), "the example set imports cleanly: {:#?}", out.problems);
        assert!(out.summary.facilities.new > 20 && out.summary.devices.new > 0);
        assert!(!out.written);
        assert!(out.secrets.is_empty());
        let snap = app.store().onboard_snapshot(false).await.unwrap();
        assert!(snap.facilities.is_empty() && snap.tokens.is_empty(), "{}: a dry run wrote something", db.name());
        let real = import(&app, &files, false).await;
        assert!(real.written);
        assert_eq!(real.summary, out.summary, "the dry run predicted the import");
    }
}
