//! `vaxtrace.v1.StockService`.

use chrono::Utc;
use tonic::{Request, Response, Status};
use vaxtrace_proto::v1 as pb;

use super::caller;
use super::convert::{date, date_parts, timestamp};
use crate::app::App;
use crate::app::stock::{CountLine, LotRef, NewShipmentLine, ReceiptLine, ReceivedLine};
use crate::domain::catalog::LotInput;
use crate::domain::stock::{self as st, AllocationReason, EntryFilter, SessionLine, StockFilter};
use crate::error::Error;

/// The StockService implementation.
#[derive(Debug, Clone)]
pub struct StockApi(pub App);

fn opt(s: String) -> Option<String> {
    (!s.is_empty()).then_some(s)
}

/// An optional wire date, validated; `field` names it in the error.
pub fn date_opt(d: Option<&pb::Date>, field: &str) -> Result<Option<chrono::NaiveDate>, Error> {
    match date_parts(d) {
        None => Ok(None),
        Some(p) => crate::domain::catalog::date(field, Some(p)).map(Some),
    }
}

/// How a supplier receipt line names its lot.
pub fn supplier_lot(r: Option<pb::supplier_receipt_line::LotRef>) -> LotRef {
    use pb::supplier_receipt_line::LotRef as R;
    match r {
        Some(R::LotId(id)) => LotRef::Id(id),
        Some(R::ScannedCode(c)) => LotRef::Scanned(c),
        Some(R::NewLot(n)) => LotRef::New(LotInput {
            expiry: date_parts(n.expiry.as_ref()),
            product_id: n.product_id,
            gtin: n.gtin,
            lot_number: n.lot_number,
            manufacturer: n.manufacturer,
        }),
        None => LotRef::Id(String::new()),
    }
}

macro_rules! lot_ref {
    ($m:ident, $v:expr) => {
        match $v {
            Some(pb::$m::LotRef::LotId(id)) => LotRef::Id(id),
            Some(pb::$m::LotRef::ScannedCode(c)) => LotRef::Scanned(c),
            None => LotRef::Id(String::new()),
        }
    };
}

/// The lines of a supplier receipt.
pub fn receipt_lines(lines: Vec<pb::SupplierReceiptLine>) -> Vec<ReceiptLine> {
    lines
        .into_iter()
        .map(|l| ReceiptLine {
            lot: supplier_lot(l.lot_ref),
            vials: l.vials,
            vvm_stage: l.vvm_stage,
            storage_unit_id: l.storage_unit_id,
            manufacturer: l.manufacturer,
        })
        .collect()
}

/// How an adjustment names its lot.
pub fn adjust_lot(r: Option<pb::adjust_stock_request::LotRef>) -> LotRef {
    lot_ref!(adjust_stock_request, r)
}

/// The lines of a new shipment.
pub fn shipment_lines(lines: Vec<pb::CreateShipmentLine>) -> Vec<NewShipmentLine> {
    lines
        .into_iter()
        .map(|l| NewShipmentLine {
            lot: lot_ref!(create_shipment_line, l.lot_ref),
            vials: l.vials,
            source_storage_unit_id: l.source_storage_unit_id,
        })
        .collect()
}

/// The lines of a shipment's receipt.
pub fn received_lines(lines: Vec<pb::ReceiveShipmentLine>) -> Vec<ReceivedLine> {
    lines
        .into_iter()
        .map(|l| {
            let (line_id, scanned_code) = match l.line_ref {
                Some(pb::receive_shipment_line::LineRef::LineId(id)) => (id, String::new()),
                Some(pb::receive_shipment_line::LineRef::ScannedCode(c)) => (String::new(), c),
                None => (String::new(), String::new()),
            };
            ReceivedLine {
                line_id,
                scanned_code,
                received_vials: l.received_vials,
                storage_unit_id: l.storage_unit_id,
                vvm_stage: l.vvm_stage,
                discrepancy_reason: l.discrepancy_reason,
                comment: l.comment,
            }
        })
        .collect()
}

/// The lines of a physical count.
pub fn count_lines(lines: Vec<pb::PhysicalCountLine>) -> Vec<CountLine> {
    lines
        .into_iter()
        .map(|l| CountLine {
            storage_unit_id: l.storage_unit_id,
            lot: lot_ref!(physical_count_line, l.lot_ref),
            counted_vials: l.counted_vials,
            vvm_stage: l.vvm_stage,
        })
        .collect()
}

/// The lines of a session report, each with the lot it names (its id is resolved later).
pub fn session_lines(lines: Vec<pb::SessionReportLine>) -> Vec<(LotRef, SessionLine)> {
    lines
        .into_iter()
        .map(|l| {
            let lot = lot_ref!(session_report_line, l.lot_ref);
            let line = SessionLine {
                lot_id: String::new(),
                storage_unit_id: l.storage_unit_id,
                vials_issued: l.vials_issued,
                vials_opened: l.vials_opened,
                opened_vials_reused: l.opened_vials_reused,
                doses_administered: l.doses_administered,
                unopened_vials_returned: l.unopened_vials_returned,
                unopened_vials_discarded: l.unopened_vials_discarded,
                discard_reason: l.discard_reason,
                opened_vials_kept: l.opened_vials_kept,
            };
            (lot, line)
        })
        .collect()
}

/// The balance filter of a request; ids are checked here so a bad one names its field.
pub fn stock_filter(r: &pb::ListBalancesRequest) -> Result<StockFilter, Error> {
    let id = |field: &str, v: &str| -> Result<Option<String>, Error> { crate::domain::validate::optional_id(field, v) };
    Ok(StockFilter {
        storage_unit_id: id("storage_unit_id", &r.storage_unit_id)?,
        facility_id: id("facility_id", &r.facility_id)?,
        ancestor_path: None,
        product_id: id("product_id", &r.product_id)?,
        lot_id: id("lot_id", &r.lot_id)?,
        include_zero: r.include_zero,
        quarantined_only: r.quarantined_only,
    })
}

/// The ledger filter of a request.
pub fn entry_filter(r: &pb::ListLedgerEntriesRequest) -> Result<EntryFilter, Error> {
    let id = |field: &str, v: &str| -> Result<Option<String>, Error> { crate::domain::validate::optional_id(field, v) };
    Ok(EntryFilter {
        storage_unit_id: id("storage_unit_id", &r.storage_unit_id)?,
        facility_id: id("facility_id", &r.facility_id)?,
        ancestor_path: None,
        product_id: id("product_id", &r.product_id)?,
        lot_id: id("lot_id", &r.lot_id)?,
        kinds: r.kinds.clone(),
        start: super::convert::instant("start_time", r.start_time)?,
        end: super::convert::instant("end_time", r.end_time)?,
        shipment_id: id("shipment_id", &r.shipment_id)?,
        session_report_id: id("session_report_id", &r.session_report_id)?,
        newest_first: r.newest_first,
    })
}

/// An exposure on the wire.
pub fn exposure(x: st::Exposure) -> pb::Exposure {
    let d = x.details;
    pb::Exposure {
        id: x.id,
        alarm_id: x.alert_id,
        storage_unit_id: x.storage_unit_id,
        facility_id: x.facility_id,
        lot_id: x.lot_id,
        product_id: x.product_id,
        start_time: Some(timestamp(x.start)),
        end_time: x.end.map(timestamp),
        min_temp_c: d.min_temp_c.unwrap_or_default(),
        max_temp_c: d.max_temp_c.unwrap_or_default(),
        minutes_past_threshold: d.minutes_past_threshold.unwrap_or_default(),
        degree_hours_above_max: d.degree_hours_above_max.unwrap_or_default(),
        quarantined_vials: x.quarantined_vials,
        state: x.state.as_i32(),
        assessment: x.assessment.map(|a| pb::ExposureAssessment {
            decision: a.decision,
            discard_reason: a.discard_reason,
            discarded_vials: a.discarded_vials,
            released_vials: a.released_vials,
            comment: a.comment,
            assessed_by: a.assessed_by,
            assess_time: Some(timestamp(a.assessed_at)),
        }),
    }
}

/// A ledger entry on the wire.
pub fn entry(e: st::LedgerEntry) -> pb::LedgerEntry {
    let d = e.draft;
    pb::LedgerEntry {
        id: e.id,
        sequence: u64::try_from(e.sequence).unwrap_or(0),
        storage_unit_id: d.storage_unit_id.unwrap_or_default(),
        facility_id: d.facility_id,
        lot_id: d.lot_id,
        product_id: d.product_id,
        kind: d.kind.as_i32(),
        quantity_vials: d.quantity_vials,
        doses: e.doses,
        quarantined_vials_change: d.quarantined_change,
        adjustment_reason: d.adjustment_reason,
        discrepancy_reason: d.discrepancy_reason,
        comment: d.comment,
        actor_token_id: e.actor,
        time: Some(timestamp(e.time)),
        request_id: e.request_id,
        shipment_id: d.shipment_id.unwrap_or_default(),
        session_report_id: d.session_report_id.unwrap_or_default(),
        reverses_entry_id: d.reverses_entry_id.unwrap_or_default(),
        reversed_by_entry_id: e.reversed_by.unwrap_or_default(),
        exposure_id: d.exposure_id.unwrap_or_default(),
        physical_count_id: d.physical_count_id.unwrap_or_default(),
        balance_after_vials: e.balance_after_vials,
    }
}

/// A balance on the wire.
pub fn balance(i: st::StockItem) -> pb::Balance {
    let today = Utc::now().date_naive();
    let expired = i.expired(today);
    let available = i.usable_vials(today);
    pb::Balance {
        storage_unit_id: i.storage_unit_id,
        facility_id: i.facility_id,
        lot_id: i.lot_id,
        product_id: i.product_id,
        lot_number: i.lot_number,
        vials: i.balance.vials,
        doses: i.balance.vials * i.doses_per_vial,
        quarantined_vials: i.balance.quarantined,
        quarantined_doses: i.balance.quarantined * i.doses_per_vial,
        available_vials: available,
        available_doses: available * i.doses_per_vial,
        expiry: Some(date(i.expiry)),
        expired,
        vvm_stage: i.vvm_stage,
        update_time: Some(timestamp(i.updated_at)),
    }
}

/// A shipment on the wire.
pub fn shipment(s: st::Shipment) -> pb::Shipment {
    let total_doses = s.lines.iter().map(|l| l.vials * l.doses_per_vial).sum();
    pb::Shipment {
        id: s.id,
        from_facility_id: s.from_facility_id,
        to_facility_id: s.to_facility_id,
        state: s.state.as_i32(),
        lines: s
            .lines
            .into_iter()
            .map(|l| pb::ShipmentLine {
                doses: l.vials * l.doses_per_vial,
                id: l.id,
                lot_id: l.lot_id,
                product_id: l.product_id,
                vials: l.vials,
                source_storage_unit_id: l.source_storage_unit_id,
                dispatched_vvm_stage: l.dispatched_vvm_stage,
                received_vials: l.received_vials,
                received_storage_unit_id: l.received_storage_unit_id,
                received_vvm_stage: l.received_vvm_stage,
                discrepancy_reason: l.discrepancy_reason,
                receive_comment: l.receive_comment,
            })
            .collect(),
        reference: s.reference,
        comment: s.comment,
        expected_arrival_date: s.expected_arrival.map(date),
        create_time: Some(timestamp(s.created_at)),
        dispatch_time: s.dispatched_at.map(timestamp),
        receive_time: s.received_at.map(timestamp),
        cancel_time: s.cancelled_at.map(timestamp),
        created_by: s.created_by,
        dispatched_by: s.dispatched_by,
        received_by: s.received_by,
        cancelled_by: s.cancelled_by,
        cancel_comment: s.cancel_comment,
        total_doses,
    }
}

fn session_report(r: st::SessionReport) -> pb::SessionReport {
    pb::SessionReport {
        id: r.id,
        facility_id: r.facility_id,
        storage_unit_id: r.storage_unit_id,
        session_date: Some(date(r.session_date)),
        lines: r
            .lines
            .into_iter()
            .map(|(l, product_id, dpv)| pb::SessionReportLine {
                opened_vials_discarded: l.opened_vials_discarded(),
                doses_issued: l.doses_issued(dpv),
                lot_ref: Some(pb::session_report_line::LotRef::LotId(l.lot_id)),
                product_id,
                storage_unit_id: l.storage_unit_id,
                vials_issued: l.vials_issued,
                vials_opened: l.vials_opened,
                opened_vials_reused: l.opened_vials_reused,
                doses_administered: l.doses_administered,
                unopened_vials_returned: l.unopened_vials_returned,
                unopened_vials_discarded: l.unopened_vials_discarded,
                discard_reason: l.discard_reason,
                opened_vials_kept: l.opened_vials_kept,
            })
            .collect(),
        comment: r.comment,
        submit_time: Some(timestamp(r.submitted_at)),
        submitted_by: r.submitted_by,
        reversed: false,
        ledger_entry_ids: r.ledger_entry_ids,
    }
}

fn policy(p: st::StockPolicy) -> pb::StockPolicy {
    pb::StockPolicy {
        facility_id: p.facility_id,
        product_id: p.product_id,
        min_doses: p.min_doses,
        max_doses: p.max_doses,
        update_time: Some(timestamp(p.updated_at)),
        updated_by: p.updated_by,
    }
}

fn allocation_reason(r: AllocationReason) -> (pb::AllocationDecision, pb::AllocationReason) {
    use pb::AllocationDecision::{Chosen, Skipped};
    match r {
        AllocationReason::VvmStage => (Chosen, pb::AllocationReason::VvmStage),
        AllocationReason::EarliestExpiry => (Chosen, pb::AllocationReason::EarliestExpiry),
        AllocationReason::Quarantined => (Skipped, pb::AllocationReason::Quarantined),
        AllocationReason::Expired => (Skipped, pb::AllocationReason::Expired),
        AllocationReason::ShortShelfLife => (Skipped, pb::AllocationReason::ShortShelfLife),
        AllocationReason::VvmDiscardPoint => (Skipped, pb::AllocationReason::VvmDiscardPoint),
        AllocationReason::NotNeeded => (Skipped, pb::AllocationReason::NotNeeded),
    }
}

#[tonic::async_trait]
impl pb::stock_service_server::StockService for StockApi {
    async fn receive_from_supplier(
        &self,
        req: Request<pb::ReceiveFromSupplierRequest>,
    ) -> Result<Response<pb::ReceiveFromSupplierResponse>, Status> {
        let c = caller(&self.0, &req).await?;
        let r = req.into_inner();
        let lines = receipt_lines(r.lines);
        let comment =
            if r.supplier.is_empty() { r.comment } else { format!("{}: {} {}", r.supplier, r.reference, r.comment) };
        let (entries, lots) =
            self.0.receive_from_supplier(&c, &r.request_id, &r.storage_unit_id, lines, comment.trim()).await?;
        Ok(Response::new(pb::ReceiveFromSupplierResponse {
            entries: entries.into_iter().map(entry).collect(),
            lots: lots.into_iter().map(Into::into).collect(),
        }))
    }

    async fn create_shipment(&self, req: Request<pb::CreateShipmentRequest>) -> Result<Response<pb::Shipment>, Status> {
        let c = caller(&self.0, &req).await?;
        let r = req.into_inner();
        let lines = shipment_lines(r.lines);
        let expected = date_opt(r.expected_arrival_date.as_ref(), "expected_arrival_date")?;
        let s = self
            .0
            .create_shipment(
                &c,
                &r.request_id,
                &r.from_facility_id,
                &r.to_facility_id,
                lines,
                &r.reference,
                &r.comment,
                expected,
            )
            .await?;
        Ok(Response::new(shipment(s)))
    }

    async fn dispatch_shipment(
        &self,
        req: Request<pb::DispatchShipmentRequest>,
    ) -> Result<Response<pb::Shipment>, Status> {
        let c = caller(&self.0, &req).await?;
        let r = req.into_inner();
        Ok(Response::new(shipment(self.0.dispatch_shipment(&c, &r.request_id, &r.shipment_id).await?)))
    }

    async fn receive_shipment(
        &self,
        req: Request<pb::ReceiveShipmentRequest>,
    ) -> Result<Response<pb::Shipment>, Status> {
        let c = caller(&self.0, &req).await?;
        let r = req.into_inner();
        let lines = received_lines(r.lines);
        let s = self
            .0
            .receive_shipment(&c, &r.request_id, &r.shipment_id, &r.storage_unit_id, lines, r.accept_unlisted_in_full)
            .await?;
        Ok(Response::new(shipment(s)))
    }

    async fn cancel_shipment(&self, req: Request<pb::CancelShipmentRequest>) -> Result<Response<pb::Shipment>, Status> {
        let c = caller(&self.0, &req).await?;
        let r = req.into_inner();
        Ok(Response::new(shipment(self.0.cancel_shipment(&c, &r.request_id, &r.shipment_id, &r.comment).await?)))
    }

    async fn get_shipment(&self, req: Request<pb::GetShipmentRequest>) -> Result<Response<pb::Shipment>, Status> {
        let c = caller(&self.0, &req).await?;
        Ok(Response::new(shipment(self.0.get_shipment(&c, &req.get_ref().id).await?)))
    }

    async fn list_shipments(
        &self,
        req: Request<pb::ListShipmentsRequest>,
    ) -> Result<Response<pb::ListShipmentsResponse>, Status> {
        let c = caller(&self.0, &req).await?;
        let r = req.into_inner();
        let page =
            self.0.list_shipments(&c, &r.facility_id, r.direction, &r.states, r.page_size, &r.page_token).await?;
        Ok(Response::new(pb::ListShipmentsResponse {
            shipments: page.items.into_iter().map(shipment).collect(),
            next_page_token: page.next_page_token,
        }))
    }

    async fn transfer_stock(
        &self,
        req: Request<pb::TransferStockRequest>,
    ) -> Result<Response<pb::TransferStockResponse>, Status> {
        let c = caller(&self.0, &req).await?;
        let r = req.into_inner();
        let (out, into) = self
            .0
            .transfer(
                &c,
                &r.request_id,
                &r.from_storage_unit_id,
                &r.to_storage_unit_id,
                &LotRef::Id(r.lot_id),
                r.vials,
                &r.comment,
            )
            .await?;
        Ok(Response::new(pb::TransferStockResponse { out_entry: Some(entry(out)), in_entry: Some(entry(into)) }))
    }

    async fn adjust_stock(&self, req: Request<pb::AdjustStockRequest>) -> Result<Response<pb::LedgerEntry>, Status> {
        let c = caller(&self.0, &req).await?;
        let r = req.into_inner();
        let lot = adjust_lot(r.lot_ref);
        let e =
            self.0.adjust(&c, &r.request_id, &r.storage_unit_id, &lot, r.quantity_vials, r.reason, &r.comment).await?;
        Ok(Response::new(entry(e)))
    }

    async fn record_physical_count(
        &self,
        req: Request<pb::RecordPhysicalCountRequest>,
    ) -> Result<Response<pb::RecordPhysicalCountResponse>, Status> {
        let c = caller(&self.0, &req).await?;
        let r = req.into_inner();
        let lines = count_lines(r.lines);
        let (id, results) = self
            .0
            .physical_count(&c, &r.request_id, &r.facility_id, lines, &r.complete_storage_unit_ids, &r.comment)
            .await?;
        Ok(Response::new(pb::RecordPhysicalCountResponse {
            physical_count_id: id,
            results: results
                .into_iter()
                .map(|x| pb::PhysicalCountResult {
                    storage_unit_id: x.storage_unit_id,
                    lot_id: x.lot_id,
                    expected_vials: x.expected_vials,
                    counted_vials: x.counted_vials,
                    correction: x.correction.map(entry),
                })
                .collect(),
        }))
    }

    async fn submit_session_report(
        &self,
        req: Request<pb::SubmitSessionReportRequest>,
    ) -> Result<Response<pb::SessionReport>, Status> {
        let c = caller(&self.0, &req).await?;
        let r = req.into_inner();
        let rep = r.session_report.unwrap_or_default();
        let session_date =
            crate::domain::catalog::date("session_report.session_date", date_parts(rep.session_date.as_ref()))?;
        let lines = session_lines(rep.lines);
        let report = self
            .0
            .submit_session_report(
                &c,
                &r.request_id,
                &rep.facility_id,
                &rep.storage_unit_id,
                session_date,
                lines,
                &rep.comment,
            )
            .await?;
        Ok(Response::new(session_report(report)))
    }

    async fn reverse_ledger_entry(
        &self,
        req: Request<pb::ReverseLedgerEntryRequest>,
    ) -> Result<Response<pb::LedgerEntry>, Status> {
        let c = caller(&self.0, &req).await?;
        let r = req.into_inner();
        Ok(Response::new(entry(self.0.reverse(&c, &r.request_id, &r.entry_id, &r.comment).await?)))
    }

    async fn list_balances(
        &self,
        req: Request<pb::ListBalancesRequest>,
    ) -> Result<Response<pb::ListBalancesResponse>, Status> {
        let c = caller(&self.0, &req).await?;
        let r = req.into_inner();
        let f = StockFilter {
            storage_unit_id: opt(r.storage_unit_id),
            facility_id: opt(r.facility_id),
            ancestor_path: None,
            product_id: opt(r.product_id),
            lot_id: opt(r.lot_id),
            include_zero: r.include_zero,
            quarantined_only: r.quarantined_only,
        };
        for (field, v) in [
            ("storage_unit_id", &f.storage_unit_id),
            ("facility_id", &f.facility_id),
            ("product_id", &f.product_id),
            ("lot_id", &f.lot_id),
        ] {
            if let Some(v) = v {
                crate::domain::validate::id(field, v)?;
            }
        }
        let page = self.0.list_balances(&c, f, &r.ancestor_id, r.page_size, &r.page_token).await?;
        Ok(Response::new(pb::ListBalancesResponse {
            balances: page.items.into_iter().map(balance).collect(),
            next_page_token: page.next_page_token,
        }))
    }

    async fn list_ledger_entries(
        &self,
        req: Request<pb::ListLedgerEntriesRequest>,
    ) -> Result<Response<pb::ListLedgerEntriesResponse>, Status> {
        let c = caller(&self.0, &req).await?;
        let r = req.into_inner();
        let f = entry_filter(&r)?;
        let page = self.0.list_entries(&c, f, &r.ancestor_id, r.page_size, &r.page_token).await?;
        Ok(Response::new(pb::ListLedgerEntriesResponse {
            entries: page.items.into_iter().map(entry).collect(),
            next_page_token: page.next_page_token,
        }))
    }

    async fn suggest_allocation(
        &self,
        req: Request<pb::SuggestAllocationRequest>,
    ) -> Result<Response<pb::AllocationSuggestion>, Status> {
        let c = caller(&self.0, &req).await?;
        let r = req.into_inner();
        let a = self
            .0
            .suggest_allocation(&c, &r.facility_id, &r.product_id, r.doses, &r.storage_unit_id, r.min_shelf_life_days)
            .await?;
        Ok(Response::new(pb::AllocationSuggestion {
            facility_id: r.facility_id,
            product_id: r.product_id,
            requested_doses: r.doses,
            lots: a
                .lots
                .into_iter()
                .map(|l| {
                    let (decision, reason) = allocation_reason(l.reason);
                    pb::AllocatedLot {
                        lot_id: l.item.lot_id,
                        lot_number: l.item.lot_number,
                        storage_unit_id: l.item.storage_unit_id,
                        expiry: Some(date(l.item.expiry)),
                        vvm_stage: l.item.vvm_stage,
                        available_vials: l.item.balance.available(),
                        suggested_vials: l.vials,
                        suggested_doses: l.vials * l.item.doses_per_vial,
                        decision: decision as i32,
                        reason: reason as i32,
                    }
                })
                .collect(),
            suggested_doses: a.suggested_doses,
            shortfall_doses: a.shortfall_doses,
        }))
    }

    async fn set_stock_policy(
        &self,
        req: Request<pb::SetStockPolicyRequest>,
    ) -> Result<Response<pb::StockPolicy>, Status> {
        let c = caller(&self.0, &req).await?;
        let r = req.into_inner();
        let p = r.policy.unwrap_or_default();
        let p = self.0.set_policy(&c, &r.request_id, &p.facility_id, &p.product_id, p.min_doses, p.max_doses).await?;
        Ok(Response::new(policy(p)))
    }

    async fn list_stock_policies(
        &self,
        req: Request<pb::ListStockPoliciesRequest>,
    ) -> Result<Response<pb::ListStockPoliciesResponse>, Status> {
        let c = caller(&self.0, &req).await?;
        let r = req.into_inner();
        let page =
            self.0.list_policies(&c, &r.facility_id, &r.ancestor_id, &r.product_id, r.page_size, &r.page_token).await?;
        Ok(Response::new(pb::ListStockPoliciesResponse {
            policies: page.items.into_iter().map(policy).collect(),
            next_page_token: page.next_page_token,
        }))
    }

    async fn record_exposure_assessment(
        &self,
        req: Request<pb::RecordExposureAssessmentRequest>,
    ) -> Result<Response<pb::Exposure>, Status> {
        let c = caller(&self.0, &req).await?;
        let r = req.into_inner();
        let x = self
            .0
            .assess_exposure(
                &c,
                &r.request_id,
                &r.exposure_id,
                r.decision,
                r.discard_reason,
                r.discard_vials,
                &r.comment,
            )
            .await?;
        Ok(Response::new(exposure(x)))
    }

    async fn list_exposures(
        &self,
        req: Request<pb::ListExposuresRequest>,
    ) -> Result<Response<pb::ListExposuresResponse>, Status> {
        let c = caller(&self.0, &req).await?;
        let r = req.into_inner();
        let q = crate::domain::stock::ExposureQuery {
            facility_id: String::new(),
            ancestor_id: r.ancestor_id,
            storage_unit_id: r.storage_unit_id,
            lot_id: r.lot_id,
            alert_id: r.alarm_id,
            states: r.states,
            start: super::convert::instant("start_time", r.start_time)?,
            end: super::convert::instant("end_time", r.end_time)?,
        };
        let page = self.0.list_exposures(&c, &q, r.page_size, &r.page_token).await?;
        Ok(Response::new(pb::ListExposuresResponse {
            exposures: page.items.into_iter().map(exposure).collect(),
            next_page_token: page.next_page_token,
        }))
    }
}
