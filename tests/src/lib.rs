//! Shared harness of the end-to-end tests: a real server on an ephemeral port, on SQLite and, when
//! `VAXTRACE_TEST_POSTGRES_URL` is set, on PostgreSQL in a schema of its own.

pub mod browser;
pub mod country;
pub mod epcis;
pub mod procs;
pub mod web;
pub mod world;

use std::net::SocketAddr;

use tokio::sync::oneshot;
use tonic::metadata::MetadataValue;
use tonic::transport::Channel;
use vaxtrace_server::App;

/// A storage engine to run a test against.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TestDb {
    /// A private in-memory SQLite database.
    Sqlite,
    /// A fresh schema in the PostgreSQL database named by the URL.
    Postgres(String),
}

impl TestDb {
    /// SQLite always; PostgreSQL too when `VAXTRACE_TEST_POSTGRES_URL` is set.
    pub fn all() -> Vec<TestDb> {
        let mut v = vec![TestDb::Sqlite];
        if let Ok(url) = std::env::var("VAXTRACE_TEST_POSTGRES_URL")
            && !url.is_empty()
        {
            v.push(TestDb::Postgres(url));
        }
        v
    }

    /// A database URL private to the caller: PostgreSQL gets a new schema selected by search_path.
    pub async fn url(&self) -> String {
        match self {
            TestDb::Sqlite => "sqlite::memory:".to_owned(),
            TestDb::Postgres(base) => {
                let schema = format!("vt_test_{}", uuid::Uuid::now_v7().simple());
                let pool = sqlx::PgPool::connect(base).await.expect("VAXTRACE_TEST_POSTGRES_URL must be reachable");
                sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE SCHEMA {schema}")))
                    .execute(&pool)
                    .await
                    .expect("create test schema");
                pool.close().await;
                let sep = if base.contains('?') { '&' } else { '?' };
                format!("{base}{sep}options=-c%20search_path%3D{schema}")
            }
        }
    }

    /// A short name for assertion messages.
    pub fn name(&self) -> &'static str {
        match self {
            TestDb::Sqlite => "sqlite",
            TestDb::Postgres(_) => "postgres",
        }
    }
}

/// A running server and an admin token for it.
#[derive(Debug)]
pub struct TestServer {
    /// Where it listens.
    pub addr: SocketAddr,
    /// The bootstrap admin's bearer token.
    pub admin_token: String,
    /// The application, for direct set-up.
    pub app: App,
    /// Which engine it runs on.
    pub db: TestDb,
    /// The database URL, for a second server on the same database.
    pub database_url: String,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
}

impl TestServer {
    /// Starts a server on 127.0.0.1:0 with a fresh database.
    pub async fn start(db: TestDb) -> TestServer {
        let url = db.url().await;
        Self::start_inner(db, url, None, None).await
    }

    /// Starts a server as [`TestServer::start`] does, with these bounds on concurrent calls and streams.
    pub async fn start_with_limits(db: TestDb, limits: vaxtrace_server::limits::Limits) -> TestServer {
        let url = db.url().await;
        Self::start_inner(db, url, None, Some(limits)).await
    }

    /// Starts a server on a database the test can also reach with its own connection (a SQLite
    /// file in `dir`, or a fresh PostgreSQL schema), e.g. to install a trigger that fails writes.
    pub async fn start_reachable(db: TestDb, dir: &std::path::Path) -> TestServer {
        let url = match db {
            TestDb::Sqlite => format!("sqlite://{}", dir.join("vaxtrace.db").display()),
            TestDb::Postgres(_) => db.url().await,
        };
        Self::start_inner(db, url, None, None).await
    }

    /// Starts a server as [`TestServer::start`] does, with these webhook settings (plain http
    /// allowed, short back-off) and the delivery worker running.
    pub async fn start_with_webhooks(db: TestDb, webhooks: vaxtrace_server::app::WebhookSettings) -> TestServer {
        let url = db.url().await;
        Self::start_inner(db, url, Some(webhooks), None).await
    }

    async fn start_inner(
        db: TestDb,
        url: String,
        webhooks: Option<vaxtrace_server::app::WebhookSettings>,
        limits: Option<vaxtrace_server::limits::Limits>,
    ) -> TestServer {
        // Server logs show up under a failing test (libtest captures them otherwise).
        let _ = tracing_subscriber::fmt()
            .with_test_writer()
            .with_env_filter(std::env::var("VAXTRACE_TEST_LOG").unwrap_or_else(|_| "warn".into()))
            .try_init();
        let mut app = vaxtrace_server::open(&url).await.expect("open test database");
        if let Some(limits) = limits {
            app = app.with_limits(limits);
        }
        if let Some(settings) = webhooks {
            app = app.with_webhook_settings(settings);
            app.spawn_webhooks();
        }
        let admin = app.bootstrap_admin().await.expect("bootstrap").expect("fresh database has no token");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind ephemeral port");
        let addr = listener.local_addr().expect("local addr");
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(vaxtrace_server::serve(app.clone(), listener, async move {
            let _ = stopped.await;
        }));
        TestServer { addr, admin_token: admin.secret, app, db, database_url: url, stop: Some(stop), task: Some(task) }
    }

    /// A gRPC channel to the server.
    pub async fn channel(&self) -> Channel {
        Channel::from_shared(format!("http://{}", self.addr))
            .expect("valid uri")
            .connect()
            .await
            .expect("connect to test server")
    }

    /// Runs SQL on the server's database behind its back (a reachable one: see
    /// [`TestServer::start_reachable`]): to set up what the API cannot, or to inject a failure.
    pub async fn exec_sql(&self, q: &str) {
        let q = sqlx::AssertSqlSafe(q.to_owned());
        match &self.db {
            TestDb::Sqlite => {
                let pool = sqlx::SqlitePool::connect(&self.database_url).await.expect("open the SQLite database");
                sqlx::raw_sql(q).execute(&pool).await.expect("run SQL");
                pool.close().await;
            }
            TestDb::Postgres(_) => {
                let pool = sqlx::PgPool::connect(&self.database_url).await.expect("connect to PostgreSQL");
                sqlx::raw_sql(q).execute(&pool).await.expect("run SQL");
                pool.close().await;
            }
        }
    }

    /// Stops the server gracefully and waits for it.
    pub async fn stop(mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.task.take() {
            t.await.expect("server task").expect("server exits cleanly");
        }
    }
}

/// Wraps a message in a request carrying `authorization: Bearer <token>`.
pub fn authed<T>(token: &str, msg: T) -> tonic::Request<T> {
    let mut req = tonic::Request::new(msg);
    if let Ok(v) = MetadataValue::try_from(format!("Bearer {token}")) {
        req.metadata_mut().insert("authorization", v);
    }
    req
}

/// The ErrorInfo reason of a failed call ("" when there is none).
pub fn reason(status: &tonic::Status) -> String {
    use tonic_types::StatusExt as _;
    status.get_error_details().error_info().map(|i| i.reason.clone()).unwrap_or_default()
}
