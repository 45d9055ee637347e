-- Readings committed but not yet run through the alarm rules, per device: the earliest such
-- reading time, a counter every commit that adds readings bumps, and when it last did. Written in
-- the readings' own transaction, so a process killed between that commit and the evaluation loses
-- nothing: the device's next evaluation, or the periodic sweep, replays from there. (Without it a
-- late reading committed just before a crash was never evaluated, and an alert seen from the gap
-- it filled stood for good.) An evaluation clears the mark only if the counter did not move.
ALTER TABLE devices ADD COLUMN unevaluated_from TIMESTAMPTZ;
ALTER TABLE devices ADD COLUMN unevaluated_gen BIGINT NOT NULL DEFAULT 0;
ALTER TABLE devices ADD COLUMN unevaluated_at TIMESTAMPTZ;
CREATE INDEX devices_unevaluated ON devices (unevaluated_at) WHERE unevaluated_from IS NOT NULL;
