//! `vaxtrace.v1.ReportService`: reports and their CSV export (RFC 4180, CRLF, header row of field
//! names, enums by full value name).

use std::pin::Pin;

use chrono::Utc;
use tokio_stream::Stream;
use tonic::{Request, Response, Status};
use vaxtrace_proto::v1 as pb;

use super::caller;
use super::convert::{date, date_parts, timestamp};
use super::stock::{balance, entry, entry_filter, stock_filter};
use crate::app::App;
use crate::app::report::{ExpiryRow, Grouping, StockRow, WastageRow, csv};
use crate::domain::catalog;
use crate::domain::{Caller, Page};
use crate::error::Error;

/// The ReportService implementation.
#[derive(Debug, Clone)]
pub struct ReportApi(pub App);

fn soh_row(r: StockRow) -> pb::StockOnHandRow {
    let (facility_id, facility_name, parent, depth) = match r.facility {
        Some(t) => (t.facility.id, t.facility.name, t.facility.parent_id.unwrap_or_default(), t.depth),
        None => Default::default(),
    };
    let (product_id, product_code) = r.product.map(|p| (p.id, p.code)).unwrap_or_default();
    let (lot_id, lot_number, expiry) = match r.lot {
        Some((id, n, e)) => (id, n, Some(date(e))),
        None => (String::new(), String::new(), None),
    };
    pb::StockOnHandRow {
        facility_id,
        facility_name,
        parent_facility_id: parent,
        depth,
        product_id,
        product_code,
        lot_id,
        lot_number,
        expiry,
        available_vials: r.available.0,
        available_doses: r.available.1,
        quarantined_vials: r.quarantined.0,
        quarantined_doses: r.quarantined.1,
        expired_vials: r.expired.0,
        expired_doses: r.expired.1,
        in_transit_vials: r.in_transit.0,
        in_transit_doses: r.in_transit.1,
        min_doses: r.policy.map(|p| p.0),
        max_doses: r.policy.map(|p| p.1),
    }
}

fn wastage_row(r: WastageRow) -> pb::WastageRow {
    let (facility_id, facility_name, depth) = match r.facility {
        Some(t) => (t.facility.id, t.facility.name, t.depth),
        None => Default::default(),
    };
    pb::WastageRow {
        facility_id,
        facility_name,
        depth,
        product_id: r.product.id,
        product_code: r.product.code,
        sessions: r.sessions,
        doses_issued: r.doses_issued,
        doses_administered: r.doses_administered,
        wastage_rate_bp: r.rate_bp,
        opened_vial_wastage_doses: r.opened_vial_doses,
        unopened_vial_wastage_doses: r.unopened_vial_doses,
        store_wastage_doses: r.store_doses,
        acceptable_wastage_bp: r.product.acceptable_wastage_bp,
        above_acceptable: r.rate_bp.is_some_and(|b| b > r.product.acceptable_wastage_bp),
    }
}

fn expiry_row(r: ExpiryRow) -> pb::ExpiryRiskRow {
    pb::ExpiryRiskRow {
        facility_id: r.facility.id,
        facility_name: r.facility.name,
        product_id: r.product.id,
        product_code: r.product.code,
        lot_id: r.lot.0,
        lot_number: r.lot.1,
        expiry: Some(date(r.lot.2)),
        days_to_expiry: i32::try_from(r.days).unwrap_or(i32::MAX),
        band: r.band,
        vials: r.on_hand.0,
        doses: r.on_hand.1,
        quarantined_vials: r.quarantined_vials,
        avg_daily_use_doses: r.avg_daily_use,
        doses_at_risk: r.doses_at_risk,
    }
}

/// A report's `group_by` dimensions; none means by product.
pub fn grouping(dims: &[i32]) -> Result<Grouping, Error> {
    let mut g = Grouping::default();
    for d in dims {
        match pb::ReportDimension::try_from(*d) {
            Ok(pb::ReportDimension::Facility) => g.facility = true,
            Ok(pb::ReportDimension::Product) => g.product = true,
            Ok(pb::ReportDimension::Lot) => g.lot = true,
            _ => return Err(Error::invalid("group_by", "unknown dimension")),
        }
    }
    if !(g.facility || g.product || g.lot) {
        g.product = true;
    }
    Ok(g)
}

/// A report's required start and end dates.
pub fn period(
    start: Option<&pb::Date>,
    end: Option<&pb::Date>,
) -> Result<(chrono::NaiveDate, chrono::NaiveDate), Error> {
    Ok((catalog::date("start_date", date_parts(start))?, catalog::date("end_date", date_parts(end))?))
}

impl ReportApi {
    async fn soh(&self, c: &Caller, r: &pb::StockOnHandReportRequest) -> Result<Vec<pb::StockOnHandRow>, Error> {
        let as_of = match r.as_of_time {
            Some(t) => Some(
                chrono::DateTime::from_timestamp(t.seconds, 0)
                    .ok_or_else(|| Error::invalid("as_of_time", "out of range"))?,
            ),
            None => None,
        };
        let depth = r.facility_grouping.as_ref().map_or(0, |g| g.depth);
        let rows = self
            .0
            .stock_on_hand(c, &r.facility_id, grouping(&r.group_by)?, depth, &r.product_id, as_of, r.include_zero)
            .await?;
        Ok(rows.into_iter().map(soh_row).collect())
    }

    async fn wastage(&self, c: &Caller, r: &pb::WastageReportRequest) -> Result<Vec<pb::WastageRow>, Error> {
        let (start, end) = period(r.start_date.as_ref(), r.end_date.as_ref())?;
        let depth = r.facility_grouping.as_ref().map(|g| g.depth);
        let rows = self.0.wastage(c, &r.facility_id, &r.product_id, start, end, depth).await?;
        Ok(rows.into_iter().map(wastage_row).collect())
    }

    async fn expiry(&self, c: &Caller, r: &pb::ExpiryRiskReportRequest) -> Result<Vec<pb::ExpiryRiskRow>, Error> {
        let rows = self.0.expiry_risk(c, &r.facility_id, &r.product_id, r.within_days, r.include_expired).await?;
        Ok(rows.into_iter().map(expiry_row).collect())
    }
}

fn paged<T: Clone>(rows: Vec<T>, size: i32, token: &str, req: &impl std::fmt::Debug) -> Result<Page<T>, Error> {
    App::page_rows(rows, size, token, req)
}

fn enum_name<E: TryFrom<i32>>(v: i32, name: impl Fn(&E) -> &'static str) -> String {
    E::try_from(v).map(|e| name(&e)).unwrap_or_default().to_owned()
}

fn ts(t: Option<prost_types::Timestamp>) -> String {
    t.and_then(|t| chrono::DateTime::from_timestamp(t.seconds, u32::try_from(t.nanos).unwrap_or(0)))
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true))
        .unwrap_or_default()
}

fn d(x: Option<pb::Date>) -> String {
    x.map(|d| format!("{:04}-{:02}-{:02}", d.year, d.month, d.day)).unwrap_or_default()
}

fn opt<T: ToString>(x: Option<T>) -> String {
    x.map(|v| v.to_string()).unwrap_or_default()
}

type CsvStream = Pin<Box<dyn Stream<Item = Result<pb::CsvChunk, Status>> + Send>>;

/// Splits CSV text into chunks of at most 64 KiB that end at a row end.
fn chunks(text: String, filename: String) -> Vec<pb::CsvChunk> {
    let mut out = Vec::new();
    let mut cur = String::new();
    for line in text.split_inclusive("\r\n") {
        if !cur.is_empty() && cur.len() + line.len() > 64 * 1024 {
            out.push(std::mem::take(&mut cur));
        }
        cur.push_str(line);
    }
    out.push(cur);
    out.into_iter()
        .enumerate()
        .map(|(i, data)| pb::CsvChunk {
            data: data.into_bytes(),
            filename: if i == 0 { filename.clone() } else { String::new() },
        })
        .collect()
}

#[tonic::async_trait]
impl pb::report_service_server::ReportService for ReportApi {
    type ExportReportCsvStream = CsvStream;
    type ExportEpcisStream = Pin<Box<dyn Stream<Item = Result<pb::EpcisChunk, Status>> + Send>>;

    async fn stock_on_hand_report(
        &self,
        req: Request<pb::StockOnHandReportRequest>,
    ) -> Result<Response<pb::StockOnHandReportResponse>, Status> {
        let c = caller(&self.0, &req).await?;
        let r = req.into_inner();
        let rows = self.soh(&c, &r).await?;
        let key = (&r.facility_id, &r.group_by, &r.facility_grouping, &r.product_id, &r.as_of_time, r.include_zero);
        let page = paged(rows, r.page_size, &r.page_token, &key)?;
        Ok(Response::new(pb::StockOnHandReportResponse {
            rows: page.items,
            next_page_token: page.next_page_token,
            as_of_time: Some(r.as_of_time.unwrap_or_else(|| timestamp(Utc::now()))),
        }))
    }

    async fn wastage_report(
        &self,
        req: Request<pb::WastageReportRequest>,
    ) -> Result<Response<pb::WastageReportResponse>, Status> {
        let c = caller(&self.0, &req).await?;
        let r = req.into_inner();
        let rows = self.wastage(&c, &r).await?;
        let key = (&r.facility_id, &r.product_id, &r.start_date, &r.end_date, &r.facility_grouping);
        let page = paged(rows, r.page_size, &r.page_token, &key)?;
        Ok(Response::new(pb::WastageReportResponse { rows: page.items, next_page_token: page.next_page_token }))
    }

    async fn expiry_risk_report(
        &self,
        req: Request<pb::ExpiryRiskReportRequest>,
    ) -> Result<Response<pb::ExpiryRiskReportResponse>, Status> {
        let c = caller(&self.0, &req).await?;
        let r = req.into_inner();
        let rows = self.expiry(&c, &r).await?;
        let key = (&r.facility_id, &r.product_id, r.within_days, r.include_expired);
        let page = paged(rows, r.page_size, &r.page_token, &key)?;
        Ok(Response::new(pb::ExpiryRiskReportResponse { rows: page.items, next_page_token: page.next_page_token }))
    }

    async fn export_report_csv(&self, req: Request<pb::ExportReportCsvRequest>) -> Result<Response<CsvStream>, Status> {
        let c = caller(&self.0, &req).await?;
        let today = Utc::now().date_naive();
        let (name, text) = self.report_csv(&c, req.into_inner().report).await?;
        let out = chunks(text, format!("{name}_{today}.csv"));
        Ok(Response::new(Box::pin(tokio_stream::iter(out.into_iter().map(Ok)))))
    }

    async fn export_epcis(
        &self,
        req: Request<pb::ExportEpcisRequest>,
    ) -> Result<Response<Self::ExportEpcisStream>, Status> {
        let c = caller(&self.0, &req).await?;
        let r = req.into_inner();
        let start = super::convert::instant("start_time", r.start_time)?;
        let end = super::convert::instant("end_time", r.end_time)?;
        let doc = self.0.export_epcis(&c, &r.facility_id, start, end).await?;
        let chunks: Vec<Result<pb::EpcisChunk, Status>> =
            doc.into_bytes().chunks(64 * 1024).map(|b| Ok(pb::EpcisChunk { data: b.to_vec() })).collect();
        Ok(Response::new(Box::pin(futures::stream::iter(chunks))))
    }
}

impl ReportApi {
    /// One report as CSV with its file name stem: for ExportReportCsv and the dashboard's downloads alike.
    pub(crate) async fn report_csv(
        &self,
        c: &Caller,
        report: Option<pb::export_report_csv_request::Report>,
    ) -> Result<(&'static str, String), Status> {
        use pb::export_report_csv_request::Report;
        let (name, text) = match report {
            Some(Report::StockOnHand(r)) => {
                let rows = self.soh(c, &r).await?;
                let header = [
                    "facility_id",
                    "facility_name",
                    "parent_facility_id",
                    "depth",
                    "product_id",
                    "product_code",
                    "lot_id",
                    "lot_number",
                    "expiry",
                    "available_vials",
                    "available_doses",
                    "quarantined_vials",
                    "quarantined_doses",
                    "expired_vials",
                    "expired_doses",
                    "in_transit_vials",
                    "in_transit_doses",
                    "min_doses",
                    "max_doses",
                ];
                let cells = rows.into_iter().map(|x| {
                    vec![
                        x.facility_id,
                        x.facility_name,
                        x.parent_facility_id,
                        x.depth.to_string(),
                        x.product_id,
                        x.product_code,
                        x.lot_id,
                        x.lot_number,
                        d(x.expiry),
                        x.available_vials.to_string(),
                        x.available_doses.to_string(),
                        x.quarantined_vials.to_string(),
                        x.quarantined_doses.to_string(),
                        x.expired_vials.to_string(),
                        x.expired_doses.to_string(),
                        x.in_transit_vials.to_string(),
                        x.in_transit_doses.to_string(),
                        opt(x.min_doses),
                        opt(x.max_doses),
                    ]
                });
                ("stock_on_hand", csv(&header, cells))
            }
            Some(Report::Wastage(r)) => {
                let rows = self.wastage(c, &r).await?;
                let header = [
                    "facility_id",
                    "facility_name",
                    "depth",
                    "product_id",
                    "product_code",
                    "sessions",
                    "doses_issued",
                    "doses_administered",
                    "wastage_rate_bp",
                    "opened_vial_wastage_doses",
                    "unopened_vial_wastage_doses",
                    "store_wastage_doses",
                    "acceptable_wastage_bp",
                    "above_acceptable",
                ];
                let cells = rows.into_iter().map(|x| {
                    vec![
                        x.facility_id,
                        x.facility_name,
                        x.depth.to_string(),
                        x.product_id,
                        x.product_code,
                        x.sessions.to_string(),
                        x.doses_issued.to_string(),
                        x.doses_administered.to_string(),
                        opt(x.wastage_rate_bp),
                        x.opened_vial_wastage_doses.to_string(),
                        x.unopened_vial_wastage_doses.to_string(),
                        x.store_wastage_doses.to_string(),
                        x.acceptable_wastage_bp.to_string(),
                        x.above_acceptable.to_string(),
                    ]
                });
                ("wastage", csv(&header, cells))
            }
            Some(Report::ExpiryRisk(r)) => {
                let rows = self.expiry(c, &r).await?;
                let header = [
                    "facility_id",
                    "facility_name",
                    "product_id",
                    "product_code",
                    "lot_id",
                    "lot_number",
                    "expiry",
                    "days_to_expiry",
                    "band",
                    "vials",
                    "doses",
                    "quarantined_vials",
                    "avg_daily_use_doses",
                    "doses_at_risk",
                ];
                let cells = rows.into_iter().map(|x| {
                    vec![
                        x.facility_id,
                        x.facility_name,
                        x.product_id,
                        x.product_code,
                        x.lot_id,
                        x.lot_number,
                        d(x.expiry),
                        x.days_to_expiry.to_string(),
                        enum_name(x.band, pb::ExpiryBand::as_str_name),
                        x.vials.to_string(),
                        x.doses.to_string(),
                        x.quarantined_vials.to_string(),
                        format!("{:.3}", x.avg_daily_use_doses),
                        x.doses_at_risk.to_string(),
                    ]
                });
                ("expiry_risk", csv(&header, cells))
            }
            Some(Report::LedgerEntries(r)) => {
                let mut all = Vec::new();
                let mut token = String::new();
                loop {
                    let page = self.0.list_entries(c, entry_filter(&r)?, &r.ancestor_id, 1000, &token).await?;
                    all.extend(page.items.into_iter().map(entry));
                    if page.next_page_token.is_empty() {
                        break;
                    }
                    token = page.next_page_token;
                }
                let header = [
                    "id",
                    "sequence",
                    "storage_unit_id",
                    "facility_id",
                    "lot_id",
                    "product_id",
                    "kind",
                    "quantity_vials",
                    "doses",
                    "quarantined_vials_change",
                    "adjustment_reason",
                    "discrepancy_reason",
                    "comment",
                    "actor_token_id",
                    "time",
                    "request_id",
                    "shipment_id",
                    "session_report_id",
                    "reverses_entry_id",
                    "reversed_by_entry_id",
                    "exposure_id",
                    "physical_count_id",
                    "balance_after_vials",
                ];
                let cells = all.into_iter().map(|e| {
                    vec![
                        e.id,
                        e.sequence.to_string(),
                        e.storage_unit_id,
                        e.facility_id,
                        e.lot_id,
                        e.product_id,
                        enum_name(e.kind, pb::LedgerEntryKind::as_str_name),
                        e.quantity_vials.to_string(),
                        e.doses.to_string(),
                        e.quarantined_vials_change.to_string(),
                        enum_name(e.adjustment_reason, pb::AdjustmentReason::as_str_name),
                        enum_name(e.discrepancy_reason, pb::DiscrepancyReason::as_str_name),
                        e.comment,
                        e.actor_token_id,
                        ts(e.time),
                        e.request_id,
                        e.shipment_id,
                        e.session_report_id,
                        e.reverses_entry_id,
                        e.reversed_by_entry_id,
                        e.exposure_id,
                        e.physical_count_id,
                        e.balance_after_vials.to_string(),
                    ]
                });
                ("ledger_entries", csv(&header, cells))
            }
            Some(Report::Balances(r)) => {
                let mut all = Vec::new();
                let mut token = String::new();
                loop {
                    let page = self.0.list_balances(c, stock_filter(&r)?, &r.ancestor_id, 1000, &token).await?;
                    all.extend(page.items.into_iter().map(balance));
                    if page.next_page_token.is_empty() {
                        break;
                    }
                    token = page.next_page_token;
                }
                let header = [
                    "storage_unit_id",
                    "facility_id",
                    "lot_id",
                    "product_id",
                    "lot_number",
                    "vials",
                    "doses",
                    "quarantined_vials",
                    "quarantined_doses",
                    "available_vials",
                    "available_doses",
                    "expiry",
                    "expired",
                    "vvm_stage",
                    "update_time",
                ];
                let cells = all.into_iter().map(|b| {
                    vec![
                        b.storage_unit_id,
                        b.facility_id,
                        b.lot_id,
                        b.product_id,
                        b.lot_number,
                        b.vials.to_string(),
                        b.doses.to_string(),
                        b.quarantined_vials.to_string(),
                        b.quarantined_doses.to_string(),
                        b.available_vials.to_string(),
                        b.available_doses.to_string(),
                        d(b.expiry),
                        b.expired.to_string(),
                        enum_name(b.vvm_stage, pb::VvmStage::as_str_name),
                        ts(b.update_time),
                    ]
                });
                ("balances", csv(&header, cells))
            }
            None => return Err(Error::invalid("report", "name the report to export").into()),
        };
        Ok((name, text))
    }
}
