-- A lot's stock in a storage unit exposed to a heat or freeze alarm, quarantined until assessed.
CREATE TABLE exposures (
    id                TEXT PRIMARY KEY,
    alert_id          TEXT NOT NULL REFERENCES alerts(id),
    storage_unit_id   TEXT NOT NULL REFERENCES storage_units(id),
    facility_id       TEXT NOT NULL REFERENCES facilities(id),
    lot_id            TEXT NOT NULL REFERENCES lots(id),
    product_id        TEXT NOT NULL REFERENCES products(id),
    start_time        TEXT NOT NULL,
    end_time          TEXT,
    quarantined_vials BIGINT NOT NULL,
    state             INTEGER NOT NULL,
    details           TEXT NOT NULL,
    assessment        TEXT,
    created_at        TEXT NOT NULL,
    -- One exposure per lot per alarm, whichever replica or replay raises it.
    CONSTRAINT exposures_alert_lot_key UNIQUE (alert_id, lot_id, storage_unit_id)
);
CREATE INDEX exposures_facility ON exposures(facility_id);
