-- Per-probe alarm state (the coldchain engine's bytes) and the reading time it has reached.
CREATE TABLE probe_alarm_state (
    device_id    TEXT NOT NULL REFERENCES devices(id),
    probe        INTEGER NOT NULL,
    state        BYTEA NOT NULL,
    evaluated_to TIMESTAMPTZ,
    PRIMARY KEY (device_id, probe)
);
-- A cold-chain alarm episode is identified by the reading time it started at, so replaying
-- late readings finds the same alert instead of opening a second one.
ALTER TABLE alerts ADD COLUMN episode_start BIGINT NOT NULL DEFAULT 0;
