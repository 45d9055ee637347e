-- An entry is reversed at most once: a unique index over the entries that reverse another only.
-- The constraint it replaces indexed every entry, nearly all with a NULL there, on each write.
ALTER TABLE ledger_entries DROP CONSTRAINT ledger_entries_reversal_key;
CREATE UNIQUE INDEX ledger_entries_reversal ON ledger_entries (reverses_entry_id) WHERE reverses_entry_id IS NOT NULL;
