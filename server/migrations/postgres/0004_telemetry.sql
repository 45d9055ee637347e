-- Loggers, their probes, and the readings they send over MQTT.
CREATE TABLE devices (
    id                     TEXT PRIMARY KEY,
    serial                 TEXT NOT NULL,
    name                   TEXT NOT NULL DEFAULT '',
    model                  TEXT NOT NULL DEFAULT '',
    facility_id            TEXT NOT NULL REFERENCES facilities(id),
    expected_interval_secs BIGINT NOT NULL,
    unsigned_allowed       BOOLEAN NOT NULL DEFAULT FALSE,
    hmac_key               BYTEA NOT NULL,
    key_version            INTEGER NOT NULL,
    key_rotated_at         TIMESTAMPTZ NOT NULL,
    last_seen_at           TIMESTAMPTZ,
    -- Every reading with seq <= last_seq is committed (stored or permanently rejected).
    last_seq               BIGINT NOT NULL DEFAULT 0,
    online                 BOOLEAN NOT NULL DEFAULT FALSE,
    active                 BOOLEAN NOT NULL DEFAULT TRUE,
    created_at             TIMESTAMPTZ NOT NULL,
    updated_at             TIMESTAMPTZ NOT NULL,
    CONSTRAINT devices_serial_key UNIQUE (serial)
);

CREATE TABLE device_probes (
    device_id       TEXT NOT NULL REFERENCES devices(id),
    probe           INTEGER NOT NULL,
    storage_unit_id TEXT NOT NULL REFERENCES storage_units(id),
    label           TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (device_id, probe)
);
CREATE INDEX device_probes_unit ON device_probes(storage_unit_id);

-- One row per (device, seq): a re-sent reading is ignored, never stored twice.
CREATE TABLE readings (
    device_id       TEXT NOT NULL REFERENCES devices(id),
    seq             BIGINT NOT NULL,
    probe           INTEGER NOT NULL,
    storage_unit_id TEXT NOT NULL REFERENCES storage_units(id),
    time            TIMESTAMPTZ NOT NULL,
    temp_c          DOUBLE PRECISION,
    power_on        BOOLEAN,
    battery_pct     INTEGER,
    door_open       BOOLEAN,
    sensor_fault    BOOLEAN NOT NULL DEFAULT FALSE,
    received_at     TIMESTAMPTZ NOT NULL,
    verified        BOOLEAN NOT NULL,
    PRIMARY KEY (device_id, seq)
);
CREATE INDEX readings_unit_time ON readings(storage_unit_id, time);

-- Readings refused for their content: kept so the ack can move past them, and for audit.
CREATE TABLE reading_rejects (
    device_id   TEXT NOT NULL REFERENCES devices(id),
    seq         BIGINT NOT NULL,
    reason      TEXT NOT NULL,
    received_at TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (device_id, seq)
);
