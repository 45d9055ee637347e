//! The stock ledger's SQL, shared by both engines like `common.rs` (expanded after it, so it uses
//! its row helpers and idempotency claims). Row locks come from the engine's `LOCK` suffix.

pub(crate) const ENTRY_COLS: &str = "e.sequence, e.id, e.operation_id, e.storage_unit_id, e.facility_id, e.lot_id, \
     e.product_id, e.kind, e.quantity_vials, e.doses, e.quarantined_change, e.adjustment_reason, e.discrepancy_reason, \
     e.comment, e.actor, e.time, e.request_id, e.shipment_id, e.session_report_id, e.reverses_entry_id, \
     e.physical_count_id, e.exposure_id, e.balance_after_vials, CAST(p.doses_per_vial AS BIGINT) AS doses_per_vial, r.id AS reversed_by";
pub(crate) const ENTRY_FROM: &str = "ledger_entries e JOIN products p ON p.id = e.product_id \
     LEFT JOIN ledger_entries r ON r.reverses_entry_id = e.id";
pub(crate) const STOCK_COLS: &str = "b.storage_unit_id, u.facility_id, b.lot_id, l.lot_number, l.product_id, \
     CAST(p.doses_per_vial AS BIGINT) AS doses_per_vial, l.expiry, b.vials, b.quarantined_vials, b.vvm_stage, b.updated_at";
pub(crate) const STOCK_FROM: &str = "stock_balances b JOIN storage_units u ON u.id = b.storage_unit_id \
     JOIN facilities f ON f.id = u.facility_id JOIN lots l ON l.id = b.lot_id JOIN products p ON p.id = l.product_id";
pub(crate) const SHIPMENT_COLS: &str = "s.id, s.from_facility_id, s.to_facility_id, s.state, s.lines, s.reference, \
     s.comment, s.expected_arrival, s.created_at, s.dispatched_at, s.received_at, s.cancelled_at, s.created_by, \
     s.dispatched_by, s.received_by, s.cancelled_by, s.cancel_comment";

/// Balances per locking statement: 3 parameters each, far below SQLite's 32,766.
pub(crate) const LOCK_CHUNK: usize = 1000;
/// Ledger entries per INSERT: 22 parameters each.
pub(crate) const ENTRY_CHUNK: usize = 1000;
/// Draws ledger sequences (PostgreSQL), listed as text in `seqs`; the count and `)` follow. The
/// count is written into the statement, not bound: bound, the generic plan's estimate (1,000 rows
/// from `generate_series`) loses to every custom plan, so PostgreSQL would plan the statement
/// anew at each call (more CPU than running it).
pub(crate) const DRAW_SEQUENCES: &str = "SELECT string_agg(CAST(nextval(pg_get_serial_sequence('ledger_entries', \
     'sequence')) AS TEXT), ',') AS seqs FROM generate_series(1, ";

/// Most postings written in one group transaction ([`Postings`]).
pub(crate) const MAX_GROUP: usize = 32;
/// Tasks writing groups: one, so each group gathers everything that arrived while the one before
/// was written (measured: two posters made smaller groups and more work per posting). It never
/// waits long: a group's locks time out (see `begin_group_write`), and what follows a failed
/// group or a refusal runs in tasks of its own.
pub(crate) const POSTERS: usize = 1;

/// Longest a group's transaction may take before its postings are written one by one instead.
pub(crate) const GROUP_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// A posting waiting for its group.
pub(crate) struct Pending {
    pub(crate) idem: crate::domain::Idempotency,
    pub(crate) op: crate::domain::stock::Operation,
    pub(crate) reply: tokio::sync::oneshot::Sender<crate::error::Result<Vec<crate::domain::stock::LedgerEntry>>>,
}

/// Postings queued to be written in groups: concurrent requests (on any balances) share one
/// transaction, so its round trips and its commit's WAL flush are paid once per group rather
/// than once per request. Each request still gets its own answer, refusal and request key, and is
/// answered only after the group commits; a group that fails as a whole (a twin request in it, a
/// database error) is written again one request at a time.
pub(crate) struct Postings {
    tx: tokio::sync::mpsc::Sender<Pending>,
    /// The queue, and a posting taken from it that did not fit the group it was taken for.
    rx: tokio::sync::Mutex<(tokio::sync::mpsc::Receiver<Pending>, Option<Pending>)>,
}

impl std::fmt::Debug for Postings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Postings").finish_non_exhaustive()
    }
}

impl Postings {
    /// An empty queue.
    pub(crate) fn new() -> std::sync::Arc<Postings> {
        let (tx, rx) = tokio::sync::mpsc::channel(1024);
        std::sync::Arc::new(Postings { tx, rx: tokio::sync::Mutex::new((rx, None)) })
    }

    /// Queues `op` and waits for its group; `None` when no poster answered (none is running).
    pub(crate) async fn post(
        &self,
        idem: &crate::domain::Idempotency,
        op: &crate::domain::stock::Operation,
    ) -> Option<crate::error::Result<Vec<crate::domain::stock::LedgerEntry>>> {
        let (reply, answer) = tokio::sync::oneshot::channel();
        self.tx.send(Pending { idem: idem.clone(), op: op.clone(), reply }).await.ok()?;
        answer.await.ok()
    }

    /// Waits for a posting, then takes whatever else is queued, up to [`MAX_GROUP`] postings and
    /// [`ENTRY_CHUNK`] drafts (never waiting for more: a lone request is written at once).
    pub(crate) async fn next_group(&self) -> Option<Vec<Pending>> {
        let mut guard = self.rx.lock().await;
        let (rx, carried) = &mut *guard;
        let first = match carried.take() {
            Some(p) => p,
            None => rx.recv().await?,
        };
        let mut drafts = first.op.drafts.len();
        let mut group = vec![first];
        while group.len() < MAX_GROUP {
            let Ok(p) = rx.try_recv() else { break };
            if drafts + p.op.drafts.len() > ENTRY_CHUNK {
                *carried = Some(p);
                break;
            }
            drafts += p.op.drafts.len();
            group.push(p);
        }
        Some(group)
    }
}

macro_rules! sql_stock_store {
    ($Store:ty, $Db:ty, $Row:ty) => {
        use std::collections::BTreeMap;

        use $crate::domain::stock::{self as st, BalanceState, EntryDraft, LedgerEntry, Operation, StockItem};
        use $crate::store::stock_sql::*;

        fn entry_row(r: &$Row) -> Result<LedgerEntry> {
            let kind: i32 = r.try_get("kind")?;
            Ok(LedgerEntry {
                id: r.try_get("id")?,
                sequence: r.try_get("sequence")?,
                operation_id: r.try_get("operation_id")?,
                draft: EntryDraft {
                    storage_unit_id: r.try_get("storage_unit_id")?,
                    facility_id: r.try_get("facility_id")?,
                    lot_id: r.try_get("lot_id")?,
                    product_id: r.try_get("product_id")?,
                    doses_per_vial: r.try_get("doses_per_vial")?,
                    kind: decode_enum(kind, "entry kind", st::EntryKind::from_i32)?,
                    quantity_vials: r.try_get("quantity_vials")?,
                    quarantined_change: r.try_get("quarantined_change")?,
                    draws_available: false,
                    adjustment_reason: r.try_get("adjustment_reason")?,
                    discrepancy_reason: r.try_get("discrepancy_reason")?,
                    comment: r.try_get("comment")?,
                    shipment_id: r.try_get("shipment_id")?,
                    session_report_id: r.try_get("session_report_id")?,
                    reverses_entry_id: r.try_get("reverses_entry_id")?,
                    physical_count_id: r.try_get("physical_count_id")?,
                    exposure_id: r.try_get("exposure_id")?,
                    count_to: None,
                    quarantine_available: false,
                },
                doses: r.try_get("doses")?,
                actor: r.try_get("actor")?,
                time: r.try_get("time")?,
                request_id: r.try_get("request_id")?,
                balance_after_vials: r.try_get("balance_after_vials")?,
                reversed_by: r.try_get("reversed_by")?,
            })
        }

        fn stock_row(r: &$Row) -> Result<StockItem> {
            Ok(StockItem {
                storage_unit_id: r.try_get("storage_unit_id")?,
                facility_id: r.try_get("facility_id")?,
                lot_id: r.try_get("lot_id")?,
                lot_number: r.try_get("lot_number")?,
                product_id: r.try_get("product_id")?,
                doses_per_vial: r.try_get("doses_per_vial")?,
                expiry: r.try_get("expiry")?,
                balance: BalanceState { vials: r.try_get("vials")?, quarantined: r.try_get("quarantined_vials")? },
                vvm_stage: r.try_get("vvm_stage")?,
                updated_at: r.try_get("updated_at")?,
            })
        }

        fn shipment_row(r: &$Row) -> Result<st::Shipment> {
            let lines: String = r.try_get("lines")?;
            Ok(st::Shipment {
                id: r.try_get("id")?,
                from_facility_id: r.try_get("from_facility_id")?,
                to_facility_id: r.try_get("to_facility_id")?,
                state: decode_enum(r.try_get("state")?, "shipment state", st::ShipmentState::from_i32)?,
                lines: serde_json::from_str(&lines)?,
                reference: r.try_get("reference")?,
                comment: r.try_get("comment")?,
                expected_arrival: r.try_get("expected_arrival")?,
                created_at: r.try_get("created_at")?,
                dispatched_at: r.try_get("dispatched_at")?,
                received_at: r.try_get("received_at")?,
                cancelled_at: r.try_get("cancelled_at")?,
                created_by: r.try_get("created_by")?,
                dispatched_by: r.try_get("dispatched_by")?,
                received_by: r.try_get("received_by")?,
                cancelled_by: r.try_get("cancelled_by")?,
                cancel_comment: r.try_get("cancel_comment")?,
            })
        }

        fn policy_row(r: &$Row) -> Result<st::StockPolicy> {
            Ok(st::StockPolicy {
                facility_id: r.try_get("facility_id")?,
                product_id: r.try_get("product_id")?,
                min_doses: r.try_get("min_doses")?,
                max_doses: r.try_get("max_doses")?,
                updated_at: r.try_get("updated_at")?,
                updated_by: r.try_get("updated_by")?,
            })
        }

        /// `INSERT INTO ledger_entries …` for `entries`; `with_sequence` writes their sequences
        /// (reserved beforehand) instead of letting the column number them.
        fn push_entries_insert(q: &mut sqlx::QueryBuilder<$Db>, entries: &[LedgerEntry], with_sequence: bool) {
            q.push(if with_sequence { "INSERT INTO ledger_entries (sequence, " } else { "INSERT INTO ledger_entries (" });
            q.push(
                "id, operation_id, storage_unit_id, facility_id, lot_id, product_id, kind, \
                 quantity_vials, doses, quarantined_change, adjustment_reason, discrepancy_reason, comment, actor, time, \
                 request_id, shipment_id, session_report_id, reverses_entry_id, physical_count_id, exposure_id, \
                 balance_after_vials) ",
            );
            if with_sequence {
                q.push("OVERRIDING SYSTEM VALUE ");
            }
            q.push_values(entries.iter(), |mut b, e| {
                let dr = &e.draft;
                if with_sequence {
                    b.push_bind(e.sequence);
                }
                b.push_bind(e.id.clone())
                    .push_bind(e.operation_id.clone())
                    .push_bind(dr.storage_unit_id.clone())
                    .push_bind(dr.facility_id.clone())
                    .push_bind(dr.lot_id.clone())
                    .push_bind(dr.product_id.clone())
                    .push_bind(dr.kind.as_i32())
                    .push_bind(dr.quantity_vials)
                    .push_bind(e.doses)
                    .push_bind(dr.quarantined_change)
                    .push_bind(dr.adjustment_reason)
                    .push_bind(dr.discrepancy_reason)
                    .push_bind(dr.comment.clone())
                    .push_bind(e.actor.clone())
                    .push_bind(e.time)
                    .push_bind(e.request_id.clone())
                    .push_bind(dr.shipment_id.clone())
                    .push_bind(dr.session_report_id.clone())
                    .push_bind(dr.reverses_entry_id.clone())
                    .push_bind(dr.physical_count_id.clone())
                    .push_bind(dr.exposure_id.clone())
                    .push_bind(e.balance_after_vials);
            });
        }

        /// `UPDATE stock_balances … FROM (VALUES …)` setting each balance to its new state (both
        /// engines name a VALUES list's columns column1…n).
        fn push_balance_update(
            q: &mut sqlx::QueryBuilder<$Db>,
            rows: &[(&(String, String), &BalanceState)],
            now: chrono::DateTime<chrono::Utc>,
        ) {
            q.push("UPDATE stock_balances SET vials = v.column3, quarantined_vials = v.column4, updated_at = ");
            q.push_bind(now).push(" FROM (");
            q.push_values(rows.iter(), |mut b, ((unit, lot), s)| {
                b.push_bind(unit.clone()).push_bind(lot.clone()).push_bind(s.vials).push_bind(s.quarantined);
            });
            q.push(") AS v WHERE stock_balances.storage_unit_id = v.column1 AND stock_balances.lot_id = v.column2");
        }

        /// Gives each entry the sequence the insert returned for it (RETURNING's row order is not
        /// promised, so they are matched by id).
        fn assign_sequences(entries: &mut [LedgerEntry], rows: Vec<$Row>) -> Result<()> {
            let mut sequences = std::collections::HashMap::with_capacity(rows.len());
            for r in rows {
                sequences.insert(r.try_get::<String, _>("id")?, r.try_get::<i64, _>("sequence")?);
            }
            for e in entries.iter_mut() {
                e.sequence = *sequences
                    .get(&e.id)
                    .ok_or_else(|| $crate::error::Error::Internal(format!("ledger entry {} not returned", e.id)))?;
            }
            Ok(())
        }

        /// Balances by (storage unit, lot), in byte order of the key.
        type Balances = BTreeMap<(String, String), BalanceState>;

        /// The balances `op` touches, each at zero until it is read.
        fn touched(op: &Operation) -> Balances {
            let mut balances = Balances::new();
            for dr in &op.drafts {
                if let Some(u) = &dr.storage_unit_id {
                    balances.insert((u.clone(), dr.lot_id.clone()), BalanceState::default());
                }
            }
            balances
        }

        /// The ledger sequences a reserving statement drew, listed as text in its `seqs` column
        /// (not an array: one query for both engines' type checks).
        fn parse_sequences(r: &$Row) -> Result<Vec<i64>> {
            let listed: String = r.try_get("seqs")?;
            listed
                .split(',')
                .map(|n| n.parse::<i64>().map_err(|e| Error::Internal(format!("reserved sequence {n:?}: {e}"))))
                .collect()
        }

        /// Reads and locks the balances in `balances` (creating those that do not exist yet),
        /// and reserves `reserve` ledger sequences in the same statement (0: none, or where
        /// the engine cannot; see [`reserves_sequences`]).
        async fn lock_balances(
            tx: &mut Tx<'_>,
            balances: &mut Balances,
            now: chrono::DateTime<chrono::Utc>,
            reserve: usize,
        ) -> Result<Vec<i64>> {
            let keys: Vec<(String, String)> = balances.keys().cloned().collect();
            let mut sequences = Vec::new();
            // Existing balances are locked without being written (an upsert would make a new row
            // version of each), in byte order of the key, as every writer takes them.
            let mut found = 0;
            // Drawn with the lock only when one statement takes every lock.
            let reserving = reserve > 0 && keys.len() <= LOCK_CHUNK;
            for chunk in keys.chunks(LOCK_CHUNK) {
                let mut q = sqlx::QueryBuilder::<$Db>::new(if reserving {
                    "WITH l AS MATERIALIZED ("
                } else {
                    ""
                });
                q.push(
                    "SELECT storage_unit_id, lot_id, vials, quarantined_vials FROM stock_balances \
                     WHERE (storage_unit_id, lot_id) IN (",
                );
                q.push_values(chunk, |mut b, (unit, lot)| {
                    b.push_bind(unit.clone()).push_bind(lot.clone());
                });
                q.push(format!(
                    ") ORDER BY storage_unit_id{c}, lot_id{c}{lock}",
                    c = <$Store>::BYTE_ORDER,
                    lock = <$Store>::LOCK
                ));
                if reserving {
                    // The sequences are drawn once every lock is held (the count over `l` is a
                    // one-time filter evaluated before the first nextval), so along each balance
                    // they follow the order its writers held it in; the left join answers one
                    // row even when no balance exists yet.
                    q.push("), s AS MATERIALIZED (").push(DRAW_SEQUENCES).push(reserve.to_string());
                    q.push(
                        ") WHERE (SELECT count(*) FROM l) >= 0) \
                         SELECT s.seqs, l.storage_unit_id, l.lot_id, l.vials, l.quarantined_vials FROM s LEFT JOIN l ON TRUE",
                    );
                }
                for r in q.build().fetch_all(&mut **tx).await? {
                    if reserving && sequences.is_empty() {
                        sequences = parse_sequences(&r)?;
                    }
                    let Some(unit) = r.try_get::<Option<String>, _>("storage_unit_id")? else { continue };
                    let state = BalanceState { vials: r.try_get("vials")?, quarantined: r.try_get("quarantined_vials")? };
                    balances.insert((unit, r.try_get("lot_id")?), state);
                    found += 1;
                }
            }
            if found < keys.len() {
                // Drawn before these balances were created and locked: another writer creating
                // one of them may have drawn later and commit first.
                sequences.clear();
                // A balance that does not exist yet (stock arriving where that lot never was): the
                // no-op upsert creates the missing ones and locks the rest, again in key order. The
                // rows locked above come first whatever their place in that order; a writer that
                // could be waiting on one of them has not created anything yet (it locks what
                // exists before it creates), so the two cannot wait on each other.
                for chunk in keys.chunks(LOCK_CHUNK) {
                    let mut q = sqlx::QueryBuilder::<$Db>::new(
                        "INSERT INTO stock_balances (storage_unit_id, lot_id, vials, quarantined_vials, vvm_stage, updated_at) ",
                    );
                    q.push_values(chunk, |mut b, (unit, lot)| {
                        b.push_bind(unit.clone()).push_bind(lot.clone()).push("0, 0, 0").push_bind(now);
                    });
                    q.push(
                        " ON CONFLICT (storage_unit_id, lot_id) DO UPDATE SET vials = stock_balances.vials \
                         RETURNING storage_unit_id, lot_id, vials, quarantined_vials",
                    );
                    for r in q.build().fetch_all(&mut **tx).await? {
                        let key: (String, String) = (r.try_get("storage_unit_id")?, r.try_get("lot_id")?);
                        let state = BalanceState { vials: r.try_get("vials")?, quarantined: r.try_get("quarantined_vials")? };
                        balances.insert(key, state);
                    }
                }
            }
            if reserve > 0 && sequences.is_empty() {
                let mut q = sqlx::QueryBuilder::<$Db>::new(DRAW_SEQUENCES);
                q.push(reserve.to_string()).push(")");
                sequences = parse_sequences(&q.build().fetch_one(&mut **tx).await?)?;
            }
            // nextval hands them out in call order; sorted, so they follow the drafts' order
            // whatever order string_agg saw them in.
            sequences.sort_unstable();
            Ok(sequences)
        }

        /// Applies the domain rule to each of `op`'s drafts in order against `balances` (updated
        /// as it goes): the entries to write, without their sequences.
        fn draft_entries(op: &Operation, balances: &mut Balances, now: chrono::DateTime<chrono::Utc>) -> Result<Vec<LedgerEntry>> {
            let mut out = Vec::with_capacity(op.drafts.len());
            for dr in &op.drafts {
                let mut dr = dr.clone();
                let after = match &dr.storage_unit_id {
                    Some(u) => {
                        let key = (u.clone(), dr.lot_id.clone());
                        let before = balances.get(&key).copied().unwrap_or_default();
                        if dr.resolve_count(before).is_none() {
                            continue;
                        }
                        let after = st::apply(before, &dr)?;
                        balances.insert(key, after);
                        after.vials
                    }
                    None => 0,
                };
                let doses = dr.quantity_vials * dr.doses_per_vial;
                out.push(LedgerEntry {
                    id: d::new_id(),
                    sequence: 0,
                    operation_id: op.id.clone(),
                    draft: EntryDraft { draws_available: false, count_to: None, quarantine_available: false, ..dr },
                    doses,
                    actor: op.actor.clone(),
                    time: now,
                    request_id: op.request_id.clone(),
                    balance_after_vials: after,
                    reversed_by: None,
                });
            }
            Ok(out)
        }

        /// The statement that writes postings whose sequences were reserved: the balances'
        /// update, the entries' insert and the request keys' insert as data-modifying CTEs (each
        /// runs whether or not it is read); one row comes back per key recorded.
        fn settled_write(
            balances: &Balances,
            entries: &[LedgerEntry],
            keys: &[(&d::Idempotency, String)],
            now: chrono::DateTime<chrono::Utc>,
        ) -> sqlx::QueryBuilder<$Db> {
            let rows: Vec<_> = balances.iter().collect();
            let mut q = sqlx::QueryBuilder::<$Db>::new("WITH b AS (");
            push_balance_update(&mut q, &rows, now);
            q.push(" RETURNING 1) ");
            if !entries.is_empty() {
                // (A count that found what was counted writes no entry.)
                q.push(", e AS (");
                push_entries_insert(&mut q, entries, true);
                q.push(" RETURNING 1) ");
            }
            push_keys_insert(&mut q, keys);
            q.push(" RETURNING 1");
            q
        }

        /// Whether `op` can be written in one statement with its request key: sequences reserved
        /// with the lock, then the balances' update, the entries' insert and the key's insert as
        /// data-modifying CTEs of one statement (a data-modifying CTE runs whether or not it is
        /// read). A round trip fewer than [`post_in`] then `idem_settle`.
        fn reserves_sequences(op: &Operation) -> bool {
            <$Store>::WRITABLE_CTE
                && op.vvm.is_empty()
                // The sequences ride on the lock of the first balance.
                && op.drafts.iter().any(|dr| dr.storage_unit_id.is_some())
                && (1..=ENTRY_CHUNK).contains(&op.drafts.len())
                && (1..=LOCK_CHUNK).contains(&op.drafts.len())
        }

        /// Writes an operation inside `tx`: locks every touched balance in key order (so two
        /// operations never deadlock), applies the domain rule to each entry in order, then
        /// writes the entries and the new balances. A fixed number of statements whatever the
        /// operation's size: round trips, not rows, dominate a small transaction's cost.
        async fn post_in(tx: &mut Tx<'_>, op: &Operation) -> Result<Vec<LedgerEntry>> {
            let now = d::now();
            let mut balances = touched(op);
            lock_balances(tx, &mut balances, now, 0).await?;
            let mut out = draft_entries(op, &mut balances, now)?;
            let rows: Vec<_> = balances.iter().collect();
            if <$Store>::WRITABLE_CTE && (1..=ENTRY_CHUNK).contains(&out.len()) && (1..=LOCK_CHUNK).contains(&rows.len()) {
                // One statement: the balances' update rides along with the entries' insert.
                let mut q = sqlx::QueryBuilder::<$Db>::new("WITH b AS (");
                push_balance_update(&mut q, &rows, now);
                q.push(" RETURNING 1) ");
                push_entries_insert(&mut q, &out, false);
                q.push(" RETURNING id, sequence");
                assign_sequences(&mut out, q.build().fetch_all(&mut **tx).await.map_err($crate::store::map_unique)?)?;
            } else {
                for chunk in out.chunks_mut(ENTRY_CHUNK) {
                    let mut q = sqlx::QueryBuilder::<$Db>::new("");
                    push_entries_insert(&mut q, chunk, false);
                    q.push(" RETURNING id, sequence");
                    assign_sequences(chunk, q.build().fetch_all(&mut **tx).await.map_err($crate::store::map_unique)?)?;
                }
                for chunk in rows.chunks(LOCK_CHUNK) {
                    let mut q = sqlx::QueryBuilder::<$Db>::new("");
                    push_balance_update(&mut q, chunk, now);
                    q.build().execute(&mut **tx).await?;
                }
            }
            for (unit, lot, stage) in &op.vvm {
                sqlx::query(
                    "UPDATE stock_balances SET vvm_stage = CASE WHEN vvm_stage < $1 THEN $1 ELSE vvm_stage END \
                     WHERE storage_unit_id = $2 AND lot_id = $3",
                )
                .bind(*stage)
                .bind(unit)
                .bind(lot)
                .execute(&mut **tx)
                .await?;
            }
            Ok(out)
        }

        impl $Store {
            /// Starts the tasks that write queued postings in groups ([`Postings`]), where the
            /// engine has a queue.
            pub(crate) fn start_posters(&self) {
                let Some(postings) = self.postings.clone() else { return };
                for _ in 0..POSTERS {
                    let (store, postings) = (self.clone(), postings.clone());
                    tokio::spawn(async move {
                        while let Some(group) = postings.next_group().await {
                            // A panic must not stop the poster: the queue behind it would never be
                            // answered. The group's callers see their reply dropped and post alone.
                            let written =
                                futures::FutureExt::catch_unwind(std::panic::AssertUnwindSafe(store.post_group(group)));
                            if written.await.is_err() {
                                tracing::error!("a group of ledger postings panicked; its requests post alone");
                            }
                        }
                    });
                }
            }

            /// Writes a group of postings ([`Postings`]) and answers each. What may wait on the
            /// database for long (a refusal to record, a failed group's postings written one by
            /// one) runs in a task of its own, so the next group does not wait for it.
            async fn post_group(&self, group: Vec<Pending>) {
                // A group that does not finish in time (a database gone silent mid-statement) must
                // not hold up every posting behind it; written one by one, its postings are
                // answered from their keys if it did commit.
                let written = tokio::time::timeout(GROUP_TIMEOUT, self.write_group(&group))
                    .await
                    .unwrap_or_else(|_| Err(Error::Internal("a group of postings timed out".into())));
                match written {
                    Ok(results) => {
                        let mut refusals = Vec::new();
                        for (p, r) in group.into_iter().zip(results) {
                            match r {
                                Ok(entries) => {
                                    let _ = p.reply.send(Ok(entries));
                                }
                                Err(e) => refusals.push((p, e)),
                            }
                        }
                        if !refusals.is_empty() {
                            let store = self.clone();
                            tokio::spawn(async move {
                                for (p, e) in refusals {
                                    let r = store.refused(&p.idem, e).await;
                                    let _ = p.reply.send(r);
                                }
                            });
                        }
                    }
                    Err(e) => {
                        tracing::debug!(error = %e, postings = group.len(), "group not written; posting one by one");
                        let store = self.clone();
                        tokio::spawn(futures::future::join_all(group.into_iter().map(move |p| {
                            let store = store.clone();
                            async move {
                                let r = store.post_settled(Some(&p.idem), &p.op, |e| Ok(e.to_vec())).await;
                                let _ = p.reply.send(r);
                            }
                        })));
                    }
                }
            }

            /// One transaction for a group, as [`Self::post_settled`] writes one posting: BEGIN, every
            /// balance locked with the group's sequences drawn, each posting checked in queue
            /// order against the balances the ones before it left, one statement writing the
            /// balances, every entry and every request key, COMMIT. Answers each posting's entries
            /// or its refusal; an error means nothing was written.
            async fn write_group(&self, group: &[Pending]) -> Result<Vec<Result<Vec<LedgerEntry>>>> {
                let now = d::now();
                let mut tx = self.begin_group_write().await?;
                let mut balances = Balances::new();
                for p in group {
                    balances.extend(touched(&p.op));
                }
                let reserve = group.iter().map(|p| p.op.drafts.len()).sum();
                let mut sequences = lock_balances(&mut tx, &mut balances, now, reserve).await?.into_iter();
                let mut results = Vec::with_capacity(group.len());
                let (mut written, mut keys) = (Vec::new(), Vec::new());
                // The balances the written postings change; a refused one's stay as they were.
                let mut changed = Balances::new();
                let mut refused_on = Vec::new();
                for p in group {
                    let mut after = balances.clone();
                    match draft_entries(&p.op, &mut after, now) {
                        Ok(mut out) => {
                            for e in &mut out {
                                e.sequence = sequences
                                    .next()
                                    .ok_or_else(|| Error::Internal("fewer ledger sequences reserved than entries".into()))?;
                            }
                            balances = after;
                            for key in touched(&p.op).into_keys() {
                                let state = balances.get(&key).copied().unwrap_or_default();
                                changed.insert(key, state);
                            }
                            keys.push((&p.idem, serde_json::to_string(&out)?));
                            written.extend(out.iter().cloned());
                            results.push(Ok(out));
                        }
                        Err(e) => {
                            refused_on.extend(touched(&p.op).into_keys());
                            results.push(Err(e));
                        }
                    }
                }
                if keys.is_empty() {
                    tx.rollback().await?;
                    return Ok(results);
                }
                // A balance the lock step may have just created for a refused posting alone
                // (empty, and no written posting touches it) would outlive the refusal if the
                // group committed: written alone, that posting leaves nothing behind.
                if refused_on.iter().any(|k| !changed.contains_key(k) && balances.get(k).is_none_or(|b| *b == BalanceState::default())) {
                    tx.rollback().await?;
                    return Err(Error::Internal("a refused posting of the group met an empty balance".into()));
                }
                let mut q = settled_write(&changed, &written, &keys, now);
                let recorded = q.build().fetch_all(&mut *tx).await.map_err($crate::store::map_unique)?.len();
                if recorded < keys.len() {
                    // A key already holds an answer: that posting must not be written.
                    tx.rollback().await?;
                    return Err(Error::Internal("a request key of the group is taken".into()));
                }
                tx.commit().await?;
                Ok(results)
            }

            /// Posts `op` and answers with `answer` of its entries, recorded under `idem`: what
            /// [`post_in`] then `idem_settle` do, in four round trips where the engine allows (see
            /// [`reserves_sequences`]): BEGIN, lock (with the sequences), one statement writing the
            /// balances, the entries and the key, COMMIT.
            async fn post_settled<T: serde::Serialize + serde::de::DeserializeOwned>(
                &self,
                idem: Option<&d::Idempotency>,
                op: &Operation,
                answer: impl FnOnce(&[LedgerEntry]) -> Result<T>,
            ) -> Result<T> {
                let mut tx = self.begin_write().await?;
                let Some(k) = idem.filter(|_| reserves_sequences(op)) else {
                    let r = post_in(&mut tx, op).await.and_then(|entries| answer(&entries));
                    return self.idem_settle(tx, idem, r).await;
                };
                let now = d::now();
                let r = async {
                    let mut balances = touched(op);
                    let sequences = lock_balances(&mut tx, &mut balances, now, op.drafts.len()).await?;
                    let mut out = draft_entries(op, &mut balances, now)?;
                    if sequences.len() < out.len() {
                        return Err(Error::Internal(format!("{} ledger sequences reserved for {} entries", sequences.len(), out.len())));
                    }
                    for (e, s) in out.iter_mut().zip(sequences) {
                        e.sequence = s;
                    }
                    let v = answer(&out)?;
                    let mut q = settled_write(&balances, &out, &[(k, serde_json::to_string(&v)?)], now);
                    let inserted = q.build().fetch_optional(&mut *tx).await.map_err($crate::store::map_unique)?.is_some();
                    Ok((v, inserted))
                }
                .await;
                match r {
                    Ok((v, true)) => {
                        tx.commit().await?;
                        Ok(v)
                    }
                    Ok((_, false)) => {
                        tx.rollback().await?;
                        self.held_answer(k).await
                    }
                    Err(e) => self.idem_settle(tx, idem, Err(e)).await,
                }
            }
        }

        fn exposure_row(r: &$Row) -> Result<st::Exposure> {
            let details: String = r.try_get("details")?;
            let assessment: Option<String> = r.try_get("assessment")?;
            Ok(st::Exposure {
                id: r.try_get("id")?,
                alert_id: r.try_get("alert_id")?,
                storage_unit_id: r.try_get("storage_unit_id")?,
                facility_id: r.try_get("facility_id")?,
                lot_id: r.try_get("lot_id")?,
                product_id: r.try_get("product_id")?,
                start: r.try_get("start_time")?,
                end: r.try_get("end_time")?,
                quarantined_vials: r.try_get("quarantined_vials")?,
                state: decode_enum(r.try_get("state")?, "exposure state", st::ExposureState::from_i32)?,
                details: serde_json::from_str(&details)?,
                assessment: assessment.map(|a| serde_json::from_str(&a)).transpose()?,
            })
        }

        const EXPOSURE_COLS: &str = "x.id, x.alert_id, x.storage_unit_id, x.facility_id, x.lot_id, x.product_id, \
             x.start_time, x.end_time, x.quarantined_vials, x.state, x.details, x.assessment";

        async fn write_shipment(tx: &mut Tx<'_>, s: &st::Shipment, insert: bool) -> Result<()> {
            let sql = if insert {
                "INSERT INTO shipments (from_facility_id, to_facility_id, state, lines, reference, comment, expected_arrival, \
                 created_at, dispatched_at, received_at, cancelled_at, created_by, dispatched_by, received_by, cancelled_by, \
                 cancel_comment, id) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17)"
            } else {
                "UPDATE shipments SET from_facility_id = $1, to_facility_id = $2, state = $3, lines = $4, reference = $5, \
                 comment = $6, expected_arrival = $7, created_at = $8, dispatched_at = $9, received_at = $10, \
                 cancelled_at = $11, created_by = $12, dispatched_by = $13, received_by = $14, cancelled_by = $15, \
                 cancel_comment = $16 WHERE id = $17"
            };
            sqlx::query(sql)
                .bind(&s.from_facility_id)
                .bind(&s.to_facility_id)
                .bind(s.state.as_i32())
                .bind(serde_json::to_string(&s.lines)?)
                .bind(&s.reference)
                .bind(&s.comment)
                .bind(s.expected_arrival)
                .bind(s.created_at)
                .bind(s.dispatched_at)
                .bind(s.received_at)
                .bind(s.cancelled_at)
                .bind(&s.created_by)
                .bind(&s.dispatched_by)
                .bind(&s.received_by)
                .bind(&s.cancelled_by)
                .bind(&s.cancel_comment)
                .bind(&s.id)
                .execute(&mut **tx)
                .await?;
            Ok(())
        }

        #[async_trait::async_trait]
        impl $crate::store::StockStore for $Store {
            async fn find_lot(&self, product_id: &str, lot_number: &str) -> Result<Option<Lot>> {
                let sql = format!("SELECT {LOT_COLS} FROM lots WHERE product_id = $1 AND lot_number = $2");
                let row =
                    sqlx::query(sqlx::AssertSqlSafe(sql)).bind(product_id).bind(lot_number).fetch_optional(&self.pool).await?;
                row.as_ref().map(lot_row).transpose()
            }

            async fn lot_info(&self, lot_id: &str) -> Result<Option<st::LotInfo>> {
                let row = sqlx::query(
                    "SELECT l.id, l.product_id, l.expiry, p.doses_per_vial FROM lots l JOIN products p ON p.id = l.product_id \
                     WHERE l.id = $1",
                )
                .bind(lot_id)
                .fetch_optional(&self.pool)
                .await?;
                match row {
                    Some(r) => Ok(Some(st::LotInfo {
                        lot_id: r.try_get("id")?,
                        product_id: r.try_get("product_id")?,
                        doses_per_vial: i64::from(r.try_get::<i32, _>("doses_per_vial")?),
                        expiry: r.try_get("expiry")?,
                    })),
                    None => Ok(None),
                }
            }

            async fn post(&self, idem: Option<&d::Idempotency>, op: &Operation) -> Result<Vec<LedgerEntry>> {
                if let (Some(postings), Some(k)) = (&self.postings, idem)
                    && reserves_sequences(op)
                    && let Some(r) = postings.post(k, op).await
                {
                    return r;
                }
                self.post_settled(idem, op, |entries| Ok(entries.to_vec())).await
            }

            async fn post_answering(
                &self,
                idem: Option<&d::Idempotency>,
                op: &Operation,
                answer: &(dyn for<'e> Fn(&'e [LedgerEntry]) -> Result<serde_json::Value> + Send + Sync),
            ) -> Result<serde_json::Value> {
                self.post_settled(idem, op, answer).await
            }

            async fn get_entry(&self, id: &str) -> Result<Option<(LedgerEntry, String)>> {
                let sql = format!(
                    "SELECT {ENTRY_COLS}, f.path FROM {ENTRY_FROM} JOIN facilities f ON f.id = e.facility_id WHERE e.id = $1"
                );
                match sqlx::query(sqlx::AssertSqlSafe(sql)).bind(id).fetch_optional(&self.pool).await? {
                    Some(r) => Ok(Some((entry_row(&r)?, r.try_get("path")?))),
                    None => Ok(None),
                }
            }

            async fn operation_entries(&self, operation_id: &str) -> Result<Vec<LedgerEntry>> {
                let sql = format!("SELECT {ENTRY_COLS} FROM {ENTRY_FROM} WHERE e.operation_id = $1 ORDER BY e.sequence");
                let rows = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(operation_id).fetch_all(&self.pool).await?;
                rows.iter().map(entry_row).collect()
            }

            async fn list_stock(&self, scope_path: &str, f: &st::StockFilter, page: &PageRequest) -> Result<Page<StockItem>> {
                let (after_unit, after_lot) = match page.after.as_deref().and_then(|a| a.split_once('|')) {
                    Some((u, l)) => (Some(u.to_owned()), Some(l.to_owned())),
                    None => (None, None),
                };
                let sql = format!(
                    "SELECT {STOCK_COLS} FROM {STOCK_FROM} WHERE f.path >= $1 AND f.path < $2 \
                     AND ($3 IS NULL OR b.storage_unit_id = $3) AND ($4 IS NULL OR u.facility_id = $4) \
                     AND ($5 IS NULL OR (f.path >= $5 AND f.path < $6)) AND ($7 IS NULL OR l.product_id = $7) \
                     AND ($8 IS NULL OR b.lot_id = $8) AND ($9 OR b.vials > 0) AND (NOT $10 OR b.quarantined_vials > 0) \
                     AND ($11 IS NULL OR b.storage_unit_id > $11 OR (b.storage_unit_id = $11 AND b.lot_id > $12)) \
                     ORDER BY b.storage_unit_id, b.lot_id LIMIT $13"
                );
                let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
                    .bind(scope_path)
                    .bind($crate::store::path_upper(scope_path))
                    .bind(&f.storage_unit_id)
                    .bind(&f.facility_id)
                    .bind(&f.ancestor_path)
                    .bind(f.ancestor_path.as_deref().map($crate::store::path_upper))
                    .bind(&f.product_id)
                    .bind(&f.lot_id)
                    .bind(f.include_zero)
                    .bind(f.quarantined_only)
                    .bind(&after_unit)
                    .bind(&after_lot)
                    .bind(page.fetch_limit())
                    .fetch_all(&self.pool)
                    .await?;
                let items = rows.iter().map(stock_row).collect::<Result<Vec<_>>>()?;
                let keyed: Vec<(String, StockItem)> =
                    items.into_iter().map(|i| (format!("{}|{}", i.storage_unit_id, i.lot_id), i)).collect();
                let p = page.finish(keyed, |(k, _)| k);
                Ok(Page { items: p.items.into_iter().map(|(_, i)| i).collect(), next_page_token: p.next_page_token })
            }

            async fn facility_stock(&self, facility_id: &str, product_id: Option<&str>) -> Result<Vec<StockItem>> {
                let sql = format!(
                    "SELECT {STOCK_COLS} FROM {STOCK_FROM} WHERE u.facility_id = $1 AND ($2 IS NULL OR l.product_id = $2) \
                     AND b.vials > 0 ORDER BY b.storage_unit_id, b.lot_id"
                );
                let rows =
                    sqlx::query(sqlx::AssertSqlSafe(sql)).bind(facility_id).bind(product_id).fetch_all(&self.pool).await?;
                rows.iter().map(stock_row).collect()
            }

            async fn list_entries(&self, scope_path: &str, f: &st::EntryFilter, page: &PageRequest) -> Result<Page<LedgerEntry>> {
                let after: Option<i64> = match &page.after {
                    Some(a) => Some(a.parse().map_err(|_| Error::InvalidPageToken)?),
                    None => None,
                };
                let kinds = f.kinds.iter().map(i32::to_string).collect::<Vec<_>>().join(",");
                let (cmp, order) = if f.newest_first { ("<", "DESC") } else { (">", "ASC") };
                let sql = format!(
                    "SELECT {ENTRY_COLS} FROM {ENTRY_FROM} JOIN facilities f ON f.id = e.facility_id \
                     WHERE f.path >= $1 AND f.path < $2 AND ($3 IS NULL OR e.storage_unit_id = $3) \
                     AND ($4 IS NULL OR e.facility_id = $4) AND ($5 IS NULL OR (f.path >= $5 AND f.path < $6)) \
                     AND ($7 IS NULL OR e.product_id = $7) AND ($8 IS NULL OR e.lot_id = $8) \
                     AND ($9 = '' OR (',' || $9 || ',') LIKE ('%,' || CAST(e.kind AS TEXT) || ',%')) \
                     AND ($10 IS NULL OR e.time >= $10) AND ($11 IS NULL OR e.time < $11) \
                     AND ($12 IS NULL OR e.shipment_id = $12) AND ($13 IS NULL OR e.session_report_id = $13) \
                     AND ($14 IS NULL OR e.sequence {cmp} $14) ORDER BY e.sequence {order} LIMIT $15"
                );
                let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
                    .bind(scope_path)
                    .bind($crate::store::path_upper(scope_path))
                    .bind(&f.storage_unit_id)
                    .bind(&f.facility_id)
                    .bind(&f.ancestor_path)
                    .bind(f.ancestor_path.as_deref().map($crate::store::path_upper))
                    .bind(&f.product_id)
                    .bind(&f.lot_id)
                    .bind(&kinds)
                    .bind(f.start)
                    .bind(f.end)
                    .bind(&f.shipment_id)
                    .bind(&f.session_report_id)
                    .bind(after)
                    .bind(page.fetch_limit())
                    .fetch_all(&self.pool)
                    .await?;
                let items = rows.iter().map(entry_row).collect::<Result<Vec<_>>>()?;
                let keyed: Vec<(String, LedgerEntry)> = items.into_iter().map(|e| (e.sequence.to_string(), e)).collect();
                let p = page.finish(keyed, |(k, _)| k);
                Ok(Page { items: p.items.into_iter().map(|(_, e)| e).collect(), next_page_token: p.next_page_token })
            }

            async fn insert_shipment(&self, idem: Option<&d::Idempotency>, s: &st::Shipment) -> Result<st::Shipment> {
                let mut tx = self.begin_write().await?;
                let r = write_shipment(&mut tx, s, true).await.map(|()| s.clone());
                self.idem_settle(tx, idem, r).await
            }

            async fn get_shipment(&self, id: &str) -> Result<Option<st::Shipment>> {
                let sql = format!("SELECT {SHIPMENT_COLS} FROM shipments s WHERE s.id = $1");
                let row = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(id).fetch_optional(&self.pool).await?;
                row.as_ref().map(shipment_row).transpose()
            }

            async fn advance_shipment(
                &self,
                idem: Option<&d::Idempotency>,
                from: st::ShipmentState,
                s: &st::Shipment,
                op: &Operation,
            ) -> Result<st::Shipment> {
                let mut tx = self.begin_write().await?;
                // The state is re-read under the lock: of two concurrent dispatches only one moves stock.
                let r: Result<st::Shipment> = async {
                    let sql = format!("SELECT state FROM shipments WHERE id = $1{}", <$Store>::LOCK);
                    let state: Option<i32> =
                        sqlx::query_scalar(sqlx::AssertSqlSafe(sql)).bind(&s.id).fetch_optional(&mut *tx).await?;
                    match state {
                        None => return Err(Error::not_found("SHIPMENT_NOT_FOUND", "shipment not found")),
                        Some(v) if v != from.as_i32() => {
                            return Err(Error::precondition(
                                st::INVALID_STATE,
                                format!("the shipment is {:?}, not {from:?}", st::ShipmentState::from_i32(v)),
                            ));
                        }
                        Some(_) => {}
                    }
                    post_in(&mut tx, op).await?;
                    write_shipment(&mut tx, s, false).await?;
                    Ok(s.clone())
                }
                .await;
                self.idem_settle(tx, idem, r).await
            }

            async fn list_shipments(
                &self,
                scope_path: &str,
                facility_id: Option<&str>,
                direction: i32,
                states: &[i32],
                page: &PageRequest,
            ) -> Result<Page<st::Shipment>> {
                let states = states.iter().map(i32::to_string).collect::<Vec<_>>().join(",");
                let sql = format!(
                    "SELECT {SHIPMENT_COLS} FROM shipments s JOIN facilities ff ON ff.id = s.from_facility_id \
                     JOIN facilities ft ON ft.id = s.to_facility_id \
                     WHERE ((ff.path >= $1 AND ff.path < $2) OR (ft.path >= $1 AND ft.path < $2)) \
                     AND ($3 IS NULL OR ($4 <> 1 AND s.from_facility_id = $3) OR ($4 <> 2 AND s.to_facility_id = $3)) \
                     AND ($5 = '' OR (',' || $5 || ',') LIKE ('%,' || CAST(s.state AS TEXT) || ',%')) \
                     AND ($6 IS NULL OR s.id < $6) ORDER BY s.id DESC LIMIT $7"
                );
                let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
                    .bind(scope_path)
                    .bind($crate::store::path_upper(scope_path))
                    .bind(facility_id)
                    .bind(direction)
                    .bind(&states)
                    .bind(&page.after)
                    .bind(page.fetch_limit())
                    .fetch_all(&self.pool)
                    .await?;
                let items = rows.iter().map(shipment_row).collect::<Result<Vec<_>>>()?;
                Ok(page.finish(items, |s| &s.id))
            }

            async fn insert_session_report(
                &self,
                idem: Option<&d::Idempotency>,
                r: &st::SessionReport,
                op: &Operation,
                reuse_from: chrono::NaiveDate,
            ) -> Result<st::SessionReport> {
                let mut tx = self.begin_write().await?;
                let res: Result<st::SessionReport> = async {
                    let mut report = r.clone();
                    sqlx::query(
                        "INSERT INTO session_reports (id, facility_id, storage_unit_id, session_date, comment, submitted_at, \
                         submitted_by, ledger_entry_ids) VALUES ($1, $2, $3, $4, $5, $6, $7, '')",
                    )
                    .bind(&r.id)
                    .bind(&r.facility_id)
                    .bind(&r.storage_unit_id)
                    .bind(r.session_date)
                    .bind(&r.comment)
                    .bind(r.submitted_at)
                    .bind(&r.submitted_by)
                    .execute(&mut *tx)
                    .await?;
                    let entries = post_in(&mut tx, op).await?;
                    report.ledger_entry_ids = entries.iter().map(|e| e.id.clone()).collect();
                    sqlx::query("UPDATE session_reports SET ledger_entry_ids = $1 WHERE id = $2")
                        .bind(report.ledger_entry_ids.join(","))
                        .bind(&r.id)
                        .execute(&mut *tx)
                        .await?;
                    let kept_sql = format!(
                        "SELECT opened_on, vials FROM kept_vials WHERE storage_unit_id = $1 AND lot_id = $2 AND opened_on >= $3 \
                         AND opened_on <= $4 AND vials > 0 ORDER BY opened_on{}",
                        <$Store>::LOCK
                    );
                    for (i, (line, product_id, dpv)) in r.lines.iter().enumerate() {
                        let mut need = line.opened_vials_reused;
                        if need > 0 {
                            let rows = sqlx::query(sqlx::AssertSqlSafe(kept_sql.clone()))
                                .bind(&line.storage_unit_id)
                                .bind(&line.lot_id)
                                .bind(reuse_from)
                                .bind(r.session_date)
                                .fetch_all(&mut *tx)
                                .await?;
                            for row in rows {
                                let opened_on: chrono::NaiveDate = row.try_get("opened_on")?;
                                let vials: i64 = row.try_get("vials")?;
                                let take = vials.min(need);
                                sqlx::query(
                                    "UPDATE kept_vials SET vials = vials - $1 WHERE storage_unit_id = $2 AND lot_id = $3 AND opened_on = $4",
                                )
                                .bind(take)
                                .bind(&line.storage_unit_id)
                                .bind(&line.lot_id)
                                .bind(opened_on)
                                .execute(&mut *tx)
                                .await?;
                                need -= take;
                                if need == 0 {
                                    break;
                                }
                            }
                            if need > 0 {
                                return Err(Error::precondition(
                                    "NO_KEPT_VIALS",
                                    format!(
                                        "line {i}: {need} more opened vials reused than are kept (opened within {} days)",
                                        st::MDVP_DAYS
                                    ),
                                ));
                            }
                        }
                        if line.opened_vials_kept > 0 {
                            sqlx::query(
                                "INSERT INTO kept_vials (storage_unit_id, lot_id, opened_on, vials) VALUES ($1, $2, $3, $4) \
                                 ON CONFLICT (storage_unit_id, lot_id, opened_on) DO UPDATE SET vials = kept_vials.vials + $4",
                            )
                            .bind(&line.storage_unit_id)
                            .bind(&line.lot_id)
                            .bind(r.session_date)
                            .bind(line.opened_vials_kept)
                            .execute(&mut *tx)
                            .await?;
                        }
                        sqlx::query(
                            "INSERT INTO session_report_lines (session_report_id, line_no, facility_id, storage_unit_id, lot_id, \
                             product_id, session_date, vials_issued, vials_opened, opened_vials_reused, doses_administered, \
                             unopened_vials_returned, unopened_vials_discarded, discard_reason, opened_vials_kept, \
                             opened_vials_discarded, doses_issued, doses_per_vial) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, \
                             $10, $11, $12, $13, $14, $15, $16, $17, $18)",
                        )
                        .bind(&r.id)
                        .bind(i32::try_from(i).unwrap_or(i32::MAX))
                        .bind(&r.facility_id)
                        .bind(&line.storage_unit_id)
                        .bind(&line.lot_id)
                        .bind(product_id)
                        .bind(r.session_date)
                        .bind(line.vials_issued)
                        .bind(line.vials_opened)
                        .bind(line.opened_vials_reused)
                        .bind(line.doses_administered)
                        .bind(line.unopened_vials_returned)
                        .bind(line.unopened_vials_discarded)
                        .bind(line.discard_reason)
                        .bind(line.opened_vials_kept)
                        .bind(line.opened_vials_discarded())
                        .bind(line.doses_issued(*dpv))
                        .bind(*dpv)
                        .execute(&mut *tx)
                        .await?;
                    }
                    Ok(report)
                }
                .await;
                self.idem_settle(tx, idem, res).await
            }

            async fn open_exposures(&self, exposures: &[st::Exposure], drafts: &[EntryDraft], actor: &str) -> Result<usize> {
                let mut tx = self.begin_write().await?;
                let mut fresh = Vec::new();
                for (x, d) in exposures.iter().zip(drafts) {
                    let inserted = sqlx::query(
                        "INSERT INTO exposures (id, alert_id, storage_unit_id, facility_id, lot_id, product_id, start_time, \
                         end_time, quarantined_vials, state, details, assessment, created_at) \
                         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 0, $9, $10, NULL, $11) ON CONFLICT DO NOTHING",
                    )
                    .bind(&x.id)
                    .bind(&x.alert_id)
                    .bind(&x.storage_unit_id)
                    .bind(&x.facility_id)
                    .bind(&x.lot_id)
                    .bind(&x.product_id)
                    .bind(x.start)
                    .bind(x.end)
                    .bind(x.state.as_i32())
                    .bind(serde_json::to_string(&x.details)?)
                    .bind(d::now())
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
                    if inserted == 1 {
                        fresh.push(d.clone());
                        continue;
                    }
                    // The lot already has an exposure for this alarm: vials that arrived in the
                    // unit since are quarantined under it too, while it awaits assessment.
                    let pending: Option<String> = sqlx::query_scalar(
                        "SELECT id FROM exposures WHERE alert_id = $1 AND lot_id = $2 AND storage_unit_id = $3 AND state = $4",
                    )
                    .bind(&x.alert_id)
                    .bind(&x.lot_id)
                    .bind(&x.storage_unit_id)
                    .bind(st::ExposureState::Pending.as_i32())
                    .fetch_optional(&mut *tx)
                    .await?;
                    if let Some(id) = pending {
                        fresh.push(EntryDraft { exposure_id: Some(id), ..d.clone() });
                    }
                }
                let op = Operation { id: d::new_id(), actor: actor.to_owned(), request_id: String::new(), drafts: fresh, vvm: Vec::new() };
                let entries = post_in(&mut tx, &op).await?;
                for e in &entries {
                    sqlx::query("UPDATE exposures SET quarantined_vials = quarantined_vials + $1 WHERE id = $2")
                        .bind(e.draft.quarantined_change)
                        .bind(&e.draft.exposure_id)
                        .execute(&mut *tx)
                        .await?;
                }
                tx.commit().await?;
                Ok(entries.len())
            }

            async fn close_exposures(&self, alert_id: &str, end: chrono::DateTime<chrono::Utc>, details: &$crate::domain::alert::Details) -> Result<()> {
                sqlx::query("UPDATE exposures SET end_time = $1, details = $2 WHERE alert_id = $3 AND end_time IS NULL")
                    .bind(end)
                    .bind(serde_json::to_string(details)?)
                    .bind(alert_id)
                    .execute(&self.pool)
                    .await?;
                Ok(())
            }

            async fn get_exposure(&self, id: &str) -> Result<Option<(st::Exposure, String)>> {
                let sql = format!("SELECT {EXPOSURE_COLS}, f.path FROM exposures x JOIN facilities f ON f.id = x.facility_id WHERE x.id = $1");
                match sqlx::query(sqlx::AssertSqlSafe(sql)).bind(id).fetch_optional(&self.pool).await? {
                    Some(r) => Ok(Some((exposure_row(&r)?, r.try_get("path")?))),
                    None => Ok(None),
                }
            }

            async fn list_exposures(&self, scope_path: &str, x: &st::ExposureFilter, page: &PageRequest) -> Result<Page<st::Exposure>> {
                let states = x.states.iter().map(i32::to_string).collect::<Vec<_>>().join(",");
                let sql = format!(
                    "SELECT {EXPOSURE_COLS} FROM exposures x JOIN facilities f ON f.id = x.facility_id \
                     WHERE f.path >= $1 AND f.path < $2 AND ($3 IS NULL OR x.facility_id = $3) \
                     AND ($4 = '' OR (',' || $4 || ',') LIKE ('%,' || CAST(x.state AS TEXT) || ',%')) \
                     AND ($5 IS NULL OR x.id < $5) AND ($7 IS NULL OR (f.path >= $7 AND f.path < $8)) \
                     AND ($9 IS NULL OR x.storage_unit_id = $9) AND ($10 IS NULL OR x.lot_id = $10) \
                     AND ($11 IS NULL OR x.alert_id = $11) AND ($12 IS NULL OR x.start_time >= $12) \
                     AND ($13 IS NULL OR x.start_time < $13) ORDER BY x.id DESC LIMIT $6"
                );
                let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
                    .bind(scope_path)
                    .bind($crate::store::path_upper(scope_path))
                    .bind(&x.facility_id)
                    .bind(states)
                    .bind(&page.after)
                    .bind(page.fetch_limit())
                    .bind(&x.ancestor_path)
                    .bind(x.ancestor_path.as_deref().map($crate::store::path_upper))
                    .bind(&x.storage_unit_id)
                    .bind(&x.lot_id)
                    .bind(&x.alert_id)
                    .bind(x.start)
                    .bind(x.end)
                    .fetch_all(&self.pool)
                    .await?;
                let items = rows.iter().map(exposure_row).collect::<Result<Vec<_>>>()?;
                Ok(page.finish(items, |x| &x.id))
            }

            async fn assess_exposure(&self, idem: Option<&d::Idempotency>, x: &st::Exposure, op: &Operation) -> Result<st::Exposure> {
                let mut tx = self.begin_write().await?;
                let r: Result<st::Exposure> = async {
                    let sql = format!("SELECT state FROM exposures WHERE id = $1{}", <$Store>::LOCK);
                    let state: Option<i32> = sqlx::query_scalar(sqlx::AssertSqlSafe(sql)).bind(&x.id).fetch_optional(&mut *tx).await?;
                    match state {
                        None => return Err(Error::not_found("EXPOSURE_NOT_FOUND", "exposure not found")),
                        Some(s) if s != st::ExposureState::Pending.as_i32() => {
                            return Err(Error::precondition("ALREADY_ASSESSED", "the exposure has already been assessed"));
                        }
                        Some(_) => {}
                    }
                    post_in(&mut tx, op).await?;
                    sqlx::query("UPDATE exposures SET state = $1, assessment = $2 WHERE id = $3")
                        .bind(x.state.as_i32())
                        .bind(x.assessment.as_ref().map(serde_json::to_string).transpose()?)
                        .bind(&x.id)
                        .execute(&mut *tx)
                        .await?;
                    Ok(x.clone())
                }
                .await;
                self.idem_settle(tx, idem, r).await
            }

            async fn subtree_facilities(&self, path: &str) -> Result<Vec<Facility>> {
                let sql = format!("SELECT {FACILITY_COLS} FROM facilities WHERE path >= $1 AND path < $2 ORDER BY path");
                let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
                    .bind(path)
                    .bind($crate::store::path_upper(path))
                    .fetch_all(&self.pool)
                    .await?;
                rows.iter().map(facility_row).collect()
            }

            async fn subtree_stock(
                &self,
                path: &str,
                product_id: Option<&str>,
                as_of: Option<chrono::DateTime<chrono::Utc>>,
            ) -> Result<Vec<(StockItem, String)>> {
                let sql = match as_of {
                    None => format!(
                        "SELECT {STOCK_COLS}, f.path FROM {STOCK_FROM} WHERE f.path >= $1 AND f.path < $2 \
                         AND ($3 IS NULL OR l.product_id = $3) AND b.vials > 0 AND $4 IS NULL"
                    ),
                    Some(_) => "SELECT e.storage_unit_id, u.facility_id, e.lot_id, l.lot_number, l.product_id, \
                         CAST(p.doses_per_vial AS BIGINT) AS doses_per_vial, l.expiry, \
                         CAST(SUM(e.quantity_vials) AS BIGINT) AS vials, \
                         CAST(SUM(e.quarantined_change) AS BIGINT) AS quarantined_vials, \
                         CAST(COALESCE(MAX(b.vvm_stage), 0) AS INTEGER) AS vvm_stage, MAX(e.time) AS updated_at, f.path \
                         FROM ledger_entries e JOIN storage_units u ON u.id = e.storage_unit_id \
                         JOIN facilities f ON f.id = u.facility_id JOIN lots l ON l.id = e.lot_id \
                         JOIN products p ON p.id = l.product_id \
                         LEFT JOIN stock_balances b ON b.storage_unit_id = e.storage_unit_id AND b.lot_id = e.lot_id \
                         WHERE f.path >= $1 AND f.path < $2 AND ($3 IS NULL OR l.product_id = $3) AND e.time <= $4 \
                         GROUP BY e.storage_unit_id, u.facility_id, e.lot_id, l.lot_number, l.product_id, p.doses_per_vial, \
                         l.expiry, f.path HAVING SUM(e.quantity_vials) <> 0"
                        .to_owned(),
                };
                let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
                    .bind(path)
                    .bind($crate::store::path_upper(path))
                    .bind(product_id)
                    .bind(as_of)
                    .fetch_all(&self.pool)
                    .await?;
                rows.iter().map(|r| Ok((stock_row(r)?, r.try_get("path")?))).collect()
            }

            async fn in_transit(&self, path: &str) -> Result<Vec<(st::Shipment, String, String)>> {
                let sql = format!(
                    "SELECT {SHIPMENT_COLS}, ff.path AS from_path, ft.path AS to_path FROM shipments s \
                     JOIN facilities ff ON ff.id = s.from_facility_id JOIN facilities ft ON ft.id = s.to_facility_id \
                     WHERE s.state = 2 AND ((ff.path >= $1 AND ff.path < $2) OR (ft.path >= $1 AND ft.path < $2))"
                );
                let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
                    .bind(path)
                    .bind($crate::store::path_upper(path))
                    .fetch_all(&self.pool)
                    .await?;
                rows.iter().map(|r| Ok((shipment_row(r)?, r.try_get("from_path")?, r.try_get("to_path")?))).collect()
            }

            async fn session_usage(
                &self,
                path: &str,
                product_id: Option<&str>,
                start: chrono::NaiveDate,
                end: chrono::NaiveDate,
            ) -> Result<Vec<$crate::domain::report::UsageRow>> {
                let rows = sqlx::query(
                    "SELECT f.path, sl.product_id, CAST(COUNT(DISTINCT sl.session_report_id) AS BIGINT) AS sessions, \
                     CAST(SUM(sl.doses_issued) AS BIGINT) AS doses_issued, \
                     CAST(SUM(sl.doses_administered) AS BIGINT) AS doses_administered, \
                     CAST(SUM(sl.unopened_vials_discarded * sl.doses_per_vial) AS BIGINT) AS unopened \
                     FROM session_report_lines sl JOIN facilities f ON f.id = sl.facility_id \
                     WHERE f.path >= $1 AND f.path < $2 AND ($3 IS NULL OR sl.product_id = $3) \
                     AND sl.session_date >= $4 AND sl.session_date <= $5 \
                     AND NOT EXISTS (SELECT 1 FROM ledger_entries e JOIN ledger_entries r ON r.reverses_entry_id = e.id \
                                     WHERE e.session_report_id = sl.session_report_id) \
                     GROUP BY f.path, sl.product_id",
                )
                .bind(path)
                .bind($crate::store::path_upper(path))
                .bind(product_id)
                .bind(start)
                .bind(end)
                .fetch_all(&self.pool)
                .await?;
                rows.iter()
                    .map(|r| {
                        Ok($crate::domain::report::UsageRow {
                            facility_path: r.try_get("path")?,
                            product_id: r.try_get("product_id")?,
                            sessions: r.try_get("sessions")?,
                            doses_issued: r.try_get("doses_issued")?,
                            doses_administered: r.try_get("doses_administered")?,
                            unopened_discard_doses: r.try_get("unopened")?,
                        })
                    })
                    .collect()
            }

            async fn store_losses(
                &self,
                path: &str,
                product_id: Option<&str>,
                start: chrono::DateTime<chrono::Utc>,
                end: chrono::DateTime<chrono::Utc>,
            ) -> Result<Vec<(String, String, i64)>> {
                // Losses: discards and losses (adjustment reasons 1..10), transit losses, and the
                // reversals of either.
                let rows = sqlx::query(
                    "SELECT f.path, e.product_id, CAST(SUM(-e.doses) AS BIGINT) AS doses FROM ledger_entries e \
                     JOIN facilities f ON f.id = e.facility_id LEFT JOIN ledger_entries o ON o.id = e.reverses_entry_id \
                     WHERE f.path >= $1 AND f.path < $2 AND ($3 IS NULL OR e.product_id = $3) AND e.time >= $4 AND e.time < $5 \
                     AND ((e.kind = 8 AND e.adjustment_reason BETWEEN 1 AND 10) OR e.kind = 4 \
                          OR (e.kind = 15 AND ((o.kind = 8 AND o.adjustment_reason BETWEEN 1 AND 10) OR o.kind = 4))) \
                     GROUP BY f.path, e.product_id",
                )
                .bind(path)
                .bind($crate::store::path_upper(path))
                .bind(product_id)
                .bind(start)
                .bind(end)
                .fetch_all(&self.pool)
                .await?;
                rows.iter().map(|r| Ok((r.try_get("path")?, r.try_get("product_id")?, r.try_get("doses")?))).collect()
            }

            async fn outflow_since(&self, path: &str, since: chrono::DateTime<chrono::Utc>) -> Result<Vec<(String, String, i64)>> {
                let rows = sqlx::query(
                    "SELECT e.facility_id, e.product_id, CAST(SUM(-e.doses) AS BIGINT) AS doses FROM ledger_entries e \
                     JOIN facilities f ON f.id = e.facility_id WHERE f.path >= $1 AND f.path < $2 AND e.time >= $3 \
                     AND e.kind IN (2, 10, 11) GROUP BY e.facility_id, e.product_id",
                )
                .bind(path)
                .bind($crate::store::path_upper(path))
                .bind(since)
                .fetch_all(&self.pool)
                .await?;
                rows.iter().map(|r| Ok((r.try_get("facility_id")?, r.try_get("product_id")?, r.try_get("doses")?))).collect()
            }

            async fn set_policy(&self, idem: Option<&d::Idempotency>, p: &st::StockPolicy) -> Result<st::StockPolicy> {
                let mut tx = self.begin_write().await?;
                let r: Result<st::StockPolicy> = async {
                    if p.min_doses == 0 && p.max_doses == 0 {
                        sqlx::query("DELETE FROM stock_policies WHERE facility_id = $1 AND product_id = $2")
                            .bind(&p.facility_id)
                            .bind(&p.product_id)
                            .execute(&mut *tx)
                            .await?;
                    } else {
                        sqlx::query(
                            "INSERT INTO stock_policies (facility_id, product_id, min_doses, max_doses, updated_at, updated_by) \
                             VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (facility_id, product_id) DO UPDATE SET \
                             min_doses = $3, max_doses = $4, updated_at = $5, updated_by = $6",
                        )
                        .bind(&p.facility_id)
                        .bind(&p.product_id)
                        .bind(p.min_doses)
                        .bind(p.max_doses)
                        .bind(p.updated_at)
                        .bind(&p.updated_by)
                        .execute(&mut *tx)
                        .await?;
                    }
                    Ok(p.clone())
                }
                .await;
                self.idem_settle(tx, idem, r).await
            }

            async fn list_policies(
                &self,
                scope_path: &str,
                facility_id: Option<&str>,
                product_id: Option<&str>,
                page: &PageRequest,
            ) -> Result<Page<st::StockPolicy>> {
                let (af, ap) = match page.after.as_deref().and_then(|a| a.split_once('|')) {
                    Some((f, p)) => (Some(f.to_owned()), Some(p.to_owned())),
                    None => (None, None),
                };
                let rows = sqlx::query(
                    "SELECT s.facility_id, s.product_id, s.min_doses, s.max_doses, s.updated_at, s.updated_by \
                     FROM stock_policies s JOIN facilities f ON f.id = s.facility_id WHERE f.path >= $1 AND f.path < $2 \
                     AND ($3 IS NULL OR s.facility_id = $3) AND ($4 IS NULL OR s.product_id = $4) \
                     AND ($5 IS NULL OR s.facility_id > $5 OR (s.facility_id = $5 AND s.product_id > $6)) \
                     ORDER BY s.facility_id, s.product_id LIMIT $7",
                )
                .bind(scope_path)
                .bind($crate::store::path_upper(scope_path))
                .bind(facility_id)
                .bind(product_id)
                .bind(&af)
                .bind(&ap)
                .bind(page.fetch_limit())
                .fetch_all(&self.pool)
                .await?;
                let items = rows.iter().map(policy_row).collect::<Result<Vec<_>>>()?;
                let keyed: Vec<(String, st::StockPolicy)> =
                    items.into_iter().map(|p| (format!("{}|{}", p.facility_id, p.product_id), p)).collect();
                let pg = page.finish(keyed, |(k, _)| k);
                Ok(Page { items: pg.items.into_iter().map(|(_, p)| p).collect(), next_page_token: pg.next_page_token })
            }
        }
    };
}
