//! Webhooks and their delivery queue, shared by both engines like `common.rs`.
//!
//! The fan-out follows the alert event log with one cursor (`webhook_fanout`, locked while it
//! advances, so replicas take turns) and writes one delivery row per matching (webhook, event).
//! Only the lowest pending event of a webhook is ever claimed, under a lease, so deliveries of
//! one webhook go out one at a time and in event order whichever replica sends them, and a
//! replica that dies mid-delivery only delays that delivery until its lease expires.

pub(crate) const WEBHOOK_COLS: &str = "w.id, w.scope_facility_id, w.url, w.kinds, w.min_severity, w.description, \
     w.created_by, w.created_at, w.last_success_at, w.last_failure_at, w.last_error, w.consecutive_failures";

/// Parses the stored comma-separated kind numbers.
pub(crate) fn decode_kinds(s: &str) -> crate::error::Result<Vec<i32>> {
    s.split(',')
        .filter(|k| !k.is_empty())
        .map(|k| {
            k.parse().map_err(|_| crate::error::Error::Internal(format!("stored webhook kinds {s:?} are corrupt")))
        })
        .collect()
}

macro_rules! sql_webhook_store {
    ($Store:ty, $Db:ty, $Row:ty) => {
        use $crate::domain::webhook::{self as wh, Webhook};
        use $crate::store::webhook_sql::{WEBHOOK_COLS, decode_kinds};

        fn webhook_row(r: &$Row) -> Result<Webhook> {
            let kinds: String = r.try_get("kinds")?;
            Ok(Webhook {
                id: r.try_get("id")?,
                scope_facility_id: r.try_get("scope_facility_id")?,
                url: r.try_get("url")?,
                kinds: decode_kinds(&kinds)?,
                min_severity: r.try_get("min_severity")?,
                description: r.try_get("description")?,
                created_by: r.try_get("created_by")?,
                created_at: r.try_get("created_at")?,
                last_success_at: r.try_get("last_success_at")?,
                last_failure_at: r.try_get("last_failure_at")?,
                last_error: r.try_get("last_error")?,
                consecutive_failures: r.try_get("consecutive_failures")?,
            })
        }

        #[async_trait::async_trait]
        impl $crate::store::WebhookStore for $Store {
            async fn insert_webhook(
                &self,
                idem: Option<&d::Idempotency>,
                w: &Webhook,
                scope_path: &str,
                secret: &wh::Secret,
                sealed_secret: Option<&str>,
            ) -> Result<d::token::WithSecret<Webhook>> {
                let mut tx = self.begin_write().await?;
                let r: Result<d::token::WithSecret<Webhook>> = async {
                    // Start at the fan-out cursor, holding it: a fan-out running meanwhile would not
                    // see this webhook yet and could pass events it must get.
                    let sql = format!("SELECT last_event_id FROM webhook_fanout WHERE id = 1{}", <$Store>::LOCK);
                    let after: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(sql)).fetch_one(&mut *tx).await?;
                    sqlx::query(
                        "INSERT INTO webhooks (id, scope_facility_id, scope_path, scope_upper, url, kinds, min_severity, \
                         description, secret, created_by, created_at, after_event_id) \
                         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
                    )
                    .bind(&w.id)
                    .bind(&w.scope_facility_id)
                    .bind(scope_path)
                    .bind($crate::store::path_upper(scope_path))
                    .bind(&w.url)
                    .bind(w.kinds.iter().map(i32::to_string).collect::<Vec<_>>().join(","))
                    .bind(w.min_severity)
                    .bind(&w.description)
                    .bind(secret.expose())
                    .bind(&w.created_by)
                    .bind(w.created_at)
                    .bind(after)
                    .execute(&mut *tx)
                    .await?;
                    Ok(d::token::WithSecret { value: w.clone(), sealed_secret: sealed_secret.map(str::to_owned) })
                }
                .await;
                self.idem_settle(tx, idem, r).await
            }

            async fn get_webhook(&self, id: &str) -> Result<Option<(Webhook, String)>> {
                let sql = format!("SELECT {WEBHOOK_COLS}, w.scope_path FROM webhooks w WHERE w.id = $1");
                match sqlx::query(sqlx::AssertSqlSafe(sql)).bind(id).fetch_optional(&self.pool).await? {
                    Some(r) => Ok(Some((webhook_row(&r)?, r.try_get("scope_path")?))),
                    None => Ok(None),
                }
            }

            async fn list_webhooks(&self, scope_path: &str, page: &PageRequest) -> Result<Page<Webhook>> {
                let sql = format!(
                    "SELECT {WEBHOOK_COLS} FROM webhooks w WHERE w.scope_path >= $1 AND w.scope_path < $2 \
                     AND ($3 IS NULL OR w.id > $3) ORDER BY w.id LIMIT $4"
                );
                let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
                    .bind(scope_path)
                    .bind($crate::store::path_upper(scope_path))
                    .bind(&page.after)
                    .bind(page.fetch_limit())
                    .fetch_all(&self.pool)
                    .await?;
                let items = rows.iter().map(webhook_row).collect::<Result<Vec<_>>>()?;
                Ok(page.finish(items, |w| &w.id))
            }

            async fn delete_webhook(&self, idem: Option<&d::Idempotency>, id: &str) -> Result<bool> {
                let mut tx = self.begin_write().await?;
                // Pending deliveries go with it (ON DELETE CASCADE). A webhook that was not there is
                // recorded as such (false), so a retry answers NOT_FOUND as the first call did.
                let r = sqlx::query("DELETE FROM webhooks WHERE id = $1").bind(id).execute(&mut *tx).await;
                let r = r.map(|done| done.rows_affected() > 0).map_err(Error::from);
                self.idem_settle(tx, idem, r).await
            }

            async fn fan_out_events(&self, limit: i64, now: chrono::DateTime<chrono::Utc>) -> Result<usize> {
                // A read first: most rounds find nothing new, and SQLite should not take its write
                // lock every second for nothing.
                let pending: Option<i64> = sqlx::query_scalar(
                    "SELECT e.event_id FROM alert_events e, webhook_fanout c WHERE c.id = 1 AND e.event_id > c.last_event_id LIMIT 1",
                )
                .fetch_optional(&self.pool)
                .await?;
                if pending.is_none() {
                    return Ok(0);
                }
                let mut tx = self.begin_write().await?;
                let sql = format!("SELECT last_event_id FROM webhook_fanout WHERE id = 1{}", <$Store>::LOCK);
                let cursor: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(sql)).fetch_one(&mut *tx).await?;
                let batch: Vec<i64> =
                    sqlx::query_scalar("SELECT event_id FROM alert_events WHERE event_id > $1 ORDER BY event_id LIMIT $2")
                        .bind(cursor)
                        .bind(limit)
                        .fetch_all(&mut *tx)
                        .await?;
                let Some(&hi) = batch.last() else { return Ok(0) };
                // Event ids become visible in id order (alert_sql's EVENT_LOCK), so nothing can
                // appear behind the cursor later.
                sqlx::query(
                    "INSERT INTO webhook_deliveries (webhook_id, event_id, attempts, next_attempt_at) \
                     SELECT w.id, e.event_id, 0, $3 FROM alert_events e JOIN webhooks w \
                     ON e.facility_path >= w.scope_path AND e.facility_path < w.scope_upper \
                     WHERE e.event_id > $1 AND e.event_id <= $2 AND e.event_id > w.after_event_id \
                     AND (w.kinds = '' OR (',' || w.kinds || ',') LIKE ('%,' || CAST(e.kind AS TEXT) || ',%')) \
                     AND e.severity >= w.min_severity \
                     ON CONFLICT DO NOTHING",
                )
                .bind(cursor)
                .bind(hi)
                .bind(now)
                .execute(&mut *tx)
                .await?;
                sqlx::query("UPDATE webhook_fanout SET last_event_id = $1 WHERE id = 1").bind(hi).execute(&mut *tx).await?;
                tx.commit().await?;
                Ok(batch.len())
            }

            async fn claim_deliveries(
                &self,
                now: chrono::DateTime<chrono::Utc>,
                lease_until: chrono::DateTime<chrono::Utc>,
                limit: i64,
            ) -> Result<Vec<wh::Delivery>> {
                let due: Option<i32> = sqlx::query_scalar(
                    "SELECT attempts FROM webhook_deliveries WHERE next_attempt_at <= $1 \
                     AND (lease_until IS NULL OR lease_until < $1) LIMIT 1",
                )
                .bind(now)
                .fetch_optional(&self.pool)
                .await?;
                if due.is_none() {
                    return Ok(Vec::new());
                }
                // The outer lease test is re-checked by PostgreSQL on a row another replica claimed
                // meanwhile, so only one of two racing claims gets it.
                let claimed = sqlx::query(
                    "UPDATE webhook_deliveries SET lease_until = $1 \
                     WHERE (lease_until IS NULL OR lease_until < $2) AND (webhook_id, event_id) IN ( \
                       SELECT d.webhook_id, d.event_id FROM webhook_deliveries d \
                       WHERE d.next_attempt_at <= $2 AND (d.lease_until IS NULL OR d.lease_until < $2) \
                       AND d.event_id = (SELECT MIN(h.event_id) FROM webhook_deliveries h WHERE h.webhook_id = d.webhook_id) \
                       ORDER BY d.next_attempt_at LIMIT $3) \
                     RETURNING webhook_id, event_id, attempts, first_failure_at",
                )
                .bind(lease_until)
                .bind(now)
                .bind(limit)
                .fetch_all(&self.pool)
                .await?;
                let mut out = Vec::with_capacity(claimed.len());
                for r in claimed {
                    let webhook_id: String = r.try_get("webhook_id")?;
                    let event_id: i64 = r.try_get("event_id")?;
                    let Some(target) = sqlx::query("SELECT url, secret FROM webhooks WHERE id = $1")
                        .bind(&webhook_id)
                        .fetch_optional(&self.pool)
                        .await?
                    else {
                        continue; // deleted meanwhile, its deliveries with it
                    };
                    let event = sqlx::query("SELECT event_id, type, time, snapshot FROM alert_events WHERE event_id = $1")
                        .bind(event_id)
                        .fetch_optional(&self.pool)
                        .await?;
                    let event = match event {
                        Some(e) => {
                            let snapshot: String = e.try_get("snapshot")?;
                            Some(AlertEvent {
                                event_id,
                                kind: decode_enum(e.try_get("type")?, "event type", al::EventType::from_i32)?,
                                alert: serde_json::from_str(&snapshot)?,
                                time: e.try_get("time")?,
                            })
                        }
                        None => None,
                    };
                    out.push(wh::Delivery {
                        webhook_id,
                        event_id,
                        url: target.try_get("url")?,
                        secret: wh::Secret::stored(target.try_get("secret")?),
                        event,
                        attempts: r.try_get("attempts")?,
                        first_failure_at: r.try_get("first_failure_at")?,
                    });
                }
                Ok(out)
            }

            async fn finish_delivery(
                &self,
                webhook_id: &str,
                event_id: i64,
                outcome: &wh::Outcome,
                now: chrono::DateTime<chrono::Utc>,
            ) -> Result<()> {
                let mut tx = self.begin_write().await?;
                match outcome {
                    wh::Outcome::Delivered => {
                        sqlx::query("DELETE FROM webhook_deliveries WHERE webhook_id = $1 AND event_id = $2")
                            .bind(webhook_id)
                            .bind(event_id)
                            .execute(&mut *tx)
                            .await?;
                        sqlx::query("UPDATE webhooks SET last_success_at = $1, consecutive_failures = 0 WHERE id = $2")
                            .bind(now)
                            .bind(webhook_id)
                            .execute(&mut *tx)
                            .await?;
                    }
                    wh::Outcome::Retry { at, error } => {
                        sqlx::query(
                            "UPDATE webhook_deliveries SET attempts = attempts + 1, next_attempt_at = $1, \
                             first_failure_at = COALESCE(first_failure_at, $2), lease_until = NULL \
                             WHERE webhook_id = $3 AND event_id = $4",
                        )
                        .bind(at)
                        .bind(now)
                        .bind(webhook_id)
                        .bind(event_id)
                        .execute(&mut *tx)
                        .await?;
                        record_failure(&mut tx, webhook_id, error, now).await?;
                    }
                    wh::Outcome::Dropped { error } => {
                        sqlx::query("DELETE FROM webhook_deliveries WHERE webhook_id = $1 AND event_id = $2")
                            .bind(webhook_id)
                            .bind(event_id)
                            .execute(&mut *tx)
                            .await?;
                        record_failure(&mut tx, webhook_id, error, now).await?;
                    }
                }
                tx.commit().await?;
                Ok(())
            }
        }

        async fn record_failure(tx: &mut Tx<'_>, webhook_id: &str, error: &str, now: chrono::DateTime<chrono::Utc>) -> Result<()> {
            sqlx::query(
                "UPDATE webhooks SET last_failure_at = $1, last_error = $2, \
                 consecutive_failures = consecutive_failures + 1 WHERE id = $3",
            )
            .bind(now)
            .bind(error)
            .bind(webhook_id)
            .execute(&mut **tx)
            .await?;
            Ok(())
        }
    };
}
