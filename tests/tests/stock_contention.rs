//! Stock under contention (issue #10, invariant 3), through real gRPC on both engines: many
//! clients, each on its own connection, race for the same few (storage unit, lot) balances at
//! three facilities with every kind of stock mutation — supplier receipts, shipments (dispatched,
//! received short or in full, cancelled, received and cancelled at once), transfers, adjustments,
//! physical counts, session reports and reversals. A share of the calls is sent twice with one
//! request_id, after the first answer or both at once. While the load runs a checker verifies, in
//! one database snapshot, that every balance equals the sum of its ledger entries and is never
//! negative; at the end the ledger must hold exactly the effects of the calls the server reported
//! as successful, each once, and the only refusals are the documented losers of a race.
//!
//! Replay: the seed is printed; `VAXTRACE_CONTENTION_SEED=<n>` runs the same per-client operation
//! sequences again (the interleaving stays the scheduler's), `VAXTRACE_CONTENTION_OPS=<n>` sets
//! the operations per client (default 25) for a longer soak.
#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, HashMap, HashSet};
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tonic::Status;
use tonic::transport::Channel;
use vaxtrace_proto::v1 as pb;
use vaxtrace_proto::v1::facility_service_client::FacilityServiceClient;
use vaxtrace_proto::v1::stock_service_client::StockServiceClient;
use vaxtrace_tests::world::{check_ledger, world};
use vaxtrace_tests::{TestDb, TestServer, authed, reason};

/// Concurrent clients, each with its own connection.
const CLIENTS: usize = 24;
/// Operations per client unless `VAXTRACE_CONTENTION_OPS` says otherwise.
const DEFAULT_OPS: usize = 25;

const INSUFFICIENT_STOCK: &str = "INSUFFICIENT_STOCK";
/// Two clients reversing the same entry: one wins.
const ALREADY_REVERSED: &str = "ALREADY_REVERSED";
/// A shipment received and cancelled at once: one wins.
const INVALID_STATE: &str = "INVALID_STATE";

/// SplitMix64: a tiny deterministic generator, so a seed replays each client's choices.
#[derive(Debug, Clone)]
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    /// Uniform in `lo..=hi`.
    fn range(&mut self, lo: i64, hi: i64) -> i64 {
        lo + (self.next() % (hi - lo + 1) as u64) as i64
    }

    fn chance(&mut self, percent: usize) -> bool {
        self.below(100) < percent
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }

    /// How a call is sent: mostly once, else repeated after the answer or twice at once.
    fn mode(&mut self) -> Mode {
        match self.below(100) {
            0..60 => Mode::Once,
            60..80 => Mode::Again,
            _ => Mode::Twins,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Once,
    /// The same request (same request_id) again once the first answer is in.
    Again,
    /// Two identical requests at once, the second arriving while the first is in flight.
    Twins,
}

/// One ledger entry's effect, as the server reported it or as the ledger holds it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
struct Effect {
    kind: i32,
    /// Empty for a transit loss (those vials sat in no unit).
    unit: String,
    lot: String,
    vials: i64,
    shipment: String,
}

impl Effect {
    fn of(e: &pb::LedgerEntry) -> Effect {
        Effect {
            kind: e.kind,
            unit: e.storage_unit_id.clone(),
            lot: e.lot_id.clone(),
            vials: e.quantity_vials,
            shipment: e.shipment_id.clone(),
        }
    }

    fn new(kind: pb::LedgerEntryKind, unit: &str, lot: &str, vials: i64, shipment: &str) -> Effect {
        Effect { kind: kind as i32, unit: unit.into(), lot: lot.into(), vials, shipment: shipment.into() }
    }

    fn reversal(&self) -> Effect {
        Effect { kind: pb::LedgerEntryKind::Reversal as i32, vials: -self.vials, ..self.clone() }
    }
}

/// What the clients saw, shared between them.
#[derive(Debug, Default)]
struct Log {
    /// The effects of every call the server reported as successful, each once.
    effects: Vec<Effect>,
    /// Ids of the entries successful calls returned.
    entry_ids: Vec<String>,
    /// Entries any client may reverse: one entry's id and the effects its reversal undoes (both
    /// legs of a transfer, every entry of a session report).
    reversible: Vec<(String, Vec<Effect>)>,
    /// Calls by method and outcome ("ok" or the refusal's reason).
    outcomes: BTreeMap<(String, String), usize>,
    /// Requests sent a second time with the same request_id, after the answer / at once.
    resent: usize,
    twins: usize,
    /// Shipments received and cancelled at once.
    races: usize,
    /// Everything wrong, reported together at the end.
    violations: Vec<String>,
}

/// The stock world the clients share.
#[derive(Debug)]
struct Shared {
    tok: String,
    n: String,
    d: String,
    c: String,
    s: String,
    nu: [String; 2],
    du: [String; 2],
    cu: String,
    lots: [String; 2],
    log: Mutex<Log>,
}

impl Shared {
    fn violation(&self, what: String) {
        self.log.lock().unwrap().violations.push(what);
    }

    fn ok(&self, method: &str) {
        *self.log.lock().unwrap().outcomes.entry((method.into(), "ok".into())).or_default() += 1;
    }

    /// Accepts a refusal only with one of the `allowed` FAILED_PRECONDITION reasons.
    fn refused(&self, method: &str, e: &Status, allowed: &[&str]) {
        let r = reason(e);
        if e.code() != tonic::Code::FailedPrecondition || !allowed.contains(&r.as_str()) {
            self.violation(format!("{method}: unexpected error {:?} {r}: {}", e.code(), e.message()));
        }
        *self.log.lock().unwrap().outcomes.entry((method.into(), format!("{:?} {r}", e.code()))).or_default() += 1;
    }

    /// Records a successful call's effects (and the entries it returned).
    fn effects(&self, effects: Vec<Effect>, ids: Vec<String>) {
        let mut log = self.log.lock().unwrap();
        log.effects.extend(effects);
        log.entry_ids.extend(ids);
    }

    fn reversible(&self, id: String, effects: Vec<Effect>) {
        self.log.lock().unwrap().reversible.push((id, effects));
    }
}

/// Sends a request per `mode` and checks that a repeat returned what the first call did: the same
/// message, or the same refusal.
async fn call<T, F, Fut>(sh: &Shared, method: &str, mode: Mode, f: F) -> Result<T, Status>
where
    F: Fn() -> Fut,
    Fut: Future<Output = Result<tonic::Response<T>, Status>>,
    T: PartialEq + std::fmt::Debug,
{
    let (a, b) = match mode {
        Mode::Once => return f().await.map(tonic::Response::into_inner),
        Mode::Again => {
            let a = f().await;
            (a, f().await)
        }
        Mode::Twins => tokio::join!(f(), f()),
    };
    let (a, b) = (a.map(tonic::Response::into_inner), b.map(tonic::Response::into_inner));
    {
        let mut log = sh.log.lock().unwrap();
        if mode == Mode::Twins { log.twins += 1 } else { log.resent += 1 }
    }
    let same = match (&a, &b) {
        (Ok(x), Ok(y)) => x == y,
        (Err(x), Err(y)) => (x.code(), reason(x)) == (y.code(), reason(y)),
        _ => false,
    };
    if !same {
        sh.violation(format!("{method} ({mode:?}): one request_id, two results:\n  first:  {a:?}\n  second: {b:?}"));
    }
    a
}

/// Calls a StockService method on a clone of `client` as the shared admin, per `mode`.
macro_rules! rpc {
    ($sh:expr, $client:expr, $mode:expr, $method:ident, $req:expr) => {{
        let req = $req;
        let client = $client.clone();
        let tok = $sh.tok.clone();
        call(&$sh, stringify!($method), $mode, move || {
            let mut c = client.clone();
            let r = authed(&tok, req.clone());
            async move { c.$method(r).await }
        })
        .await
    }};
}

/// One client: `ops` operations chosen by its own generator.
async fn client(sh: Arc<Shared>, mut c: StockServiceClient<Channel>, seed: u64, id: usize, ops: usize) {
    let mut rng = Rng(seed ^ (id as u64 + 1).wrapping_mul(0xD1B5_4A32_D192_ED03));
    for i in 0..ops {
        let rid = format!("c{id}-op{i}");
        let roll = rng.below(100);
        match roll {
            0..10 => receipt(&sh, &mut c, &mut rng, &rid).await,
            10..28 => shipment(&sh, &mut c, &mut rng, &rid).await,
            28..43 => transfer(&sh, &mut c, &mut rng, &rid).await,
            43..58 => adjust(&sh, &mut c, &mut rng, &rid).await,
            58..66 => count(&sh, &mut c, &mut rng, &rid).await,
            66..83 => session(&sh, &mut c, &mut rng, &rid).await,
            _ => reverse(&sh, &mut c, &mut rng, &rid).await,
        }
    }
}

async fn receipt(sh: &Shared, c: &mut StockServiceClient<Channel>, rng: &mut Rng, rid: &str) {
    let unit = rng.pick(&sh.nu).clone();
    let lot = rng.pick(&sh.lots).clone();
    let vials = rng.range(1, 40);
    let req = pb::ReceiveFromSupplierRequest {
        storage_unit_id: unit.clone(),
        lines: vec![pb::SupplierReceiptLine {
            lot_ref: Some(pb::supplier_receipt_line::LotRef::LotId(lot.clone())),
            vials,
            ..Default::default()
        }],
        supplier: "UNICEF SD".into(),
        request_id: rid.into(),
        ..Default::default()
    };
    match rpc!(sh, c, rng.mode(), receive_from_supplier, req) {
        Ok(r) => {
            sh.ok("receive_from_supplier");
            let want = Effect::new(pb::LedgerEntryKind::Receipt, &unit, &lot, vials, "");
            let got: Vec<Effect> = r.entries.iter().map(Effect::of).collect();
            if got != [want.clone()] {
                sh.violation(format!("receipt of {vials} vials into {unit} wrote {got:?}"));
            }
            sh.effects(got, r.entries.iter().map(|e| e.id.clone()).collect());
            sh.reversible(r.entries[0].id.clone(), vec![want]);
        }
        Err(e) => sh.refused("receive_from_supplier", &e, &[]),
    }
}

async fn transfer(sh: &Shared, c: &mut StockServiceClient<Channel>, rng: &mut Rng, rid: &str) {
    let units = if rng.chance(50) { &sh.nu } else { &sh.du };
    let from = rng.below(2);
    let (from, to) = (units[from].clone(), units[1 - from].clone());
    let lot = rng.pick(&sh.lots).clone();
    let vials = rng.range(1, 30);
    let req = pb::TransferStockRequest {
        from_storage_unit_id: from.clone(),
        to_storage_unit_id: to.clone(),
        lot_id: lot.clone(),
        vials,
        comment: "contention".into(),
        request_id: rid.into(),
    };
    match rpc!(sh, c, rng.mode(), transfer_stock, req) {
        Ok(r) => {
            sh.ok("transfer_stock");
            let (out, into) = (r.out_entry.unwrap_or_default(), r.in_entry.unwrap_or_default());
            let got = vec![Effect::of(&out), Effect::of(&into)];
            let want = vec![
                Effect::new(pb::LedgerEntryKind::TransferOut, &from, &lot, -vials, ""),
                Effect::new(pb::LedgerEntryKind::TransferIn, &to, &lot, vials, ""),
            ];
            if got != want {
                sh.violation(format!("transfer of {vials} vials wrote {got:?}"));
            }
            // Either leg names the transfer; reversing it reverses both.
            let leg = if rng.chance(50) { out.id.clone() } else { into.id.clone() };
            sh.effects(got, vec![out.id, into.id]);
            sh.reversible(leg, want);
        }
        Err(e) => sh.refused("transfer_stock", &e, &[INSUFFICIENT_STOCK]),
    }
}

async fn adjust(sh: &Shared, c: &mut StockServiceClient<Channel>, rng: &mut Rng, rid: &str) {
    use pb::AdjustmentReason as R;
    let all = all_units(sh);
    let unit = rng.pick(&all).clone();
    let lot = rng.pick(&sh.lots).clone();
    let (why, sign) =
        *rng.pick(&[(R::Broken, -1), (R::Lost, -1), (R::Found, 1), (R::CountCorrection, -1), (R::CountCorrection, 1)]);
    let vials = sign * rng.range(1, 10);
    let req = pb::AdjustStockRequest {
        storage_unit_id: unit.clone(),
        lot_ref: Some(pb::adjust_stock_request::LotRef::LotId(lot.clone())),
        quantity_vials: vials,
        reason: why as i32,
        comment: "contention".into(),
        request_id: rid.into(),
    };
    match rpc!(sh, c, rng.mode(), adjust_stock, req) {
        Ok(e) => {
            sh.ok("adjust_stock");
            let want = Effect::new(pb::LedgerEntryKind::Adjustment, &unit, &lot, vials, "");
            if Effect::of(&e) != want {
                sh.violation(format!("adjustment of {vials} wrote {e:?}"));
            }
            sh.effects(vec![Effect::of(&e)], vec![e.id.clone()]);
            sh.reversible(e.id, vec![want]);
        }
        Err(e) => sh.refused("adjust_stock", &e, &[INSUFFICIENT_STOCK]),
    }
}

/// Counts one (unit, lot) near its balance a moment ago: by the time the count is written the
/// balance may have moved, and the correction must still make it equal the count.
async fn count(sh: &Shared, c: &mut StockServiceClient<Channel>, rng: &mut Rng, rid: &str) {
    let all = all_units(sh);
    let i = rng.below(all.len());
    let (unit, facility) = (all[i].clone(), facility_of(sh, i));
    let lot = rng.pick(&sh.lots).clone();
    let delta = rng.range(-3, 3);
    let seen = balance(sh, c, &unit, &lot).await;
    let counted = (seen + delta).max(0);
    let req = pb::RecordPhysicalCountRequest {
        facility_id: facility,
        lines: vec![pb::PhysicalCountLine {
            storage_unit_id: unit.clone(),
            lot_ref: Some(pb::physical_count_line::LotRef::LotId(lot.clone())),
            counted_vials: counted,
            vvm_stage: 0,
        }],
        comment: "contention".into(),
        request_id: rid.into(),
        ..Default::default()
    };
    match rpc!(sh, c, rng.mode(), record_physical_count, req) {
        Ok(r) => {
            sh.ok("record_physical_count");
            let Some(res) = r.results.first() else {
                return sh.violation(format!("count without a result: {r:?}"));
            };
            if let Some(e) = &res.correction {
                let want =
                    Effect::new(pb::LedgerEntryKind::CountCorrection, &unit, &lot, counted - res.expected_vials, "");
                if Effect::of(e) != want || e.balance_after_vials != counted {
                    sh.violation(format!("count of {counted} wrote {e:?}"));
                }
                sh.effects(vec![want.clone()], vec![e.id.clone()]);
                sh.reversible(e.id.clone(), vec![want]);
            } else if res.expected_vials != counted {
                sh.violation(format!("count of {counted} found {} and wrote nothing", res.expected_vials));
            }
        }
        Err(e) => sh.refused("record_physical_count", &e, &[]),
    }
}

async fn session(sh: &Shared, c: &mut StockServiceClient<Channel>, rng: &mut Rng, rid: &str) {
    // A session site draws on its parent's unit, a cold-chain point and a district store on their own.
    let (site, unit) = match rng.below(3) {
        0 => (sh.s.clone(), sh.cu.clone()),
        1 => (sh.c.clone(), sh.cu.clone()),
        _ => (sh.d.clone(), rng.pick(&sh.du).clone()),
    };
    let lot = rng.pick(&sh.lots).clone();
    let issued = rng.range(1, 12);
    let opened = rng.range(0, issued);
    let discarded = rng.range(0, issued - opened);
    let returned = issued - opened - discarded;
    let day = chrono::Utc::now().date_naive() - chrono::Days::new(1);
    let req = pb::SubmitSessionReportRequest {
        session_report: Some(pb::SessionReport {
            facility_id: site,
            storage_unit_id: unit.clone(),
            session_date: Some(pb::Date {
                year: chrono::Datelike::year(&day),
                month: chrono::Datelike::month(&day) as i32,
                day: chrono::Datelike::day(&day) as i32,
            }),
            lines: vec![pb::SessionReportLine {
                lot_ref: Some(pb::session_report_line::LotRef::LotId(lot.clone())),
                vials_issued: issued,
                vials_opened: opened,
                doses_administered: rng.range(0, opened * 10),
                unopened_vials_returned: returned,
                unopened_vials_discarded: discarded,
                discard_reason: if discarded > 0 { pb::AdjustmentReason::Broken as i32 } else { 0 },
                ..Default::default()
            }],
            ..Default::default()
        }),
        request_id: rid.into(),
    };
    match rpc!(sh, c, rng.mode(), submit_session_report, req) {
        Ok(r) => {
            sh.ok("submit_session_report");
            use pb::LedgerEntryKind as K;
            let want: Vec<Effect> =
                [(K::SessionIssue, -issued), (K::SessionReturn, returned + discarded), (K::SessionDiscard, -discarded)]
                    .into_iter()
                    .filter(|(_, v)| *v != 0)
                    .map(|(k, v)| Effect::new(k, &unit, &lot, v, ""))
                    .collect();
            if r.ledger_entry_ids.len() != want.len() {
                sh.violation(format!("session report wrote {:?}, expected {want:?}", r.ledger_entry_ids));
            }
            // Any entry of a report names the whole report.
            let named = rng.pick(&r.ledger_entry_ids).clone();
            sh.effects(want.clone(), r.ledger_entry_ids.clone());
            sh.reversible(named, want);
        }
        Err(e) => sh.refused("submit_session_report", &e, &[INSUFFICIENT_STOCK]),
    }
}

/// Reverses an entry from the shared pool, so clients sometimes race to reverse the same one.
async fn reverse(sh: &Shared, c: &mut StockServiceClient<Channel>, rng: &mut Rng, rid: &str) {
    let picked = {
        let log = sh.log.lock().unwrap();
        if log.reversible.is_empty() { None } else { Some(log.reversible[rng.below(log.reversible.len())].clone()) }
    };
    let Some((entry, undone)) = picked else {
        return receipt(sh, c, rng, rid).await;
    };
    let req =
        pb::ReverseLedgerEntryRequest { entry_id: entry.clone(), comment: "contention".into(), request_id: rid.into() };
    let outcome = rpc!(sh, c, rng.mode(), reverse_ledger_entry, req);
    let drop_from_pool = |sh: &Shared| sh.log.lock().unwrap().reversible.retain(|(id, _)| *id != entry);
    match outcome {
        Ok(e) => {
            sh.ok("reverse_ledger_entry");
            if e.reverses_entry_id != entry || e.kind != pb::LedgerEntryKind::Reversal as i32 {
                sh.violation(format!("reversal of {entry} returned {e:?}"));
            }
            drop_from_pool(sh);
            sh.effects(undone.iter().map(Effect::reversal).collect(), vec![e.id]);
        }
        Err(e) => {
            if reason(&e) == ALREADY_REVERSED {
                drop_from_pool(sh);
            }
            sh.refused("reverse_ledger_entry", &e, &[INSUFFICIENT_STOCK, ALREADY_REVERSED]);
        }
    }
}

/// Creates, dispatches and then receives (in full or short), cancels, or receives and cancels at
/// once a shipment between two of the facilities.
async fn shipment(sh: &Shared, c: &mut StockServiceClient<Channel>, rng: &mut Rng, rid: &str) {
    use pb::LedgerEntryKind as K;
    let (from, to, sources, dests): (&str, &str, Vec<String>, Vec<String>) = match rng.below(3) {
        0 => (&sh.n, &sh.d, sh.nu.to_vec(), sh.du.to_vec()),
        1 => (&sh.d, &sh.c, sh.du.to_vec(), vec![sh.cu.clone()]),
        _ => (&sh.c, &sh.d, vec![sh.cu.clone()], sh.du.to_vec()),
    };
    let lots: Vec<String> = if rng.chance(30) { sh.lots.to_vec() } else { vec![rng.pick(&sh.lots).clone()] };
    let lines = lots
        .iter()
        .map(|lot| pb::CreateShipmentLine {
            lot_ref: Some(pb::create_shipment_line::LotRef::LotId(lot.clone())),
            vials: rng.range(1, 25),
            // Empty: the server splits the line over the units holding the lot, as stock is now.
            source_storage_unit_id: if rng.chance(40) { String::new() } else { rng.pick(&sources).clone() },
        })
        .collect();
    let req = pb::CreateShipmentRequest {
        from_facility_id: from.into(),
        to_facility_id: to.into(),
        lines,
        reference: rid.into(),
        request_id: format!("{rid}-create"),
        ..Default::default()
    };
    let s = match rpc!(sh, c, rng.mode(), create_shipment, req) {
        Ok(s) => s,
        Err(e) => return sh.refused("create_shipment", &e, &[INSUFFICIENT_STOCK]),
    };
    sh.ok("create_shipment");
    let cancel = |id: &str, rid: String| pb::CancelShipmentRequest {
        shipment_id: id.into(),
        comment: "contention".into(),
        request_id: rid,
    };
    if rng.chance(8) {
        // A draft holds no stock: cancelling it writes nothing.
        match rpc!(sh, c, rng.mode(), cancel_shipment, cancel(&s.id, format!("{rid}-cancel"))) {
            Ok(_) => sh.ok("cancel_shipment"),
            Err(e) => sh.refused("cancel_shipment", &e, &[]),
        }
        return;
    }
    let dispatch = pb::DispatchShipmentRequest { shipment_id: s.id.clone(), request_id: format!("{rid}-dispatch") };
    let s = match rpc!(sh, c, rng.mode(), dispatch_shipment, dispatch) {
        Ok(s) => s,
        Err(e) => {
            sh.refused("dispatch_shipment", &e, &[INSUFFICIENT_STOCK]);
            if let Err(e) = rpc!(sh, c, Mode::Once, cancel_shipment, cancel(&s.id, format!("{rid}-drop"))) {
                sh.refused("cancel_shipment", &e, &[]);
            }
            return;
        }
    };
    sh.ok("dispatch_shipment");
    let dispatched: Vec<Effect> = s
        .lines
        .iter()
        .map(|l| Effect::new(K::Dispatch, &l.source_storage_unit_id, &l.lot_id, -l.vials, &s.id))
        .collect();
    sh.effects(dispatched, Vec::new());
    let returned: Vec<Effect> = s
        .lines
        .iter()
        .map(|l| Effect::new(K::DispatchCancelled, &l.source_storage_unit_id, &l.lot_id, l.vials, &s.id))
        .collect();

    // The receipt: every line short by a few vials now and then, into one of the destination's units.
    let full = rng.chance(30);
    let default_unit = rng.pick(&dests).clone();
    let mut plan = Vec::new();
    let lines = s
        .lines
        .iter()
        .map(|l| {
            // In full: every line into the request's unit, as accept_unlisted_in_full promises.
            let short = if !full && rng.chance(30) { rng.range(1, l.vials) } else { 0 };
            let unit = if full { default_unit.clone() } else { rng.pick(&dests).clone() };
            plan.push((l.lot_id.clone(), unit.clone(), l.vials - short, short));
            pb::ReceiveShipmentLine {
                line_ref: Some(pb::receive_shipment_line::LineRef::LineId(l.id.clone())),
                received_vials: l.vials - short,
                storage_unit_id: unit,
                vvm_stage: 1,
                discrepancy_reason: if short > 0 { pb::DiscrepancyReason::DamagedInTransit as i32 } else { 0 },
                comment: String::new(),
            }
        })
        .collect();
    let receive = pb::ReceiveShipmentRequest {
        shipment_id: s.id.clone(),
        storage_unit_id: default_unit,
        lines: if full { Vec::new() } else { lines },
        accept_unlisted_in_full: full,
        request_id: format!("{rid}-receive"),
    };
    let received = |sh: &Shared, r: &pb::Shipment| {
        let mut got = Vec::new();
        for l in &r.lines {
            if l.received_vials > 0 {
                got.push(Effect::new(
                    K::ShipmentReceipt,
                    &l.received_storage_unit_id,
                    &l.lot_id,
                    l.received_vials,
                    &s.id,
                ));
            }
            if l.vials > l.received_vials {
                got.push(Effect::new(K::TransitLoss, "", &l.lot_id, l.received_vials - l.vials, &s.id));
            }
        }
        let asked: Vec<(String, String, i64, i64)> = r
            .lines
            .iter()
            .map(|l| {
                (l.lot_id.clone(), l.received_storage_unit_id.clone(), l.received_vials, l.vials - l.received_vials)
            })
            .collect();
        if asked != plan {
            sh.violation(format!("shipment {} received {asked:?}, asked {plan:?}", s.id));
        }
        sh.effects(got, Vec::new());
    };
    match rng.below(100) {
        0..70 => match rpc!(sh, c, rng.mode(), receive_shipment, receive) {
            Ok(r) => {
                sh.ok("receive_shipment");
                received(sh, &r);
            }
            Err(e) => sh.refused("receive_shipment", &e, &[]),
        },
        70..85 => match rpc!(sh, c, rng.mode(), cancel_shipment, cancel(&s.id, format!("{rid}-cancel"))) {
            Ok(_) => {
                sh.ok("cancel_shipment");
                sh.effects(returned, Vec::new());
            }
            Err(e) => sh.refused("cancel_shipment", &e, &[]),
        },
        _ => {
            // Receiver and sender act at the same moment: exactly one of them wins.
            sh.log.lock().unwrap().races += 1;
            let (mut rc, mut cc) = (c.clone(), c.clone());
            let (a, b) = tokio::join!(
                rc.receive_shipment(authed(&sh.tok, receive)),
                cc.cancel_shipment(authed(&sh.tok, cancel(&s.id, format!("{rid}-cancel"))))
            );
            match (a, b) {
                (Ok(r), Err(e)) => {
                    sh.ok("receive_shipment");
                    received(sh, &r.into_inner());
                    sh.refused("cancel_shipment", &e, &[INVALID_STATE]);
                }
                (Err(e), Ok(_)) => {
                    sh.ok("cancel_shipment");
                    sh.effects(returned, Vec::new());
                    sh.refused("receive_shipment", &e, &[INVALID_STATE]);
                }
                (a, b) => sh.violation(format!("receive and cancel of {} at once: {a:?} / {b:?}", s.id)),
            }
        }
    }
}

fn all_units(sh: &Shared) -> [String; 5] {
    [sh.nu[0].clone(), sh.nu[1].clone(), sh.du[0].clone(), sh.du[1].clone(), sh.cu.clone()]
}

/// The facility of `all_units(sh)[i]`.
fn facility_of(sh: &Shared, i: usize) -> String {
    match i {
        0 | 1 => sh.n.clone(),
        2 | 3 => sh.d.clone(),
        _ => sh.c.clone(),
    }
}

async fn balance(sh: &Shared, c: &mut StockServiceClient<Channel>, unit: &str, lot: &str) -> i64 {
    let req = pb::ListBalancesRequest {
        storage_unit_id: unit.into(),
        lot_id: lot.into(),
        include_zero: true,
        ..Default::default()
    };
    match c.list_balances(authed(&sh.tok, req)).await {
        Ok(r) => r.into_inner().balances.first().map_or(0, |b| b.vials),
        Err(e) => {
            sh.violation(format!("list_balances: {e:?}"));
            0
        }
    }
}

/// A connection of the test's own to the server's database, for checks in one snapshot.
enum Snapshot {
    Sqlite(sqlx::SqlitePool),
    Postgres(sqlx::PgPool),
}

/// Per balance: vials, quarantined, Σ ledger vials, Σ ledger quarantined, the last entry's running
/// balance; plus (with vials = -1) entries whose (unit, lot) has no balance. One statement, so one
/// snapshot on either engine, however busy the writers are.
const SNAPSHOT_SQL: &str = "SELECT b.storage_unit_id, b.lot_id, b.vials, b.quarantined_vials, \
     CAST((SELECT COALESCE(SUM(e.quantity_vials), 0) FROM ledger_entries e \
           WHERE e.storage_unit_id = b.storage_unit_id AND e.lot_id = b.lot_id) AS BIGINT), \
     CAST((SELECT COALESCE(SUM(e.quarantined_change), 0) FROM ledger_entries e \
           WHERE e.storage_unit_id = b.storage_unit_id AND e.lot_id = b.lot_id) AS BIGINT), \
     (SELECT e.balance_after_vials FROM ledger_entries e \
      WHERE e.storage_unit_id = b.storage_unit_id AND e.lot_id = b.lot_id ORDER BY e.sequence DESC LIMIT 1) \
     FROM stock_balances b \
     UNION ALL SELECT e.storage_unit_id, e.lot_id, CAST(-1 AS BIGINT), CAST(-1 AS BIGINT), CAST(0 AS BIGINT), \
     CAST(0 AS BIGINT), CAST(NULL AS BIGINT) FROM ledger_entries e WHERE e.storage_unit_id IS NOT NULL \
     AND NOT EXISTS (SELECT 1 FROM stock_balances b WHERE b.storage_unit_id = e.storage_unit_id AND b.lot_id = e.lot_id)";

type SnapshotRow = (String, String, i64, i64, i64, i64, Option<i64>);

impl Snapshot {
    async fn open(srv: &TestServer) -> Snapshot {
        match srv.db {
            TestDb::Sqlite => Snapshot::Sqlite(sqlx::SqlitePool::connect(&srv.database_url).await.unwrap()),
            TestDb::Postgres(_) => Snapshot::Postgres(sqlx::PgPool::connect(&srv.database_url).await.unwrap()),
        }
    }

    /// What is wrong in one snapshot of the database: balances that are negative, differ from
    /// their ledger, or have entries and no balance.
    async fn violations(&self) -> Vec<String> {
        let rows: Result<Vec<SnapshotRow>, sqlx::Error> = match self {
            Snapshot::Sqlite(p) => sqlx::query_as(SNAPSHOT_SQL).fetch_all(p).await,
            Snapshot::Postgres(p) => sqlx::query_as(SNAPSHOT_SQL).fetch_all(p).await,
        };
        let rows = match rows {
            Ok(r) => r,
            Err(e) => return vec![format!("snapshot query: {e}")],
        };
        rows.into_iter()
            .filter(|(_, _, v, q, sv, sq, last)| {
                !(*v >= 0 && (0..=*v).contains(q) && (*v, *q) == (*sv, *sq) && last.unwrap_or(0) == *v)
            })
            .map(|r| format!("balance ≠ Σ ledger or negative (unit, lot, vials, quarantined, Σ vials, Σ quarantined, last running balance): {r:?}"))
            .collect()
    }

    async fn close(self) {
        match self {
            Snapshot::Sqlite(p) => p.close().await,
            Snapshot::Postgres(p) => p.close().await,
        }
    }
}

fn seed() -> u64 {
    match std::env::var("VAXTRACE_CONTENTION_SEED") {
        Ok(s) => s.trim().parse().expect("VAXTRACE_CONTENTION_SEED must be an unsigned integer"),
        Err(_) => std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(1, |d| d.as_nanos() as u64),
    }
}

fn ops() -> usize {
    std::env::var("VAXTRACE_CONTENTION_OPS").ok().and_then(|s| s.trim().parse().ok()).unwrap_or(DEFAULT_OPS)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn many_clients_racing_for_the_same_lots_keep_the_ledger_whole() {
    let seed = seed();
    let ops = ops();
    eprintln!(
        "stock contention: seed {seed} (VAXTRACE_CONTENTION_SEED={seed} replays it), {CLIENTS} clients × {ops} operations"
    );
    for db in TestDb::all() {
        // A SQLite file (WAL, a pool of readers beside the one writer) rather than the in-memory
        // database's single connection: the configuration where writers could meet SQLITE_BUSY.
        let dir = tempfile::tempdir().unwrap();
        let srv = TestServer::start_reachable(db, dir.path()).await;
        let started = Instant::now();
        run(&srv, seed, ops).await;
        eprintln!("stock contention on {}: {:.1} s", srv.db.name(), started.elapsed().as_secs_f64());
        srv.stop().await;
    }
}

async fn run(srv: &TestServer, seed: u64, ops: usize) {
    let name = srv.db.name();
    let mut w = world(srv).await;
    let mut fac = FacilityServiceClient::new(srv.channel().await);
    let du2 = fac
        .create_storage_unit(authed(
            &w.tok,
            pb::CreateStorageUnitRequest {
                storage_unit: Some(pb::StorageUnit {
                    facility_id: w.d.clone(),
                    kind: 1,
                    name: "DU2".into(),
                    temperature_profile: 1,
                    ..Default::default()
                }),
                request_id: String::new(),
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .id;
    let sh = Arc::new(Shared {
        tok: w.tok.clone(),
        n: w.n.clone(),
        d: w.d.clone(),
        c: w.c.clone(),
        s: w.s.clone(),
        nu: [w.nu1.clone(), w.nu2.clone()],
        du: [w.du.clone(), du2],
        cu: w.cu.clone(),
        lots: [w.lots[0].clone(), w.lots[1].clone()],
        log: Mutex::default(),
    });
    // Opening stock at the national store, booked (and logged) like any receipt.
    let mut opening = Rng(seed);
    for (i, unit) in sh.nu.iter().enumerate() {
        for (j, lot) in sh.lots.iter().enumerate() {
            let req = pb::ReceiveFromSupplierRequest {
                storage_unit_id: unit.clone(),
                lines: vec![pb::SupplierReceiptLine {
                    lot_ref: Some(pb::supplier_receipt_line::LotRef::LotId(lot.clone())),
                    vials: 40 + opening.range(0, 40),
                    ..Default::default()
                }],
                supplier: "UNICEF SD".into(),
                request_id: format!("opening-{i}-{j}"),
                ..Default::default()
            };
            let r = w.stock.receive_from_supplier(authed(&w.tok, req)).await.unwrap().into_inner();
            sh.effects(r.entries.iter().map(Effect::of).collect(), r.entries.iter().map(|e| e.id.clone()).collect());
        }
    }

    // The checker: one snapshot after another while the clients run.
    let snapshot = Snapshot::open(srv).await;
    let stop = Arc::new(AtomicBool::new(false));
    let checker = {
        let (sh, stop, mut c) = (sh.clone(), stop.clone(), StockServiceClient::new(srv.channel().await));
        tokio::spawn(async move {
            let mut checks = 0usize;
            loop {
                let done = stop.load(Ordering::Acquire);
                for v in snapshot.violations().await {
                    sh.violation(format!("during the load: {v}"));
                }
                // The API's view, also one query: never a negative balance.
                let req = pb::ListBalancesRequest { page_size: 1000, include_zero: true, ..Default::default() };
                match c.list_balances(authed(&sh.tok, req)).await {
                    Ok(r) => {
                        for b in r.into_inner().balances {
                            if b.vials < 0 || b.quarantined_vials < 0 || b.available_vials < 0 {
                                sh.violation(format!("during the load, ListBalances: {b:?}"));
                            }
                        }
                    }
                    Err(e) => sh.violation(format!("during the load, ListBalances: {e:?}")),
                }
                checks += 1;
                if done {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            snapshot.close().await;
            checks
        })
    };

    let mut clients = Vec::new();
    for id in 0..CLIENTS {
        let c = StockServiceClient::new(srv.channel().await);
        clients.push(tokio::spawn(client(sh.clone(), c, seed, id, ops)));
    }
    // Generous: only a hung (deadlocked) server runs into it.
    let all = async {
        for t in clients {
            t.await.unwrap();
        }
    };
    if tokio::time::timeout(Duration::from_secs(600), all).await.is_err() {
        panic!("{name}: seed {seed}: the clients did not finish within 10 minutes (a deadlock?)");
    }
    stop.store(true, Ordering::Release);
    let checks = checker.await.unwrap();

    // At rest: the API's view of the invariants, then the oracle.
    let balances = check_ledger(&mut w, name).await;
    let log = std::mem::take(&mut *sh.log.lock().unwrap());
    let mut violations = log.violations;
    let mut expected: HashMap<(String, String), i64> = HashMap::new();
    for e in log.effects.iter().filter(|e| !e.unit.is_empty()) {
        *expected.entry((e.unit.clone(), e.lot.clone())).or_default() += e.vials;
    }
    let keys: HashSet<&(String, String)> = expected.keys().chain(balances.keys()).collect();
    for k in keys {
        let (want, got) = (expected.get(k).copied().unwrap_or(0), balances.get(k).copied().unwrap_or(0));
        if want != got {
            violations.push(format!("{k:?}: balance {got}, the successful calls add up to {want}"));
        }
    }
    let ledger = all_entries(&mut w).await;
    let mut held: Vec<Effect> = ledger.iter().map(Effect::of).collect();
    let mut reported = log.effects.clone();
    held.sort();
    reported.sort();
    if held != reported {
        let (mut extra, mut missing) = (held.clone(), reported.clone());
        for e in &reported {
            if let Some(i) = extra.iter().position(|x| x == e) {
                extra.remove(i);
            }
        }
        for e in &held {
            if let Some(i) = missing.iter().position(|x| x == e) {
                missing.remove(i);
            }
        }
        violations.push(format!(
            "the ledger is not the successful calls' effects, each once:\n  in the ledger only: {extra:?}\n  reported only: {missing:?}"
        ));
    }
    let ids: HashSet<&str> = ledger.iter().map(|e| e.id.as_str()).collect();
    for id in &log.entry_ids {
        if !ids.contains(id.as_str()) {
            violations.push(format!("entry {id} was returned by a successful call and is not in the ledger"));
        }
    }

    eprintln!(
        "stock contention on {name}: {} entries, {checks} snapshots checked, {} requests repeated after the answer, \
         {} sent twice at once, {} receive/cancel races; outcomes: {:?}",
        ledger.len(),
        log.resent,
        log.twins,
        log.races,
        log.outcomes
    );
    let shown: Vec<&String> = violations.iter().take(20).collect();
    assert!(
        violations.is_empty(),
        "{name}: seed {seed} (VAXTRACE_CONTENTION_SEED={seed}): {} violations, the first ones:\n{}",
        violations.len(),
        shown.iter().map(|v| format!("- {v}")).collect::<Vec<_>>().join("\n")
    );
    // The run must have raced at all: losers of a race for stock, repeats in flight, snapshots taken.
    let lost = log.outcomes.iter().filter(|((_, o), _)| o.ends_with(INSUFFICIENT_STOCK)).map(|(_, n)| n).sum::<usize>();
    assert!(lost > 0 && log.twins > 0 && log.resent > 0 && checks > 1, "{name}: seed {seed}: too little contention");
}

async fn all_entries(w: &mut vaxtrace_tests::world::World) -> Vec<pb::LedgerEntry> {
    let mut out = Vec::new();
    let mut token = String::new();
    loop {
        let r = pb::ListLedgerEntriesRequest { page_size: 1000, page_token: token, ..Default::default() };
        let page = w.stock.list_ledger_entries(authed(&w.tok, r)).await.unwrap().into_inner();
        out.extend(page.entries);
        if page.next_page_token.is_empty() {
            return out;
        }
        token = page.next_page_token;
    }
}

// Regression tests for what the contention run found, each deterministic.

/// A request refused inside the store keeps its request_id, holding the refusal: a retry is
/// refused alike even when the stock has grown meanwhile (the retry's work succeeds, finds the key
/// and is rolled back).
#[tokio::test]
async fn a_refusal_keeps_its_request_id() {
    use vaxtrace_server::domain::stock::{EntryDraft, EntryKind, Operation};
    use vaxtrace_server::domain::{Caller, Idempotency, Role, new_id};
    use vaxtrace_server::error::Error;
    for db in TestDb::all() {
        let srv = TestServer::start(db).await;
        let name = srv.db.name();
        let mut w = world(&srv).await;
        let (nu1, n) = (w.nu1.clone(), w.n.clone());
        vaxtrace_tests::world::receive(&mut w, &nu1, 0, 5, "").await.unwrap();
        let store = srv.app.store();
        let lot = store.lot_info(&w.lots[0]).await.unwrap().unwrap();
        let caller = Caller {
            token_id: "tok".into(),
            role: Role::Admin,
            scope_path: "/".into(),
            device_id: None,
            answer_key: None,
        };
        let op = Operation {
            id: new_id(),
            actor: "tok".into(),
            request_id: "overdraw".into(),
            drafts: vec![EntryDraft::new(EntryKind::Adjustment, &nu1, &n, &lot, -10)],
            vvm: Vec::new(),
        };
        let key = Idempotency::from_request(&caller, "AdjustStock", "overdraw", &op.drafts).unwrap();
        let refused =
            |r: &Result<_, Error>| matches!(r, Err(Error::FailedPrecondition { reason: INSUFFICIENT_STOCK, .. }));
        let first = store.post(key.as_ref(), &op).await;
        assert!(refused(&first), "{name}: {first:?}");
        vaxtrace_tests::world::receive(&mut w, &nu1, 0, 50, "").await.unwrap();
        let again = store.post(key.as_ref(), &op).await;
        assert!(refused(&again), "{name}: the key gives its refusal: {again:?}");
        assert_eq!(check_ledger(&mut w, name).await[&(nu1.clone(), w.lots[0].clone())], 55, "{name}");
        srv.stop().await;
    }
}

/// A repeated physical count answers as the first one did: the same count id when nothing needed
/// correcting, and for a complete unit the lots it had then, not those it holds at the retry.
#[tokio::test]
async fn a_repeated_count_answers_as_the_first() {
    for db in TestDb::all() {
        let srv = TestServer::start(db).await;
        let name = srv.db.name();
        let mut w = world(&srv).await;
        let (nu1, lot_a, lot_b) = (w.nu1.clone(), w.lots[0].clone(), w.lots[1].clone());
        vaxtrace_tests::world::receive(&mut w, &nu1, 0, 20, "").await.unwrap();
        vaxtrace_tests::world::receive(&mut w, &nu1, 1, 7, "").await.unwrap();
        let count = |rid: &str, complete: bool| pb::RecordPhysicalCountRequest {
            facility_id: w.n.clone(),
            lines: vec![pb::PhysicalCountLine {
                storage_unit_id: nu1.clone(),
                lot_ref: Some(pb::physical_count_line::LotRef::LotId(lot_a.clone())),
                counted_vials: 20,
                vvm_stage: 0,
            }],
            complete_storage_unit_ids: if complete { vec![nu1.clone()] } else { Vec::new() },
            request_id: rid.into(),
            ..Default::default()
        };
        let mut c = w.stock.clone();
        // Nothing to correct: no entry carries the count's id, the answer still does.
        let first = c.record_physical_count(authed(&w.tok, count("same", false))).await.unwrap().into_inner();
        assert!(first.results[0].correction.is_none(), "{name}");
        let again = c.record_physical_count(authed(&w.tok, count("same", false))).await.unwrap().into_inner();
        assert_eq!(again, first, "{name}: a repeated count without corrections");
        // The complete unit: lot B, not listed, is counted as 0; at the retry NU1 holds no lot B.
        let first = c.record_physical_count(authed(&w.tok, count("complete", true))).await.unwrap().into_inner();
        assert_eq!(first.results.len(), 2, "{name}: {first:?}");
        assert_eq!(first.results[1].lot_id, lot_b, "{name}");
        let again = c.record_physical_count(authed(&w.tok, count("complete", true))).await.unwrap().into_inner();
        assert_eq!(again, first, "{name}: a repeated count of a complete unit");
        let bal = check_ledger(&mut w, name).await;
        assert_eq!((bal[&(nu1.clone(), lot_a.clone())], bal[&(nu1.clone(), lot_b.clone())]), (20, 0), "{name}");
        srv.stop().await;
    }
}

/// A repeated CreateShipment whose lines the server split over the units holding the lot returns
/// the shipment the first call created, even when that stock has gone since: the split reads
/// stock before the write, and its refusal once answered the retry instead of the key's result.
#[tokio::test]
async fn a_repeated_create_shipment_returns_its_shipment_after_the_stock_has_gone() {
    for db in TestDb::all() {
        let srv = TestServer::start(db).await;
        let name = srv.db.name();
        let mut w = world(&srv).await;
        let (nu1, lot) = (w.nu1.clone(), w.lots[0].clone());
        vaxtrace_tests::world::receive(&mut w, &nu1, 0, 30, "").await.unwrap();
        let req = pb::CreateShipmentRequest {
            from_facility_id: w.n.clone(),
            to_facility_id: w.d.clone(),
            lines: vec![pb::CreateShipmentLine {
                lot_ref: Some(pb::create_shipment_line::LotRef::LotId(lot.clone())),
                vials: 25,
                source_storage_unit_id: String::new(),
            }],
            request_id: "create-once".into(),
            ..Default::default()
        };
        let mut c = w.stock.clone();
        let first = c.create_shipment(authed(&w.tok, req.clone())).await.unwrap().into_inner();
        let broken = pb::AdjustStockRequest {
            storage_unit_id: nu1.clone(),
            lot_ref: Some(pb::adjust_stock_request::LotRef::LotId(lot.clone())),
            quantity_vials: -20,
            reason: pb::AdjustmentReason::Broken as i32,
            comment: String::new(),
            request_id: String::new(),
        };
        c.adjust_stock(authed(&w.tok, broken)).await.unwrap();
        let again = c.create_shipment(authed(&w.tok, req)).await;
        assert_eq!(again.map(tonic::Response::into_inner).map_err(|e| reason(&e)), Ok(first), "{name}");
        srv.stop().await;
    }
}
