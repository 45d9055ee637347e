//! Every gRPC request message, decoded from arbitrary protobuf bytes and taken through the
//! conversions of `server/src/grpc` and the domain checks the app runs on it before any
//! database access. The first byte picks the message (its index in `REQUESTS`), the rest is
//! the message as it would arrive on the wire.
#![no_main]

use libfuzzer_sys::fuzz_target;
use prost::Message as _;
use vaxtrace_fuzz::now;
use vaxtrace_proto::v1 as pb;
use vaxtrace_server::app::stock::LotRef;
use vaxtrace_server::domain::catalog::{self, NewLot, NewProduct, ProductPatch};
use vaxtrace_server::domain::facility::{FacilityPatch, NewFacility, NewStorageUnit, StorageUnitPatch};
use vaxtrace_server::domain::paging::PageRequest;
use vaxtrace_server::domain::telemetry::{Bucketing, DevicePatch, NewDevice, ReadingCursor, ReadingSource, TimeRange};
use vaxtrace_server::domain::token::NewToken;
use vaxtrace_server::domain::webhook::NewWebhook;
use vaxtrace_server::domain::{scan, validate};
use vaxtrace_server::grpc::convert::{
    date_parts, device_input, facility_input, instant, lot_input, product_input, storage_unit_input, webhook_input,
};
use vaxtrace_server::grpc::{report, stock};

/// Decodes the bytes as message `$m` and, if they are one, runs `$check` on it.
macro_rules! requests {
    ($($m:ident => $check:expr,)*) => {
        const REQUESTS: &[fn(&[u8])] = &[$(|b: &[u8]| {
            if let Ok(r) = pb::$m::decode(b) {
                let check: fn(pb::$m) = $check;
                check(r);
            }
        }),*];
    };
}

fn page(size: i32, token: &str) {
    let _ = PageRequest::parse(size, token, &"fuzz");
}

fn id(field: &str, v: &str) {
    let _ = validate::id(field, v);
}

fn opt_id(field: &str, v: &str) {
    let _ = validate::optional_id(field, v);
}

fn text(field: &str, v: &str) {
    let _ = validate::text(field, v, 1000);
    let _ = validate::optional_text(field, v, 1000);
}

fn lot(field: &str, l: LotRef) {
    match l {
        LotRef::Id(v) => id(field, &v),
        LotRef::Scanned(code) => {
            let _ = scan::parse(field, &code);
        }
        LotRef::New(input) => {
            let _ = NewLot::parse(input);
        }
    }
}

fn range(start: Option<prost_types::Timestamp>, end: Option<prost_types::Timestamp>) -> Option<TimeRange> {
    let start = instant("start_time", start).ok()?;
    let end = instant("end_time", end).ok()?;
    TimeRange::parse(start, end, now()).ok()
}

fn soh(r: pb::StockOnHandReportRequest) {
    page(r.page_size, &r.page_token);
    opt_id("facility_id", &r.facility_id);
    let _ = report::grouping(&r.group_by);
    let _ = r.as_of_time.map(|t| chrono::DateTime::from_timestamp(t.seconds, 0));
}

fn wastage(r: pb::WastageReportRequest) {
    page(r.page_size, &r.page_token);
    let _ = report::period(r.start_date.as_ref(), r.end_date.as_ref());
}

fn expiry(r: pb::ExpiryRiskReportRequest) {
    page(r.page_size, &r.page_token);
    opt_id("product_id", &r.product_id);
}

fn balances(r: pb::ListBalancesRequest) {
    page(r.page_size, &r.page_token);
    let _ = stock::stock_filter(&r);
}

fn ledger(r: pb::ListLedgerEntriesRequest) {
    page(r.page_size, &r.page_token);
    let _ = stock::entry_filter(&r);
}

requests! {
    CreateTokenRequest => |r| {
        let _ = NewToken::parse(r.role, &r.scope_facility_id, &r.device_id, &r.description);
    },
    ListTokensRequest => |r| page(r.page_size, &r.page_token),
    RevokeTokenRequest => |r| id("id", &r.id),
    WhoAmIRequest => |_| {},
    ListAlertsRequest => |r| {
        page(r.page_size, &r.page_token);
        opt_id("ancestor_id", &r.ancestor_id);
        opt_id("storage_unit_id", &r.storage_unit_id);
        let _ = instant("start_time", r.start_time);
        let _ = instant("end_time", r.end_time);
    },
    GetAlertRequest => |r| id("id", &r.id),
    AcknowledgeAlertRequest => |r| text("comment", &r.comment),
    ResolveAlertRequest => |r| text("comment", &r.comment),
    WatchAlertsRequest => |r| {
        let _ = i64::try_from(r.after_event_id);
        opt_id("ancestor_id", &r.ancestor_id);
    },
    CreateWebhookRequest => |r| {
        let input = webhook_input(r.webhook.unwrap_or_default());
        let _ = NewWebhook::parse(input.clone(), &r.secret, false);
        let _ = NewWebhook::parse(input, &r.secret, true);
    },
    ListWebhooksRequest => |r| page(r.page_size, &r.page_token),
    DeleteWebhookRequest => |r| id("id", &r.id),
    CreateProductRequest => |r| {
        let _ = NewProduct::parse(product_input(r.product.unwrap_or_default()));
    },
    GetProductRequest => |r| id("id", &r.id),
    ListProductsRequest => |r| page(r.page_size, &r.page_token),
    UpdateProductRequest => |r| {
        let p = r.product.unwrap_or_default();
        id("product.id", &p.id);
        let _ = ProductPatch::parse(&product_input(p), &r.update_mask);
    },
    CreateLotRequest => |r| {
        let _ = NewLot::parse(lot_input(r.lot.unwrap_or_default()));
    },
    GetLotRequest => |r| id("id", &r.id),
    ListLotsRequest => |r| {
        page(r.page_size, &r.page_token);
        opt_id("product_id", &r.product_id);
        if let Some(parts) = date_parts(r.expires_before.as_ref()) {
            let _ = catalog::date("expires_before", Some(parts));
        }
    },
    CreateFacilityRequest => |r| {
        let _ = NewFacility::parse(facility_input(r.facility.unwrap_or_default()));
    },
    GetFacilityRequest => |r| id("id", &r.id),
    ListFacilitiesRequest => |r| {
        page(r.page_size, &r.page_token);
        opt_id("ancestor_id", &r.ancestor_id);
        let _ = validate::optional_text("name_contains", &r.name_contains, 200);
    },
    UpdateFacilityRequest => |r| {
        let f = r.facility.unwrap_or_default();
        id("facility.id", &f.id);
        let _ = FacilityPatch::parse(&facility_input(f), &r.update_mask);
    },
    CreateStorageUnitRequest => |r| {
        let _ = storage_unit_input(r.storage_unit.unwrap_or_default()).and_then(NewStorageUnit::parse);
    },
    GetStorageUnitRequest => |r| id("id", &r.id),
    ListStorageUnitsRequest => |r| {
        page(r.page_size, &r.page_token);
        opt_id("facility_id", &r.facility_id);
    },
    UpdateStorageUnitRequest => |r| {
        let u = r.storage_unit.unwrap_or_default();
        id("storage_unit.id", &u.id);
        let _ = storage_unit_input(u).and_then(|input| StorageUnitPatch::parse(&input, &r.update_mask));
    },
    StockOnHandReportRequest => soh,
    WastageReportRequest => wastage,
    ExpiryRiskReportRequest => expiry,
    ExportReportCsvRequest => |r| {
        use pb::export_report_csv_request::Report;
        match r.report {
            Some(Report::StockOnHand(r)) => soh(r),
            Some(Report::Wastage(r)) => wastage(r),
            Some(Report::ExpiryRisk(r)) => expiry(r),
            Some(Report::LedgerEntries(r)) => ledger(r),
            Some(Report::Balances(r)) => balances(r),
            None => {}
        }
    },
    ExportEpcisRequest => |r| {
        let _ = instant("start_time", r.start_time);
        let _ = instant("end_time", r.end_time);
    },
    ReceiveFromSupplierRequest => |r| {
        id("storage_unit_id", &r.storage_unit_id);
        for (i, l) in stock::receipt_lines(r.lines).into_iter().enumerate() {
            lot(&format!("lines[{i}].lot_ref"), l.lot);
        }
    },
    CreateShipmentRequest => |r| {
        let _ = stock::date_opt(r.expected_arrival_date.as_ref(), "expected_arrival_date");
        let _ = validate::optional_text("reference", &r.reference, 64);
        for (i, l) in stock::shipment_lines(r.lines).into_iter().enumerate() {
            lot(&format!("lines[{i}].lot_ref"), l.lot);
        }
    },
    DispatchShipmentRequest => |r| id("shipment_id", &r.shipment_id),
    ReceiveShipmentRequest => |r| {
        for (i, l) in stock::received_lines(r.lines).into_iter().enumerate() {
            let _ = scan::parse(&format!("lines[{i}].scanned_code"), &l.scanned_code);
            text(&format!("lines[{i}].comment"), &l.comment);
        }
    },
    CancelShipmentRequest => |r| text("comment", &r.comment),
    GetShipmentRequest => |r| id("id", &r.id),
    ListShipmentsRequest => |r| {
        page(r.page_size, &r.page_token);
        opt_id("facility_id", &r.facility_id);
    },
    TransferStockRequest => |r| lot("lot_id", LotRef::Id(r.lot_id)),
    AdjustStockRequest => |r| {
        lot("lot_ref", stock::adjust_lot(r.lot_ref));
        text("comment", &r.comment);
    },
    RecordPhysicalCountRequest => |r| {
        for (i, l) in stock::count_lines(r.lines).into_iter().enumerate() {
            lot(&format!("lines[{i}].lot_ref"), l.lot);
        }
        for u in &r.complete_storage_unit_ids {
            id("complete_storage_unit_ids", u);
        }
    },
    SubmitSessionReportRequest => |r| {
        let rep = r.session_report.unwrap_or_default();
        let _ = catalog::date("session_report.session_date", date_parts(rep.session_date.as_ref()));
        for (i, (l, line)) in stock::session_lines(rep.lines).into_iter().enumerate() {
            lot(&format!("session_report.lines[{i}].lot_ref"), l);
            // Single-dose, and a 10-dose vial with and without the multi-dose vial policy.
            for (doses_per_vial, mdvp) in [(1, false), (10, false), (10, true)] {
                let _ = line.check(i, doses_per_vial, mdvp);
                let _ = line.opened_vials_discarded();
                let _ = line.doses_issued(doses_per_vial);
            }
        }
    },
    ReverseLedgerEntryRequest => |r| {
        id("entry_id", &r.entry_id);
        text("comment", &r.comment);
    },
    ListBalancesRequest => balances,
    ListLedgerEntriesRequest => ledger,
    SuggestAllocationRequest => |r| {
        id("product_id", &r.product_id);
        opt_id("storage_unit_id", &r.storage_unit_id);
    },
    SetStockPolicyRequest => |r| id("policy.product_id", &r.policy.unwrap_or_default().product_id),
    ListStockPoliciesRequest => |r| {
        page(r.page_size, &r.page_token);
        opt_id("facility_id", &r.facility_id);
        opt_id("ancestor_id", &r.ancestor_id);
        opt_id("product_id", &r.product_id);
    },
    RecordExposureAssessmentRequest => |r| {
        id("exposure_id", &r.exposure_id);
        text("comment", &r.comment);
    },
    ListExposuresRequest => |r| {
        page(r.page_size, &r.page_token);
        for f in [&r.ancestor_id, &r.storage_unit_id, &r.lot_id, &r.alarm_id] {
            opt_id("filter", f);
        }
        let _ = instant("start_time", r.start_time);
        let _ = instant("end_time", r.end_time);
    },
    RegisterDeviceRequest => |r| {
        let _ = NewDevice::parse(device_input(r.device.unwrap_or_default()));
    },
    GetDeviceRequest => |r| id("id", &r.id),
    ListDevicesRequest => |r| {
        page(r.page_size, &r.page_token);
        opt_id("storage_unit_id", &r.storage_unit_id);
    },
    UpdateDeviceRequest => |r| {
        let d = r.device.unwrap_or_default();
        id("device.id", &d.id);
        let _ = DevicePatch::parse(device_input(d), &r.update_mask);
    },
    RotateDeviceKeyRequest => |r| id("id", &r.id),
    ListReadingsRequest => |r| {
        page(r.page_size, &r.page_token);
        let _ = ReadingCursor::parse(&r.page_token);
        let _ = ReadingSource::parse(&r.device_id, &r.storage_unit_id);
        let _ = range(r.start_time, r.end_time);
    },
    QueryReadingsRequest => |r| {
        id("storage_unit_id", &r.storage_unit_id);
        let (secs, nanos) = r.bucket.map_or((0, 0), |b| (b.seconds, b.nanos));
        if let Some(range) = range(r.start_time, r.end_time) {
            let _ = Bucketing::parse(secs, nanos, range);
        }
    },
    GetLatestReadingsRequest => |r| {
        page(r.page_size, &r.page_token);
        opt_id("ancestor_id", &r.ancestor_id);
    },
}

fuzz_target!(|data: &[u8]| {
    let Some((&which, bytes)) = data.split_first() else { return };
    if let Some(check) = REQUESTS.get(usize::from(which) % REQUESTS.len()) {
        check(bytes);
    }
});
