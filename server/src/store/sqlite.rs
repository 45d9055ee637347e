//! SQLite: the zero-setup default (a WAL file, or `sqlite::memory:` for throwaway runs).

use std::str::FromStr as _;
use std::time::Duration;

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous};

/// Migrations in order; each runs once, in a transaction.
const MIGRATIONS: &[(i64, &str)] = &[
    (1, include_str!("../../migrations/sqlite/0001_foundation.sql")),
    (2, include_str!("../../migrations/sqlite/0002_stock.sql")),
    (3, include_str!("../../migrations/sqlite/0003_alerts.sql")),
    (4, include_str!("../../migrations/sqlite/0004_telemetry.sql")),
    (5, include_str!("../../migrations/sqlite/0005_alarm_state.sql")),
    (6, include_str!("../../migrations/sqlite/0006_exposures.sql")),
    (7, include_str!("../../migrations/sqlite/0007_readings_queries.sql")),
    (8, include_str!("../../migrations/sqlite/0008_webhooks.sql")),
    (10, include_str!("../../migrations/sqlite/0010_device_sequence.sql")),
    (11, include_str!("../../migrations/sqlite/0011_readings_at_scale.sql")),
    (12, include_str!("../../migrations/sqlite/0012_alert_probe_index.sql")),
    (13, include_str!("../../migrations/sqlite/0013_unit_alarm_overrides.sql")),
    (14, include_str!("../../migrations/sqlite/0014_web_sessions.sql")),
    (15, include_str!("../../migrations/sqlite/0015_unevaluated_readings.sql")),
];

/// The SQLite implementation of [`crate::store::Store`].
#[derive(Debug, Clone)]
pub struct SqliteStore {
    pool: SqlitePool,
    /// One connection for write transactions: SQLite admits one writer at a time anyway, and
    /// queueing writers here (in arrival order) replaces the busy handler's sleep-and-retry,
    /// whose back-off made the slowest writes wait 100 ms and more.
    writer: SqlitePool,
    /// The lock file that makes alarm evaluation take turns across processes sharing the
    /// database file (replicas, a second server started by mistake); `None` in memory.
    alarm_lock: Option<std::sync::Arc<std::path::PathBuf>>,
    /// None: one writer connection already makes SQLite's writers take turns, and its commits do
    /// not wait for a flush (`synchronous = NORMAL`), so there is nothing to share.
    postings: Option<std::sync::Arc<crate::store::stock_sql::Postings>>,
}

impl SqliteStore {
    const ENGINE: crate::store::Engine = crate::store::Engine::Sqlite;
    /// SQLite has no row locks; IMMEDIATE transactions already serialize writers.
    /// Taken before writing an alert event so event ids become visible in order.
    const EVENT_LOCK: &str = "SELECT 1";
    /// Text compares bytewise already (BINARY).
    const BYTE_ORDER: &str = "";
    /// No data-modifying statements in a WITH clause.
    const WRITABLE_CTE: bool = false;
    const LOCK: &str = "";
    /// The readings key is (device_id, seq) alone.
    const SEQ_KEY_HOLDS_TIME: bool = false;
    /// Two-argument minimum and maximum.
    const LEAST: &str = "min";
    const GREATEST: &str = "max";
    /// IMMEDIATE transactions already make imports take turns.
    const ONBOARD_LOCK: &str = "SELECT 1";
    /// Whole epoch seconds of `r.time`, stored as RFC 3339 text.
    const EPOCH_SECS: &str = "CAST(strftime('%s', r.time) AS INTEGER)";
    /// Joins each unit `u` to its latest reading `r`: SQLite has no LATERAL, so a correlated
    /// subquery walks readings_unit_time backwards and stops at the first row.
    const LATEST_READING_JOIN: &str = "LEFT JOIN readings r ON r.rowid = (SELECT r2.rowid FROM readings r2 \
         WHERE r2.storage_unit_id = u.id ORDER BY r2.time DESC, r2.device_id DESC, r2.seq DESC LIMIT 1)";

    /// Opens (creating if needed) and migrates the database at `url`.
    pub async fn connect(url: &str) -> crate::error::Result<Self> {
        let memory = url.contains(":memory:") || url.contains("mode=memory");
        let opts = SqliteConnectOptions::from_str(url)
            .map_err(|e| crate::error::Error::invalid("database_url", e.to_string()))?
            .create_if_missing(true)
            .journal_mode(if memory { SqliteJournalMode::Memory } else { SqliteJournalMode::Wal })
            // NORMAL in WAL mode is durable across application crashes; only an OS crash or power
            // loss may lose the last transactions, never corrupt the file.
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(Duration::from_secs(10))
            .foreign_keys(true);
        let opts_path = opts.get_filename().to_owned();
        // Each in-memory connection would be its own database: keep exactly one, forever.
        let (pool, writer) = if memory {
            let pool = SqlitePoolOptions::new()
                .max_connections(1)
                .min_connections(1)
                .idle_timeout(None)
                .max_lifetime(None)
                .test_before_acquire(false)
                .acquire_timeout(Duration::from_secs(30))
                .connect_with(opts)
                .await?;
            (pool.clone(), pool)
        } else {
            let pool = SqlitePoolOptions::new()
                .max_connections(8)
                .test_before_acquire(false)
                .acquire_timeout(Duration::from_secs(30))
                .connect_with(opts.clone())
                .await?;
            let writer = SqlitePoolOptions::new()
                .max_connections(1)
                .test_before_acquire(false)
                .acquire_timeout(Duration::from_secs(60))
                .connect_with(opts)
                .await?;
            (pool, writer)
        };
        let alarm_lock = (!memory).then(|| {
            let mut name = opts_path.into_os_string();
            name.push(".alarms-lock");
            std::sync::Arc::new(std::path::PathBuf::from(name))
        });
        let store = SqliteStore { pool, writer, alarm_lock, postings: None };
        store.start_posters();
        store.migrate().await?;
        Ok(store)
    }

    /// Write transactions take the write lock up front, so two writers never deadlock upgrading
    /// a read lock (SQLITE_BUSY mid-transaction).
    async fn begin_write(&self) -> crate::error::Result<sqlx::Transaction<'static, sqlx::Sqlite>> {
        Ok(self.writer.begin_with("BEGIN IMMEDIATE").await?)
    }

    /// As [`SqliteStore::begin_write`] (SQLite posts alone: it has no posting groups).
    async fn begin_group_write(&self) -> crate::error::Result<sqlx::Transaction<'static, sqlx::Sqlite>> {
        self.begin_write().await
    }

    /// As [`SqliteStore::begin_write`]: with `synchronous = NORMAL` in WAL mode no commit waits
    /// for a flush already.
    async fn begin_relaxed_write(&self) -> crate::error::Result<sqlx::Transaction<'static, sqlx::Sqlite>> {
        self.begin_write().await
    }

    /// Alarm evaluation reads a probe's state, evaluates and writes it back in several
    /// transactions, so two processes on one file must take turns: an exclusive `flock` on a file
    /// beside the database, opened anew each time (so tasks of one process exclude each other
    /// too). In memory no other process can share the database; the per-device mutex suffices.
    async fn evaluation_lock(&self, _device_id: &str) -> crate::error::Result<Box<dyn std::any::Any + Send>> {
        self.take_alarm_lock().await
    }

    /// As [`SqliteStore::evaluation_lock`]: one lock for the whole database, which admits one
    /// writer at a time anyway.
    async fn evaluations_lock(&self, _device_ids: &[String]) -> crate::error::Result<Box<dyn std::any::Any + Send>> {
        self.take_alarm_lock().await
    }

    async fn take_alarm_lock(&self) -> crate::error::Result<Box<dyn std::any::Any + Send>> {
        let Some(path) = self.alarm_lock.clone() else { return Ok(Box::new(())) };
        let locked = tokio::task::spawn_blocking(move || -> std::io::Result<std::fs::File> {
            let f = std::fs::OpenOptions::new().create(true).truncate(false).write(true).open(path.as_path())?;
            f.lock()?;
            Ok(f)
        })
        .await
        .map_err(|e| crate::error::Error::Internal(format!("alarm lock task: {e}")))?
        .map_err(|e| crate::error::Error::Internal(format!("cannot lock the alarm lock file: {e}")))?;
        // Closing the file releases the lock.
        Ok(Box::new(locked))
    }

    /// SQLite has no partitions; retention deletes rows.
    async fn maintain_partitions(
        &self,
        _now: chrono::DateTime<chrono::Utc>,
        _keep_after: Option<chrono::DateTime<chrono::Utc>>,
    ) -> crate::error::Result<()> {
        Ok(())
    }

    /// `VACUUM INTO` reads one consistent snapshot (WAL readers never block writers) and writes a
    /// compact copy; it refuses an existing non-empty file, which the CLI checks first.
    async fn backup_into(&self, path: &str) -> crate::error::Result<()> {
        sqlx::query("VACUUM INTO $1").bind(path).execute(&self.pool).await?;
        Ok(())
    }

    async fn migrate(&self) -> crate::error::Result<()> {
        self.apply_migrations(
            MIGRATIONS,
            "SELECT 1",
            "CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, applied_at TEXT NOT NULL)",
        )
        .await
    }
}

sql_store_common!(SqliteStore, sqlx::Sqlite, sqlx::sqlite::SqliteRow);
sql_stock_store!(SqliteStore, sqlx::Sqlite, sqlx::sqlite::SqliteRow);
sql_alert_store!(SqliteStore, sqlx::Sqlite, sqlx::sqlite::SqliteRow);
sql_telemetry_store!(SqliteStore, sqlx::Sqlite, sqlx::sqlite::SqliteRow);
sql_webhook_store!(SqliteStore, sqlx::Sqlite, sqlx::sqlite::SqliteRow);
sql_web_store!(SqliteStore);
sql_onboard_store!(SqliteStore, sqlx::Sqlite, sqlx::sqlite::SqliteRow);
