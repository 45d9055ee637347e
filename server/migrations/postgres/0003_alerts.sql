-- Alerts and their event log (the WatchAlerts cursor).
CREATE TABLE alerts (
    id               TEXT PRIMARY KEY,
    kind             INTEGER NOT NULL,
    severity         INTEGER NOT NULL,
    state            INTEGER NOT NULL,
    subject_key      TEXT NOT NULL,
    facility_id      TEXT NOT NULL REFERENCES facilities(id),
    storage_unit_id  TEXT NOT NULL DEFAULT '',
    lot_id           TEXT NOT NULL DEFAULT '',
    device_id        TEXT NOT NULL DEFAULT '',
    product_id       TEXT NOT NULL DEFAULT '',
    shipment_id      TEXT NOT NULL DEFAULT '',
    probe            INTEGER NOT NULL DEFAULT 0,
    start_time       TIMESTAMPTZ NOT NULL,
    end_time         TIMESTAMPTZ,
    opened_at        TIMESTAMPTZ NOT NULL,
    updated_at       TIMESTAMPTZ NOT NULL,
    acknowledgement  TEXT,
    resolution       TEXT,
    details          TEXT NOT NULL,
    condition_active BOOLEAN NOT NULL
);
-- At most one unresolved alert per (kind, subject), whichever replica raises it.
CREATE UNIQUE INDEX alerts_one_unresolved ON alerts(subject_key) WHERE state <> 3;
CREATE INDEX alerts_key ON alerts(subject_key, opened_at);
CREATE INDEX alerts_facility ON alerts(facility_id);

CREATE TABLE alert_events (
    event_id      BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    alert_id      TEXT NOT NULL REFERENCES alerts(id),
    type          INTEGER NOT NULL,
    time          TIMESTAMPTZ NOT NULL,
    snapshot      TEXT NOT NULL,
    facility_path TEXT COLLATE "C" NOT NULL,
    kind          INTEGER NOT NULL,
    severity      INTEGER NOT NULL
);
CREATE INDEX alert_events_time ON alert_events(time);
