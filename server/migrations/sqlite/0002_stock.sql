-- The stock ledger: append-only entries, balances kept in the same transaction, shipments,
-- session reports, opened multi-dose vials kept under the WHO policy, and min/max policies.
CREATE TABLE stock_balances (
    storage_unit_id   TEXT NOT NULL REFERENCES storage_units(id),
    lot_id            TEXT NOT NULL REFERENCES lots(id),
    vials             BIGINT NOT NULL DEFAULT 0,
    quarantined_vials BIGINT NOT NULL DEFAULT 0,
    vvm_stage         INTEGER NOT NULL DEFAULT 0,
    updated_at        TEXT NOT NULL,
    PRIMARY KEY (storage_unit_id, lot_id),
    -- The last line of defence: no code path can store a negative balance.
    CONSTRAINT stock_balances_non_negative CHECK (vials >= 0 AND quarantined_vials >= 0 AND quarantined_vials <= vials)
);
CREATE INDEX stock_balances_lot ON stock_balances(lot_id);

CREATE TABLE ledger_entries (
    sequence            INTEGER PRIMARY KEY,
    id                  TEXT NOT NULL,
    operation_id        TEXT NOT NULL,
    storage_unit_id     TEXT REFERENCES storage_units(id),
    facility_id         TEXT NOT NULL REFERENCES facilities(id),
    lot_id              TEXT NOT NULL REFERENCES lots(id),
    product_id          TEXT NOT NULL REFERENCES products(id),
    kind                INTEGER NOT NULL,
    quantity_vials      BIGINT NOT NULL,
    doses               BIGINT NOT NULL,
    quarantined_change  BIGINT NOT NULL DEFAULT 0,
    adjustment_reason   INTEGER NOT NULL DEFAULT 0,
    discrepancy_reason  INTEGER NOT NULL DEFAULT 0,
    comment             TEXT NOT NULL DEFAULT '',
    actor               TEXT NOT NULL,
    time                TEXT NOT NULL,
    request_id          TEXT NOT NULL DEFAULT '',
    shipment_id         TEXT,
    session_report_id   TEXT,
    reverses_entry_id   TEXT,
    physical_count_id   TEXT,
    exposure_id         TEXT,
    balance_after_vials BIGINT NOT NULL,
    CONSTRAINT ledger_entries_id_key UNIQUE (id),
    -- An entry is reversed at most once.
    CONSTRAINT ledger_entries_reversal_key UNIQUE (reverses_entry_id)
);
CREATE INDEX ledger_unit_lot ON ledger_entries(storage_unit_id, lot_id);
CREATE INDEX ledger_operation ON ledger_entries(operation_id);
CREATE INDEX ledger_facility_time ON ledger_entries(facility_id, time);
CREATE TRIGGER ledger_entries_no_update BEFORE UPDATE ON ledger_entries
BEGIN SELECT RAISE(ABORT, 'ledger entries are append-only'); END;
CREATE TRIGGER ledger_entries_no_delete BEFORE DELETE ON ledger_entries
BEGIN SELECT RAISE(ABORT, 'ledger entries are append-only'); END;

CREATE TABLE shipments (
    id               TEXT PRIMARY KEY,
    from_facility_id TEXT NOT NULL REFERENCES facilities(id),
    to_facility_id   TEXT NOT NULL REFERENCES facilities(id),
    state            INTEGER NOT NULL,
    lines            TEXT NOT NULL,
    reference        TEXT NOT NULL DEFAULT '',
    comment          TEXT NOT NULL DEFAULT '',
    expected_arrival TEXT,
    created_at       TEXT NOT NULL,
    dispatched_at    TEXT,
    received_at      TEXT,
    cancelled_at     TEXT,
    created_by       TEXT NOT NULL,
    dispatched_by    TEXT NOT NULL DEFAULT '',
    received_by      TEXT NOT NULL DEFAULT '',
    cancelled_by     TEXT NOT NULL DEFAULT '',
    cancel_comment   TEXT NOT NULL DEFAULT ''
);
CREATE INDEX shipments_from ON shipments(from_facility_id);
CREATE INDEX shipments_to ON shipments(to_facility_id);

CREATE TABLE session_reports (
    id              TEXT PRIMARY KEY,
    facility_id     TEXT NOT NULL REFERENCES facilities(id),
    storage_unit_id TEXT NOT NULL REFERENCES storage_units(id),
    session_date    TEXT NOT NULL,
    comment         TEXT NOT NULL DEFAULT '',
    submitted_at    TEXT NOT NULL,
    submitted_by    TEXT NOT NULL,
    ledger_entry_ids TEXT NOT NULL DEFAULT ''
);

-- One row per lot of a report, with the figures the wastage report adds up.
CREATE TABLE session_report_lines (
    session_report_id        TEXT NOT NULL REFERENCES session_reports(id),
    line_no                  INTEGER NOT NULL,
    facility_id              TEXT NOT NULL REFERENCES facilities(id),
    storage_unit_id          TEXT NOT NULL REFERENCES storage_units(id),
    lot_id                   TEXT NOT NULL REFERENCES lots(id),
    product_id               TEXT NOT NULL REFERENCES products(id),
    session_date             TEXT NOT NULL,
    vials_issued             BIGINT NOT NULL,
    vials_opened             BIGINT NOT NULL,
    opened_vials_reused      BIGINT NOT NULL,
    doses_administered       BIGINT NOT NULL,
    unopened_vials_returned  BIGINT NOT NULL,
    unopened_vials_discarded BIGINT NOT NULL,
    discard_reason           INTEGER NOT NULL,
    opened_vials_kept        BIGINT NOT NULL,
    opened_vials_discarded   BIGINT NOT NULL,
    doses_issued             BIGINT NOT NULL,
    doses_per_vial           BIGINT NOT NULL,
    PRIMARY KEY (session_report_id, line_no)
);
CREATE INDEX session_lines_facility_date ON session_report_lines(facility_id, session_date);

-- Opened multi-dose vials kept in the cold chain after a session (WHO MDVP, up to 28 days).
CREATE TABLE kept_vials (
    storage_unit_id TEXT NOT NULL REFERENCES storage_units(id),
    lot_id          TEXT NOT NULL REFERENCES lots(id),
    opened_on       TEXT NOT NULL,
    vials           BIGINT NOT NULL CHECK (vials >= 0),
    PRIMARY KEY (storage_unit_id, lot_id, opened_on)
);

CREATE TABLE stock_policies (
    facility_id TEXT NOT NULL REFERENCES facilities(id),
    product_id  TEXT NOT NULL REFERENCES products(id),
    min_doses   BIGINT NOT NULL,
    max_doses   BIGINT NOT NULL,
    updated_at  TEXT NOT NULL,
    updated_by  TEXT NOT NULL,
    PRIMARY KEY (facility_id, product_id)
);
