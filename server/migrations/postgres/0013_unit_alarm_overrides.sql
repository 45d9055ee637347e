-- Per-unit changes to the alarm rules of the unit's temperature profile (range, heat and freeze
-- thresholds and durations, no-data and power-out limits): one JSON object of the overridden
-- values (server/src/domain/thresholds.rs), NULL when the unit uses its profile unchanged. JSON
-- rather than a column per value because the rules read them together and only as a whole.
ALTER TABLE storage_units ADD COLUMN alarm_overrides TEXT;
