-- Readings at national scale: hourly rollups serve charts and reports without touching raw rows,
-- and the readings table is partitioned by month so retention drops whole partitions.

CREATE TABLE reading_rollups (
    storage_unit_id TEXT NOT NULL REFERENCES storage_units(id),
    -- Start of the hour, Unix seconds (UTC): an integer key both engines compare exactly.
    hour            BIGINT NOT NULL,
    min_c           DOUBLE PRECISION NOT NULL,
    max_c           DOUBLE PRECISION NOT NULL,
    sum_c           DOUBLE PRECISION NOT NULL,
    count           BIGINT NOT NULL,
    PRIMARY KEY (storage_unit_id, hour)
);
INSERT INTO reading_rollups (storage_unit_id, hour, min_c, max_c, sum_c, count)
SELECT storage_unit_id, CAST(floor(date_part('epoch', time) / 3600) AS BIGINT) * 3600,
       MIN(temp_c), MAX(temp_c), SUM(temp_c), COUNT(*)
FROM readings WHERE temp_c IS NOT NULL AND NOT sensor_fault GROUP BY 1, 2;

ALTER TABLE readings RENAME TO readings_unpartitioned;
ALTER INDEX readings_unit_time RENAME TO readings_unpartitioned_unit_time;
ALTER INDEX readings_device_time RENAME TO readings_unpartitioned_device_time;
ALTER TABLE readings_unpartitioned RENAME CONSTRAINT readings_pkey TO readings_unpartitioned_pkey;

-- A partitioned table's unique keys must hold the partition key, so time joins the key; the
-- server keeps (device_id, seq) unique itself, under the device row lock it takes to insert.
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
    PRIMARY KEY (device_id, seq, time)
) PARTITION BY RANGE (time);
CREATE INDEX readings_unit_time ON readings(storage_unit_id, time);
CREATE INDEX readings_device_time ON readings(device_id, time);
-- Retention deletes by time what whole partitions do not cover.
CREATE INDEX readings_time ON readings(time);
-- Anything outside the monthly partitions (an old backlog, a month not yet created).
CREATE TABLE readings_default PARTITION OF readings DEFAULT;
-- Monthly partitions in UTC for the history being moved (at most three years back; anything
-- older stays in the default partition) and the next two months, so no partition ever has to be
-- created over rows already sitting in the default partition.
DO $$
DECLARE
    this_month date := date_trunc('month', now() AT TIME ZONE 'UTC')::date;
    m date := date_trunc('month', COALESCE((SELECT MIN(time) FROM readings_unpartitioned), now()) AT TIME ZONE 'UTC')::date;
BEGIN
    m := GREATEST(m, (this_month - interval '36 months')::date);
    WHILE m <= (this_month + interval '2 months')::date LOOP
        EXECUTE format('CREATE TABLE %I PARTITION OF readings FOR VALUES FROM (%L) TO (%L)',
            'readings_' || to_char(m, 'YYYY_MM'),
            m::timestamp AT TIME ZONE 'UTC', (m + interval '1 month')::timestamp AT TIME ZONE 'UTC');
        m := (m + interval '1 month')::date;
    END LOOP;
END $$;
INSERT INTO readings SELECT device_id, seq, probe, storage_unit_id, time, temp_c, power_on, battery_pct, door_open,
    sensor_fault, received_at, verified FROM readings_unpartitioned;
DROP TABLE readings_unpartitioned;
