//! GS1 EPCIS 2.0: the supply-chain events of a ledger as one JSON-LD `EPCISDocument`, for trading
//! partners and regulators. Pure: the caller gathers the entries and what they refer to.
//!
//! Mapping (CBV 2.0 bare words, as the JSON schema wants them):
//! - DISPATCH → shipping / in_transit; DISPATCH_CANCELLED → void_shipping / sellable_accessible;
//! - RECEIPT, SHIPMENT_RECEIPT → receiving / in_progress;
//! - discards (ADJUSTMENT with a discard reason, SESSION_DISCARD, TRANSIT_LOSS) → destroying / destroyed;
//! - SESSION_ISSUE net of the report's SESSION_RETURN → dispensing / dispensed;
//! - QUARANTINE → holding / sellable_not_accessible; RELEASE → inspecting / sellable_accessible;
//!   these and discards after an exposure carry the exposure as a `sensorElementList`.
//!
//! Transfers, counts and other corrections are internal bookkeeping and are not exported; reversed
//! entries and their reversals are both left out, so the document shows what really happened.

use std::collections::HashMap;

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{Value, json};

use super::stock::{AdjustmentReason, EntryKind, Exposure, LedgerEntry};

/// The JSON-LD context every EPCIS 2.0 document names.
pub const CONTEXT: &str = "https://ref.gs1.org/standards/epcis/2.0.0/epcis-context.jsonld";

/// What a lot's class identifier needs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LotKey {
    /// GTIN-14, or "" when the lot was entered without one.
    pub gtin: String,
    /// The manufacturer's lot number.
    pub lot_number: String,
}

/// The facts an export looks up by id; missing ids fall back to `urn:uuid:` identifiers.
#[derive(Debug, Clone, Default)]
pub struct Lookup {
    /// Lot id → GTIN and lot number.
    pub lots: HashMap<String, LotKey>,
    /// Facility id → GLN ("" when it has none).
    pub glns: HashMap<String, String>,
    /// Shipment id → (from facility id, to facility id).
    pub shipments: HashMap<String, (String, String)>,
    /// Exposure id → exposure.
    pub exposures: HashMap<String, Exposure>,
}

/// Percent-encodes a Digital Link path segment: everything but RFC 3986's unreserved characters.
fn encode_segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A lot's class-level identifier: GS1 Digital Link `/01/{gtin}/10/{lot}`.
pub fn epc_class(lot_id: &str, lookup: &Lookup) -> String {
    match lookup.lots.get(lot_id) {
        Some(l) if !l.gtin.is_empty() => {
            format!("https://id.gs1.org/01/{}/10/{}", l.gtin, encode_segment(&l.lot_number))
        }
        _ => format!("urn:uuid:{lot_id}"),
    }
}

/// A facility's location identifier: its GLN as a Digital Link, else a URN of its id.
pub fn location(facility_id: &str, lookup: &Lookup) -> String {
    match lookup.glns.get(facility_id) {
        Some(gln) if !gln.is_empty() => format!("https://id.gs1.org/414/{gln}"),
        _ => format!("urn:uuid:{facility_id}"),
    }
}

fn time(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// The exposure as sensor data: when, and the temperatures seen.
fn sensor_elements(x: &Exposure) -> Value {
    let mut meta = json!({ "startTime": time(x.start) });
    if let Some(end) = x.end {
        meta["endTime"] = json!(time(end));
    }
    let mut report = json!({ "type": "Temperature", "uom": "CEL" });
    if let Some(v) = x.details.min_temp_c {
        report["minValue"] = json!(v);
    }
    if let Some(v) = x.details.max_temp_c {
        report["maxValue"] = json!(v);
    }
    json!([{ "sensorMetadata": meta, "sensorReport": [report] }])
}

/// (bizStep, disposition) of an entry kind, or None when the entry is not exported.
fn classify(e: &LedgerEntry) -> Option<(&'static str, &'static str)> {
    let discard = AdjustmentReason::from_i32(e.draft.adjustment_reason).is_some_and(AdjustmentReason::is_discard);
    Some(match e.draft.kind {
        EntryKind::Dispatch => ("shipping", "in_transit"),
        EntryKind::DispatchCancelled => ("void_shipping", "sellable_accessible"),
        EntryKind::Receipt | EntryKind::ShipmentReceipt => ("receiving", "in_progress"),
        EntryKind::Adjustment if discard && e.draft.quantity_vials < 0 => ("destroying", "destroyed"),
        EntryKind::SessionDiscard | EntryKind::TransitLoss => ("destroying", "destroyed"),
        EntryKind::SessionIssue => ("dispensing", "dispensed"),
        EntryKind::Quarantine => ("holding", "sellable_not_accessible"),
        EntryKind::Release => ("inspecting", "sellable_accessible"),
        _ => return None,
    })
}

/// The ObjectEvents of `entries` (in ledger order), or an empty list.
pub fn events(entries: &[LedgerEntry], lookup: &Lookup) -> Vec<Value> {
    let reversed: std::collections::HashSet<&str> =
        entries.iter().filter_map(|e| e.draft.reverses_entry_id.as_deref()).collect();
    // Unopened vials back from a session were never dispensed: net them off the issue.
    let mut returned: HashMap<(&str, Option<&str>, &str), i64> = HashMap::new();
    for e in entries.iter().filter(|e| e.draft.kind == EntryKind::SessionReturn && e.reversed_by.is_none()) {
        if let Some(report) = e.draft.session_report_id.as_deref() {
            *returned.entry((report, e.draft.storage_unit_id.as_deref(), e.draft.lot_id.as_str())).or_default() +=
                e.draft.quantity_vials;
        }
    }
    let mut out = Vec::new();
    for e in entries {
        if e.reversed_by.is_some() || e.draft.kind == EntryKind::Reversal || reversed.contains(e.id.as_str()) {
            continue;
        }
        let Some((biz_step, disposition)) = classify(e) else { continue };
        let d = &e.draft;
        let vials = match d.kind {
            EntryKind::SessionIssue => {
                let key =
                    (d.session_report_id.as_deref().unwrap_or(""), d.storage_unit_id.as_deref(), d.lot_id.as_str());
                -d.quantity_vials - returned.get(&key).copied().unwrap_or(0)
            }
            EntryKind::Quarantine | EntryKind::Release => d.quarantined_change.abs(),
            _ => d.quantity_vials.abs(),
        };
        if vials <= 0 {
            continue;
        }
        let here = json!({ "id": location(&d.facility_id, lookup) });
        let mut ev = json!({
            "type": "ObjectEvent",
            "eventID": format!("urn:uuid:{}", e.id),
            "eventTime": time(e.time),
            "eventTimeZoneOffset": "+00:00",
            "action": "OBSERVE",
            "bizStep": biz_step,
            "disposition": disposition,
            "readPoint": here,
            "bizLocation": here,
            "quantityList": [{ "epcClass": epc_class(&d.lot_id, lookup), "quantity": vials }],
        });
        if let Some(sid) = &d.shipment_id
            && matches!(d.kind, EntryKind::Dispatch | EntryKind::ShipmentReceipt | EntryKind::DispatchCancelled)
        {
            ev["bizTransactionList"] = json!([{ "type": "desadv", "bizTransaction": format!("urn:uuid:{sid}") }]);
            if let Some((from, to)) = lookup.shipments.get(sid) {
                ev["sourceList"] = json!([{ "type": "location", "source": location(from, lookup) }]);
                ev["destinationList"] = json!([{ "type": "location", "destination": location(to, lookup) }]);
            }
        }
        if let Some(x) = d.exposure_id.as_ref().and_then(|id| lookup.exposures.get(id)) {
            ev["sensorElementList"] = sensor_elements(x);
        }
        out.push(ev);
    }
    out
}

/// The whole document around `events`.
pub fn document(events: Vec<Value>, created: DateTime<Utc>) -> Value {
    json!({
        "@context": [CONTEXT],
        "type": "EPCISDocument",
        "schemaVersion": "2.0",
        "creationDate": time(created),
        "epcisBody": { "eventList": events },
    })
}
