//! The stock ledger's rules: entry kinds, how an entry changes a balance, EEFO allocation and the
//! session-report arithmetic. Pure functions; the store applies them under row locks.

use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};

use super::facility::int_enum;
use crate::error::{Error, Result};

int_enum! {
    /// What a ledger entry records.
    EntryKind {
        /// (+) Supplier receipt.
        Receipt = 1,
        /// (−) Leaves the source on shipment dispatch.
        Dispatch = 2,
        /// (+) Booked in at the destination.
        ShipmentReceipt = 3,
        /// (−) Dispatched but never arrived (no storage unit).
        TransitLoss = 4,
        /// (+) Returned to the source when a dispatched shipment is cancelled.
        DispatchCancelled = 5,
        /// (−) Transfer out of a unit.
        TransferOut = 6,
        /// (+) Transfer into a unit.
        TransferIn = 7,
        /// (±) Manual adjustment with a reason.
        Adjustment = 8,
        /// (±) Physical count difference.
        CountCorrection = 9,
        /// (−) Taken out to a session.
        SessionIssue = 10,
        /// (+) Unopened vials back from a session.
        SessionReturn = 11,
        /// (−) Unopened vials discarded after a session.
        SessionDiscard = 12,
        /// (0) Quarantined by an exposure.
        Quarantine = 13,
        /// (0) Released after assessment.
        Release = 14,
        /// (∓) Cancels an earlier entry.
        Reversal = 15,
    }
}

int_enum! {
    /// Why vials are adjusted or discarded (numbers as in the API).
    AdjustmentReason {
        /// Past expiry.
        Expired = 1,
        /// VVM at discard point.
        VvmDiscardPoint = 2,
        /// Frozen, failed the shake test.
        FrozenFailedShakeTest = 3,
        /// Heat exposure assessment.
        HeatExposure = 4,
        /// Broken.
        Broken = 5,
        /// Contaminated.
        Contaminated = 6,
        /// Label missing.
        LabelMissing = 7,
        /// Recalled.
        Recalled = 8,
        /// Lost in store.
        Lost = 9,
        /// Stolen.
        Stolen = 10,
        /// Found stock.
        Found = 11,
        /// Count error.
        CountCorrection = 12,
        /// Returned to supplier.
        ReturnedToSupplier = 13,
        /// Anything else.
        Other = 14,
    }
}

impl AdjustmentReason {
    /// The sign a quantity with this reason must have: -1, +1, or 0 for either.
    pub fn sign(self) -> i64 {
        match self {
            AdjustmentReason::Found => 1,
            AdjustmentReason::CountCorrection | AdjustmentReason::Other => 0,
            _ => -1,
        }
    }

    /// Whether the vials are destroyed (as opposed to lost, found or recounted).
    pub fn is_discard(self) -> bool {
        matches!(
            self,
            AdjustmentReason::Expired
                | AdjustmentReason::VvmDiscardPoint
                | AdjustmentReason::FrozenFailedShakeTest
                | AdjustmentReason::HeatExposure
                | AdjustmentReason::Broken
                | AdjustmentReason::Contaminated
                | AdjustmentReason::LabelMissing
                | AdjustmentReason::Recalled
        )
    }

    /// Whether a comment must explain the adjustment.
    pub fn needs_comment(self) -> bool {
        matches!(
            self,
            AdjustmentReason::Lost
                | AdjustmentReason::Stolen
                | AdjustmentReason::Found
                | AdjustmentReason::CountCorrection
                | AdjustmentReason::Other
        )
    }
}

int_enum! {
    /// Why fewer vials arrived than were dispatched.
    DiscrepancyReason {
        /// Missing on arrival.
        LostInTransit = 1,
        /// Damaged on arrival.
        DamagedInTransit = 2,
        /// Frozen in transit.
        FrozenInTransit = 3,
        /// Heat exposed in transit.
        HeatExposedInTransit = 4,
        /// Stolen in transit.
        StolenInTransit = 5,
        /// Short packed at the source.
        ShortPacked = 6,
        /// Anything else.
        Other = 7,
    }
}

int_enum! {
    /// A shipment's lifecycle.
    ShipmentState {
        /// Created; nothing moved.
        Draft = 1,
        /// In transit.
        Dispatched = 2,
        /// Received (final).
        Received = 3,
        /// Cancelled (final).
        Cancelled = 4,
    }
}

/// The (storage unit, lot) quantities an entry changes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BalanceState {
    /// Vials on hand, quarantined included.
    pub vials: i64,
    /// Of which quarantined.
    pub quarantined: i64,
}

impl BalanceState {
    /// Vials that may be issued.
    pub fn available(self) -> i64 {
        self.vials - self.quarantined
    }
}

/// An entry about to be written; the store fills in id, sequence, time and balance_after.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EntryDraft {
    /// The unit; `None` only for transit losses.
    pub storage_unit_id: Option<String>,
    /// The unit's facility (for transit losses, the destination).
    pub facility_id: String,
    /// The lot.
    pub lot_id: String,
    /// The lot's product.
    pub product_id: String,
    /// Doses per vial of the product.
    pub doses_per_vial: i64,
    /// What it records.
    pub kind: EntryKind,
    /// Signed vials.
    pub quantity_vials: i64,
    /// Signed change of the quarantined part.
    pub quarantined_change: i64,
    /// Whether a removal may only take available (not quarantined) vials.
    pub draws_available: bool,
    /// Adjustment reason number (0 = none).
    pub adjustment_reason: i32,
    /// Discrepancy reason number (0 = none).
    pub discrepancy_reason: i32,
    /// Free text.
    pub comment: String,
    /// Shipment link.
    pub shipment_id: Option<String>,
    /// Session report link.
    pub session_report_id: Option<String>,
    /// The entry this one reverses.
    pub reverses_entry_id: Option<String>,
    /// Physical count link.
    pub physical_count_id: Option<String>,
    /// Exposure link.
    pub exposure_id: Option<String>,
    /// For count corrections: the counted vials. The quantity is computed from the balance under
    /// the lock, so a count never corrects against a stale figure.
    #[serde(default)]
    pub count_to: Option<i64>,
    /// For quarantines: put every available vial in quarantine, counted under the lock.
    #[serde(default)]
    pub quarantine_available: bool,
}

impl EntryDraft {
    /// A plain entry; links and reasons are set by the caller.
    pub fn new(kind: EntryKind, unit: &str, facility: &str, lot: &LotInfo, quantity_vials: i64) -> Self {
        EntryDraft {
            storage_unit_id: Some(unit.to_owned()),
            facility_id: facility.to_owned(),
            lot_id: lot.lot_id.clone(),
            product_id: lot.product_id.clone(),
            doses_per_vial: lot.doses_per_vial,
            kind,
            quantity_vials,
            quarantined_change: 0,
            draws_available: quantity_vials < 0,
            adjustment_reason: 0,
            discrepancy_reason: 0,
            comment: String::new(),
            shipment_id: None,
            session_report_id: None,
            reverses_entry_id: None,
            physical_count_id: None,
            exposure_id: None,
            count_to: None,
            quarantine_available: false,
        }
    }

    /// Resolves a count into a signed correction against the locked balance: a shortfall
    /// reduces available vials first, then quarantined ones. `None` when the count matches.
    pub fn resolve_count(&mut self, b: BalanceState) -> Option<()> {
        if self.quarantine_available {
            self.quantity_vials = 0;
            self.quarantined_change = b.available();
            self.draws_available = false;
            return (b.available() > 0).then_some(());
        }
        let Some(counted) = self.count_to else { return Some(()) };
        self.quantity_vials = counted - b.vials;
        self.quarantined_change = b.quarantined.min(counted) - b.quarantined;
        self.draws_available = false;
        (self.quantity_vials != 0).then_some(())
    }
}

/// What the ledger needs to know about a lot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LotInfo {
    /// Lot id.
    pub lot_id: String,
    /// Product id.
    pub product_id: String,
    /// Doses per vial.
    pub doses_per_vial: i64,
    /// Expiry.
    pub expiry: NaiveDate,
}

/// Applies one entry to a balance: the invariant keeper. Vials never go negative, quarantined
/// vials stay within the vials on hand, and issuing draws only on available vials.
pub fn apply(b: BalanceState, d: &EntryDraft) -> Result<BalanceState> {
    let vials = b.vials.checked_add(d.quantity_vials).ok_or_else(|| Error::invalid("quantity_vials", "too large"))?;
    let quarantined =
        b.quarantined.checked_add(d.quarantined_change).ok_or_else(|| Error::invalid("quantity_vials", "too large"))?;
    if d.quantity_vials < 0 && d.draws_available && -d.quantity_vials > b.available() {
        let reason = if -d.quantity_vials <= b.vials { QUARANTINED } else { INSUFFICIENT_STOCK };
        return Err(Error::precondition(
            reason,
            format!(
                "lot {} has {} available vials ({} quarantined) in unit {}; {} requested",
                d.lot_id,
                b.available(),
                b.quarantined,
                d.storage_unit_id.as_deref().unwrap_or("-"),
                -d.quantity_vials
            ),
        ));
    }
    if vials < 0 || quarantined < 0 || quarantined > vials {
        return Err(Error::precondition(
            INSUFFICIENT_STOCK,
            format!("lot {} has {} vials in unit {}", d.lot_id, b.vials, d.storage_unit_id.as_deref().unwrap_or("-")),
        ));
    }
    Ok(BalanceState { vials, quarantined })
}

/// Reason: not enough vials.
pub const INSUFFICIENT_STOCK: &str = "INSUFFICIENT_STOCK";
/// Reason: the vials exist but are quarantined.
pub const QUARANTINED: &str = "QUARANTINED";
/// Reason: the lot is past its expiry date.
pub const EXPIRED: &str = "EXPIRED";
/// Reason: the shipment is not in the state the operation needs.
pub const INVALID_STATE: &str = "INVALID_STATE";
/// Reason: the entry cannot be reversed.
pub const NOT_REVERSIBLE: &str = "NOT_REVERSIBLE";
/// Reason: the entry was already reversed.
pub const ALREADY_REVERSED: &str = "ALREADY_REVERSED";
/// Reason: the storage unit is at another facility.
pub const STORAGE_UNIT_OTHER_FACILITY: &str = "STORAGE_UNIT_OTHER_FACILITY";

/// A written ledger entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LedgerEntry {
    /// Id.
    pub id: String,
    /// Global order.
    pub sequence: i64,
    /// The operation that wrote it (entries written together share it).
    pub operation_id: String,
    /// What was written.
    pub draft: EntryDraft,
    /// Signed doses.
    pub doses: i64,
    /// Token that wrote it.
    pub actor: String,
    /// When.
    pub time: DateTime<Utc>,
    /// The request_id of the mutation.
    pub request_id: String,
    /// Vials on hand after it.
    pub balance_after_vials: i64,
    /// The REVERSAL that cancelled it, if any.
    pub reversed_by: Option<String>,
}

/// Whether an entry kind may be reversed directly.
pub fn reversible(kind: EntryKind) -> bool {
    !matches!(
        kind,
        EntryKind::Reversal
            | EntryKind::Dispatch
            | EntryKind::ShipmentReceipt
            | EntryKind::TransitLoss
            | EntryKind::DispatchCancelled
            | EntryKind::Quarantine
            | EntryKind::Release
    )
}

/// The entry that cancels `e`.
pub fn reversal_of(e: &LedgerEntry, comment: &str) -> EntryDraft {
    let mut d = e.draft.clone();
    d.kind = EntryKind::Reversal;
    d.quantity_vials = -e.draft.quantity_vials;
    d.quarantined_change = -e.draft.quarantined_change;
    d.draws_available = d.quantity_vials < 0;
    d.comment = comment.to_owned();
    d.reverses_entry_id = Some(e.id.clone());
    d
}

/// A balance with what allocation needs to know of it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StockItem {
    /// Unit.
    pub storage_unit_id: String,
    /// Unit's facility.
    pub facility_id: String,
    /// Lot.
    pub lot_id: String,
    /// Lot number.
    pub lot_number: String,
    /// Product.
    pub product_id: String,
    /// Doses per vial.
    pub doses_per_vial: i64,
    /// Expiry.
    pub expiry: NaiveDate,
    /// Vials and quarantined vials.
    pub balance: BalanceState,
    /// Most advanced VVM stage recorded (0 = not recorded).
    pub vvm_stage: i32,
    /// Last change.
    pub updated_at: DateTime<Utc>,
}

impl StockItem {
    /// Whether the lot is past its expiry date.
    pub fn expired(&self, today: NaiveDate) -> bool {
        self.expiry < today
    }

    /// Vials that may be issued today: none once expired or at the VVM discard point.
    pub fn usable_vials(&self, today: NaiveDate) -> i64 {
        if self.expired(today) || self.vvm_stage >= 3 { 0 } else { self.balance.available() }
    }
}

/// Why a lot is or is not in an allocation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AllocationReason {
    /// Chosen: VVM nearer discard point.
    VvmStage,
    /// Chosen: earliest expiry.
    EarliestExpiry,
    /// Skipped: all quarantined.
    Quarantined,
    /// Skipped: expired.
    Expired,
    /// Skipped: expires too soon.
    ShortShelfLife,
    /// Skipped: VVM stage 3 or 4.
    VvmDiscardPoint,
    /// Skipped: not needed.
    NotNeeded,
}

/// One considered (unit, lot) of an allocation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllocatedLot {
    /// The stock considered.
    pub item: StockItem,
    /// Vials suggested.
    pub vials: i64,
    /// Why.
    pub reason: AllocationReason,
}

/// An EEFO suggestion.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Allocation {
    /// Chosen lots in issuing order, then skipped ones.
    pub lots: Vec<AllocatedLot>,
    /// Suggested doses.
    pub suggested_doses: i64,
    /// Doses stock cannot cover.
    pub shortfall_doses: i64,
}

/// Earliest-expiry-first-out with VVM priority: stage 2 before stage 1 (a VVM nearer its discard
/// point must go first), then earliest expiry. Never expired, quarantined, discard-point or
/// short-shelf-life stock.
pub fn allocate(mut items: Vec<StockItem>, doses: i64, today: NaiveDate, min_shelf_life_days: i64) -> Allocation {
    items.sort_by(|a, b| {
        b.vvm_stage
            .min(2)
            .cmp(&a.vvm_stage.min(2))
            .then(a.expiry.cmp(&b.expiry))
            .then(a.lot_id.cmp(&b.lot_id))
            .then(a.storage_unit_id.cmp(&b.storage_unit_id))
    });
    let mut chosen = Vec::new();
    let mut skipped = Vec::new();
    let mut remaining = doses;
    let min_expiry = today + chrono::Days::new(u64::try_from(min_shelf_life_days.max(0)).unwrap_or(0));
    let best_stage = items.iter().filter(|i| i.vvm_stage < 3).map(|i| i.vvm_stage.min(2)).max().unwrap_or(0);
    for item in items {
        let skip = if item.expiry < today {
            Some(AllocationReason::Expired)
        } else if item.vvm_stage >= 3 {
            Some(AllocationReason::VvmDiscardPoint)
        } else if item.balance.available() <= 0 {
            Some(AllocationReason::Quarantined)
        } else if item.expiry < min_expiry {
            Some(AllocationReason::ShortShelfLife)
        } else if remaining <= 0 {
            Some(AllocationReason::NotNeeded)
        } else {
            None
        };
        if let Some(reason) = skip {
            skipped.push(AllocatedLot { item, vials: 0, reason });
            continue;
        }
        let dpv = item.doses_per_vial.max(1);
        let vials = ((remaining + dpv - 1) / dpv).min(item.balance.available());
        remaining -= vials * dpv;
        let reason = if item.vvm_stage.min(2) == best_stage && best_stage > 1 {
            AllocationReason::VvmStage
        } else {
            AllocationReason::EarliestExpiry
        };
        chosen.push(AllocatedLot { item, vials, reason });
    }
    let suggested_doses = chosen.iter().map(|c| c.vials * c.item.doses_per_vial).sum();
    chosen.extend(skipped);
    Allocation { lots: chosen, suggested_doses, shortfall_doses: remaining.max(0) }
}

/// One lot's use at a session, validated.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionLine {
    /// Lot.
    pub lot_id: String,
    /// Unit the vials came from.
    pub storage_unit_id: String,
    /// Vials taken out.
    pub vials_issued: i64,
    /// Vials opened.
    pub vials_opened: i64,
    /// Kept (MDVP) vials reused.
    pub opened_vials_reused: i64,
    /// Doses given.
    pub doses_administered: i64,
    /// Unopened vials returned.
    pub unopened_vials_returned: i64,
    /// Unopened vials discarded.
    pub unopened_vials_discarded: i64,
    /// Reason of the unopened discards.
    pub discard_reason: i32,
    /// Opened vials kept for later sessions.
    pub opened_vials_kept: i64,
}

impl SessionLine {
    /// Checks the arithmetic of a line for a product.
    pub fn check(&self, i: usize, doses_per_vial: i64, mdvp_applies: bool) -> Result<()> {
        let f = |name: &str| format!("session_report.lines[{i}].{name}");
        for (name, v) in [
            ("vials_issued", self.vials_issued),
            ("vials_opened", self.vials_opened),
            ("opened_vials_reused", self.opened_vials_reused),
            ("doses_administered", self.doses_administered),
            ("unopened_vials_returned", self.unopened_vials_returned),
            ("unopened_vials_discarded", self.unopened_vials_discarded),
            ("opened_vials_kept", self.opened_vials_kept),
        ] {
            if !(0..=10_000_000).contains(&v) {
                return Err(Error::invalid(f(name), "must be within 0..10000000"));
            }
        }
        if self.vials_opened + self.unopened_vials_returned + self.unopened_vials_discarded != self.vials_issued {
            return Err(Error::invalid_because(
                f("vials_issued"),
                "VIALS_DO_NOT_ADD_UP",
                "must equal vials_opened + unopened_vials_returned + unopened_vials_discarded",
            ));
        }
        if self.doses_administered > (self.vials_opened + self.opened_vials_reused) * doses_per_vial {
            return Err(Error::invalid_because(
                f("doses_administered"),
                "DOSES_EXCEED_VIALS",
                format!("more than {doses_per_vial} doses per opened vial"),
            ));
        }
        if (self.opened_vials_kept > 0 || self.opened_vials_reused > 0) && !mdvp_applies {
            return Err(Error::invalid_because(
                f("opened_vials_kept"),
                "MDVP_NOT_APPLICABLE",
                "the multi-dose vial policy does not apply to this product: opened vials are discarded at the end of the session",
            ));
        }
        if self.opened_vials_kept > self.vials_opened + self.opened_vials_reused {
            return Err(Error::invalid(f("opened_vials_kept"), "cannot exceed the opened vials"));
        }
        if self.unopened_vials_discarded > 0 && AdjustmentReason::from_i32(self.discard_reason).is_none() {
            return Err(Error::invalid_because(f("discard_reason"), "DISCARD_REASON_REQUIRED", "is required"));
        }
        Ok(())
    }

    /// Opened vials discarded at the end of the session.
    pub fn opened_vials_discarded(&self) -> i64 {
        self.vials_opened + self.opened_vials_reused - self.opened_vials_kept
    }

    /// Doses issued: the doses of the vials that did not come back.
    pub fn doses_issued(&self, doses_per_vial: i64) -> i64 {
        (self.vials_issued - self.unopened_vials_returned) * doses_per_vial
    }
}

/// Days an opened multi-dose vial may be kept under the WHO policy.
pub const MDVP_DAYS: i64 = 28;

#[cfg(test)]
mod tests {
    use super::*;

    fn lot() -> LotInfo {
        LotInfo {
            lot_id: "L".into(),
            product_id: "P".into(),
            doses_per_vial: 10,
            expiry: NaiveDate::from_ymd_opt(2030, 1, 1).unwrap_or_default(),
        }
    }

    #[test]
    fn issuing_draws_only_available_vials() {
        let b = BalanceState { vials: 10, quarantined: 4 };
        let d = EntryDraft::new(EntryKind::TransferOut, "U", "F", &lot(), -7);
        assert!(matches!(apply(b, &d), Err(Error::FailedPrecondition { reason: QUARANTINED, .. })));
        let d = EntryDraft::new(EntryKind::TransferOut, "U", "F", &lot(), -11);
        assert!(matches!(apply(b, &d), Err(Error::FailedPrecondition { reason: INSUFFICIENT_STOCK, .. })));
        let d = EntryDraft::new(EntryKind::TransferOut, "U", "F", &lot(), -6);
        assert_eq!(apply(b, &d).ok(), Some(BalanceState { vials: 4, quarantined: 4 }));
    }

    fn item(lot: &str, expiry: (i32, u32, u32), vvm: i32, vials: i64, q: i64) -> StockItem {
        StockItem {
            storage_unit_id: "U".into(),
            facility_id: "F".into(),
            lot_id: lot.into(),
            lot_number: lot.into(),
            product_id: "P".into(),
            doses_per_vial: 10,
            expiry: NaiveDate::from_ymd_opt(expiry.0, expiry.1, expiry.2).unwrap_or_default(),
            balance: BalanceState { vials, quarantined: q },
            vvm_stage: vvm,
            updated_at: DateTime::<Utc>::MIN_UTC,
        }
    }

    #[test]
    fn eefo_puts_vvm_stage_two_first_then_earliest_expiry() {
        let today = NaiveDate::from_ymd_opt(2027, 1, 1).unwrap_or_default();
        let items = vec![
            item("late", (2028, 1, 1), 1, 10, 0),
            item("early", (2027, 6, 1), 1, 10, 0),
            item("vvm2", (2029, 1, 1), 2, 3, 0),
            item("expired", (2026, 12, 31), 1, 10, 0),
            item("quarantined", (2027, 3, 1), 1, 5, 5),
            item("short", (2027, 1, 15), 1, 10, 0),
            item("vvm3", (2027, 2, 1), 3, 10, 0),
        ];
        let a = allocate(items, 95, today, 30);
        let order: Vec<_> = a.lots.iter().map(|l| (l.item.lot_id.as_str(), l.vials, l.reason)).collect();
        assert_eq!(order[0], ("vvm2", 3, AllocationReason::VvmStage));
        assert_eq!(order[1], ("early", 7, AllocationReason::EarliestExpiry));
        assert_eq!(a.suggested_doses, 100);
        assert_eq!(a.shortfall_doses, 0);
        let reason_of = |id: &str| a.lots.iter().find(|l| l.item.lot_id == id).map(|l| l.reason);
        assert_eq!(reason_of("expired"), Some(AllocationReason::Expired));
        assert_eq!(reason_of("quarantined"), Some(AllocationReason::Quarantined));
        assert_eq!(reason_of("short"), Some(AllocationReason::ShortShelfLife));
        assert_eq!(reason_of("vvm3"), Some(AllocationReason::VvmDiscardPoint));
        assert_eq!(reason_of("late"), Some(AllocationReason::NotNeeded));
        let short = allocate(vec![item("a", (2028, 1, 1), 1, 2, 0)], 35, today, 30);
        assert_eq!((short.suggested_doses, short.shortfall_doses), (20, 15));
    }

    #[test]
    fn session_lines_must_add_up() {
        let ok = SessionLine {
            vials_issued: 5,
            vials_opened: 3,
            unopened_vials_returned: 2,
            doses_administered: 28,
            ..Default::default()
        };
        assert!(ok.check(0, 10, false).is_ok());
        assert_eq!(ok.doses_issued(10), 30);
        let bad = SessionLine { vials_issued: 5, vials_opened: 3, ..Default::default() };
        assert!(bad.check(0, 10, false).is_err());
        let too_many = SessionLine { vials_issued: 1, vials_opened: 1, doses_administered: 11, ..Default::default() };
        assert!(too_many.check(0, 10, true).is_err());
        let kept = SessionLine {
            vials_issued: 1,
            vials_opened: 1,
            opened_vials_kept: 1,
            doses_administered: 4,
            ..Default::default()
        };
        assert!(kept.check(0, 10, false).is_err(), "no MDVP for this product");
        assert!(kept.check(0, 10, true).is_ok());
        assert_eq!(kept.opened_vials_discarded(), 0);
    }
}

/// One lot of a shipment.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShipmentLine {
    /// Line id (unique within the shipment).
    pub id: String,
    /// Lot.
    pub lot_id: String,
    /// Product.
    pub product_id: String,
    /// Vials shipped.
    pub vials: i64,
    /// Doses per vial of the product.
    pub doses_per_vial: i64,
    /// Source unit.
    pub source_storage_unit_id: String,
    /// VVM stage at dispatch.
    pub dispatched_vvm_stage: i32,
    /// Vials received.
    pub received_vials: i64,
    /// Destination unit.
    pub received_storage_unit_id: String,
    /// VVM stage on arrival.
    pub received_vvm_stage: i32,
    /// Why short.
    pub discrepancy_reason: i32,
    /// Receiver's comment.
    pub receive_comment: String,
}

/// Stock sent from one facility to another.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Shipment {
    /// Id.
    pub id: String,
    /// Sender.
    pub from_facility_id: String,
    /// Receiver.
    pub to_facility_id: String,
    /// State.
    pub state: ShipmentState,
    /// Lines.
    pub lines: Vec<ShipmentLine>,
    /// Voucher or waybill number.
    pub reference: String,
    /// Comment.
    pub comment: String,
    /// Expected arrival.
    pub expected_arrival: Option<NaiveDate>,
    /// Created.
    pub created_at: DateTime<Utc>,
    /// Dispatched.
    pub dispatched_at: Option<DateTime<Utc>>,
    /// Received.
    pub received_at: Option<DateTime<Utc>>,
    /// Cancelled.
    pub cancelled_at: Option<DateTime<Utc>>,
    /// Creator token.
    pub created_by: String,
    /// Dispatcher token.
    pub dispatched_by: String,
    /// Receiver token.
    pub received_by: String,
    /// Canceller token.
    pub cancelled_by: String,
    /// Cancel reason.
    pub cancel_comment: String,
}

/// A vaccination session's use of vials.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionReport {
    /// Id.
    pub id: String,
    /// Session site or cold-chain point.
    pub facility_id: String,
    /// Default unit.
    pub storage_unit_id: String,
    /// Session date.
    pub session_date: NaiveDate,
    /// Lines with their product.
    pub lines: Vec<(SessionLine, String, i64)>,
    /// Comment.
    pub comment: String,
    /// Submitted.
    pub submitted_at: DateTime<Utc>,
    /// Submitter token.
    pub submitted_by: String,
    /// Entries written.
    pub ledger_entry_ids: Vec<String>,
}

/// Min/max doses of a product at a facility.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StockPolicy {
    /// Facility.
    pub facility_id: String,
    /// Product.
    pub product_id: String,
    /// Minimum doses.
    pub min_doses: i64,
    /// Maximum doses (0 = none).
    pub max_doses: i64,
    /// Last set.
    pub updated_at: DateTime<Utc>,
    /// Setter token.
    pub updated_by: String,
}

/// A set of entries written atomically, with the VVM stages observed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Operation {
    /// Shared by the entries.
    pub id: String,
    /// The caller's token id.
    pub actor: String,
    /// The request_id, or "".
    pub request_id: String,
    /// Entries in order.
    pub drafts: Vec<EntryDraft>,
    /// (unit, lot, stage): the balance's VVM stage rises to at least this.
    pub vvm: Vec<(String, String, i32)>,
}

/// Filters of a balance listing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StockFilter {
    /// Only this unit.
    pub storage_unit_id: Option<String>,
    /// Only this facility.
    pub facility_id: Option<String>,
    /// Only under this path (inclusive).
    pub ancestor_path: Option<String>,
    /// Only this product.
    pub product_id: Option<String>,
    /// Only this lot.
    pub lot_id: Option<String>,
    /// Include zero balances.
    pub include_zero: bool,
    /// Only balances with quarantined vials.
    pub quarantined_only: bool,
}

/// Filters of a ledger listing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EntryFilter {
    /// Only this unit.
    pub storage_unit_id: Option<String>,
    /// Only this facility.
    pub facility_id: Option<String>,
    /// Only under this path (inclusive).
    pub ancestor_path: Option<String>,
    /// Only this product.
    pub product_id: Option<String>,
    /// Only this lot.
    pub lot_id: Option<String>,
    /// Only these kinds (empty = all).
    pub kinds: Vec<i32>,
    /// From this time.
    pub start: Option<DateTime<Utc>>,
    /// Before this time.
    pub end: Option<DateTime<Utc>>,
    /// Only this shipment.
    pub shipment_id: Option<String>,
    /// Only this session report.
    pub session_report_id: Option<String>,
    /// Newest first.
    pub newest_first: bool,
}

int_enum! {
    /// Where an exposure stands.
    ExposureState {
        /// Quarantined, awaiting assessment.
        Pending = 1,
        /// Released to use.
        Released = 2,
        /// Some or all discarded.
        Discarded = 3,
    }
}

/// What an exposure listing asks for, as the caller gave it (ids unchecked, states as numbers).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExposureQuery {
    /// Only this facility.
    pub facility_id: String,
    /// Only this facility or below it.
    pub ancestor_id: String,
    /// Only this storage unit.
    pub storage_unit_id: String,
    /// Only this lot.
    pub lot_id: String,
    /// Only the exposures of this alarm.
    pub alert_id: String,
    /// When non-empty, only these states.
    pub states: Vec<i32>,
    /// Only exposures starting at or after this time.
    pub start: Option<DateTime<Utc>>,
    /// Only exposures starting before this time.
    pub end: Option<DateTime<Utc>>,
}

/// An exposure listing's filters, checked: the store applies them as they are.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExposureFilter {
    /// Only this facility.
    pub facility_id: Option<String>,
    /// Only under this facility path.
    pub ancestor_path: Option<String>,
    /// Only this storage unit.
    pub storage_unit_id: Option<String>,
    /// Only this lot.
    pub lot_id: Option<String>,
    /// Only the exposures of this alarm.
    pub alert_id: Option<String>,
    /// When non-empty, only these states.
    pub states: Vec<i32>,
    /// Only exposures starting at or after this time.
    pub start: Option<DateTime<Utc>>,
    /// Only exposures starting before this time.
    pub end: Option<DateTime<Utc>>,
}

/// A district officer's decision on exposed vials.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Assessment {
    /// 1 = release, 2 = discard.
    pub decision: i32,
    /// Adjustment reason of a discard.
    pub discard_reason: i32,
    /// Vials discarded.
    pub discarded_vials: i64,
    /// Vials released.
    pub released_vials: i64,
    /// Reasoning.
    pub comment: String,
    /// Token that assessed.
    pub assessed_by: String,
    /// When.
    pub assessed_at: DateTime<Utc>,
}

/// A lot's stock in a unit exposed to a heat or freeze alarm.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Exposure {
    /// Id.
    pub id: String,
    /// The alarm's alert.
    pub alert_id: String,
    /// Unit.
    pub storage_unit_id: String,
    /// Facility.
    pub facility_id: String,
    /// Lot.
    pub lot_id: String,
    /// Product.
    pub product_id: String,
    /// First reading past the threshold.
    pub start: DateTime<Utc>,
    /// First reading back within it.
    pub end: Option<DateTime<Utc>>,
    /// Vials quarantined.
    pub quarantined_vials: i64,
    /// State.
    pub state: ExposureState,
    /// Temperatures and dose (from the alarm).
    pub details: crate::domain::alert::Details,
    /// The assessment, once made.
    pub assessment: Option<Assessment>,
}
