-- Webhooks and their delivery queue. Each alert event matching a webhook becomes one delivery row,
-- written by the fan-out (which follows the event log with the cursor in webhook_fanout) and
-- deleted once delivered or dropped; only the lowest event id of a webhook is ever sent, so
-- deliveries stay in event order and survive restarts.
CREATE TABLE webhooks (
    id                   TEXT PRIMARY KEY,
    -- NULL = the whole tree.
    scope_facility_id    TEXT REFERENCES facilities(id),
    -- The scope's facility path and its exclusive upper bound (see store::path_upper); byte order
    -- like facilities.path and alert_events.facility_path.
    scope_path           TEXT COLLATE "C" NOT NULL,
    scope_upper          TEXT COLLATE "C" NOT NULL,
    url                  TEXT NOT NULL,
    -- Alert kind numbers, comma-separated; '' = every kind.
    kinds                TEXT NOT NULL,
    min_severity         INTEGER NOT NULL,
    description          TEXT NOT NULL,
    -- The HMAC key the receiver shares: kept in clear, since signing needs it.
    secret               TEXT NOT NULL,
    created_by           TEXT NOT NULL,
    created_at           TIMESTAMPTZ NOT NULL,
    -- The fan-out cursor at creation: events it had already routed are not sent.
    after_event_id       BIGINT NOT NULL,
    last_success_at      TIMESTAMPTZ,
    last_failure_at      TIMESTAMPTZ,
    last_error           TEXT NOT NULL DEFAULT '',
    consecutive_failures INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX webhooks_scope ON webhooks(scope_path);

CREATE TABLE webhook_deliveries (
    webhook_id       TEXT NOT NULL REFERENCES webhooks(id) ON DELETE CASCADE,
    event_id         BIGINT NOT NULL,
    attempts         INTEGER NOT NULL DEFAULT 0,
    next_attempt_at  TIMESTAMPTZ NOT NULL,
    first_failure_at TIMESTAMPTZ,
    -- Set while a replica is sending it; an expired lease (a crashed replica) frees the row again.
    lease_until      TIMESTAMPTZ,
    PRIMARY KEY (webhook_id, event_id)
);
CREATE INDEX webhook_deliveries_due ON webhook_deliveries(next_attempt_at);

-- The last alert event the fan-out has routed to webhooks (one row, locked by the replica fanning out).
CREATE TABLE webhook_fanout (
    id            INTEGER PRIMARY KEY CHECK (id = 1),
    last_event_id BIGINT NOT NULL
);
INSERT INTO webhook_fanout (id, last_event_id) SELECT 1, COALESCE(MAX(event_id), 0) FROM alert_events;
