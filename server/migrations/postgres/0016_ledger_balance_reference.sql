-- A ledger entry on a storage unit now references its balance row, which the same transaction
-- has just locked FOR UPDATE, instead of the unit, lot, facility and product rows one by one.
-- Each of those checks took a KEY SHARE lock on a row that every stock write of a facility shares
-- (its units, its facility, the product), so concurrent writers turned them into multixacts and
-- WAL records: a third of a transfer's database time. The balance reference is the stronger rule
-- (an entry exists only with the balance it moves), its lock is already held, and the balance row
-- itself references the unit and the lot. Facility and product are copies of the unit's and the
-- lot's, written by the code that read them, as are the lot, facility and product of an entry
-- without a unit (a transit loss recorded at a shipment's receipt). SQLite keeps the per-column
-- references: its checks take no locks.
ALTER TABLE ledger_entries DROP CONSTRAINT ledger_entries_storage_unit_id_fkey;
ALTER TABLE ledger_entries DROP CONSTRAINT ledger_entries_lot_id_fkey;
ALTER TABLE ledger_entries DROP CONSTRAINT ledger_entries_facility_id_fkey;
ALTER TABLE ledger_entries DROP CONSTRAINT ledger_entries_product_id_fkey;
ALTER TABLE ledger_entries ADD CONSTRAINT ledger_entries_balance_fkey
    FOREIGN KEY (storage_unit_id, lot_id) REFERENCES stock_balances (storage_unit_id, lot_id);
