-- A logger replaced or reset restarts at seq 1 (RotateDeviceKey with reset_sequence): its seqs are
-- stored shifted by seq_offset, past every seq it used before, so the (device_id, seq) identity of
-- readings and rejects stays unique and the end-to-end ack keeps its meaning.
ALTER TABLE devices ADD COLUMN seq_offset BIGINT NOT NULL DEFAULT 0;
