//! Alerts and their event log, shared by both engines like `common.rs`. Event ids must become
//! visible in id order (WatchAlerts resumes from "event_id > cursor"), so event writers take the
//! engine's `EVENT_LOCK` first: on PostgreSQL an advisory lock held to commit, on SQLite nothing
//! (writers are already serialized).

pub(crate) const ALERT_COLS: &str = "a.id, a.kind, a.severity, a.state, a.facility_id, a.storage_unit_id, a.lot_id, \
     a.device_id, a.product_id, a.shipment_id, a.probe, a.episode_start, a.start_time, a.end_time, a.opened_at, a.updated_at, \
     a.acknowledgement, a.resolution, a.details, a.condition_active";

macro_rules! sql_alert_store {
    ($Store:ty, $Db:ty, $Row:ty) => {
        use $crate::domain::alert::{self as al, Alert, AlertEvent};
        use $crate::store::alert_sql::ALERT_COLS;

        fn alert_row(r: &$Row) -> Result<Alert> {
            let ack: Option<String> = r.try_get("acknowledgement")?;
            let res: Option<String> = r.try_get("resolution")?;
            let details: String = r.try_get("details")?;
            let probe: i32 = r.try_get("probe")?;
            Ok(Alert {
                id: r.try_get("id")?,
                kind: decode_enum(r.try_get("kind")?, "alert kind", al::AlertKind::from_i32)?,
                severity: decode_enum(r.try_get("severity")?, "severity", al::Severity::from_i32)?,
                state: decode_enum(r.try_get("state")?, "alert state", al::AlertState::from_i32)?,
                subject: al::Subject {
                    facility_id: r.try_get("facility_id")?,
                    storage_unit_id: r.try_get("storage_unit_id")?,
                    lot_id: r.try_get("lot_id")?,
                    device_id: r.try_get("device_id")?,
                    product_id: r.try_get("product_id")?,
                    shipment_id: r.try_get("shipment_id")?,
                    probe: u32::try_from(probe).unwrap_or(0),
                    episode_start_ms: r.try_get("episode_start")?,
                },
                start: r.try_get("start_time")?,
                end: r.try_get("end_time")?,
                opened_at: r.try_get("opened_at")?,
                updated_at: r.try_get("updated_at")?,
                acknowledgement: ack.map(|s| serde_json::from_str(&s)).transpose()?,
                resolution: res.map(|s| serde_json::from_str(&s)).transpose()?,
                details: serde_json::from_str(&details)?,
                condition_active: r.try_get("condition_active")?,
            })
        }

        async fn write_alert(tx: &mut Tx<'_>, a: &Alert, insert: bool) -> Result<()> {
            let sql = if insert {
                "INSERT INTO alerts (kind, severity, state, subject_key, facility_id, storage_unit_id, lot_id, device_id, \
                 product_id, shipment_id, probe, start_time, end_time, opened_at, updated_at, acknowledgement, resolution, \
                 details, condition_active, id, episode_start) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, \
                 $16, $17, $18, $19, $20, $21)"
            } else {
                "UPDATE alerts SET kind = $1, severity = $2, state = $3, subject_key = $4, facility_id = $5, \
                 storage_unit_id = $6, lot_id = $7, device_id = $8, product_id = $9, shipment_id = $10, probe = $11, \
                 start_time = $12, end_time = $13, opened_at = $14, updated_at = $15, acknowledgement = $16, \
                 resolution = $17, details = $18, condition_active = $19, episode_start = $21 WHERE id = $20"
            };
            let s = &a.subject;
            sqlx::query(sql)
                .bind(a.kind.as_i32())
                .bind(a.severity.as_i32())
                .bind(a.state.as_i32())
                .bind(s.key(a.kind))
                .bind(&s.facility_id)
                .bind(&s.storage_unit_id)
                .bind(&s.lot_id)
                .bind(&s.device_id)
                .bind(&s.product_id)
                .bind(&s.shipment_id)
                .bind(i32::try_from(s.probe).unwrap_or(i32::MAX))
                .bind(a.start)
                .bind(a.end)
                .bind(a.opened_at)
                .bind(a.updated_at)
                .bind(a.acknowledgement.as_ref().map(serde_json::to_string).transpose()?)
                .bind(a.resolution.as_ref().map(serde_json::to_string).transpose()?)
                .bind(serde_json::to_string(&a.details)?)
                .bind(a.condition_active)
                .bind(&a.id)
                .bind(s.episode_start_ms)
                .execute(&mut **tx)
                .await
                .map_err($crate::store::map_unique)?;
            Ok(())
        }

        async fn write_event(tx: &mut Tx<'_>, a: &Alert, kind: al::EventType) -> Result<AlertEvent> {
            sqlx::query(sqlx::AssertSqlSafe(<$Store>::EVENT_LOCK)).execute(&mut **tx).await?;
            let path: String = sqlx::query_scalar("SELECT path FROM facilities WHERE id = $1")
                .bind(&a.subject.facility_id)
                .fetch_one(&mut **tx)
                .await?;
            let now = d::now();
            let event_id: i64 = sqlx::query_scalar(
                "INSERT INTO alert_events (alert_id, type, time, snapshot, facility_path, kind, severity) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING event_id",
            )
            .bind(&a.id)
            .bind(kind.as_i32())
            .bind(now)
            .bind(serde_json::to_string(a)?)
            .bind(path)
            .bind(a.kind.as_i32())
            .bind(a.severity.as_i32())
            .fetch_one(&mut **tx)
            .await?;
            Ok(AlertEvent { event_id, kind, alert: a.clone(), time: now })
        }

        async fn unresolved_by_key(tx: &mut Tx<'_>, key: &str) -> Result<Option<Alert>> {
            let sql = format!("SELECT {ALERT_COLS} FROM alerts a WHERE a.subject_key = $1 AND a.state <> 3{}", <$Store>::LOCK);
            let row = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(key).fetch_optional(&mut **tx).await?;
            row.as_ref().map(alert_row).transpose()
        }

        async fn latest_resolved_active(tx: &mut Tx<'_>, key: &str) -> Result<Option<Alert>> {
            let sql = format!(
                "SELECT {ALERT_COLS} FROM alerts a WHERE a.subject_key = $1 AND a.state = 3 AND a.condition_active \
                 ORDER BY a.opened_at DESC LIMIT 1"
            );
            let row = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(key).fetch_optional(&mut **tx).await?;
            row.as_ref().map(alert_row).transpose()
        }

        #[async_trait::async_trait]
        impl $crate::store::AlertStore for $Store {
            async fn raise(&self, c: &al::Condition) -> Result<Option<AlertEvent>> {
                let key = c.subject.key(c.kind);
                let mut tx = self.begin_write().await?;
                // A cold-chain episode first seen from part of its readings (late data arriving
                // out of order) may turn out to start earlier: the alert whose start lies inside
                // this episode is the same episode, so it moves to the true start.
                let s = &c.subject;
                if s.episode_start_ms > 0 {
                    let sql = format!(
                        "SELECT {ALERT_COLS} FROM alerts a WHERE a.kind = $1 AND a.device_id = $2 AND a.probe = $3 \
                         AND a.storage_unit_id = $4 AND a.episode_start > $5 AND a.episode_start <= $6 \
                         ORDER BY a.episode_start LIMIT 1{}",
                        <$Store>::LOCK
                    );
                    let row = sqlx::query(sqlx::AssertSqlSafe(sql))
                        .bind(c.kind.as_i32())
                        .bind(&s.device_id)
                        .bind(i32::try_from(s.probe).unwrap_or(i32::MAX))
                        .bind(&s.storage_unit_id)
                        .bind(s.episode_start_ms)
                        .bind(c.through.timestamp_millis())
                        .fetch_optional(&mut *tx)
                        .await?;
                    // Never onto a key that already has an unresolved alert (the unique index would
                    // refuse it, and evaluation would fail the same way on every replay).
                    if let Some(r) = row
                        && unresolved_by_key(&mut tx, &key).await?.is_none()
                    {
                        let mut partial = alert_row(&r)?;
                        partial.subject.episode_start_ms = s.episode_start_ms;
                        partial.start = c.start;
                        partial.updated_at = d::now();
                        write_alert(&mut tx, &partial, false).await?;
                        write_event(&mut tx, &partial, al::EventType::Updated).await?;
                    }
                }
                let open = unresolved_by_key(&mut tx, &key).await?;
                // A cold-chain episode is one alert for good: once resolved, replaying its readings
                // must not open it again. (Stock conditions recur under one key, so for them only a
                // still-active resolved alert holds a new one back.)
                let handled = if s.episode_start_ms > 0 {
                    let n: i64 = sqlx::query_scalar("SELECT CAST(COUNT(*) AS BIGINT) FROM alerts WHERE subject_key = $1 AND state = 3")
                        .bind(&key)
                        .fetch_one(&mut *tx)
                        .await?;
                    n > 0
                } else {
                    false
                };
                let suppressed = open.is_none() && (handled || latest_resolved_active(&mut tx, &key).await?.is_some());
                let ev = match al::raise(open, suppressed, c, d::now(), d::new_id) {
                    al::Change::Nothing => None,
                    al::Change::Open(a) => {
                        write_alert(&mut tx, &a, true).await?;
                        Some(write_event(&mut tx, &a, al::EventType::Opened).await?)
                    }
                    al::Change::Update(a, kind) => {
                        write_alert(&mut tx, &a, false).await?;
                        Some(write_event(&mut tx, &a, kind).await?)
                    }
                };
                tx.commit().await?;
                Ok(ev)
            }

            async fn clear(&self, kind: al::AlertKind, subject: &al::Subject, end: chrono::DateTime<chrono::Utc>) -> Result<Option<AlertEvent>> {
                let key = subject.key(kind);
                let mut tx = self.begin_write().await?;
                let mut ev = None;
                if let Some(a) = unresolved_by_key(&mut tx, &key).await? {
                    if let Some(a) = al::clear(a, end, d::now()) {
                        write_alert(&mut tx, &a, false).await?;
                        ev = Some(write_event(&mut tx, &a, al::EventType::ConditionCleared).await?);
                    }
                } else if let Some(a) = latest_resolved_active(&mut tx, &key).await? {
                    // Resolved while active: the condition has now ended, so it may raise anew later.
                    if let Some(a) = al::clear(a, end, d::now()) {
                        write_alert(&mut tx, &a, false).await?;
                    }
                }
                tx.commit().await?;
                Ok(ev)
            }

            async fn probe_alerts(&self, device_id: &str, probe: u32, storage_unit_id: &str, since_ms: i64) -> Result<Vec<Alert>> {
                let sql = format!(
                    "SELECT {ALERT_COLS} FROM alerts a WHERE a.device_id = $1 AND a.probe = $2 AND a.storage_unit_id = $3 \
                     AND a.episode_start >= $4 ORDER BY a.episode_start"
                );
                let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
                    .bind(device_id)
                    .bind(i32::try_from(probe).unwrap_or(i32::MAX))
                    .bind(storage_unit_id)
                    .bind(since_ms)
                    .fetch_all(&self.pool)
                    .await?;
                rows.iter().map(alert_row).collect()
            }

            async fn supersede(&self, id: &str, handling: &al::Handling) -> Result<Option<AlertEvent>> {
                let mut tx = self.begin_write().await?;
                let sql = format!("SELECT {ALERT_COLS} FROM alerts a WHERE a.id = $1{}", <$Store>::LOCK);
                let Some(row) = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(id).fetch_optional(&mut *tx).await? else {
                    return Ok(None);
                };
                let mut a = alert_row(&row)?;
                if a.resolution.as_ref().is_some_and(|r| r.resolution == al::Resolution::Superseded.as_i32()) {
                    return Ok(None);
                }
                a.state = al::AlertState::Resolved;
                a.condition_active = false;
                a.resolution = Some(handling.clone());
                a.updated_at = handling.time;
                write_alert(&mut tx, &a, false).await?;
                let ev = write_event(&mut tx, &a, al::EventType::Resolved).await?;
                tx.commit().await?;
                Ok(Some(ev))
            }

            async fn active_conditions(&self, kinds: &[i32]) -> Result<Vec<Alert>> {
                let kinds = kinds.iter().map(i32::to_string).collect::<Vec<_>>().join(",");
                let sql = format!(
                    "SELECT {ALERT_COLS} FROM alerts a WHERE a.condition_active \
                     AND (',' || $1 || ',') LIKE ('%,' || CAST(a.kind AS TEXT) || ',%')"
                );
                let rows = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(kinds).fetch_all(&self.pool).await?;
                rows.iter().map(alert_row).collect()
            }

            async fn get_alert(&self, id: &str) -> Result<Option<(Alert, String)>> {
                let sql = format!("SELECT {ALERT_COLS}, f.path FROM alerts a JOIN facilities f ON f.id = a.facility_id WHERE a.id = $1");
                match sqlx::query(sqlx::AssertSqlSafe(sql)).bind(id).fetch_optional(&self.pool).await? {
                    Some(r) => Ok(Some((alert_row(&r)?, r.try_get("path")?))),
                    None => Ok(None),
                }
            }

            async fn handle_alert(
                &self,
                idem: Option<&d::Idempotency>,
                updated: &Alert,
                from_states: &[al::AlertState],
                kind: al::EventType,
            ) -> Result<Alert> {
                let mut tx = self.begin_write().await?;
                let r: Result<Alert> = async {
                    // Re-read under the lock and apply only the handling: ingest may have changed the
                    // condition (cleared, escalated) since the caller read the alert.
                    let sql = format!("SELECT {ALERT_COLS} FROM alerts a WHERE a.id = $1{}", <$Store>::LOCK);
                    let Some(row) = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(&updated.id).fetch_optional(&mut *tx).await? else {
                        return Err(Error::not_found("ALERT_NOT_FOUND", "alert not found"));
                    };
                    let mut current = alert_row(&row)?;
                    if !from_states.contains(&current.state) {
                        return Err(Error::precondition("INVALID_STATE", format!("the alert is {:?}", current.state)));
                    }
                    current.state = updated.state;
                    current.acknowledgement.clone_from(&updated.acknowledgement);
                    current.resolution.clone_from(&updated.resolution);
                    current.updated_at = updated.updated_at;
                    write_alert(&mut tx, &current, false).await?;
                    write_event(&mut tx, &current, kind).await?;
                    Ok(current)
                }
                .await;
                self.idem_settle(tx, idem, r).await
            }

            async fn list_alerts(&self, scope_path: &str, f: &al::AlertFilter, page: &PageRequest) -> Result<Page<Alert>> {
                let kinds = f.kinds.iter().map(i32::to_string).collect::<Vec<_>>().join(",");
                let states = f.states.iter().map(i32::to_string).collect::<Vec<_>>().join(",");
                let sql = format!(
                    "SELECT {ALERT_COLS} FROM alerts a JOIN facilities f ON f.id = a.facility_id \
                     WHERE f.path >= $1 AND f.path < $2 AND ($3 IS NULL OR (f.path >= $3 AND f.path < $4)) \
                     AND ($5 IS NULL OR a.storage_unit_id = $5) \
                     AND ($6 = '' OR (',' || $6 || ',') LIKE ('%,' || CAST(a.kind AS TEXT) || ',%')) \
                     AND ($7 = '' OR (',' || $7 || ',') LIKE ('%,' || CAST(a.state AS TEXT) || ',%')) \
                     AND a.severity >= $8 AND ($9 IS NULL OR a.id < $9) \
                     AND ($11 IS NULL OR a.end_time IS NULL OR a.end_time >= $11) AND ($12 IS NULL OR a.start_time < $12) \
                     ORDER BY a.id DESC LIMIT $10"
                );
                let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
                    .bind(scope_path)
                    .bind($crate::store::path_upper(scope_path))
                    .bind(&f.ancestor_path)
                    .bind(f.ancestor_path.as_deref().map($crate::store::path_upper))
                    .bind(&f.storage_unit_id)
                    .bind(kinds)
                    .bind(states)
                    .bind(f.min_severity)
                    .bind(&page.after)
                    .bind(page.fetch_limit())
                    .bind(f.start)
                    .bind(f.end)
                    .fetch_all(&self.pool)
                    .await?;
                let items = rows.iter().map(alert_row).collect::<Result<Vec<_>>>()?;
                Ok(page.finish(items, |a| &a.id))
            }

            async fn event_bounds(&self) -> Result<(i64, i64)> {
                let r = sqlx::query("SELECT CAST(COALESCE(MIN(event_id), 0) AS BIGINT) AS lo, CAST(COALESCE(MAX(event_id), 0) AS BIGINT) AS hi FROM alert_events")
                    .fetch_one(&self.pool)
                    .await?;
                Ok((r.try_get("lo")?, r.try_get("hi")?))
            }

            async fn events_after(&self, scope_path: &str, f: &al::AlertFilter, after: i64, limit: i64) -> Result<Vec<AlertEvent>> {
                let kinds = f.kinds.iter().map(i32::to_string).collect::<Vec<_>>().join(",");
                let rows = sqlx::query(
                    "SELECT event_id, type, time, snapshot FROM alert_events WHERE event_id > $1 \
                     AND facility_path >= $2 AND facility_path < $3 AND ($4 IS NULL OR (facility_path >= $4 AND facility_path < $5)) \
                     AND ($6 = '' OR (',' || $6 || ',') LIKE ('%,' || CAST(kind AS TEXT) || ',%')) AND severity >= $7 \
                     ORDER BY event_id LIMIT $8",
                )
                .bind(after)
                .bind(scope_path)
                .bind($crate::store::path_upper(scope_path))
                .bind(&f.ancestor_path)
                .bind(f.ancestor_path.as_deref().map($crate::store::path_upper))
                .bind(kinds)
                .bind(f.min_severity)
                .bind(limit)
                .fetch_all(&self.pool)
                .await?;
                rows.iter()
                    .map(|r| {
                        let snapshot: String = r.try_get("snapshot")?;
                        Ok(AlertEvent {
                            event_id: r.try_get("event_id")?,
                            kind: decode_enum(r.try_get("type")?, "event type", al::EventType::from_i32)?,
                            alert: serde_json::from_str(&snapshot)?,
                            time: r.try_get("time")?,
                        })
                    })
                    .collect()
            }

            async fn prune_events(&self, before: chrono::DateTime<chrono::Utc>) -> Result<u64> {
                Ok(sqlx::query("DELETE FROM alert_events WHERE time < $1").bind(before).execute(&self.pool).await?.rows_affected())
            }
        }
    };
}
