-- Hourly rollups serve charts and reports without touching raw rows (PostgreSQL also partitions
-- the readings table by month; SQLite keeps one table and retention deletes rows).
CREATE TABLE reading_rollups (
    storage_unit_id TEXT NOT NULL REFERENCES storage_units(id),
    -- Start of the hour, Unix seconds (UTC): an integer key both engines compare exactly.
    hour            INTEGER NOT NULL,
    min_c           REAL NOT NULL,
    max_c           REAL NOT NULL,
    sum_c           REAL NOT NULL,
    count           INTEGER NOT NULL,
    PRIMARY KEY (storage_unit_id, hour)
);
INSERT INTO reading_rollups (storage_unit_id, hour, min_c, max_c, sum_c, count)
SELECT storage_unit_id, (CAST(strftime('%s', time) AS INTEGER) / 3600) * 3600,
       MIN(temp_c), MAX(temp_c), SUM(temp_c), COUNT(*)
FROM readings WHERE temp_c IS NOT NULL AND NOT sensor_fault GROUP BY 1, 2;
-- Retention deletes readings by time.
CREATE INDEX readings_time ON readings(time);
