//! Stock use cases: who may move which vials, validated into ledger operations the store writes
//! atomically. Every operation accepts a request_id and is idempotent.

use chrono::{Datelike, Days, NaiveDate, Utc};

use super::App;
use crate::domain::catalog::{LotInput, NewLot};
use crate::domain::stock::{
    self as st, AdjustmentReason, Allocation, DiscrepancyReason, EntryDraft, EntryFilter, EntryKind, LedgerEntry,
    LotInfo, Operation, SessionLine, SessionReport, Shipment, ShipmentLine, ShipmentState, StockFilter, StockItem,
    StockPolicy,
};
use crate::domain::{
    Action, Caller, Facility, FacilityKind, Idempotency, Lot, Page, PageRequest, Product, StorageUnit,
    TemperatureProfile, new_id, now, scan, validate,
};
use crate::error::{Error, Result};

/// Which lot a line names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LotRef {
    /// An existing lot.
    Id(String),
    /// A lot to match or create: product, GTIN, number, manufacturer, expiry parts.
    New(LotInput),
    /// A GS1 element string read from a pack's barcode.
    Scanned(String),
}

/// One line of a supplier receipt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReceiptLine {
    /// The lot.
    pub lot: LotRef,
    /// Vials.
    pub vials: i64,
    /// VVM stage observed (0 = not recorded).
    pub vvm_stage: i32,
    /// Unit, "" = the receipt's unit.
    pub storage_unit_id: String,
    /// Manufacturer of a lot created from a scanned code.
    pub manufacturer: String,
}

/// A new shipment's line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewShipmentLine {
    /// The lot.
    pub lot: LotRef,
    /// Vials.
    pub vials: i64,
    /// Source unit, "" = every unit of the sender holding the lot, by unit id.
    pub source_storage_unit_id: String,
}

/// The receipt of one shipment line.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReceivedLine {
    /// The line id.
    pub line_id: String,
    /// Vials received.
    pub received_vials: i64,
    /// Unit, "" = the request's unit.
    pub storage_unit_id: String,
    /// VVM stage on arrival.
    pub vvm_stage: i32,
    /// Why short.
    pub discrepancy_reason: i32,
    /// Comment.
    pub comment: String,
    /// A scanned GS1 code naming the lot instead of `line_id`; the vials fill that lot's lines
    /// in line order.
    pub scanned_code: String,
}

/// A counted (unit, lot).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CountLine {
    /// Unit.
    pub storage_unit_id: String,
    /// Lot.
    pub lot: LotRef,
    /// Vials counted.
    pub counted_vials: i64,
    /// VVM stage observed.
    pub vvm_stage: i32,
}

/// The outcome of a physical count for one (unit, lot).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct CountResult {
    /// Unit.
    pub storage_unit_id: String,
    /// Lot.
    pub lot_id: String,
    /// Vials on the books before.
    pub expected_vials: i64,
    /// Vials counted.
    pub counted_vials: i64,
    /// The correction written, if any.
    pub correction: Option<LedgerEntry>,
}

fn positive(field: &str, v: i64) -> Result<i64> {
    if (1..=10_000_000).contains(&v) { Ok(v) } else { Err(Error::invalid(field, "must be within 1..10000000")) }
}

fn vvm(field: &str, v: i32) -> Result<i32> {
    if (0..=4).contains(&v) { Ok(v) } else { Err(Error::invalid(field, "must be a VVM stage 1..4 (0 = not recorded)")) }
}

/// The request field of a scanned code beside the lot field `field` names ("lines[2].lot_id" or
/// "lines[2]" → "lines[2].scanned_code").
fn scan_field(field: &str) -> String {
    match field.strip_suffix("lot_id") {
        Some(prefix) => format!("{prefix}scanned_code"),
        None => format!("{field}.scanned_code"),
    }
}

fn today() -> NaiveDate {
    Utc::now().date_naive()
}

impl App {
    fn op(caller: &Caller, request_id: &str, drafts: Vec<EntryDraft>) -> Operation {
        Operation {
            id: new_id(),
            actor: caller.token_id.clone(),
            request_id: request_id.to_owned(),
            drafts,
            vvm: Vec::new(),
        }
    }

    /// A facility the caller may act on for `action`.
    async fn facility_for(&self, caller: &Caller, action: Action, id: &str, field: &str) -> Result<Facility> {
        caller.require(action)?;
        let id = validate::id(field, id)?;
        match self.store.get_facility(&id).await? {
            Some(f) if caller.covers(&f.path) => Ok(f),
            Some(_) => Err(Error::PermissionDenied),
            None => Err(caller.not_found("FACILITY_NOT_FOUND", "facility")),
        }
    }

    /// A storage unit the caller may act on, with its facility.
    async fn unit_for(
        &self,
        caller: &Caller,
        action: Action,
        id: &str,
        field: &str,
    ) -> Result<(StorageUnit, Facility)> {
        let (u, f) = self.unit_seen(caller, action, id, field).await?;
        Self::in_service(&u)?;
        Ok((u, f))
    }

    /// A storage unit the caller may see, with its facility, in service or not: what is checked
    /// before a request's key is looked up must not change over time.
    async fn unit_seen(
        &self,
        caller: &Caller,
        action: Action,
        id: &str,
        field: &str,
    ) -> Result<(StorageUnit, Facility)> {
        caller.require(action)?;
        let id = validate::id(field, id)?;
        let mut found = self.store.units_with_facility(std::slice::from_ref(&id)).await?;
        Self::seen_unit(caller, found.pop())
    }

    /// Two units read in one query (a transfer's ends), checked as [`Self::unit_seen`] does.
    async fn unit_pair(
        &self,
        caller: &Caller,
        action: Action,
        (a, a_field): (&str, &str),
        (b, b_field): (&str, &str),
    ) -> Result<((StorageUnit, Facility), (StorageUnit, Facility))> {
        caller.require(action)?;
        let (a, b) = (validate::id(a_field, a)?, validate::id(b_field, b)?);
        let found = self.store.units_with_facility(&[a.clone(), b.clone()]).await?;
        let pick = |id: &str| found.iter().find(|(u, _)| u.id == id).cloned();
        Ok((Self::seen_unit(caller, pick(&a))?, Self::seen_unit(caller, pick(&b))?))
    }

    /// A looked-up unit the caller may see.
    fn seen_unit(caller: &Caller, found: Option<(StorageUnit, Facility)>) -> Result<(StorageUnit, Facility)> {
        match found {
            Some((u, f)) if caller.covers(&f.path) => Ok((u, f)),
            Some(_) => Err(Error::PermissionDenied),
            None => Err(caller.not_found("STORAGE_UNIT_NOT_FOUND", "storage unit")),
        }
    }

    /// Refuses a unit out of service.
    fn in_service(u: &StorageUnit) -> Result<()> {
        if !u.active {
            return Err(Error::precondition(
                "STORAGE_UNIT_INACTIVE",
                format!("storage unit {} is out of service", u.name),
            ));
        }
        Ok(())
    }

    /// What the ledger needs of a lot, from [`super::LotCache`] when it was read before.
    async fn lot_info(&self, id: &str) -> Result<Option<LotInfo>> {
        if let Some(info) = self.lots.get(id) {
            return Ok(Some(info));
        }
        let found = self.store.lot_info(id).await?;
        if let Some(info) = &found {
            self.lots.put(info);
        }
        Ok(found)
    }

    async fn lot(&self, field: &str, lot: &LotRef) -> Result<LotInfo> {
        match lot {
            LotRef::Id(id) => {
                let id = validate::id(field, id)?;
                self.lot_info(&id)
                    .await?
                    .ok_or_else(|| Error::not_found("LOT_NOT_FOUND", format!("lot {id} not found")))
            }
            LotRef::Scanned(code) => {
                let field = scan_field(field);
                let scan = scan::parse(&field, code)?;
                let product = self.product_by_gtin(&scan.gtin).await?;
                let lot = self.store.find_lot(&product.id, &scan.lot_number).await?.ok_or_else(|| {
                    Error::not_found(
                        scan::UNKNOWN_LOT,
                        format!("lot {} of {} is not in the catalogue", scan.lot_number, product.name),
                    )
                })?;
                scan::check_expiry(&scan, lot.expiry)?;
                self.lot_info(&lot.id).await?.ok_or_else(|| Error::Internal("lot vanished".into()))
            }
            LotRef::New(_) => Err(Error::invalid(field, "name an existing lot by lot_id")),
        }
    }

    /// The product whose packs carry a scanned GTIN; the error names the GTIN.
    async fn product_by_gtin(&self, gtin: &str) -> Result<Product> {
        self.store
            .find_product_by_gtin(gtin)
            .await?
            .ok_or_else(|| Error::not_found(scan::UNKNOWN_GTIN, format!("no product in the catalogue has GTIN {gtin}")))
    }

    /// Matches a supplier lot to the catalogue or creates it; a different expiry is refused.
    async fn receipt_lot(
        &self,
        caller: &Caller,
        field: &str,
        lot: &LotRef,
        manufacturer: &str,
    ) -> Result<(Lot, LotInfo)> {
        let input = match lot {
            LotRef::New(input) => input.clone(),
            LotRef::Scanned(code) => {
                let field = scan_field(field);
                let scan = scan::parse(&field, code)?;
                let product = self.product_by_gtin(&scan.gtin).await?;
                if let Some(existing) = self.store.find_lot(&product.id, &scan.lot_number).await? {
                    scan::check_expiry(&scan, existing.expiry)?;
                    let info = self
                        .store
                        .lot_info(&existing.id)
                        .await?
                        .ok_or_else(|| Error::Internal("lot vanished".into()))?;
                    return Ok((existing, info));
                }
                let expiry = scan.expiry.ok_or_else(|| {
                    Error::invalid_because(
                        &field,
                        scan::INVALID_SCANNED_CODE,
                        format!("lot {} is new and the code has no expiry, AI (17)", scan.lot_number),
                    )
                })?;
                LotInput {
                    product_id: product.id,
                    gtin: scan.gtin,
                    lot_number: scan.lot_number,
                    manufacturer: manufacturer.to_owned(),
                    expiry: Some((expiry.year(), expiry.month() as i32, expiry.day() as i32)),
                }
            }
            other => {
                let info = self.lot(field, other).await?;
                let l = self
                    .store
                    .get_lot(&info.lot_id)
                    .await?
                    .ok_or_else(|| Error::not_found("LOT_NOT_FOUND", "lot not found"))?;
                return Ok((l, info));
            }
        };
        let new = NewLot::parse(input)?;
        let product =
            self.store.get_product(&new.product_id).await?.ok_or_else(|| {
                Error::not_found("PRODUCT_NOT_FOUND", format!("product {} not found", new.product_id))
            })?;
        new.check_product(&product)?;
        let lot = match self.store.find_lot(&new.product_id, &new.lot_number).await? {
            Some(existing) if existing.expiry != new.expiry => {
                return Err(Error::precondition(
                    "EXPIRY_MISMATCH",
                    format!("lot {} is on record with expiry {}, not {}", new.lot_number, existing.expiry, new.expiry),
                ));
            }
            Some(existing) => existing,
            None => {
                let idem = Idempotency::from_request(caller, "CreateLot", "", &new)?;
                self.store.insert_lot(idem.as_ref(), &new_id(), &new).await?
            }
        };
        let info = self.lot_info(&lot.id).await?.ok_or_else(|| Error::Internal("lot vanished".into()))?;
        Ok((lot, info))
    }

    fn check_usable(info: &LotInfo, lot_label: &str) -> Result<()> {
        if info.expiry < today() {
            return Err(Error::precondition(st::EXPIRED, format!("lot {lot_label} expired on {}", info.expiry)));
        }
        Ok(())
    }

    async fn check_profile(&self, product_id: &str, unit: &StorageUnit) -> Result<()> {
        // Anything may go into a refrigerator; only a freezer needs the product's profile.
        if unit.temperature_profile == TemperatureProfile::Refrigerated {
            return Ok(());
        }
        let p = self.store.get_product(product_id).await?.ok_or_else(|| Error::Internal("product vanished".into()))?;
        if p.temperature_profile == TemperatureProfile::Refrigerated
            && unit.temperature_profile != TemperatureProfile::Refrigerated
        {
            return Err(Error::precondition(
                "TEMPERATURE_PROFILE_MISMATCH",
                format!("{} must be kept at +2..+8 °C; storage unit {} is a freezer", p.name, unit.name),
            ));
        }
        Ok(())
    }

    /// Books a supplier delivery into a national or state store.
    pub async fn receive_from_supplier(
        &self,
        caller: &Caller,
        request_id: &str,
        storage_unit_id: &str,
        lines: Vec<ReceiptLine>,
        comment: &str,
    ) -> Result<(Vec<LedgerEntry>, Vec<Lot>)> {
        if lines.is_empty() || lines.len() > 500 {
            return Err(Error::invalid("lines", "must hold 1..500 lines"));
        }
        let comment = validate::optional_text("comment", comment, 1000)?;
        let idem =
            Idempotency::from_request(caller, "ReceiveFromSupplier", request_id, &(storage_unit_id, &lines, &comment))?;
        let entries = self
            .idempotent(idem.as_ref(), async {
                let mut drafts = Vec::new();
                let mut vvm_marks = Vec::new();
                for (i, line) in lines.iter().enumerate() {
                    let unit_id = if line.storage_unit_id.is_empty() { storage_unit_id } else { &line.storage_unit_id };
                    let (unit, facility) = self
                        .unit_for(caller, Action::WriteStock, unit_id, &format!("lines[{i}].storage_unit_id"))
                        .await?;
                    if !matches!(facility.kind, FacilityKind::NationalStore | FacilityKind::StateStore) {
                        return Err(Error::precondition(
                            "NOT_A_SUPPLY_STORE",
                            "supplier deliveries go to a national or state store",
                        ));
                    }
                    let vials = positive(&format!("lines[{i}].vials"), line.vials)?;
                    let stage = vvm(&format!("lines[{i}].vvm_stage"), line.vvm_stage)?;
                    let (lot, info) =
                        self.receipt_lot(caller, &format!("lines[{i}]"), &line.lot, &line.manufacturer).await?;
                    Self::check_usable(&info, &lot.lot_number)?;
                    self.check_profile(&info.product_id, &unit).await?;
                    let mut d = EntryDraft::new(EntryKind::Receipt, &unit.id, &facility.id, &info, vials);
                    d.comment.clone_from(&comment);
                    drafts.push(d);
                    if stage >= 3 {
                        // Booked so the ledger shows what arrived, then discarded at once.
                        let mut discard = EntryDraft::new(EntryKind::Adjustment, &unit.id, &facility.id, &info, -vials);
                        discard.adjustment_reason = AdjustmentReason::VvmDiscardPoint.as_i32();
                        discard.comment = "VVM at discard point on arrival".into();
                        drafts.push(discard);
                    }
                    if stage > 0 {
                        vvm_marks.push((unit.id.clone(), info.lot_id.clone(), stage));
                    }
                }
                let mut op = Self::op(caller, request_id, drafts);
                op.vvm = vvm_marks;
                self.store.post(idem.as_ref(), &op).await
            })
            .await?;
        // The lots of the lines, read back from the receipts (one per line, in line order), so a
        // retry answers with them as the first call did.
        let mut lots = Vec::new();
        for e in entries.iter().filter(|e| e.draft.kind == EntryKind::Receipt) {
            lots.push(
                self.store.get_lot(&e.draft.lot_id).await?.ok_or_else(|| Error::Internal("lot vanished".into()))?,
            );
        }
        Ok((entries, lots))
    }

    /// Creates a draft shipment; lines without a source unit are split over the sender's units
    /// holding the lot (by unit id), so dispatch knows exactly which balances to draw.
    pub async fn create_shipment(
        &self,
        caller: &Caller,
        request_id: &str,
        from: &str,
        to: &str,
        lines: Vec<NewShipmentLine>,
        reference: &str,
        comment: &str,
        expected_arrival: Option<NaiveDate>,
    ) -> Result<Shipment> {
        caller.require(Action::WriteStock)?;
        let from_id = validate::id("from_facility_id", from)?;
        let to_id = validate::id("to_facility_id", to)?;
        if to_id == from_id {
            return Err(Error::invalid_because("to_facility_id", "SAME_FACILITY", "must differ from from_facility_id"));
        }
        if lines.is_empty() || lines.len() > 500 {
            return Err(Error::invalid("lines", "must hold 1..500 lines"));
        }
        let reference = validate::optional_text("reference", reference, 64)?;
        let comment = validate::optional_text("comment", comment, 1000)?;
        // Comment and expected arrival are part of the request too; a request without them keeps
        // the fingerprint older versions recorded, so its retry across an upgrade still replays.
        let idem = if comment.is_empty() && expected_arrival.is_none() {
            Idempotency::from_request(caller, "CreateShipment", request_id, &(&from_id, &to_id, &lines, &reference))?
        } else {
            let request = (&from_id, &to_id, &lines, &reference, &comment, &expected_arrival);
            Idempotency::from_request(caller, "CreateShipment", request_id, &request)?
        };
        self.idempotent(idem.as_ref(), async {
            let from = self.facility_for(caller, Action::WriteStock, &from_id, "from_facility_id").await?;
            // The destination may lie outside the sender's scope (a return to the parent store).
            let to = self
                .store
                .get_facility(&to_id)
                .await?
                .ok_or_else(|| Error::not_found("FACILITY_NOT_FOUND", "destination facility not found"))?;
            if to.kind == FacilityKind::SessionSite {
                return Err(Error::precondition(
                    "INVALID_DESTINATION",
                    "session sites receive stock through session reports",
                ));
            }
            let mut out = Vec::new();
            for (i, l) in lines.iter().enumerate() {
                let vials = positive(&format!("lines[{i}].vials"), l.vials)?;
                let info = self.lot(&format!("lines[{i}].lot_id"), &l.lot).await?;
                let mk = |unit: &str, vials: i64| ShipmentLine {
                    id: new_id(),
                    lot_id: info.lot_id.clone(),
                    product_id: info.product_id.clone(),
                    vials,
                    doses_per_vial: info.doses_per_vial,
                    source_storage_unit_id: unit.to_owned(),
                    ..Default::default()
                };
                if l.source_storage_unit_id.is_empty() {
                    // Stock read outside the write: a twin that finds it gone meanwhile still
                    // answers with the shipment the first call created (see `idempotent`).
                    let mut left = vials;
                    for s in self.store.facility_stock(&from.id, Some(&info.product_id)).await? {
                        if s.lot_id == info.lot_id && s.balance.available() > 0 && left > 0 {
                            let take = s.balance.available().min(left);
                            out.push(mk(&s.storage_unit_id, take));
                            left -= take;
                        }
                    }
                    if left > 0 {
                        return Err(Error::precondition(
                            st::INSUFFICIENT_STOCK,
                            format!("lines[{i}]: {} has {} available vials of the lot", from.name, vials - left),
                        ));
                    }
                } else {
                    let (u, f) = self
                        .unit_for(
                            caller,
                            Action::WriteStock,
                            &l.source_storage_unit_id,
                            &format!("lines[{i}].source_storage_unit_id"),
                        )
                        .await?;
                    if f.id != from.id {
                        return Err(Error::precondition(
                            st::STORAGE_UNIT_OTHER_FACILITY,
                            format!("lines[{i}]: the unit is not at the sending facility"),
                        ));
                    }
                    out.push(mk(&u.id, vials));
                }
            }
            let s = Shipment {
                id: new_id(),
                from_facility_id: from.id,
                to_facility_id: to.id,
                state: ShipmentState::Draft,
                lines: out,
                reference,
                comment,
                expected_arrival,
                created_at: now(),
                dispatched_at: None,
                received_at: None,
                cancelled_at: None,
                created_by: caller.token_id.clone(),
                dispatched_by: String::new(),
                received_by: String::new(),
                cancelled_by: String::new(),
                cancel_comment: String::new(),
            };
            self.store.insert_shipment(idem.as_ref(), &s).await
        })
        .await
    }

    async fn shipment_for(&self, caller: &Caller, id: &str, side_from: Option<bool>) -> Result<Shipment> {
        caller.require(Action::ReadStock)?;
        let id = validate::id("shipment_id", id)?;
        let s =
            self.store.get_shipment(&id).await?.ok_or_else(|| caller.not_found("SHIPMENT_NOT_FOUND", "shipment"))?;
        let from = self.store.get_facility(&s.from_facility_id).await?;
        let to = self.store.get_facility(&s.to_facility_id).await?;
        let sees = |f: &Option<Facility>| f.as_ref().is_some_and(|f| caller.covers(&f.path));
        let ok = match side_from {
            None => sees(&from) || sees(&to),
            Some(true) => sees(&from),
            Some(false) => sees(&to),
        };
        if ok { Ok(s) } else { Err(Error::PermissionDenied) }
    }

    /// Reads a shipment visible from either end.
    pub async fn get_shipment(&self, caller: &Caller, id: &str) -> Result<Shipment> {
        self.shipment_for(caller, id, None).await
    }

    /// Dispatches a draft shipment: all lines leave their source units, or none do.
    pub async fn dispatch_shipment(&self, caller: &Caller, request_id: &str, id: &str) -> Result<Shipment> {
        caller.require(Action::WriteStock)?;
        let idem = Idempotency::from_request(caller, "DispatchShipment", request_id, &id)?;
        self.idempotent(idem.as_ref(), async {
            let mut s = self.shipment_for(caller, id, Some(true)).await?;
            if s.state != ShipmentState::Draft && idem.is_none() {
                return Err(Error::precondition(
                    st::INVALID_STATE,
                    format!("the shipment is {:?}, not Draft", s.state),
                ));
            }
            let stock = self.store.facility_stock(&s.from_facility_id, None).await?;
            let mut drafts = Vec::new();
            for line in &mut s.lines {
                let info = self.lot_info(&line.lot_id).await?.ok_or_else(|| Error::Internal("lot vanished".into()))?;
                Self::check_usable(&info, &line.lot_id)?;
                let held =
                    stock.iter().find(|b| b.storage_unit_id == line.source_storage_unit_id && b.lot_id == line.lot_id);
                line.dispatched_vvm_stage = held.map_or(0, |b| b.vvm_stage);
                if line.dispatched_vvm_stage >= 3 {
                    return Err(Error::precondition(
                        "VVM_DISCARD_POINT",
                        format!("lot {} is at its VVM discard point", line.lot_id),
                    ));
                }
                let mut d = EntryDraft::new(
                    EntryKind::Dispatch,
                    &line.source_storage_unit_id,
                    &s.from_facility_id,
                    &info,
                    -line.vials,
                );
                d.shipment_id = Some(s.id.clone());
                drafts.push(d);
            }
            s.state = ShipmentState::Dispatched;
            s.dispatched_at = Some(now());
            s.dispatched_by.clone_from(&caller.token_id);
            let op = Self::op(caller, request_id, drafts);
            self.store.advance_shipment(idem.as_ref(), ShipmentState::Draft, &s, &op).await
        })
        .await
    }

    /// Replaces lines named by a scanned code with the shipment lines of that lot, filled in
    /// line order; a line named twice is refused.
    async fn expand_scanned_lines(&self, s: &Shipment, lines: Vec<ReceivedLine>) -> Result<Vec<ReceivedLine>> {
        let mut out: Vec<ReceivedLine> = Vec::with_capacity(lines.len());
        for (i, l) in lines.into_iter().enumerate() {
            let named = if l.scanned_code.is_empty() {
                vec![l]
            } else {
                let info = self.lot(&format!("lines[{i}].lot_id"), &LotRef::Scanned(l.scanned_code.clone())).await?;
                let targets: Vec<&ShipmentLine> = s.lines.iter().filter(|x| x.lot_id == info.lot_id).collect();
                if targets.is_empty() {
                    return Err(Error::precondition(
                        "LOT_NOT_IN_SHIPMENT",
                        format!("lines[{i}]: the scanned lot is not in the shipment"),
                    ));
                }
                let dispatched: i64 = targets.iter().map(|t| t.vials).sum();
                if !(0..=dispatched).contains(&l.received_vials) {
                    return Err(Error::invalid_because(
                        format!("lines[{i}].received_vials"),
                        "RECEIVED_EXCEEDS_DISPATCHED",
                        format!("must be within 0..{dispatched}, the vials of the lot dispatched"),
                    ));
                }
                let mut left = l.received_vials;
                targets
                    .into_iter()
                    .map(|t| {
                        let take = left.min(t.vials);
                        left -= take;
                        ReceivedLine {
                            line_id: t.id.clone(),
                            received_vials: take,
                            scanned_code: String::new(),
                            ..l.clone()
                        }
                    })
                    .collect()
            };
            for n in named {
                if out.iter().any(|o| o.line_id == n.line_id) {
                    return Err(Error::invalid_because(
                        format!("lines[{i}]"),
                        "DUPLICATE_LINE",
                        format!("shipment line {} is received twice", n.line_id),
                    ));
                }
                out.push(n);
            }
        }
        Ok(out)
    }

    /// Receives a dispatched shipment; shortfalls become transit losses with a reason.
    pub async fn receive_shipment(
        &self,
        caller: &Caller,
        request_id: &str,
        id: &str,
        storage_unit_id: &str,
        lines: Vec<ReceivedLine>,
        accept_unlisted_in_full: bool,
    ) -> Result<Shipment> {
        caller.require(Action::WriteStock)?;
        let idem = Idempotency::from_request(
            caller,
            "ReceiveShipment",
            request_id,
            &(id, storage_unit_id, &lines, accept_unlisted_in_full),
        )?;
        self.idempotent(idem.as_ref(), async {
            let mut s = self.shipment_for(caller, id, Some(false)).await?;
            if s.state != ShipmentState::Dispatched && idem.is_none() {
                return Err(Error::precondition(
                    st::INVALID_STATE,
                    format!("the shipment is {:?}, not Dispatched", s.state),
                ));
            }
            let lines = self.expand_scanned_lines(&s, lines).await?;
            for l in &lines {
                if !s.lines.iter().any(|x| x.id == l.line_id) {
                    return Err(Error::precondition(
                        "LOT_NOT_IN_SHIPMENT",
                        format!("line {} is not in the shipment", l.line_id),
                    ));
                }
            }
            let mut drafts = Vec::new();
            let mut marks = Vec::new();
            let to = s.to_facility_id.clone();
            for (i, line) in s.lines.iter_mut().enumerate() {
                let got = match lines.iter().find(|l| l.line_id == line.id) {
                    Some(l) => l.clone(),
                    None if accept_unlisted_in_full => ReceivedLine {
                        line_id: line.id.clone(),
                        received_vials: line.vials,
                        vvm_stage: line.dispatched_vvm_stage,
                        ..Default::default()
                    },
                    None => {
                        return Err(Error::invalid_because(
                            format!("lines[{i}]"),
                            "MISSING_LINE",
                            format!("line {} was not received", line.id),
                        ));
                    }
                };
                if !(0..=line.vials).contains(&got.received_vials) {
                    return Err(Error::invalid_because(
                        format!("lines[{i}].received_vials"),
                        "RECEIVED_EXCEEDS_DISPATCHED",
                        format!("must be within 0..{}", line.vials),
                    ));
                }
                let stage = vvm(&format!("lines[{i}].vvm_stage"), got.vvm_stage)?;
                let unit_id = if got.storage_unit_id.is_empty() { storage_unit_id } else { &got.storage_unit_id };
                let (unit, f) =
                    self.unit_for(caller, Action::WriteStock, unit_id, &format!("lines[{i}].storage_unit_id")).await?;
                if f.id != to {
                    return Err(Error::precondition(
                        st::STORAGE_UNIT_OTHER_FACILITY,
                        format!("lines[{i}]: the unit is not at the receiving facility"),
                    ));
                }
                let info = self.lot_info(&line.lot_id).await?.ok_or_else(|| Error::Internal("lot vanished".into()))?;
                self.check_profile(&info.product_id, &unit).await?;
                let short = line.vials - got.received_vials;
                let comment = validate::optional_text(&format!("lines[{i}].comment"), &got.comment, 1000)?;
                if short > 0 {
                    let reason = DiscrepancyReason::from_i32(got.discrepancy_reason).ok_or_else(|| {
                        Error::invalid_because(
                            format!("lines[{i}].discrepancy_reason"),
                            "DISCREPANCY_REASON_REQUIRED",
                            "say why vials are missing",
                        )
                    })?;
                    if reason == DiscrepancyReason::Other && comment.is_empty() {
                        return Err(Error::invalid_because(
                            format!("lines[{i}].comment"),
                            "COMMENT_REQUIRED",
                            "explain the discrepancy",
                        ));
                    }
                    let mut loss = EntryDraft::new(EntryKind::TransitLoss, &unit.id, &to, &info, -short);
                    loss.storage_unit_id = None;
                    loss.draws_available = false;
                    loss.discrepancy_reason = reason.as_i32();
                    loss.comment.clone_from(&comment);
                    loss.shipment_id = Some(s.id.clone());
                    drafts.push(loss);
                    line.discrepancy_reason = reason.as_i32();
                }
                if got.received_vials > 0 {
                    let mut d = EntryDraft::new(EntryKind::ShipmentReceipt, &unit.id, &to, &info, got.received_vials);
                    d.shipment_id = Some(s.id.clone());
                    drafts.push(d);
                    if stage >= 3 {
                        let mut discard =
                            EntryDraft::new(EntryKind::Adjustment, &unit.id, &to, &info, -got.received_vials);
                        discard.adjustment_reason = AdjustmentReason::VvmDiscardPoint.as_i32();
                        discard.comment = "VVM at discard point on arrival".into();
                        discard.shipment_id = Some(s.id.clone());
                        drafts.push(discard);
                    }
                    if stage > 0 {
                        marks.push((unit.id.clone(), info.lot_id.clone(), stage));
                    }
                }
                line.received_vials = got.received_vials;
                line.received_storage_unit_id = unit.id.clone();
                line.received_vvm_stage = stage;
                line.receive_comment = comment;
            }
            s.state = ShipmentState::Received;
            s.received_at = Some(now());
            s.received_by.clone_from(&caller.token_id);
            let mut op = Self::op(caller, request_id, drafts);
            op.vvm = marks;
            self.store.advance_shipment(idem.as_ref(), ShipmentState::Dispatched, &s, &op).await
        })
        .await
    }

    /// Cancels a draft or dispatched shipment; dispatched vials return to their source units.
    pub async fn cancel_shipment(
        &self,
        caller: &Caller,
        request_id: &str,
        id: &str,
        comment: &str,
    ) -> Result<Shipment> {
        caller.require(Action::WriteStock)?;
        let comment = validate::text("comment", comment, 1000)
            .map_err(|_| Error::invalid_because("comment", "COMMENT_REQUIRED", "say why the shipment is cancelled"))?;
        let idem = Idempotency::from_request(caller, "CancelShipment", request_id, &(id, &comment))?;
        self.idempotent(idem.as_ref(), async {
            let mut s = self.shipment_for(caller, id, Some(true)).await?;
            let from = s.state;
            if !matches!(from, ShipmentState::Draft | ShipmentState::Dispatched) && idem.is_none() {
                return Err(Error::precondition(st::INVALID_STATE, format!("a {from:?} shipment cannot be cancelled")));
            }
            let mut drafts = Vec::new();
            if from == ShipmentState::Dispatched {
                for line in &s.lines {
                    let info = self
                        .store
                        .lot_info(&line.lot_id)
                        .await?
                        .ok_or_else(|| Error::Internal("lot vanished".into()))?;
                    let mut d = EntryDraft::new(
                        EntryKind::DispatchCancelled,
                        &line.source_storage_unit_id,
                        &s.from_facility_id,
                        &info,
                        line.vials,
                    );
                    d.shipment_id = Some(s.id.clone());
                    d.comment.clone_from(&comment);
                    drafts.push(d);
                }
            }
            s.state = ShipmentState::Cancelled;
            s.cancelled_at = Some(now());
            s.cancelled_by.clone_from(&caller.token_id);
            s.cancel_comment = comment;
            let op = Self::op(caller, request_id, drafts);
            // A replayed request finds the original state in the idempotency record, so the
            // transition below is only checked for fresh requests.
            let expected = if idem.is_some() && !matches!(from, ShipmentState::Draft | ShipmentState::Dispatched) {
                ShipmentState::Dispatched
            } else {
                from
            };
            self.store.advance_shipment(idem.as_ref(), expected, &s, &op).await
        })
        .await
    }

    /// Lists shipments in scope.
    pub async fn list_shipments(
        &self,
        caller: &Caller,
        facility_id: &str,
        direction: i32,
        states: &[i32],
        page_size: i32,
        page_token: &str,
    ) -> Result<Page<Shipment>> {
        caller.require(Action::ReadStock)?;
        let facility = match validate::optional_id("facility_id", facility_id)? {
            Some(f) => Some(self.facility_for(caller, Action::ReadStock, &f, "facility_id").await?.id),
            None => None,
        };
        if !(0..=2).contains(&direction) {
            return Err(Error::invalid("direction", "unknown direction"));
        }
        if states.iter().any(|s| ShipmentState::from_i32(*s).is_none()) {
            return Err(Error::invalid("states", "unknown shipment state"));
        }
        let page = PageRequest::parse(page_size, page_token, &(&facility, direction, states))?;
        self.store.list_shipments(&caller.scope_path, facility.as_deref(), direction, states, &page).await
    }

    /// Moves available vials between two units of one facility.
    pub async fn transfer(
        &self,
        caller: &Caller,
        request_id: &str,
        from_unit: &str,
        to_unit: &str,
        lot: &LotRef,
        vials: i64,
        comment: &str,
    ) -> Result<(LedgerEntry, LedgerEntry)> {
        let ((from, ff), (to, tf)) = self
            .unit_pair(caller, Action::WriteStock, (from_unit, "from_storage_unit_id"), (to_unit, "to_storage_unit_id"))
            .await?;
        if from.id == to.id {
            return Err(Error::invalid_because(
                "to_storage_unit_id",
                "SAME_STORAGE_UNIT",
                "must differ from from_storage_unit_id",
            ));
        }
        if ff.id != tf.id {
            return Err(Error::precondition(
                st::STORAGE_UNIT_OTHER_FACILITY,
                "transfers stay within one facility; use a shipment",
            ));
        }
        let vials = positive("vials", vials)?;
        let info = self.lot("lot_id", lot).await?;
        let comment = validate::optional_text("comment", comment, 1000)?;
        let mut out = EntryDraft::new(EntryKind::TransferOut, &from.id, &ff.id, &info, -vials);
        out.comment.clone_from(&comment);
        let mut into = EntryDraft::new(EntryKind::TransferIn, &to.id, &tf.id, &info, vials);
        into.comment = comment;
        let op = Self::op(caller, request_id, vec![out, into]);
        let idem = Idempotency::from_request(caller, "TransferStock", request_id, &op.drafts)?;
        // What may change over time is checked inside: a retry it refuses still gets the first
        // answer (see App::remember).
        let written = self
            .idempotent_write(idem.as_ref(), async {
                Self::in_service(&from)?;
                Self::in_service(&to)?;
                Self::check_usable(&info, &info.lot_id)?;
                self.check_profile(&info.product_id, &to).await?;
                self.store.post(idem.as_ref(), &op).await
            })
            .await?;
        let mut e = written.into_iter();
        match (e.next(), e.next()) {
            (Some(a), Some(b)) => Ok((a, b)),
            _ => Err(Error::Internal("transfer wrote fewer than two entries".into())),
        }
    }

    /// Writes one adjustment.
    pub async fn adjust(
        &self,
        caller: &Caller,
        request_id: &str,
        unit_id: &str,
        lot: &LotRef,
        quantity_vials: i64,
        reason: i32,
        comment: &str,
    ) -> Result<LedgerEntry> {
        let (unit, f) = self.unit_seen(caller, Action::WriteStock, unit_id, "storage_unit_id").await?;
        let info = self.lot("lot_id", lot).await?;
        let reason = AdjustmentReason::from_i32(reason).ok_or_else(|| Error::invalid("reason", "is required"))?;
        if quantity_vials == 0 || quantity_vials.abs() > 10_000_000 {
            return Err(Error::invalid("quantity_vials", "must be non-zero and at most 10000000 vials"));
        }
        if reason.sign() != 0 && reason.sign() != quantity_vials.signum() {
            return Err(Error::invalid_because(
                "quantity_vials",
                "SIGN_MISMATCH",
                format!("{reason:?} {} stock", if reason.sign() > 0 { "adds" } else { "removes" }),
            ));
        }
        let comment = validate::optional_text("comment", comment, 1000)?;
        if reason.needs_comment() && comment.is_empty() {
            return Err(Error::invalid_because(
                "comment",
                "COMMENT_REQUIRED",
                format!("explain the {reason:?} adjustment"),
            ));
        }
        let mut d = EntryDraft::new(EntryKind::Adjustment, &unit.id, &f.id, &info, quantity_vials);
        d.adjustment_reason = reason.as_i32();
        d.comment = comment;
        let op = Self::op(caller, request_id, vec![d]);
        let idem = Idempotency::from_request(caller, "AdjustStock", request_id, &op.drafts)?;
        self.idempotent_write(idem.as_ref(), async {
            Self::in_service(&unit)?;
            self.store.post(idem.as_ref(), &op).await
        })
        .await?
        .into_iter()
        .next()
        .ok_or_else(|| Error::Internal("no entry".into()))
    }

    /// Records a physical count at a facility; differences become COUNT_CORRECTION entries
    /// computed under the balance lock.
    pub async fn physical_count(
        &self,
        caller: &Caller,
        request_id: &str,
        facility_id: &str,
        lines: Vec<CountLine>,
        complete_units: &[String],
        comment: &str,
    ) -> Result<(String, Vec<CountResult>)> {
        caller.require(Action::WriteStock)?;
        let facility_id = validate::id("facility_id", facility_id)?;
        if lines.len() > 2000 || (lines.is_empty() && complete_units.is_empty()) {
            return Err(Error::invalid("lines", "must hold 1..2000 lines"));
        }
        let comment = validate::optional_text("comment", comment, 1000)?;
        let idem = Idempotency::from_request(
            caller,
            "RecordPhysicalCount",
            request_id,
            &(&facility_id, &lines, complete_units),
        )?;
        let answer = self
            .idempotent(idem.as_ref(), async {
                let f = self.facility_for(caller, Action::WriteStock, &facility_id, "facility_id").await?;
                let count_id = new_id();
                let mut targets: Vec<(String, LotInfo, i64, i32)> = Vec::new();
                for (i, l) in lines.iter().enumerate() {
                    let (u, uf) = self
                        .unit_for(
                            caller,
                            Action::WriteStock,
                            &l.storage_unit_id,
                            &format!("lines[{i}].storage_unit_id"),
                        )
                        .await?;
                    if uf.id != f.id {
                        return Err(Error::precondition(
                            st::STORAGE_UNIT_OTHER_FACILITY,
                            format!("lines[{i}]: the unit is not at the counted facility"),
                        ));
                    }
                    if !(0..=10_000_000).contains(&l.counted_vials) {
                        return Err(Error::invalid(format!("lines[{i}].counted_vials"), "must be within 0..10000000"));
                    }
                    let info = self.lot(&format!("lines[{i}].lot_id"), &l.lot).await?;
                    if targets.iter().any(|(tu, ti, _, _)| *tu == u.id && ti.lot_id == info.lot_id) {
                        return Err(Error::invalid_because(
                            format!("lines[{i}]"),
                            "DUPLICATE_LINE",
                            "each (unit, lot) once",
                        ));
                    }
                    targets.push((u.id, info, l.counted_vials, vvm(&format!("lines[{i}].vvm_stage"), l.vvm_stage)?));
                }
                let held = self.store.facility_stock(&f.id, None).await?;
                for unit in complete_units {
                    let unit = validate::id("complete_storage_unit_ids", unit)?;
                    for s in held.iter().filter(|s| s.storage_unit_id == unit) {
                        if !targets.iter().any(|(tu, ti, _, _)| *tu == unit && ti.lot_id == s.lot_id) {
                            let info = LotInfo {
                                lot_id: s.lot_id.clone(),
                                product_id: s.product_id.clone(),
                                doses_per_vial: s.doses_per_vial,
                                expiry: s.expiry,
                            };
                            targets.push((unit.clone(), info, 0, 0));
                        }
                    }
                }
                let mut drafts = Vec::new();
                let mut marks = Vec::new();
                for (unit, info, counted, stage) in &targets {
                    let mut d = EntryDraft::new(EntryKind::CountCorrection, unit, &f.id, info, 0);
                    d.count_to = Some(*counted);
                    d.physical_count_id = Some(count_id.clone());
                    d.comment.clone_from(&comment);
                    drafts.push(d);
                    if *stage > 0 {
                        marks.push((unit.clone(), info.lot_id.clone(), *stage));
                    }
                }
                let mut op = Self::op(caller, request_id, drafts);
                op.vvm = marks;
                let counted: Vec<(String, String, i64)> =
                    targets.into_iter().map(|(unit, info, counted, _)| (unit, info.lot_id, counted)).collect();
                // The answer is recorded whole under the request_id: rebuilt on a retry, a count that
                // corrected nothing would get a new id, and the lots of a complete unit would be those
                // of the stock at the time of the retry.
                let answer =
                    |entries: &[LedgerEntry]| Ok(serde_json::to_value((&count_id, count_results(&counted, entries)))?);
                self.store.post_answering(idem.as_ref(), &op, &answer).await
            })
            .await?;
        self.read_count_answer(answer, &lines).await
    }

    /// Reads a RecordPhysicalCount answer kept under a request_id. Versions before the whole
    /// answer was kept recorded only the correction entries written (a plain list); such an
    /// answer is rebuilt as those versions did on a retry: the count id from the entries, a
    /// result per counted line, and one per correction of a lot missing from a complete unit.
    async fn read_count_answer(
        &self,
        answer: serde_json::Value,
        lines: &[CountLine],
    ) -> Result<(String, Vec<CountResult>)> {
        // Now kept as [count_id, results]; before, as [entry, ...] (possibly empty).
        if answer.get(0).is_some_and(serde_json::Value::is_string) {
            return Ok(serde_json::from_value(answer)?);
        }
        let entries: Vec<LedgerEntry> = serde_json::from_value(answer)?;
        let count_id = entries.iter().find_map(|e| e.draft.physical_count_id.clone()).unwrap_or_default();
        let mut counted: Vec<(String, String, i64)> = Vec::new();
        for (i, l) in lines.iter().enumerate() {
            let unit = validate::id(&format!("lines[{i}].storage_unit_id"), &l.storage_unit_id)?;
            let lot = self.lot(&format!("lines[{i}].lot_id"), &l.lot).await?.lot_id;
            counted.push((unit, lot, l.counted_vials));
        }
        for e in &entries {
            let unit = e.draft.storage_unit_id.clone().unwrap_or_default();
            if !counted.iter().any(|(u, l, _)| *u == unit && *l == e.draft.lot_id) {
                counted.push((unit, e.draft.lot_id.clone(), e.balance_after_vials));
            }
        }
        Ok((count_id, count_results(&counted, &entries)))
    }

    /// Records a session's use of vials, with the WHO multi-dose vial policy for opened vials.
    pub async fn submit_session_report(
        &self,
        caller: &Caller,
        request_id: &str,
        facility_id: &str,
        storage_unit_id: &str,
        session_date: NaiveDate,
        lines: Vec<(LotRef, SessionLine)>,
        comment: &str,
    ) -> Result<SessionReport> {
        let site = self.facility_for(caller, Action::WriteStock, facility_id, "session_report.facility_id").await?;
        let stock_facility = match site.kind {
            FacilityKind::SessionSite => {
                site.parent_id.clone().ok_or_else(|| Error::Internal("session site without parent".into()))?
            }
            FacilityKind::ColdChainPoint | FacilityKind::DistrictStore => site.id.clone(),
            _ => {
                return Err(Error::precondition(
                    "INVALID_FACILITY_KIND",
                    "sessions are held at session sites and cold-chain points",
                ));
            }
        };
        if lines.is_empty() || lines.len() > 100 {
            return Err(Error::invalid("session_report.lines", "must hold 1..100 lines"));
        }
        // Only what cannot change over time is resolved before the key is looked up: the units
        // and lots the lines name (the request's fingerprint is made of them).
        let mut resolved = Vec::new();
        let mut out_lines = Vec::new();
        for (i, (lot, mut line)) in lines.into_iter().enumerate() {
            let unit_id =
                if line.storage_unit_id.is_empty() { storage_unit_id.to_owned() } else { line.storage_unit_id.clone() };
            let (unit, uf) = self
                .unit_seen(caller, Action::WriteStock, &unit_id, &format!("session_report.lines[{i}].storage_unit_id"))
                .await?;
            if uf.id != stock_facility {
                return Err(Error::precondition(
                    st::STORAGE_UNIT_OTHER_FACILITY,
                    format!(
                        "lines[{i}]: vials come from a unit at {}",
                        if site.kind == FacilityKind::SessionSite {
                            "the site's parent facility"
                        } else {
                            "the facility"
                        }
                    ),
                ));
            }
            let info = self.lot(&format!("session_report.lines[{i}].lot_id"), &lot).await?;
            line.lot_id.clone_from(&info.lot_id);
            line.storage_unit_id.clone_from(&unit.id);
            out_lines.push((line, info.product_id.clone(), info.doses_per_vial));
            resolved.push((unit, uf, info));
        }
        let idem = Idempotency::from_request(
            caller,
            "SubmitSessionReport",
            request_id,
            &(&site.id, &session_date, &out_lines),
        )?;
        self.idempotent(idem.as_ref(), async {
            if session_date > today() {
                return Err(Error::precondition(
                    "SESSION_DATE_IN_FUTURE",
                    format!("session date {session_date} is in the future"),
                ));
            }
            let report_id = new_id();
            let mut drafts = Vec::new();
            for (i, ((line, _, _), (unit, uf, info))) in out_lines.iter().zip(&resolved).enumerate() {
                Self::in_service(unit)?;
                let product = self
                    .store
                    .get_product(&info.product_id)
                    .await?
                    .ok_or_else(|| Error::Internal("product vanished".into()))?;
                let mdvp =
                    product.multi_dose_vial_policy && product.presentation == crate::domain::Presentation::Liquid;
                line.check(i, info.doses_per_vial, mdvp)?;
                if line.vials_issued > 0 {
                    Self::check_usable(info, &info.lot_id)?;
                }
                let mut push = |kind: EntryKind, q: i64| {
                    if q != 0 {
                        let mut d = EntryDraft::new(kind, &unit.id, &uf.id, info, q);
                        d.session_report_id = Some(report_id.clone());
                        if kind == EntryKind::SessionDiscard {
                            d.adjustment_reason = line.discard_reason;
                        }
                        drafts.push(d);
                    }
                };
                push(EntryKind::SessionIssue, -line.vials_issued);
                push(EntryKind::SessionReturn, line.unopened_vials_returned + line.unopened_vials_discarded);
                push(EntryKind::SessionDiscard, -line.unopened_vials_discarded);
            }
            let report = SessionReport {
                id: report_id,
                facility_id: site.id.clone(),
                storage_unit_id: storage_unit_id.to_owned(),
                session_date,
                lines: out_lines.clone(),
                comment: validate::optional_text("session_report.comment", comment, 1000)?,
                submitted_at: now(),
                submitted_by: caller.token_id.clone(),
                ledger_entry_ids: Vec::new(),
            };
            let op = Self::op(caller, request_id, drafts);
            let reuse_from = session_date.checked_sub_days(Days::new(st::MDVP_DAYS as u64)).unwrap_or(session_date);
            self.store.insert_session_report(idem.as_ref(), &report, &op, reuse_from).await
        })
        .await
    }

    /// Reverses an entry (with its transfer leg or whole session report).
    pub async fn reverse(
        &self,
        caller: &Caller,
        request_id: &str,
        entry_id: &str,
        comment: &str,
    ) -> Result<LedgerEntry> {
        caller.require(Action::WriteStock)?;
        let id = validate::id("entry_id", entry_id)?;
        let comment = validate::text("comment", comment, 1000)
            .map_err(|_| Error::invalid_because("comment", "COMMENT_REQUIRED", "say why the entry is reversed"))?;
        let (entry, path) =
            self.store.get_entry(&id).await?.ok_or_else(|| caller.not_found("ENTRY_NOT_FOUND", "ledger entry"))?;
        caller.require_at(Action::WriteStock, &path)?;
        let idem = Idempotency::from_request(caller, "ReverseLedgerEntry", request_id, &(&id, &comment))?;
        let written = self
            .idempotent(idem.as_ref(), async {
                if !st::reversible(entry.draft.kind) {
                    return Err(Error::precondition(
                        st::NOT_REVERSIBLE,
                        format!(
                            "a {:?} entry cannot be reversed; cancel the shipment or assess the exposure instead",
                            entry.draft.kind
                        ),
                    ));
                }
                if entry.reversed_by.is_some() && idem.is_none() {
                    return Err(Error::precondition(st::ALREADY_REVERSED, "the entry has already been reversed"));
                }
                let group = matches!(
                    entry.draft.kind,
                    EntryKind::TransferOut
                        | EntryKind::TransferIn
                        | EntryKind::SessionIssue
                        | EntryKind::SessionReturn
                        | EntryKind::SessionDiscard
                );
                let targets =
                    if group { self.store.operation_entries(&entry.operation_id).await? } else { vec![entry.clone()] };
                // Later entries first, so a return is undone before the issue it came from.
                let drafts = targets.iter().rev().map(|e| st::reversal_of(e, &comment)).collect();
                let op = Self::op(caller, request_id, drafts);
                self.store.post(idem.as_ref(), &op).await
            })
            .await?;
        written
            .into_iter()
            .find(|e| e.draft.reverses_entry_id.as_deref() == Some(id.as_str()))
            .ok_or_else(|| Error::Internal("reversal not written".into()))
    }

    /// A facility or storage unit a listing is filtered by must lie in scope: naming one outside
    /// answers PERMISSION_DENIED, as every other call does, rather than an empty page.
    async fn check_filter_targets(&self, caller: &Caller, facility: Option<&str>, unit: Option<&str>) -> Result<()> {
        if let Some(f) = facility {
            self.facility_for(caller, Action::ReadStock, f, "facility_id").await?;
        }
        if let Some(u) = unit {
            let id = validate::id("storage_unit_id", u)?;
            self.visible_unit(caller, &id).await?;
        }
        Ok(())
    }

    /// Lists balances in scope.
    pub async fn list_balances(
        &self,
        caller: &Caller,
        mut f: StockFilter,
        ancestor_id: &str,
        page_size: i32,
        page_token: &str,
    ) -> Result<Page<StockItem>> {
        caller.require(Action::ReadStock)?;
        if let Some(a) = validate::optional_id("ancestor_id", ancestor_id)? {
            f.ancestor_path = Some(self.facility_for(caller, Action::ReadStock, &a, "ancestor_id").await?.path);
        }
        self.check_filter_targets(caller, f.facility_id.as_deref(), f.storage_unit_id.as_deref()).await?;
        let page = PageRequest::parse(page_size, page_token, &f)?;
        self.store.list_stock(&caller.scope_path, &f, &page).await
    }

    /// Lists ledger entries in scope.
    pub async fn list_entries(
        &self,
        caller: &Caller,
        mut f: EntryFilter,
        ancestor_id: &str,
        page_size: i32,
        page_token: &str,
    ) -> Result<Page<LedgerEntry>> {
        caller.require(Action::ReadStock)?;
        if let Some(a) = validate::optional_id("ancestor_id", ancestor_id)? {
            f.ancestor_path = Some(self.facility_for(caller, Action::ReadStock, &a, "ancestor_id").await?.path);
        }
        self.check_filter_targets(caller, f.facility_id.as_deref(), f.storage_unit_id.as_deref()).await?;
        if f.kinds.iter().any(|k| EntryKind::from_i32(*k).is_none()) {
            return Err(Error::invalid("kinds", "unknown ledger entry kind"));
        }
        let page = PageRequest::parse(page_size, page_token, &f)?;
        self.store.list_entries(&caller.scope_path, &f, &page).await
    }

    /// Suggests lots to issue, earliest-expiry-first with VVM priority.
    pub async fn suggest_allocation(
        &self,
        caller: &Caller,
        facility_id: &str,
        product_id: &str,
        doses: i64,
        unit_id: &str,
        min_shelf_life_days: i32,
    ) -> Result<Allocation> {
        let f = self.facility_for(caller, Action::ReadStock, facility_id, "facility_id").await?;
        let product_id = validate::id("product_id", product_id)?;
        self.store
            .get_product(&product_id)
            .await?
            .ok_or_else(|| Error::not_found("PRODUCT_NOT_FOUND", "product not found"))?;
        let doses = positive("doses", doses)?;
        let days = match min_shelf_life_days {
            0 => 30,
            d if d < 0 => return Err(Error::invalid("min_shelf_life_days", "must not be negative")),
            d => i64::from(d),
        };
        let unit = validate::optional_id("storage_unit_id", unit_id)?;
        let items = self
            .store
            .facility_stock(&f.id, Some(&product_id))
            .await?
            .into_iter()
            .filter(|i| unit.as_ref().is_none_or(|u| *u == i.storage_unit_id))
            .collect();
        Ok(st::allocate(items, doses, today(), days))
    }

    /// Sets a min/max policy (doses) of a product at a facility.
    pub async fn set_policy(
        &self,
        caller: &Caller,
        request_id: &str,
        facility_id: &str,
        product_id: &str,
        min: i64,
        max: i64,
    ) -> Result<StockPolicy> {
        caller.require(Action::SetPolicies)?;
        let facility_id = validate::id("policy.facility_id", facility_id)?;
        let product_id = validate::id("policy.product_id", product_id)?;
        if min < 0 || max < 0 {
            return Err(Error::invalid("policy.min_doses", "must not be negative"));
        }
        if max != 0 && min > max {
            return Err(Error::invalid_because("policy.min_doses", "MIN_ABOVE_MAX", "must not exceed max_doses"));
        }
        let idem =
            Idempotency::from_request(caller, "SetStockPolicy", request_id, &(&facility_id, &product_id, min, max))?;
        self.idempotent(idem.as_ref(), async {
            let f = self.facility_for(caller, Action::SetPolicies, &facility_id, "policy.facility_id").await?;
            self.store
                .get_product(&product_id)
                .await?
                .ok_or_else(|| Error::not_found("PRODUCT_NOT_FOUND", "product not found"))?;
            let p = StockPolicy {
                facility_id: f.id,
                product_id: product_id.clone(),
                min_doses: min,
                max_doses: max,
                updated_at: now(),
                updated_by: caller.token_id.clone(),
            };
            self.store.set_policy(idem.as_ref(), &p).await
        })
        .await
    }

    /// Lists policies in scope.
    pub async fn list_policies(
        &self,
        caller: &Caller,
        facility_id: &str,
        ancestor_id: &str,
        product_id: &str,
        page_size: i32,
        page_token: &str,
    ) -> Result<Page<StockPolicy>> {
        caller.require(Action::ReadStock)?;
        let facility = match validate::optional_id("facility_id", facility_id)? {
            Some(f) => Some(self.facility_for(caller, Action::ReadStock, &f, "facility_id").await?.id),
            None => None,
        };
        // A subtree in scope narrows the scope itself.
        let under = match validate::optional_id("ancestor_id", ancestor_id)? {
            Some(a) => self.facility_for(caller, Action::ReadStock, &a, "ancestor_id").await?.path,
            None => caller.scope_path.clone(),
        };
        let product = validate::optional_id("product_id", product_id)?;
        let page = PageRequest::parse(page_size, page_token, &(&facility, &under, &product))?;
        self.store.list_policies(&under, facility.as_deref(), product.as_deref(), &page).await
    }
}

impl App {
    /// Records a district officer's assessment of an exposure: RELEASE returns the quarantined
    /// vials to use; DISCARD removes `discard_vials` of them (0 = all) with a reason and releases
    /// the rest. Only once the alarm has ended.
    pub async fn assess_exposure(
        &self,
        caller: &Caller,
        request_id: &str,
        exposure_id: &str,
        decision: i32,
        discard_reason: i32,
        discard_vials: i64,
        comment: &str,
    ) -> Result<st::Exposure> {
        caller.require(Action::SetPolicies)?;
        let id = validate::id("exposure_id", exposure_id)?;
        let comment = validate::text("comment", comment, 1000)
            .map_err(|_| Error::invalid_because("comment", "COMMENT_REQUIRED", "record the reasoning"))?;
        let (mut x, path) =
            self.store.get_exposure(&id).await?.ok_or_else(|| caller.not_found("EXPOSURE_NOT_FOUND", "exposure"))?;
        caller.require_at(Action::SetPolicies, &path)?;
        let idem = Idempotency::from_request(
            caller,
            "RecordExposureAssessment",
            request_id,
            &(&id, decision, discard_reason, discard_vials, &comment),
        )?;
        self.idempotent(idem.as_ref(), async {
            if x.end.is_none() {
                return Err(Error::precondition(
                    "EXPOSURE_ONGOING",
                    "the alarm is still going on; assess once it has ended",
                ));
            }
            let (discard, reason) = match decision {
                1 => (0, 0),
                2 => {
                    let reason = AdjustmentReason::from_i32(discard_reason).ok_or_else(|| {
                        Error::invalid_because(
                            "discard_reason",
                            "DISCARD_REASON_REQUIRED",
                            "say why the vials are discarded",
                        )
                    })?;
                    let n = if discard_vials == 0 { x.quarantined_vials } else { discard_vials };
                    if !(1..=x.quarantined_vials.max(1)).contains(&n) {
                        return Err(Error::invalid(
                            "discard_vials",
                            format!("must be within 1..{}", x.quarantined_vials),
                        ));
                    }
                    (n, reason.as_i32())
                }
                _ => return Err(Error::invalid("decision", "must be RELEASE or DISCARD")),
            };
            let info = self.lot_info(&x.lot_id).await?.ok_or_else(|| Error::Internal("lot vanished".into()))?;
            // A count (or a discard) since the alarm may have lowered the quarantined vials: assess
            // what is still there. (If it changes again before the write, the write is refused and
            // the exposure stays pending for another try.)
            let held = self
                .store
                .facility_stock(&x.facility_id, Some(&x.product_id))
                .await?
                .into_iter()
                .find(|b| b.storage_unit_id == x.storage_unit_id && b.lot_id == x.lot_id)
                .map_or(0, |b| b.balance.quarantined);
            let total = x.quarantined_vials.min(held);
            let discard = discard.min(total);
            let release = total - discard;
            let mut drafts = Vec::new();
            if discard > 0 {
                let mut d = EntryDraft::new(EntryKind::Adjustment, &x.storage_unit_id, &x.facility_id, &info, -discard);
                d.quarantined_change = -discard;
                d.draws_available = false;
                d.adjustment_reason = reason;
                d.exposure_id = Some(x.id.clone());
                d.comment.clone_from(&comment);
                drafts.push(d);
            }
            if release > 0 {
                let mut d = EntryDraft::new(EntryKind::Release, &x.storage_unit_id, &x.facility_id, &info, 0);
                d.quarantined_change = -release;
                d.exposure_id = Some(x.id.clone());
                d.comment.clone_from(&comment);
                drafts.push(d);
            }
            x.state = if discard > 0 { st::ExposureState::Discarded } else { st::ExposureState::Released };
            x.assessment = Some(st::Assessment {
                decision,
                discard_reason: reason,
                discarded_vials: discard,
                released_vials: release,
                comment,
                assessed_by: caller.token_id.clone(),
                assessed_at: now(),
            });
            let op = Self::op(caller, request_id, drafts);
            self.store.assess_exposure(idem.as_ref(), &x, &op).await
        })
        .await
    }

    /// Lists exposures in scope, newest first.
    pub async fn list_exposures(
        &self,
        caller: &Caller,
        q: &st::ExposureQuery,
        page_size: i32,
        page_token: &str,
    ) -> Result<Page<st::Exposure>> {
        caller.require(Action::ReadStock)?;
        let facility_id = match validate::optional_id("facility_id", &q.facility_id)? {
            Some(f) => Some(self.facility_for(caller, Action::ReadStock, &f, "facility_id").await?.id),
            None => None,
        };
        let ancestor_path = match validate::optional_id("ancestor_id", &q.ancestor_id)? {
            Some(a) => Some(self.facility_for(caller, Action::ReadStock, &a, "ancestor_id").await?.path),
            None => None,
        };
        if q.states.iter().any(|s| st::ExposureState::from_i32(*s).is_none()) {
            return Err(Error::invalid("states", "unknown exposure state"));
        }
        if let (Some(s), Some(e)) = (q.start, q.end)
            && e <= s
        {
            return Err(Error::invalid("end_time", "must be after start_time"));
        }
        let f = st::ExposureFilter {
            facility_id,
            ancestor_path,
            storage_unit_id: validate::optional_id("storage_unit_id", &q.storage_unit_id)?,
            lot_id: validate::optional_id("lot_id", &q.lot_id)?,
            alert_id: validate::optional_id("alarm_id", &q.alert_id)?,
            states: q.states.clone(),
            start: q.start,
            end: q.end,
        };
        let page = PageRequest::parse(page_size, page_token, &f)?;
        self.store.list_exposures(&caller.scope_path, &f, &page).await
    }
}

/// The results of a count: each counted (unit, lot, vials) with the correction written for it.
fn count_results(counted: &[(String, String, i64)], entries: &[LedgerEntry]) -> Vec<CountResult> {
    counted
        .iter()
        .map(|(unit, lot_id, counted)| {
            let correction = entries
                .iter()
                .find(|e| e.draft.storage_unit_id.as_deref() == Some(unit.as_str()) && e.draft.lot_id == *lot_id)
                .cloned();
            let expected = correction.as_ref().map_or(*counted, |c| c.balance_after_vials - c.draft.quantity_vials);
            CountResult {
                storage_unit_id: unit.clone(),
                lot_id: lot_id.clone(),
                expected_vials: expected,
                counted_vials: *counted,
                correction,
            }
        })
        .collect()
}
