-- ListReadings by device reads one device's readings in time order; the primary key orders them
-- by seq, which would mean sorting a device's whole history for every page.
CREATE INDEX readings_device_time ON readings(device_id, time);
