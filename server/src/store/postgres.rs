//! PostgreSQL: production storage, shared by any number of server replicas.

use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};

/// Migrations in order; each runs once, in a transaction, under an advisory lock so replicas
/// starting together do not race.
const MIGRATIONS: &[(i64, &str)] = &[
    (1, include_str!("../../migrations/postgres/0001_foundation.sql")),
    (2, include_str!("../../migrations/postgres/0002_stock.sql")),
    (3, include_str!("../../migrations/postgres/0003_alerts.sql")),
    (4, include_str!("../../migrations/postgres/0004_telemetry.sql")),
    (5, include_str!("../../migrations/postgres/0005_alarm_state.sql")),
    (6, include_str!("../../migrations/postgres/0006_exposures.sql")),
    (7, include_str!("../../migrations/postgres/0007_readings_queries.sql")),
    (8, include_str!("../../migrations/postgres/0008_webhooks.sql")),
    (10, include_str!("../../migrations/postgres/0010_device_sequence.sql")),
    (11, include_str!("../../migrations/postgres/0011_readings_at_scale.sql")),
    (12, include_str!("../../migrations/postgres/0012_alert_probe_index.sql")),
    (13, include_str!("../../migrations/postgres/0013_unit_alarm_overrides.sql")),
    (14, include_str!("../../migrations/postgres/0014_web_sessions.sql")),
    (15, include_str!("../../migrations/postgres/0015_unevaluated_readings.sql")),
    (16, include_str!("../../migrations/postgres/0016_ledger_balance_reference.sql")),
    (17, include_str!("../../migrations/postgres/0017_ledger_reversal_index.sql")),
];

/// The PostgreSQL implementation of [`crate::store::Store`].
#[derive(Debug, Clone)]
pub struct PgStore {
    pool: PgPool,
    /// Ledger postings written in groups (see [`crate::store::stock_sql::Postings`]).
    postings: Option<std::sync::Arc<crate::store::stock_sql::Postings>>,
}

impl PgStore {
    const ENGINE: crate::store::Engine = crate::store::Engine::Postgres;
    /// Row locks serialize writers of the same balance or shipment.
    /// Taken before writing an alert event so event ids become visible in order.
    const EVENT_LOCK: &str = "SELECT pg_advisory_xact_lock(7261)";
    /// Byte order for text keys, whatever the database's collation: the order every writer locks balances in.
    const BYTE_ORDER: &str = " COLLATE \"C\"";
    /// Data-modifying statements may run in a WITH clause.
    const WRITABLE_CTE: bool = true;
    const LOCK: &str = " FOR UPDATE";
    /// Readings are partitioned by time, so their key is (device_id, seq, time).
    const SEQ_KEY_HOLDS_TIME: bool = true;
    /// Two-argument minimum and maximum.
    const LEAST: &str = "LEAST";
    const GREATEST: &str = "GREATEST";
    /// Imports take turns, so an opening balance checked absent stays absent until commit.
    const ONBOARD_LOCK: &str = "SELECT pg_advisory_xact_lock(8530231610746954598)";
    /// Whole epoch seconds of `r.time`. date_part is double precision (exact to the microsecond
    /// for these dates) and about twice as fast as EXTRACT, which is numeric since PostgreSQL 14.
    const EPOCH_SECS: &str = "CAST(floor(date_part('epoch', r.time)) AS BIGINT)";
    /// Joins each unit `u` to its latest reading `r`: one backward step on readings_unit_time per unit.
    const LATEST_READING_JOIN: &str = "LEFT JOIN LATERAL (SELECT * FROM readings r2 WHERE r2.storage_unit_id = u.id \
         ORDER BY r2.time DESC, r2.device_id DESC, r2.seq DESC LIMIT 1) r ON TRUE";

    /// Connects to `url` (which may set `options=-c search_path=…`) and migrates.
    pub async fn connect(url: &str) -> crate::error::Result<Self> {
        let opts: PgConnectOptions =
            url.parse().map_err(|e: sqlx::Error| crate::error::Error::invalid("database_url", e.to_string()))?;
        let pool = PgPoolOptions::new()
            .max_connections(16)
            // A ping before every acquire doubles small transactions' round trips; a dead
            // connection fails its query and is replaced anyway.
            .test_before_acquire(false)
            .acquire_timeout(Duration::from_secs(30))
            .connect_with(opts)
            .await?;
        let store = PgStore { pool, postings: Some(crate::store::stock_sql::Postings::new()) };
        store.migrate().await?;
        store.start_posters();
        Ok(store)
    }

    /// Row locks (`FOR UPDATE`) serialize conflicting writers; READ COMMITTED is enough.
    async fn begin_write(&self) -> crate::error::Result<sqlx::Transaction<'static, sqlx::Postgres>> {
        Ok(self.pool.begin().await?)
    }

    /// A group of ledger postings' transaction: it waits at most 100 ms for a balance another
    /// transaction holds, then fails and its postings are written one by one, so a long holder
    /// (an import, a big session report) delays only the postings that need its rows.
    async fn begin_group_write(&self) -> crate::error::Result<sqlx::Transaction<'static, sqlx::Postgres>> {
        // One round trip: a simple query may hold two statements.
        Ok(self.pool.begin_with("BEGIN; SET LOCAL lock_timeout TO '100ms'").await?)
    }

    /// A write transaction whose commit does not wait for its WAL flush, for bookkeeping that a
    /// database crash may lose: alarm states and their marks (see
    /// `TelemetryStore::forget_alarm_states`). What it writes is still flushed before whatever
    /// commits after it durably, alerts included: WAL is flushed in order.
    async fn begin_relaxed_write(&self) -> crate::error::Result<sqlx::Transaction<'static, sqlx::Postgres>> {
        // One round trip: a simple query may hold two statements.
        Ok(self.pool.begin_with("BEGIN; SET LOCAL synchronous_commit TO OFF").await?)
    }

    /// A transaction holding `pg_advisory_xact_lock` on the device; dropping it rolls back and
    /// releases the lock.
    async fn evaluation_lock(&self, device_id: &str) -> crate::error::Result<Box<dyn std::any::Any + Send>> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended($1, 7261))")
            .bind(device_id)
            .execute(&mut *tx)
            .await?;
        Ok(Box::new(tx))
    }

    /// [`PgStore::evaluation_lock`] for several devices in one statement, in the order of the lock
    /// keys: two holders of overlapping sets wait for each other instead of deadlocking (and a
    /// hash shared by two ids is taken once).
    async fn evaluations_lock(&self, device_ids: &[String]) -> crate::error::Result<Box<dyn std::any::Any + Send>> {
        let mut tx = self.pool.begin().await?;
        // Volatile functions in the select list run after the outer ORDER BY (PostgreSQL >= 9.6).
        sqlx::query(
            "SELECT pg_advisory_xact_lock(k) FROM (SELECT DISTINCT hashtextextended(id, 7261) AS k \
             FROM unnest($1::text[]) AS u(id)) s ORDER BY k",
        )
        .bind(device_ids)
        .execute(&mut *tx)
        .await?;
        Ok(Box::new(tx))
    }

    /// Creates this month's and the next two months' partitions of readings, and drops monthly
    /// partitions wholly before `keep_after`. A month whose rows already sit in the default
    /// partition (a backlog that arrived before its month existed) stays there: PostgreSQL
    /// refuses such a partition, and the readings are served the same either way.
    async fn maintain_partitions(
        &self,
        now: chrono::DateTime<chrono::Utc>,
        keep_after: Option<chrono::DateTime<chrono::Utc>>,
    ) -> crate::error::Result<()> {
        use chrono::Datelike as _;
        let month_start = |y: i32, m: u32| chrono::NaiveDate::from_ymd_opt(y, m, 1);
        let (mut y, mut m) = (now.year(), now.month());
        for _ in 0..3 {
            let (ny, nm) = if m == 12 { (y + 1, 1) } else { (y, m + 1) };
            if let (Some(from), Some(to)) = (month_start(y, m), month_start(ny, nm)) {
                let name = format!("readings_{y:04}_{m:02}");
                let exists: Option<i32> = sqlx::query_scalar(
                    "SELECT 1 FROM pg_class WHERE relname = $1 AND relnamespace = current_schema()::regnamespace",
                )
                .bind(&name)
                .fetch_optional(&self.pool)
                .await?;
                if exists.is_none() {
                    let sql = format!(
                        "CREATE TABLE {name} PARTITION OF readings FOR VALUES FROM ('{from}T00:00:00Z') TO ('{to}T00:00:00Z')"
                    );
                    if let Err(e) = sqlx::raw_sql(sqlx::AssertSqlSafe(sql)).execute(&self.pool).await {
                        tracing::warn!(partition = %name, error = %e, "cannot create a readings partition; its rows stay in the default partition");
                    }
                }
            }
            (y, m) = (ny, nm);
        }
        let Some(cutoff) = keep_after else { return Ok(()) };
        let parts: Vec<String> = sqlx::query_scalar(
            "SELECT c.relname::text FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid \
             WHERE i.inhparent = 'readings'::regclass AND c.relname::text ~ '^readings_[0-9]{4}_[0-9]{2}$'",
        )
        .fetch_all(&self.pool)
        .await?;
        for name in parts {
            let (Some(y), Some(m)) =
                (name.get(9..13).and_then(|v| v.parse().ok()), name.get(14..16).and_then(|v| v.parse::<u32>().ok()))
            else {
                continue;
            };
            let (ny, nm) = if m == 12 { (y + 1, 1) } else { (y, m + 1) };
            let Some(end) = month_start(ny, nm).and_then(|d| d.and_hms_opt(0, 0, 0)).map(|d| d.and_utc()) else {
                continue;
            };
            if end <= cutoff {
                sqlx::raw_sql(sqlx::AssertSqlSafe(format!("DROP TABLE IF EXISTS {name}"))).execute(&self.pool).await?;
                tracing::info!(partition = %name, "readings partition dropped by retention");
            }
        }
        Ok(())
    }

    /// A server-side copy needs the server's own tools; the CLI prints pg_dump guidance instead.
    async fn backup_into(&self, _path: &str) -> crate::error::Result<()> {
        Err(crate::error::Error::Unimplemented(
            "PostgreSQL is backed up with pg_dump (see `vaxtrace-server backup --help`)".into(),
        ))
    }

    async fn migrate(&self) -> crate::error::Result<()> {
        self.apply_migrations(MIGRATIONS, "SELECT pg_advisory_xact_lock(8530231610746954597)" /* ASCII "vaxtrace" */, "CREATE TABLE IF NOT EXISTS schema_migrations (version BIGINT PRIMARY KEY, applied_at TIMESTAMPTZ NOT NULL)").await
    }
}

sql_store_common!(PgStore, sqlx::Postgres, sqlx::postgres::PgRow);
sql_stock_store!(PgStore, sqlx::Postgres, sqlx::postgres::PgRow);
sql_alert_store!(PgStore, sqlx::Postgres, sqlx::postgres::PgRow);
sql_telemetry_store!(PgStore, sqlx::Postgres, sqlx::postgres::PgRow);
sql_webhook_store!(PgStore, sqlx::Postgres, sqlx::postgres::PgRow);
sql_web_store!(PgStore);
sql_onboard_store!(PgStore, sqlx::Postgres, sqlx::postgres::PgRow);
