-- Alarm evaluation looks up one probe's alerts (episode matching, replay reconciliation,
-- quarantine while an alarm lasts) on every batch: an index, not a scan of all alerts.
CREATE INDEX alerts_device_probe ON alerts(device_id, probe, episode_start);
