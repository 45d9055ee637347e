//! Devices and readings, shared by both engines like `common.rs`.

pub(crate) const DEVICE_COLS: &str = "d.id, d.serial, d.name, d.model, d.facility_id, d.expected_interval_secs, \
     d.unsigned_allowed, d.key_version, d.key_rotated_at, d.last_seen_at, d.last_seq, d.online, d.active, \
     d.created_at, d.updated_at";

macro_rules! sql_telemetry_store {
    ($Store:ty, $Db:ty, $Row:ty) => {
        use $crate::domain::telemetry::{self as tm, Device};
        use $crate::store::telemetry_sql::DEVICE_COLS;

        fn device_row(r: &$Row, probes: Vec<tm::Probe>) -> Result<Device> {
            Ok(Device {
                id: r.try_get("id")?,
                serial: r.try_get("serial")?,
                name: r.try_get("name")?,
                model: r.try_get("model")?,
                facility_id: r.try_get("facility_id")?,
                probes,
                expected_interval_secs: r.try_get("expected_interval_secs")?,
                unsigned_allowed: r.try_get("unsigned_allowed")?,
                key_version: r.try_get("key_version")?,
                key_rotated_at: r.try_get("key_rotated_at")?,
                last_seen_at: r.try_get("last_seen_at")?,
                last_seq: r.try_get("last_seq")?,
                online: r.try_get("online")?,
                active: r.try_get("active")?,
                created_at: r.try_get("created_at")?,
                updated_at: r.try_get("updated_at")?,
            })
        }

        async fn probes_of<'e, E>(exec: E, device_id: &str) -> Result<Vec<tm::Probe>>
        where
            E: sqlx::Executor<'e, Database = $Db>,
        {
            let rows = sqlx::query("SELECT probe, storage_unit_id, label FROM device_probes WHERE device_id = $1 ORDER BY probe")
                .bind(device_id)
                .fetch_all(exec)
                .await?;
            rows.iter()
                .map(|r| {
                    let probe: i32 = r.try_get("probe")?;
                    Ok(tm::Probe { index: u32::try_from(probe).unwrap_or(0), storage_unit_id: r.try_get("storage_unit_id")?, label: r.try_get("label")? })
                })
                .collect()
        }

        #[async_trait::async_trait]
        impl $crate::store::TelemetryStore for $Store {
            async fn insert_device(&self, idem: Option<&d::Idempotency>, dev: &Device, key: &[u8]) -> Result<Device> {
                let mut tx = self.begin_write().await?;
                if let Claim::Replay(v) = idem_claim(&mut tx, idem).await? {
                    return Ok(v);
                }
                sqlx::query(
                    "INSERT INTO devices (id, serial, name, model, facility_id, expected_interval_secs, unsigned_allowed, \
                     hmac_key, key_version, key_rotated_at, last_seq, online, active, created_at, updated_at) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, 0, FALSE, TRUE, $11, $12)",
                )
                .bind(&dev.id)
                .bind(&dev.serial)
                .bind(&dev.name)
                .bind(&dev.model)
                .bind(&dev.facility_id)
                .bind(dev.expected_interval_secs)
                .bind(dev.unsigned_allowed)
                .bind(key)
                .bind(dev.key_version)
                .bind(dev.key_rotated_at)
                .bind(dev.created_at)
                .bind(dev.updated_at)
                .execute(&mut *tx)
                .await
                .map_err(|e| match $crate::store::map_unique(e) {
                    Error::AlreadyExists { .. } => Error::exists("DUPLICATE_SERIAL", "a device with this serial is registered"),
                    other => other,
                })?;
                for p in &dev.probes {
                    sqlx::query("INSERT INTO device_probes (device_id, probe, storage_unit_id, label) VALUES ($1, $2, $3, $4)")
                        .bind(&dev.id)
                        .bind(i32::try_from(p.index).unwrap_or(i32::MAX))
                        .bind(&p.storage_unit_id)
                        .bind(&p.label)
                        .execute(&mut *tx)
                        .await?;
                }
                idem_finish(&mut tx, idem, dev).await?;
                tx.commit().await?;
                Ok(dev.clone())
            }

            async fn get_device(&self, id: &str) -> Result<Option<(Device, Vec<u8>, String)>> {
                let sql = format!("SELECT {DEVICE_COLS}, d.hmac_key, f.path FROM devices d JOIN facilities f ON f.id = d.facility_id WHERE d.id = $1");
                let Some(r) = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(id).fetch_optional(&self.pool).await? else {
                    return Ok(None);
                };
                let probes = probes_of(&self.pool, id).await?;
                Ok(Some((device_row(&r, probes)?, r.try_get("hmac_key")?, r.try_get("path")?)))
            }

            async fn list_devices(&self, scope_path: &str, facility_id: Option<&str>, page: &PageRequest) -> Result<Page<Device>> {
                let sql = format!(
                    "SELECT {DEVICE_COLS} FROM devices d JOIN facilities f ON f.id = d.facility_id WHERE f.path >= $1 AND f.path < $2 \
                     AND ($3 IS NULL OR d.facility_id = $3) AND ($4 IS NULL OR d.id > $4) ORDER BY d.id LIMIT $5"
                );
                let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
                    .bind(scope_path)
                    .bind($crate::store::path_upper(scope_path))
                    .bind(facility_id)
                    .bind(&page.after)
                    .bind(page.fetch_limit())
                    .fetch_all(&self.pool)
                    .await?;
                // One query for the probes of the whole page (ids are ordered), not one per device.
                let ids = rows.iter().map(|r| r.try_get::<String, _>("id")).collect::<std::result::Result<Vec<_>, _>>()?;
                let mut probes: std::collections::HashMap<String, Vec<tm::Probe>> = std::collections::HashMap::new();
                if let (Some(first), Some(last)) = (ids.first(), ids.last()) {
                    let prows = sqlx::query(
                        "SELECT device_id, probe, storage_unit_id, label FROM device_probes \
                         WHERE device_id >= $1 AND device_id <= $2 ORDER BY device_id, probe",
                    )
                    .bind(first)
                    .bind(last)
                    .fetch_all(&self.pool)
                    .await?;
                    for r in &prows {
                        let probe: i32 = r.try_get("probe")?;
                        probes.entry(r.try_get("device_id")?).or_default().push(tm::Probe {
                            index: u32::try_from(probe).unwrap_or(0),
                            storage_unit_id: r.try_get("storage_unit_id")?,
                            label: r.try_get("label")?,
                        });
                    }
                }
                let mut items = Vec::with_capacity(rows.len());
                for (r, id) in rows.iter().zip(&ids) {
                    items.push(device_row(r, probes.remove(id).unwrap_or_default())?);
                }
                Ok(page.finish(items, |d| &d.id))
            }

            async fn store_readings(
                &self,
                device_id: &str,
                readings: &[tm::StoredReading],
                rejects: &[(i64, &'static str)],
                now: chrono::DateTime<chrono::Utc>,
            ) -> Result<(i64, std::collections::HashSet<i64>)> {
                let mut tx = self.begin_write().await?;
                // Lock the device row before anything else: it serializes batches (and replicas)
                // advancing one device's ack, and taking it first avoids the deadlock of two
                // transactions upgrading the key-share locks their reading inserts took on it.
                let sql = format!("SELECT last_seq FROM devices WHERE id = $1{}", <$Store>::LOCK);
                let last: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(sql)).bind(device_id).fetch_one(&mut *tx).await?;
                let mut inserted = std::collections::HashSet::new();
                for r in readings {
                    let n = sqlx::query(
                        "INSERT INTO readings (device_id, seq, probe, storage_unit_id, time, temp_c, power_on, battery_pct, \
                         door_open, sensor_fault, received_at, verified) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12) \
                         ON CONFLICT DO NOTHING",
                    )
                    .bind(device_id)
                    .bind(r.seq)
                    .bind(i32::try_from(r.probe).unwrap_or(i32::MAX))
                    .bind(&r.storage_unit_id)
                    .bind(r.time)
                    .bind(r.temp_c)
                    .bind(r.power_on)
                    .bind(r.battery_pct.map(|b| i32::try_from(b).unwrap_or(i32::MAX)))
                    .bind(r.door_open)
                    .bind(r.sensor_fault)
                    .bind(now)
                    .bind(r.verified)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
                    if n == 1 {
                        inserted.insert(r.seq);
                    }
                }
                for (seq, reason) in rejects {
                    sqlx::query("INSERT INTO reading_rejects (device_id, seq, reason, received_at) VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING")
                        .bind(device_id)
                        .bind(seq)
                        .bind(*reason)
                        .bind(now)
                        .execute(&mut *tx)
                        .await?;
                }
                let above: Vec<i64> = sqlx::query_scalar(
                    "SELECT seq FROM readings WHERE device_id = $1 AND seq > $2 UNION \
                     SELECT seq FROM reading_rejects WHERE device_id = $1 AND seq > $2 ORDER BY seq LIMIT 100000",
                )
                .bind(device_id)
                .bind(last)
                .fetch_all(&mut *tx)
                .await?;
                let acked = tm::advance_ack(last, &above);
                sqlx::query("UPDATE devices SET last_seq = $1, last_seen_at = $2 WHERE id = $3")
                    .bind(acked)
                    .bind(now)
                    .bind(device_id)
                    .execute(&mut *tx)
                    .await?;
                tx.commit().await?;
                Ok((acked, inserted))
            }

            async fn lock_device_evaluation(&self, device_id: &str) -> Result<Box<dyn std::any::Any + Send>> {
                self.evaluation_lock(device_id).await
            }

            async fn alarm_state(&self, device_id: &str, probe: u32) -> Result<Option<(Vec<u8>, Option<chrono::DateTime<chrono::Utc>>)>> {
                let row = sqlx::query("SELECT state, evaluated_to FROM probe_alarm_state WHERE device_id = $1 AND probe = $2")
                    .bind(device_id)
                    .bind(i32::try_from(probe).unwrap_or(i32::MAX))
                    .fetch_optional(&self.pool)
                    .await?;
                match row {
                    Some(r) => Ok(Some((r.try_get("state")?, r.try_get("evaluated_to")?))),
                    None => Ok(None),
                }
            }

            async fn save_alarm_state(
                &self,
                device_id: &str,
                probe: u32,
                state: &[u8],
                evaluated_to: Option<chrono::DateTime<chrono::Utc>>,
            ) -> Result<()> {
                sqlx::query(
                    "INSERT INTO probe_alarm_state (device_id, probe, state, evaluated_to) VALUES ($1, $2, $3, $4) \
                     ON CONFLICT (device_id, probe) DO UPDATE SET state = $3, evaluated_to = $4",
                )
                .bind(device_id)
                .bind(i32::try_from(probe).unwrap_or(i32::MAX))
                .bind(state)
                .bind(evaluated_to)
                .execute(&self.pool)
                .await?;
                Ok(())
            }

            async fn probe_readings(
                &self,
                device_id: &str,
                probe: u32,
                after: Option<chrono::DateTime<chrono::Utc>>,
            ) -> Result<Vec<tm::StoredReading>> {
                let rows = sqlx::query(
                    "SELECT seq, probe, storage_unit_id, time, temp_c, power_on, battery_pct, door_open, sensor_fault, verified \
                     FROM readings WHERE device_id = $1 AND probe = $2 AND ($3 IS NULL OR time > $3) ORDER BY time, seq",
                )
                .bind(device_id)
                .bind(i32::try_from(probe).unwrap_or(i32::MAX))
                .bind(after)
                .fetch_all(&self.pool)
                .await?;
                rows.iter()
                    .map(|r| {
                        let probe: i32 = r.try_get("probe")?;
                        let battery: Option<i32> = r.try_get("battery_pct")?;
                        Ok(tm::StoredReading {
                            seq: r.try_get("seq")?,
                            probe: u32::try_from(probe).unwrap_or(0),
                            storage_unit_id: r.try_get("storage_unit_id")?,
                            time: r.try_get("time")?,
                            temp_c: r.try_get("temp_c")?,
                            power_on: r.try_get("power_on")?,
                            battery_pct: battery.and_then(|b| u32::try_from(b).ok()),
                            door_open: r.try_get("door_open")?,
                            sensor_fault: r.try_get("sensor_fault")?,
                            verified: r.try_get("verified")?,
                        })
                    })
                    .collect()
            }

            async fn count_readings(&self, device_id: &str) -> Result<(i64, i64, i64)> {
                let r = sqlx::query(
                    "SELECT CAST(COUNT(*) AS BIGINT) AS n, CAST(COALESCE(MIN(seq), 0) AS BIGINT) AS lo, \
                     CAST(COALESCE(MAX(seq), 0) AS BIGINT) AS hi FROM readings WHERE device_id = $1",
                )
                .bind(device_id)
                .fetch_one(&self.pool)
                .await?;
                Ok((r.try_get("n")?, r.try_get("lo")?, r.try_get("hi")?))
            }
        }
    };
}
