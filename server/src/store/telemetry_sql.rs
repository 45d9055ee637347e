//! Devices and readings, shared by both engines like `common.rs`.

pub(crate) const DEVICE_COLS: &str = "d.id, d.serial, d.name, d.model, d.facility_id, d.expected_interval_secs, \
     d.unsigned_allowed, d.key_version, d.key_rotated_at, d.last_seen_at, d.last_seq, d.seq_offset, d.online, \
     d.active, d.created_at, d.updated_at";

/// The columns of a served reading, from `readings r`.
pub(crate) const READING_COLS: &str = "r.device_id, r.seq, r.probe, r.storage_unit_id, r.time, r.temp_c, r.power_on, \
     r.battery_pct, r.door_open, r.sensor_fault, r.received_at, r.verified";

/// Readings per INSERT: 12 parameters each, well under SQLite's 32,766.
pub(crate) const READING_CHUNK: usize = 2000;

macro_rules! sql_telemetry_store {
    ($Store:ty, $Db:ty, $Row:ty) => {
        use $crate::domain::telemetry::{self as tm, Device};
        use $crate::store::telemetry_sql::{DEVICE_COLS, READING_CHUNK, READING_COLS};

        /// `INSERT INTO readings (…) VALUES …` for `rows` of (device id, reading), received at `now`.
        fn push_readings_insert<'r>(
            q: &mut sqlx::QueryBuilder<$Db>,
            rows: impl IntoIterator<Item = (&'r str, &'r tm::StoredReading)>,
            now: chrono::DateTime<chrono::Utc>,
        ) {
            q.push(
                "INSERT INTO readings (device_id, seq, probe, storage_unit_id, time, temp_c, power_on, battery_pct, \
                 door_open, sensor_fault, received_at, verified) ",
            );
            q.push_values(rows, |mut b, (device_id, r)| {
                b.push_bind(device_id.to_owned())
                    .push_bind(r.seq)
                    .push_bind(i32::try_from(r.probe).unwrap_or(i32::MAX))
                    .push_bind(r.storage_unit_id.clone())
                    .push_bind(r.time)
                    .push_bind(r.temp_c)
                    .push_bind(r.power_on)
                    .push_bind(r.battery_pct.map(|b| i32::try_from(b).unwrap_or(i32::MAX)))
                    .push_bind(r.door_open)
                    .push_bind(r.sensor_fault)
                    .push_bind(now)
                    .push_bind(r.verified);
            });
        }

        /// Adds readings to their hourly rollups: one row per (unit, hour) per statement, as one
        /// statement may not update a row twice. Sensor faults and missing temperatures do not count.
        async fn upsert_rollups<'r>(
            tx: &mut sqlx::Transaction<'_, $Db>,
            rows: impl Iterator<Item = &'r tm::StoredReading>,
        ) -> Result<()> {
            let mut hours: std::collections::BTreeMap<(String, i64), (f64, f64, f64, i64)> =
                std::collections::BTreeMap::new();
            for r in rows.filter(|r| !r.sensor_fault) {
                let Some(t) = r.temp_c else { continue };
                let hour = r.time.timestamp().div_euclid(3600) * 3600;
                let e = hours.entry((r.storage_unit_id.clone(), hour)).or_insert((t, t, 0.0, 0));
                *e = (e.0.min(t), e.1.max(t), e.2 + t, e.3 + 1);
            }
            let hours: Vec<_> = hours.into_iter().collect();
            for chunk in hours.chunks(READING_CHUNK) {
                let mut q = sqlx::QueryBuilder::<$Db>::new(
                    "INSERT INTO reading_rollups (storage_unit_id, hour, min_c, max_c, sum_c, count) ",
                );
                q.push_values(chunk, |mut b, ((unit, hour), (lo, hi, sum, n))| {
                    b.push_bind(unit.clone()).push_bind(*hour).push_bind(*lo).push_bind(*hi).push_bind(*sum).push_bind(*n);
                });
                q.push(format!(
                    " ON CONFLICT (storage_unit_id, hour) DO UPDATE SET \
                     min_c = {lo}(reading_rollups.min_c, excluded.min_c), max_c = {hi}(reading_rollups.max_c, excluded.max_c), \
                     sum_c = reading_rollups.sum_c + excluded.sum_c, count = reading_rollups.count + excluded.count",
                    lo = <$Store>::LEAST,
                    hi = <$Store>::GREATEST
                ));
                q.build().execute(&mut **tx).await?;
            }
            Ok(())
        }

        fn stored_reading(r: &$Row) -> Result<tm::StoredReading> {
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
        }

        fn recorded_reading(r: &$Row) -> Result<tm::RecordedReading> {
            Ok(tm::RecordedReading {
                device_id: r.try_get("device_id")?,
                received_at: r.try_get("received_at")?,
                reading: stored_reading(r)?,
            })
        }

        /// One bucket of a downsampling query (`bucket`, `lo`, `mean`, `hi`, `n`).
        fn bucket_row(r: &$Row, width_secs: i64) -> Result<tm::ReadingBucket> {
            let bucket: i64 = r.try_get("bucket")?;
            let start = chrono::DateTime::from_timestamp(bucket.saturating_mul(width_secs), 0)
                .ok_or_else(|| Error::Internal(format!("bucket {bucket} out of range")))?;
            Ok(tm::ReadingBucket {
                start,
                min_temp_c: r.try_get("lo")?,
                mean_temp_c: r.try_get("mean")?,
                max_temp_c: r.try_get("hi")?,
                count: r.try_get("n")?,
            })
        }

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
                seq_offset: r.try_get("seq_offset")?,
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
            async fn insert_device(
                &self,
                idem: Option<&d::Idempotency>,
                dev: &Device,
                key: &[u8],
                sealed_key: Option<&str>,
            ) -> Result<d::token::WithSecret<Device>> {
                let mut tx = self.begin_write().await?;
                let r: Result<d::token::WithSecret<Device>> = async {
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
                    Ok(d::token::WithSecret { value: dev.clone(), sealed_secret: sealed_key.map(str::to_owned) })
                }
                .await;
                self.idem_settle(tx, idem, r).await
            }

            async fn get_device(&self, id: &str) -> Result<Option<(Device, Vec<u8>, String)>> {
                let sql = format!("SELECT {DEVICE_COLS}, d.hmac_key, f.path FROM devices d JOIN facilities f ON f.id = d.facility_id WHERE d.id = $1");
                let Some(r) = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(id).fetch_optional(&self.pool).await? else {
                    return Ok(None);
                };
                let probes = probes_of(&self.pool, id).await?;
                Ok(Some((device_row(&r, probes)?, r.try_get("hmac_key")?, r.try_get("path")?)))
            }

            async fn list_devices(&self, scope_path: &str, filter: &tm::DeviceFilter, page: &PageRequest) -> Result<Page<Device>> {
                let sql = format!(
                    "SELECT {DEVICE_COLS} FROM devices d JOIN facilities f ON f.id = d.facility_id WHERE f.path >= $1 AND f.path < $2 \
                     AND ($3 IS NULL OR d.facility_id = $3) AND ($4 IS NULL OR (f.path >= $4 AND f.path < $5)) \
                     AND ($6 IS NULL OR EXISTS (SELECT 1 FROM device_probes p WHERE p.device_id = d.id AND p.storage_unit_id = $6)) \
                     AND ($7 OR d.active) AND ($8 IS NULL OR d.id > $8) ORDER BY d.id LIMIT $9"
                );
                let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
                    .bind(scope_path)
                    .bind($crate::store::path_upper(scope_path))
                    .bind(&filter.facility_id)
                    .bind(&filter.ancestor_path)
                    .bind(filter.ancestor_path.as_deref().map($crate::store::path_upper))
                    .bind(&filter.storage_unit_id)
                    .bind(filter.include_inactive)
                    .bind(&page.after)
                    .bind(page.fetch_limit())
                    .fetch_all(&self.pool)
                    .await?;
                let ids = rows.iter().map(|r| r.try_get::<String, _>("id")).collect::<std::result::Result<Vec<_>, _>>()?;
                // One query for the probes of the whole page, not one per device; by id list, since
                // a filtered page's ids may be far apart.
                let mut probes: std::collections::HashMap<String, Vec<tm::Probe>> = std::collections::HashMap::new();
                if !ids.is_empty() {
                    let marks = (1..=ids.len()).map(|i| format!("${i}")).collect::<Vec<_>>().join(", ");
                    let sql = format!(
                        "SELECT device_id, probe, storage_unit_id, label FROM device_probes \
                         WHERE device_id IN ({marks}) ORDER BY device_id, probe"
                    );
                    let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
                    for id in &ids {
                        q = q.bind(id);
                    }
                    for r in &q.fetch_all(&self.pool).await? {
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

            async fn rotate_device_key(
                &self,
                idem: Option<&d::Idempotency>,
                id: &str,
                key: &[u8],
                reset_sequence: bool,
                sealed_key: Option<&str>,
            ) -> Result<Option<d::token::WithSecret<Device>>> {
                let mut tx = self.begin_write().await?;
                let r: Result<Option<d::token::WithSecret<Device>>> = async {
                    // Under the device lock, as ingest takes it: no batch commits between the offset
                    // being chosen and set.
                    let sql = format!("SELECT {DEVICE_COLS} FROM devices d WHERE d.id = $1{}", <$Store>::LOCK);
                    let Some(row) = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(id).fetch_optional(&mut *tx).await? else {
                        return Ok(None);
                    };
                    let mut dev = device_row(&row, probes_of(&mut *tx, id).await?)?;
                    let t = d::now();
                    dev.key_version += 1;
                    dev.key_rotated_at = t;
                    dev.updated_at = t;
                    if reset_sequence {
                        // Past every seq stored or refused so far, acked or not: the restarted device's
                        // seq 1 must never meet an old reading's identity.
                        let highest: Option<i64> = sqlx::query_scalar(
                            "SELECT MAX(seq) FROM (SELECT seq FROM readings WHERE device_id = $1 \
                             UNION ALL SELECT seq FROM reading_rejects WHERE device_id = $1) s",
                        )
                        .bind(id)
                        .fetch_one(&mut *tx)
                        .await?;
                        dev.seq_offset = highest.unwrap_or(0).max(dev.last_seq);
                        dev.last_seq = dev.seq_offset;
                    }
                    sqlx::query(
                        "UPDATE devices SET hmac_key = $1, key_version = $2, key_rotated_at = $3, seq_offset = $4, \
                         last_seq = $5, updated_at = $6 WHERE id = $7",
                    )
                    .bind(key)
                    .bind(dev.key_version)
                    .bind(t)
                    .bind(dev.seq_offset)
                    .bind(dev.last_seq)
                    .bind(t)
                    .bind(id)
                    .execute(&mut *tx)
                    .await?;
                    Ok(Some(d::token::WithSecret { value: dev, sealed_secret: sealed_key.map(str::to_owned) }))
                }
                .await;
                self.idem_settle(tx, idem, r).await
            }

            async fn update_device(&self, idem: Option<&d::Idempotency>, id: &str, patch: &tm::DevicePatch) -> Result<Option<Device>> {
                let mut tx = self.begin_write().await?;
                let r: Result<Option<Device>> = async {
                    let sql = format!("SELECT {DEVICE_COLS} FROM devices d WHERE d.id = $1{}", <$Store>::LOCK);
                    let Some(row) = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(id).fetch_optional(&mut *tx).await? else {
                        return Ok(None);
                    };
                    let before = probes_of(&mut *tx, id).await?;
                    let mut dev = device_row(&row, before.clone())?;
                    patch.apply(&mut dev);
                    dev.updated_at = d::now();
                    // The caller checked the placement before; under the lock it cannot have moved since.
                    if patch.moves_probes() {
                        for (i, p) in dev.probes.iter().enumerate() {
                            let at: Option<String> = sqlx::query_scalar("SELECT facility_id FROM storage_units WHERE id = $1")
                                .bind(&p.storage_unit_id)
                                .fetch_optional(&mut *tx)
                                .await?;
                            if at.as_deref() != Some(dev.facility_id.as_str()) {
                                return Err(Error::precondition(
                                    "STORAGE_UNIT_OTHER_FACILITY",
                                    format!("probes[{i}]: the storage unit is not at the device's facility"),
                                ));
                            }
                        }
                    }
                    sqlx::query(
                        "UPDATE devices SET name = $1, model = $2, facility_id = $3, expected_interval_secs = $4, \
                         unsigned_allowed = $5, active = $6, updated_at = $7 WHERE id = $8",
                    )
                    .bind(&dev.name)
                    .bind(&dev.model)
                    .bind(&dev.facility_id)
                    .bind(dev.expected_interval_secs)
                    .bind(dev.unsigned_allowed)
                    .bind(dev.active)
                    .bind(dev.updated_at)
                    .bind(&dev.id)
                    .execute(&mut *tx)
                    .await?;
                    if patch.probes.is_some() {
                        for index in tm::rebound_probes(&before, &dev.probes) {
                            sqlx::query("DELETE FROM probe_alarm_state WHERE device_id = $1 AND probe = $2")
                                .bind(&dev.id)
                                .bind(i32::try_from(index).unwrap_or(i32::MAX))
                                .execute(&mut *tx)
                                .await?;
                        }
                        sqlx::query("DELETE FROM device_probes WHERE device_id = $1").bind(&dev.id).execute(&mut *tx).await?;
                        for p in &dev.probes {
                            sqlx::query("INSERT INTO device_probes (device_id, probe, storage_unit_id, label) VALUES ($1, $2, $3, $4)")
                                .bind(&dev.id)
                                .bind(i32::try_from(p.index).unwrap_or(i32::MAX))
                                .bind(&p.storage_unit_id)
                                .bind(&p.label)
                                .execute(&mut *tx)
                                .await?;
                        }
                    }
                    Ok(Some(dev))
                }
                .await;
                self.idem_settle(tx, idem, r).await
            }

            async fn list_readings(
                &self,
                scope_path: &str,
                source: &tm::ReadingSource,
                range: &tm::TimeRange,
                after: Option<&tm::ReadingCursor>,
                limit: i64,
            ) -> Result<Vec<tm::RecordedReading>> {
                let (column, id) = match source {
                    tm::ReadingSource::Device(id) => ("device_id", id),
                    tm::ReadingSource::StorageUnit(id) => ("storage_unit_id", id),
                };
                // Keyset: from the cursor's time on, and at that very time only past its (device,
                // seq). Without a cursor, '' sorts before every id, so the whole start instant counts.
                let (from, after_device, after_seq) = match after {
                    Some(c) if c.time >= range.start => (c.time, c.device_id.as_str(), c.seq),
                    _ => (range.start, "", 0),
                };
                // The scope join matters for a device: a moved device's older readings were taken
                // in units its new facility's officers must not see.
                let sql = format!(
                    "SELECT {READING_COLS} FROM readings r JOIN storage_units u ON u.id = r.storage_unit_id \
                     JOIN facilities f ON f.id = u.facility_id \
                     WHERE r.{column} = $1 AND r.time >= $2 AND r.time < $3 AND f.path >= $4 AND f.path < $5 \
                     AND (r.time > $2 OR r.device_id > $6 OR (r.device_id = $6 AND r.seq > $7)) \
                     ORDER BY r.time, r.device_id, r.seq LIMIT $8"
                );
                let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
                    .bind(id)
                    .bind(from)
                    .bind(range.end)
                    .bind(scope_path)
                    .bind($crate::store::path_upper(scope_path))
                    .bind(after_device)
                    .bind(after_seq)
                    .bind(limit)
                    .fetch_all(&self.pool)
                    .await?;
                rows.iter().map(recorded_reading).collect()
            }

            async fn bucket_readings(&self, storage_unit_id: &str, b: &tm::Bucketing) -> Result<Vec<tm::ReadingBucket>> {
                // Whole hours come from the hourly rollups: a month is 720 rows, not 43,200.
                let hourly = |t: chrono::DateTime<chrono::Utc>| t.timestamp().rem_euclid(3600) == 0 && t.timestamp_subsec_nanos() == 0;
                let sql = if b.width_secs % 3600 == 0 && hourly(b.range.start) && hourly(b.range.end) {
                    "SELECT hour / $4 AS bucket, MIN(min_c) AS lo, SUM(sum_c) / SUM(count) AS mean, MAX(max_c) AS hi, \
                     CAST(SUM(count) AS BIGINT) AS n FROM reading_rollups WHERE storage_unit_id = $1 \
                     AND hour >= $2 AND hour < $3 GROUP BY hour / $4 ORDER BY bucket"
                        .to_owned()
                } else {
                    String::new()
                };
                if !sql.is_empty() {
                    let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
                        .bind(storage_unit_id)
                        .bind(b.range.start.timestamp())
                        .bind(b.range.end.timestamp())
                        .bind(b.width_secs)
                        .fetch_all(&self.pool)
                        .await?;
                    return rows.iter().map(|r| bucket_row(r, b.width_secs)).collect();
                }
                // Otherwise one pass over the unit's index range; the engine aggregates, so a
                // month of one-minute readings never leaves the database row by row.
                let sql = format!(
                    "SELECT bucket, MIN(temp_c) AS lo, AVG(temp_c) AS mean, MAX(temp_c) AS hi, CAST(COUNT(*) AS BIGINT) AS n \
                     FROM (SELECT {} / $4 AS bucket, r.temp_c FROM readings r WHERE r.storage_unit_id = $1 \
                     AND r.time >= $2 AND r.time < $3 AND NOT r.sensor_fault AND r.temp_c IS NOT NULL) x \
                     GROUP BY bucket ORDER BY bucket",
                    <$Store>::EPOCH_SECS
                );
                let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
                    .bind(storage_unit_id)
                    .bind(b.range.start)
                    .bind(b.range.end)
                    .bind(b.width_secs)
                    .fetch_all(&self.pool)
                    .await?;
                rows.iter().map(|r| bucket_row(r, b.width_secs)).collect()
            }

            async fn latest_readings(
                &self,
                path: &str,
                after: Option<&str>,
                limit: i64,
            ) -> Result<Vec<(String, String, Option<(tm::RecordedReading, i64)>)>> {
                let sql = format!(
                    "SELECT u.id AS unit_id, u.facility_id AS unit_facility_id, {READING_COLS}, dv.expected_interval_secs \
                     FROM storage_units u JOIN facilities f ON f.id = u.facility_id {} \
                     LEFT JOIN devices dv ON dv.id = r.device_id \
                     WHERE f.path >= $1 AND f.path < $2 AND ($3 IS NULL OR u.id > $3) \
                     AND EXISTS (SELECT 1 FROM device_probes p JOIN devices pd ON pd.id = p.device_id \
                     WHERE p.storage_unit_id = u.id AND pd.active) \
                     ORDER BY u.id LIMIT $4",
                    <$Store>::LATEST_READING_JOIN
                );
                let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
                    .bind(path)
                    .bind($crate::store::path_upper(path))
                    .bind(after)
                    .bind(limit)
                    .fetch_all(&self.pool)
                    .await?;
                rows.iter()
                    .map(|r| {
                        let device: Option<String> = r.try_get("device_id")?;
                        let latest = match device {
                            Some(_) => Some((recorded_reading(r)?, r.try_get::<Option<i64>, _>("expected_interval_secs")?.unwrap_or(0))),
                            None => None,
                        };
                        Ok((r.try_get("unit_id")?, r.try_get("unit_facility_id")?, latest))
                    })
                    .collect()
            }

            async fn store_readings(
                &self,
                device_id: &str,
                key_version: i32,
                readings: &[tm::StoredReading],
                rejects: &[(i64, &'static str)],
                now: chrono::DateTime<chrono::Utc>,
            ) -> Result<Option<(i64, std::collections::HashSet<i64>)>> {
                let mut tx = self.begin_write().await?;
                // Lock the device row before anything else: it serializes batches (and replicas)
                // advancing one device's ack, and taking it first avoids the deadlock of two
                // transactions upgrading the key-share locks their reading inserts took on it.
                let sql = format!("SELECT last_seq, key_version FROM devices WHERE id = $1{}", <$Store>::LOCK);
                let row = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(device_id).fetch_one(&mut *tx).await?;
                let last: i64 = row.try_get("last_seq")?;
                // A key rotation (maybe with a sequence reset) committed after the batch was
                // checked: its signature and seq offset are stale.
                if row.try_get::<i32, _>("key_version")? != key_version {
                    return Ok(None);
                }
                let mut inserted = std::collections::HashSet::new();
                // Seqs up to the ack are committed already (as readings or rejects), even if
                // retention has deleted them since. Where the table's key also holds the time
                // (PostgreSQL partitions), a re-sent seq with another time would not conflict:
                // drop seqs already stored, under the lock.
                let mut once = std::collections::HashSet::new();
                let mut fresh: Vec<&tm::StoredReading> =
                    readings.iter().filter(|r| r.seq > last && once.insert(r.seq)).collect();
                if <$Store>::SEQ_KEY_HOLDS_TIME && !fresh.is_empty() {
                    let mut stored = std::collections::HashSet::new();
                    for chunk in fresh.clone().chunks(READING_CHUNK) {
                        let mut q = sqlx::QueryBuilder::<$Db>::new("SELECT seq FROM readings WHERE device_id = ");
                        q.push_bind(device_id.to_owned()).push(" AND seq IN (");
                        let mut list = q.separated(", ");
                        for r in chunk {
                            list.push_bind(r.seq);
                        }
                        list.push_unseparated(")");
                        for row in q.build().fetch_all(&mut *tx).await? {
                            stored.insert(row.try_get::<i64, _>("seq")?);
                        }
                    }
                    fresh.retain(|r| !stored.contains(&r.seq));
                }
                // One multi-row statement per chunk: a logger's backlog of thousands of readings
                // costs a few round trips, not one each. RETURNING names the rows that were new.
                for chunk in fresh.chunks(READING_CHUNK) {
                    let mut q = sqlx::QueryBuilder::<$Db>::new("");
                    push_readings_insert(&mut q, chunk.iter().map(|r| (device_id, *r)), now);
                    q.push(" ON CONFLICT DO NOTHING RETURNING seq");
                    for row in q.build().fetch_all(&mut *tx).await? {
                        inserted.insert(row.try_get::<i64, _>("seq")?);
                    }
                }
                // Hourly rollups of the new readings, in the same transaction as the readings.
                upsert_rollups(&mut tx, fresh.iter().copied().filter(|r| inserted.contains(&r.seq))).await?;
                for chunk in rejects.chunks(READING_CHUNK) {
                    let mut q = sqlx::QueryBuilder::<$Db>::new("INSERT INTO reading_rejects (device_id, seq, reason, received_at) ");
                    q.push_values(chunk, |mut b, (seq, reason)| {
                        b.push_bind(device_id.to_owned()).push_bind(*seq).push_bind(*reason).push_bind(now);
                    });
                    q.push(" ON CONFLICT DO NOTHING");
                    q.build().execute(&mut *tx).await?;
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
                // The unevaluated mark (migration 0015) moves in the readings' transaction.
                let earliest = fresh.iter().filter(|r| inserted.contains(&r.seq)).map(|r| r.time).min();
                let sql = format!(
                    "UPDATE devices SET last_seq = $1, last_seen_at = $2, \
                     unevaluated_from = CASE WHEN $4 THEN {least}(COALESCE(unevaluated_from, $5), $5) ELSE unevaluated_from END, \
                     unevaluated_gen = unevaluated_gen + CASE WHEN $4 THEN 1 ELSE 0 END, \
                     unevaluated_at = CASE WHEN $4 THEN $2 ELSE unevaluated_at END WHERE id = $3",
                    least = <$Store>::LEAST
                );
                sqlx::query(sqlx::AssertSqlSafe(sql))
                    .bind(acked)
                    .bind(now)
                    .bind(device_id)
                    .bind(earliest.is_some())
                    .bind(earliest.unwrap_or(now))
                    .execute(&mut *tx)
                    .await?;
                tx.commit().await?;
                Ok(Some((acked, inserted)))
            }

            async fn store_reading_groups(
                &self,
                groups: &[$crate::store::DeviceReadings],
                now: chrono::DateTime<chrono::Utc>,
            ) -> Result<Vec<$crate::store::GroupOutcome>> {
                use std::collections::{HashMap, HashSet};
                use $crate::store::GroupOutcome;
                /// Devices per statement: a few parameters each, far under both engines' limits.
                const DEVICE_CHUNK: usize = 1000;
                if groups.is_empty() {
                    return Ok(Vec::new());
                }
                let mut tx = self.begin_write().await?;
                // Every device row locked before anything is written, in id order: concurrent groups
                // sharing devices queue instead of deadlocking, and (as in store_readings) no
                // transaction upgrades the key-share locks its reading inserts took.
                let mut ids: Vec<&str> = groups.iter().map(|g| g.device_id.as_str()).collect();
                ids.sort_unstable();
                ids.dedup();
                let mut current: HashMap<String, (i64, i32, chrono::DateTime<chrono::Utc>)> = HashMap::new();
                for chunk in ids.chunks(DEVICE_CHUNK) {
                    let mut q = sqlx::QueryBuilder::<$Db>::new("SELECT id, last_seq, key_version, updated_at FROM devices WHERE id IN (");
                    let mut list = q.separated(", ");
                    for id in chunk {
                        list.push_bind(id.to_string());
                    }
                    list.push_unseparated(") ORDER BY id");
                    q.push(<$Store>::LOCK);
                    for row in q.build().fetch_all(&mut *tx).await? {
                        current.insert(row.try_get("id")?, (row.try_get("last_seq")?, row.try_get("key_version")?, row.try_get("updated_at")?));
                    }
                }
                // Per share: None when stale, else (last acked seq, readings above it, one per seq).
                let mut live: Vec<Option<(i64, Vec<&tm::StoredReading>)>> = Vec::with_capacity(groups.len());
                for g in groups {
                    live.push(match current.get(&g.device_id) {
                        Some((last, kv, updated)) if *kv == g.key_version && *updated == g.updated_at => {
                            let mut once = HashSet::new();
                            let fresh = g.readings.iter().filter(|r| r.seq > *last && once.insert(r.seq)).collect();
                            Some((*last, fresh))
                        }
                        // Rotated, updated or deactivated since the batches were checked.
                        _ => None,
                    });
                }
                // What is committed above each device's ack already, readings and rejects, in one
                // query: it drops re-sent seqs (where the key also holds the time, a re-sent seq with
                // another time would not conflict) and lets the ack move past them. Bounded a
                // little past the batch, as the ack only moves through contiguous seqs.
                let mut stored: HashMap<&str, HashSet<i64>> = HashMap::new();
                let mut above: HashMap<&str, Vec<i64>> = HashMap::new();
                let writing: Vec<(&$crate::store::DeviceReadings, i64, i64)> = groups
                    .iter()
                    .zip(&live)
                    .filter_map(|(g, l)| {
                        let (last, fresh) = l.as_ref()?;
                        let top = fresh.iter().map(|r| r.seq).chain(g.rejects.iter().map(|r| r.0)).max()?;
                        (top > *last).then(|| (g, *last, top.max(last.saturating_add(100_000))))
                    })
                    .collect();
                for chunk in writing.chunks(DEVICE_CHUNK) {
                    let mut q = sqlx::QueryBuilder::<$Db>::new("");
                    for (i, table) in ["readings", "reading_rejects"].into_iter().enumerate() {
                        if i > 0 {
                            q.push(" UNION ALL ");
                        }
                        q.push(format!("SELECT device_id, seq, {i} AS rejected FROM {table} WHERE "));
                        for (j, (g, last, hi)) in chunk.iter().enumerate() {
                            q.push(if j == 0 { "(device_id = " } else { " OR (device_id = " });
                            q.push_bind(g.device_id.clone()).push(" AND seq > ").push_bind(*last).push(" AND seq <= ").push_bind(*hi).push(")");
                        }
                    }
                    for row in q.build().fetch_all(&mut *tx).await? {
                        let id: String = row.try_get("device_id")?;
                        let Some((g, ..)) = chunk.iter().find(|(g, ..)| g.device_id == id) else { continue };
                        let seq: i64 = row.try_get("seq")?;
                        if row.try_get::<i32, _>("rejected")? == 0 {
                            stored.entry(g.device_id.as_str()).or_default().insert(seq);
                        }
                        above.entry(g.device_id.as_str()).or_default().push(seq);
                    }
                }
                // All the group's new readings in multi-row statements; RETURNING names the new rows.
                let rows: Vec<(&str, &tm::StoredReading)> = groups
                    .iter()
                    .zip(&live)
                    .filter_map(|(g, l)| l.as_ref().map(|(_, fresh)| (g, fresh)))
                    .flat_map(|(g, fresh)| {
                        let known = stored.get(g.device_id.as_str());
                        fresh.iter().filter(move |r| known.is_none_or(|k| !k.contains(&r.seq))).map(move |r| (g.device_id.as_str(), *r))
                    })
                    .collect();
                let mut inserted: HashMap<String, HashSet<i64>> = HashMap::new();
                let mut new_rows: Vec<&tm::StoredReading> = Vec::new();
                // Per device, the earliest new reading: its unevaluated mark (migration 0015).
                let mut earliest: HashMap<String, chrono::DateTime<chrono::Utc>> = HashMap::new();
                for chunk in rows.chunks(READING_CHUNK) {
                    let mut q = sqlx::QueryBuilder::<$Db>::new("");
                    push_readings_insert(&mut q, chunk.iter().copied(), now);
                    q.push(" ON CONFLICT DO NOTHING RETURNING device_id, seq");
                    let mut in_chunk: HashSet<(String, i64)> = HashSet::new();
                    for row in q.build().fetch_all(&mut *tx).await? {
                        in_chunk.insert((row.try_get("device_id")?, row.try_get("seq")?));
                    }
                    for (device_id, r) in chunk {
                        if in_chunk.contains(&(device_id.to_string(), r.seq)) {
                            inserted.entry(device_id.to_string()).or_default().insert(r.seq);
                            new_rows.push(r);
                            let e = earliest.entry(device_id.to_string()).or_insert(r.time);
                            *e = (*e).min(r.time);
                        }
                    }
                }
                // Hourly rollups of the new readings, in the same transaction as the readings.
                upsert_rollups(&mut tx, new_rows.iter().copied()).await?;
                let rejects: Vec<(&str, i64, &'static str)> = groups
                    .iter()
                    .zip(&live)
                    .filter(|(_, l)| l.is_some())
                    .flat_map(|(g, _)| g.rejects.iter().map(move |(seq, reason)| (g.device_id.as_str(), *seq, *reason)))
                    .collect();
                for chunk in rejects.chunks(READING_CHUNK) {
                    let mut q = sqlx::QueryBuilder::<$Db>::new("INSERT INTO reading_rejects (device_id, seq, reason, received_at) ");
                    q.push_values(chunk, |mut b, (device_id, seq, reason)| {
                        b.push_bind(device_id.to_string()).push_bind(*seq).push_bind(*reason).push_bind(now);
                    });
                    q.push(" ON CONFLICT DO NOTHING");
                    q.build().execute(&mut *tx).await?;
                }
                // Each device's ack: what was committed above it before, plus this group's rows.
                let mut out = Vec::with_capacity(groups.len());
                let mut acks: Vec<(&str, i64)> = Vec::new();
                for (g, l) in groups.iter().zip(&live) {
                    let Some((last, _)) = l else {
                        out.push(GroupOutcome::Stale);
                        continue;
                    };
                    let new = inserted.remove(&g.device_id).unwrap_or_default();
                    let mut seqs = above.remove(g.device_id.as_str()).unwrap_or_default();
                    seqs.extend(new.iter().copied());
                    seqs.extend(g.rejects.iter().map(|r| r.0).filter(|s| s > last));
                    seqs.sort_unstable();
                    seqs.dedup();
                    let acked = tm::advance_ack(*last, &seqs);
                    acks.push((g.device_id.as_str(), acked));
                    out.push(GroupOutcome::Stored { acked, inserted: new });
                }
                for chunk in acks.chunks(DEVICE_CHUNK) {
                    let mut q = sqlx::QueryBuilder::<$Db>::new("UPDATE devices SET last_seq = CASE id");
                    for (id, acked) in chunk {
                        q.push(" WHEN ").push_bind(id.to_string()).push(" THEN ").push_bind(*acked);
                    }
                    q.push(" ELSE last_seq END, last_seen_at = ").push_bind(now);
                    let marked: Vec<(&str, chrono::DateTime<chrono::Utc>)> =
                        chunk.iter().filter_map(|(id, _)| earliest.get(*id).map(|t| (*id, *t))).collect();
                    if !marked.is_empty() {
                        q.push(", unevaluated_from = CASE id");
                        for (id, t) in &marked {
                            q.push(" WHEN ").push_bind(id.to_string()).push(" THEN ").push(<$Store>::LEAST);
                            q.push("(COALESCE(unevaluated_from, ").push_bind(*t).push("), ").push_bind(*t).push(")");
                        }
                        q.push(" ELSE unevaluated_from END, unevaluated_gen = unevaluated_gen + CASE WHEN id IN (");
                        let mut list = q.separated(", ");
                        for (id, _) in &marked {
                            list.push_bind(id.to_string());
                        }
                        q.push(") THEN 1 ELSE 0 END, unevaluated_at = CASE WHEN id IN (");
                        let mut list = q.separated(", ");
                        for (id, _) in &marked {
                            list.push_bind(id.to_string());
                        }
                        q.push(") THEN ").push_bind(now).push(" ELSE unevaluated_at END");
                    }
                    q.push(" WHERE id IN (");
                    let mut list = q.separated(", ");
                    for (id, _) in chunk {
                        list.push_bind(id.to_string());
                    }
                    list.push_unseparated(")");
                    q.build().execute(&mut *tx).await?;
                }
                tx.commit().await?;
                Ok(out)
            }

            async fn lock_devices_evaluation(&self, device_ids: &[String]) -> Result<Box<dyn std::any::Any + Send>> {
                self.evaluations_lock(device_ids).await
            }

            async fn alarm_states_of(
                &self,
                keys: &[(String, u32)],
            ) -> Result<std::collections::HashMap<(String, u32), (Vec<u8>, Option<chrono::DateTime<chrono::Utc>>)>> {
                let mut out = std::collections::HashMap::new();
                let mut ids: Vec<&str> = keys.iter().map(|k| k.0.as_str()).collect();
                ids.sort_unstable();
                ids.dedup();
                // By device (the key's first column), then only the probes asked for are kept.
                for chunk in ids.chunks(1000) {
                    let mut q = sqlx::QueryBuilder::<$Db>::new("SELECT device_id, probe, state, evaluated_to FROM probe_alarm_state WHERE device_id IN (");
                    let mut list = q.separated(", ");
                    for id in chunk {
                        list.push_bind(id.to_string());
                    }
                    list.push_unseparated(")");
                    for r in q.build().fetch_all(&self.pool).await? {
                        let probe: i32 = r.try_get("probe")?;
                        let key = (r.try_get::<String, _>("device_id")?, u32::try_from(probe).unwrap_or(0));
                        if keys.contains(&key) {
                            out.insert(key, (r.try_get("state")?, r.try_get("evaluated_to")?));
                        }
                    }
                }
                Ok(out)
            }

            async fn forget_alarm_states(&self, keys: &[(String, u32)]) -> Result<()> {
                if keys.is_empty() {
                    return Ok(());
                }
                // Committed before the alerts are written (see App::evaluate_devices), through
                // the write transaction like the save. Without waiting for the flush: the alerts'
                // own commits flush it first, and if the database loses it, it lost them too.
                let mut tx = self.begin_relaxed_write().await?;
                for chunk in keys.chunks(500) {
                    let mut q = sqlx::QueryBuilder::<$Db>::new("DELETE FROM probe_alarm_state WHERE ");
                    for (i, (device_id, probe)) in chunk.iter().enumerate() {
                        q.push(if i == 0 { "(device_id = " } else { " OR (device_id = " });
                        q.push_bind(device_id.clone()).push(" AND probe = ").push_bind(i32::try_from(*probe).unwrap_or(i32::MAX)).push(")");
                    }
                    q.build().execute(&mut *tx).await?;
                }
                tx.commit().await?;
                Ok(())
            }

            async fn save_alarm_states(
                &self,
                states: &[(String, u32, Vec<u8>, Option<chrono::DateTime<chrono::Utc>>)],
            ) -> Result<()> {
                if states.is_empty() {
                    return Ok(());
                }
                // Through the write transaction: on SQLite that is the single writer connection,
                // so the save queues behind ingest instead of sleeping in the busy handler. A
                // save the database loses leaves the state it held before: from there the rules
                // reach the same alerts again (or replay from the start, when the probe's state
                // was forgotten before its alerts were written), so no flush is waited for.
                let mut tx = self.begin_relaxed_write().await?;
                for chunk in states.chunks(1000) {
                    let mut q = sqlx::QueryBuilder::<$Db>::new("INSERT INTO probe_alarm_state (device_id, probe, state, evaluated_to) ");
                    q.push_values(chunk, |mut b, (device_id, probe, state, to)| {
                        b.push_bind(device_id.clone()).push_bind(i32::try_from(*probe).unwrap_or(i32::MAX)).push_bind(state.clone()).push_bind(*to);
                    });
                    q.push(" ON CONFLICT (device_id, probe) DO UPDATE SET state = excluded.state, evaluated_to = excluded.evaluated_to");
                    q.build().execute(&mut *tx).await?;
                }
                tx.commit().await?;
                Ok(())
            }

            async fn probes_readings(
                &self,
                probes: &[($crate::store::ProbeKey, Option<chrono::DateTime<chrono::Utc>>)],
            ) -> Result<std::collections::HashMap<$crate::store::ProbeKey, Vec<tm::StoredReading>>> {
                let mut out: std::collections::HashMap<$crate::store::ProbeKey, Vec<tm::StoredReading>> = std::collections::HashMap::new();
                // One range of (device_id, time) per probe, OR-ed: each term still walks the
                // readings_device_time index (no `$n IS NULL OR` that would defeat it).
                for chunk in probes.chunks(500) {
                    let mut q = sqlx::QueryBuilder::<$Db>::new(
                        "SELECT device_id, seq, probe, storage_unit_id, time, temp_c, power_on, battery_pct, door_open, \
                         sensor_fault, verified FROM readings WHERE ",
                    );
                    for (i, (k, after)) in chunk.iter().enumerate() {
                        q.push(if i == 0 { "(device_id = " } else { " OR (device_id = " });
                        q.push_bind(k.device_id.clone())
                            .push(" AND probe = ")
                            .push_bind(i32::try_from(k.probe).unwrap_or(i32::MAX))
                            .push(" AND storage_unit_id = ")
                            .push_bind(k.storage_unit_id.clone());
                        if let Some(t) = after {
                            q.push(" AND time > ").push_bind(*t);
                        }
                        q.push(")");
                    }
                    q.push(" ORDER BY device_id, probe, time, seq");
                    for r in q.build().fetch_all(&self.pool).await? {
                        let reading = stored_reading(&r)?;
                        let key = $crate::store::ProbeKey {
                            device_id: r.try_get("device_id")?,
                            probe: reading.probe,
                            storage_unit_id: reading.storage_unit_id.clone(),
                        };
                        out.entry(key).or_default().push(reading);
                    }
                }
                Ok(out)
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

            async fn maintain_readings(
                &self,
                now: chrono::DateTime<chrono::Utc>,
                keep_after: Option<chrono::DateTime<chrono::Utc>>,
            ) -> Result<u64> {
                self.maintain_partitions(now, keep_after).await?;
                let Some(cutoff) = keep_after else { return Ok(0) };
                let n = sqlx::query("DELETE FROM readings WHERE time < $1").bind(cutoff).execute(&self.pool).await?.rows_affected();
                Ok(n)
            }

            async fn alarm_states(&self) -> Result<Vec<(String, u32, Vec<u8>, Option<chrono::DateTime<chrono::Utc>>)>> {
                let rows = sqlx::query("SELECT device_id, probe, state, evaluated_to FROM probe_alarm_state ORDER BY device_id, probe")
                    .fetch_all(&self.pool)
                    .await?;
                rows.iter()
                    .map(|r| {
                        let probe: i32 = r.try_get("probe")?;
                        Ok((r.try_get("device_id")?, u32::try_from(probe).unwrap_or(0), r.try_get("state")?, r.try_get("evaluated_to")?))
                    })
                    .collect()
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
                storage_unit_id: &str,
                after: Option<chrono::DateTime<chrono::Utc>>,
            ) -> Result<Vec<tm::StoredReading>> {
                // Two texts rather than `($4 IS NULL OR time > $4)`: with the OR the engines cannot
                // use the (device_id, time) index, and every batch would read the whole history.
                const COLS: &str = "SELECT seq, probe, storage_unit_id, time, temp_c, power_on, battery_pct, door_open, \
                     sensor_fault, verified FROM readings WHERE device_id = $1 AND probe = $2 AND storage_unit_id = $3";
                let sql = match after {
                    Some(_) => format!("{COLS} AND time > $4 ORDER BY time, seq"),
                    None => format!("{COLS} ORDER BY time, seq"),
                };
                let mut q = sqlx::query(sqlx::AssertSqlSafe(sql))
                    .bind(device_id)
                    .bind(i32::try_from(probe).unwrap_or(i32::MAX))
                    .bind(storage_unit_id);
                if let Some(t) = after {
                    q = q.bind(t);
                }
                let rows = q.fetch_all(&self.pool).await?;
                rows.iter().map(stored_reading).collect()
            }

            async fn unevaluated_marks(
                &self,
                device_ids: &[String],
            ) -> Result<std::collections::HashMap<String, (chrono::DateTime<chrono::Utc>, i64)>> {
                let mut out = std::collections::HashMap::new();
                for chunk in device_ids.chunks(1000) {
                    let mut q = sqlx::QueryBuilder::<$Db>::new(
                        "SELECT id, unevaluated_from, unevaluated_gen FROM devices WHERE unevaluated_from IS NOT NULL AND id IN (",
                    );
                    let mut list = q.separated(", ");
                    for id in chunk {
                        list.push_bind(id.clone());
                    }
                    list.push_unseparated(")");
                    for r in q.build().fetch_all(&self.pool).await? {
                        out.insert(r.try_get("id")?, (r.try_get("unevaluated_from")?, r.try_get("unevaluated_gen")?));
                    }
                }
                Ok(out)
            }

            async fn clear_unevaluated_marks(&self, marks: &[(String, i64)]) -> Result<()> {
                for chunk in marks.chunks(500) {
                    let mut q = sqlx::QueryBuilder::<$Db>::new("UPDATE devices SET unevaluated_from = NULL WHERE ");
                    for (i, (id, generation)) in chunk.iter().enumerate() {
                        q.push(if i == 0 { "(id = " } else { " OR (id = " });
                        q.push_bind(id.clone()).push(" AND unevaluated_gen = ").push_bind(*generation).push(")");
                    }
                    // A mark the database loses costs one evaluation more, by the sweep.
                    let mut tx = self.begin_relaxed_write().await?;
                    q.build().execute(&mut *tx).await?;
                    tx.commit().await?;
                }
                Ok(())
            }

            async fn stale_unevaluated(&self, before: chrono::DateTime<chrono::Utc>, limit: i64) -> Result<Vec<String>> {
                Ok(sqlx::query_scalar(
                    "SELECT id FROM devices WHERE unevaluated_from IS NOT NULL AND unevaluated_at < $1 ORDER BY unevaluated_at LIMIT $2",
                )
                .bind(before)
                .bind(limit)
                .fetch_all(&self.pool)
                .await?)
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
