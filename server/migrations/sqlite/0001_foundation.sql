-- Facility tree, storage units, catalogue, tokens and idempotency keys.
CREATE TABLE facilities (
    id          TEXT PRIMARY KEY,
    parent_id   TEXT REFERENCES facilities(id),
    kind        INTEGER NOT NULL,
    code        TEXT NOT NULL,
    name        TEXT NOT NULL,
    gln         TEXT NOT NULL DEFAULT '',
    external_id TEXT NOT NULL DEFAULT '',
    latitude    REAL,
    longitude   REAL,
    active      BOOLEAN NOT NULL DEFAULT 1,
    -- '/root/.../self/': subtree queries are a range scan on this column.
    path        TEXT NOT NULL,
    created_at  TEXT NOT NULL,
    updated_at  TEXT NOT NULL,
    CONSTRAINT facilities_code_key UNIQUE (code),
    CONSTRAINT facilities_path_key UNIQUE (path)
);
CREATE UNIQUE INDEX facilities_one_national ON facilities(kind) WHERE kind = 1;
CREATE INDEX facilities_parent ON facilities(parent_id);

CREATE TABLE storage_units (
    id                  TEXT PRIMARY KEY,
    facility_id         TEXT NOT NULL REFERENCES facilities(id),
    kind                INTEGER NOT NULL,
    name                TEXT NOT NULL,
    temperature_profile INTEGER NOT NULL,
    capacity_litres     REAL NOT NULL DEFAULT 0,
    active              BOOLEAN NOT NULL DEFAULT 1,
    created_at          TEXT NOT NULL,
    updated_at          TEXT NOT NULL,
    CONSTRAINT storage_units_name_key UNIQUE (facility_id, name)
);

CREATE TABLE products (
    id                     TEXT PRIMARY KEY,
    code                   TEXT NOT NULL,
    name                   TEXT NOT NULL,
    vaccine                TEXT NOT NULL,
    doses_per_vial         INTEGER NOT NULL,
    presentation           INTEGER NOT NULL,
    vvm_type               INTEGER NOT NULL,
    temperature_profile    INTEGER NOT NULL,
    acceptable_wastage_bp  INTEGER NOT NULL,
    multi_dose_vial_policy BOOLEAN NOT NULL,
    -- Denormalized for reads; product_gtins enforces uniqueness and serves GTIN look-ups.
    gtins                  TEXT NOT NULL DEFAULT '',
    active                 BOOLEAN NOT NULL DEFAULT 1,
    created_at             TEXT NOT NULL,
    updated_at             TEXT NOT NULL,
    CONSTRAINT products_code_key UNIQUE (code)
);

CREATE TABLE product_gtins (
    gtin       TEXT PRIMARY KEY,
    product_id TEXT NOT NULL REFERENCES products(id)
);

CREATE TABLE lots (
    id           TEXT PRIMARY KEY,
    product_id   TEXT NOT NULL REFERENCES products(id),
    gtin         TEXT NOT NULL DEFAULT '',
    lot_number   TEXT NOT NULL,
    manufacturer TEXT NOT NULL DEFAULT '',
    expiry       TEXT NOT NULL,
    created_at   TEXT NOT NULL,
    CONSTRAINT lots_number_key UNIQUE (product_id, lot_number)
);
CREATE INDEX lots_expiry ON lots(expiry);

CREATE TABLE tokens (
    id                TEXT PRIMARY KEY,
    secret_hash       BLOB NOT NULL,
    role              INTEGER NOT NULL,
    scope_facility_id TEXT REFERENCES facilities(id),
    device_id         TEXT,
    description       TEXT NOT NULL,
    created_at        TEXT NOT NULL,
    revoked_at        TEXT
);

CREATE TABLE idempotency_keys (
    token_id    TEXT NOT NULL,
    request_id  TEXT NOT NULL,
    method      TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    response    TEXT NOT NULL DEFAULT '',
    created_at  TEXT NOT NULL,
    PRIMARY KEY (token_id, request_id)
);
