//! `vaxtrace-server`: serve the API, run the demo, migrate, and administer a country: bulk
//! import and export, tokens, devices, backups, shell completions.

mod cli_admin;

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context as _;
use clap::{Parser, Subcommand, ValueEnum};
use tokio::net::TcpListener;
use vaxtrace_server::domain::{NewToken, Role};

/// vaxtrace: a national vaccine supply-chain and cold-chain tracker.
#[derive(Debug, Parser)]
#[command(name = "vaxtrace-server", version, about)]
struct Cli {
    /// Log format: human-readable text or one JSON object per line.
    #[arg(long, env = "VAXTRACE_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text, global = true)]
    log_format: LogFormat,
    /// Seconds between evaluations of the stock alerts (stock-out, below minimum, expiry risk,
    /// wastage, overdue shipments).
    #[arg(long, env = "VAXTRACE_STOCK_ALERT_INTERVAL", default_value_t = 60, global = true, value_parser = clap::value_parser!(u64).range(1..=86_400))]
    stock_alert_interval: u64,
    /// Days of raw readings to keep (0 = keep all); hourly rollups are kept for good. On
    /// PostgreSQL whole monthly partitions are dropped.
    #[arg(long, env = "VAXTRACE_READINGS_RETENTION_DAYS", default_value_t = 0, global = true)]
    readings_retention_days: u32,
    /// Seconds between checks for silent loggers (NO_DATA after 3 × a device's interval).
    #[arg(long, env = "VAXTRACE_NO_DATA_CHECK_INTERVAL", default_value_t = 60, global = true, value_parser = clap::value_parser!(u64).range(1..=3_600))]
    no_data_check_interval: u64,
    /// Days after dispatch a shipment with no expected arrival date is reported overdue.
    #[arg(long, env = "VAXTRACE_SHIPMENT_OVERDUE_DAYS", default_value_t = 7, global = true, value_parser = clap::value_parser!(i64).range(1..=365))]
    shipment_overdue_days: i64,
    /// External MQTT broker, `mqtt://[user:password@]host[:port]` or `mqtts://…` (TLS). Without it
    /// an embedded broker runs.
    #[arg(long, env = "VAXTRACE_MQTT_URL", global = true, hide_env_values = true)]
    mqtt_url: Option<String>,
    /// PEM file of the CA certificates that sign an `mqtts://` broker's certificate (default: the
    /// system's roots).
    #[arg(long, env = "VAXTRACE_MQTT_CA_FILE", global = true)]
    mqtt_ca_file: Option<PathBuf>,
    /// Address of the embedded MQTT broker (used when --mqtt-url is not given).
    #[arg(long, env = "VAXTRACE_MQTT_LISTEN", default_value = "0.0.0.0:1883", global = true)]
    mqtt_listen: SocketAddr,
    /// Accept and call plain http webhook URLs (for tests and bridges on the same host); without
    /// it webhooks must be https.
    #[arg(long, env = "VAXTRACE_WEBHOOK_ALLOW_HTTP", global = true)]
    webhook_allow_http: bool,
    /// gRPC calls in progress at once (a stream counts until it ends); more are refused with
    /// RESOURCE_EXHAUSTED.
    #[arg(long, env = "VAXTRACE_MAX_CONCURRENT_CALLS", default_value_t = 1024, global = true, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    max_concurrent_calls: u32,
    /// Open WatchAlerts streams per token; more are refused with RESOURCE_EXHAUSTED.
    #[arg(long, env = "VAXTRACE_MAX_WATCH_STREAMS_PER_TOKEN", default_value_t = 8, global = true, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    max_watch_streams_per_token: u32,
    /// Open WatchAlerts streams across the server; more are refused with RESOURCE_EXHAUSTED.
    #[arg(long, env = "VAXTRACE_MAX_WATCH_STREAMS", default_value_t = 512, global = true, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    max_watch_streams: u32,
    /// Log filter in `tracing` syntax, for example `info` or `vaxtrace_server=debug,sqlx=warn`.
    #[arg(long, env = "VAXTRACE_LOG", default_value = "info,sqlx=warn,rumqttd=warn", global = true)]
    log: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve gRPC, grpc-web and HTTP (/healthz, /metrics) on one port.
    Serve {
        /// Address to listen on.
        #[arg(long, env = "VAXTRACE_LISTEN", default_value = "127.0.0.1:50051")]
        listen: SocketAddr,
        /// Database: `sqlite://PATH` (created if missing), `sqlite::memory:` or `postgres://USER@HOST/DB`.
        #[arg(long, env = "VAXTRACE_DATABASE_URL", default_value = "sqlite://vaxtrace.db", hide_env_values = true)]
        database_url: String,
        /// PEM certificate chain: serve gRPC, grpc-web and HTTP over TLS (needs --tls-key).
        #[arg(long, env = "VAXTRACE_TLS_CERT", requires = "tls_key")]
        tls_cert: Option<PathBuf>,
        /// PEM private key of --tls-cert.
        #[arg(long, env = "VAXTRACE_TLS_KEY", requires = "tls_cert")]
        tls_key: Option<PathBuf>,
    },
    /// Start a complete sample system on embedded defaults: SQLite, a seeded sample country.
    Demo {
        /// Directory for the demo's SQLite database (default: a new temporary directory).
        #[arg(long, env = "VAXTRACE_DEMO_DIR")]
        data_dir: Option<PathBuf>,
        /// Preferred address; when it is taken a free port on the same host is used and printed.
        #[arg(long, env = "VAXTRACE_LISTEN", default_value = "127.0.0.1:50051")]
        listen: SocketAddr,
    },
    /// Apply database migrations and exit (serve also applies them on start).
    Migrate {
        /// Database URL, as for `serve`.
        #[arg(long, env = "VAXTRACE_DATABASE_URL", default_value = "sqlite://vaxtrace.db", hide_env_values = true)]
        database_url: String,
    },
    /// Export a subtree's supply-chain events in [start, end) as one GS1 EPCIS 2.0 JSON-LD
    /// document, from a running server (gRPC, with a token; scoped to the token).
    ExportEpcis {
        /// The server's gRPC address.
        #[arg(long, env = "VAXTRACE_SERVER", default_value = "http://127.0.0.1:50051")]
        server: String,
        /// Bearer token (vxt_…).
        #[arg(long, env = "VAXTRACE_TOKEN", hide_env_values = true)]
        token: String,
        /// The subtree's root facility; default: the token's whole scope.
        #[arg(long, default_value = "")]
        facility_id: String,
        /// First instant, RFC 3339 (for example 2026-11-01T00:00:00Z).
        #[arg(long)]
        start: chrono::DateTime<chrono::Utc>,
        /// End instant (exclusive), RFC 3339.
        #[arg(long)]
        end: chrono::DateTime<chrono::Utc>,
        /// Write to this file instead of standard output.
        #[arg(long, short)]
        output: Option<PathBuf>,
    },
    /// Manage access tokens directly in the database.
    Token {
        #[command(subcommand)]
        command: TokenCommand,
    },
    /// Validate and import a country from CSV files (facility tree with storage units, products,
    /// lots with opening balances, min/max policies, loggers with probes, tokens; or a DHIS2
    /// organisation-unit export), directly into the database, all or nothing. Importing the same
    /// files again changes nothing. Formats: onboarding/README.md.
    Import(cli_admin::ImportArgs),
    /// Export every entity in the import formats (so an export imports into an empty database as
    /// the same data), or with `readings`, one storage unit's readings.
    Export(cli_admin::ExportArgs),
    /// Manage temperature loggers directly in the database.
    Device {
        #[command(subcommand)]
        command: DeviceCommand,
    },
    /// Copy a SQLite database to a new file while the server keeps running (VACUUM INTO: one
    /// consistent snapshot). For PostgreSQL, prints pg_dump guidance and exits with status 2.
    Backup(cli_admin::BackupArgs),
    /// Print a shell completion script, for example `vaxtrace-server completions bash >
    /// /etc/bash_completion.d/vaxtrace-server`.
    Completions {
        /// The shell.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
}

#[derive(Debug, Subcommand)]
enum DeviceCommand {
    /// Register a logger with its probes and print its HMAC key once (validated like devices.csv
    /// and probes.csv rows; registering the same device again changes nothing).
    Register(cli_admin::DeviceRegisterArgs),
}

#[derive(Debug, Subcommand)]
enum TokenCommand {
    /// Issue a token and print its secret once.
    Create {
        /// Database URL, as for `serve`.
        #[arg(long, env = "VAXTRACE_DATABASE_URL", default_value = "sqlite://vaxtrace.db", hide_env_values = true)]
        database_url: String,
        /// Role: admin, national_officer, district_officer, depot_manager or device.
        #[arg(long)]
        role: String,
        /// Scope facility id (required for every role but admin and national_officer).
        #[arg(long, default_value = "")]
        scope: String,
        /// Device id, for device tokens.
        #[arg(long, default_value = "")]
        device_id: String,
        /// Whose token this is.
        #[arg(long)]
        description: String,
    },
    /// List tokens as CSV (never their secrets).
    List {
        #[command(flatten)]
        db: cli_admin::Db,
        /// Include revoked tokens.
        #[arg(long)]
        include_revoked: bool,
    },
    /// Revoke a token; servers stop accepting it within 5 seconds.
    Revoke {
        #[command(flatten)]
        db: cli_admin::Db,
        /// The token id (the part after `vxt_`, as `token list` shows it).
        id: String,
    },
}

fn init_logging(format: LogFormat, filter: &str) -> anyhow::Result<()> {
    let filter = tracing_subscriber::EnvFilter::try_new(filter).context("invalid --log filter")?;
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
    Ok(())
}

/// The URL without its password, for logs.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => {
            let creds = &url[s + 3..at];
            let user = creds.split(':').next().unwrap_or("");
            format!("{}://{user}:***@{}", &url[..s], &url[at + 1..])
        }
        _ => url.to_owned(),
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    init_logging(cli.log_format, &cli.log)?;
    match cli.command {
        Command::Serve { listen, database_url, tls_cert, tls_key } => {
            // A bad certificate is an operator error worth finding before anything else starts.
            let tls = match (&tls_cert, &tls_key) {
                (Some(c), Some(k)) => Some(vaxtrace_server::tls::server_config(c, k).map_err(anyhow::Error::msg)?),
                _ => None,
            };
            tracing::info!(database = %redact(&database_url), "opening database");
            let app = vaxtrace_server::open(&database_url)
                .await
                .context("cannot open the database")?
                .with_webhook_settings(webhook_settings(cli.webhook_allow_http))
                .with_limits(vaxtrace_server::limits::Limits {
                    max_concurrent_calls: cli.max_concurrent_calls as usize,
                    max_watch_streams_per_token: cli.max_watch_streams_per_token as usize,
                    max_watch_streams: cli.max_watch_streams as usize,
                });
            if let Some(t) = app.bootstrap_admin().await? {
                // Printed to stdout, never logged: the only time this secret is shown.
                println!(
                    "Empty database: created the first admin token (shown once, store it safely):\n  {}",
                    t.secret
                );
            }
            let listener = TcpListener::bind(listen)
                .await
                .with_context(|| format!("cannot listen on {listen} (is the port taken? use --listen)"))?;
            let scheme = if tls.is_some() { "https" } else { "http" };
            println!("vaxtrace listening on {scheme}://{}", listener.local_addr()?);
            app.spawn_stock_alerts(std::time::Duration::from_secs(cli.stock_alert_interval), cli.shipment_overdue_days);
            app.spawn_no_data_sweep(std::time::Duration::from_secs(cli.no_data_check_interval));
            app.spawn_readings_maintenance((cli.readings_retention_days > 0).then_some(cli.readings_retention_days));
            app.spawn_webhooks();
            let mqtt = start_mqtt(&app, (cli.mqtt_url.as_deref(), cli.mqtt_ca_file.as_deref()), cli.mqtt_listen, false)
                .await?;
            println!("MQTT ingest via {mqtt}");
            match tls {
                Some(config) => {
                    vaxtrace_server::serve_tls(app, listener, config, vaxtrace_server::shutdown_signal()).await?;
                }
                None => vaxtrace_server::serve(app, listener, vaxtrace_server::shutdown_signal()).await?,
            }
        }
        Command::Demo { data_dir, listen } => {
            let alerts = (cli.stock_alert_interval, cli.shipment_overdue_days);
            let no_data_every = std::time::Duration::from_secs(cli.no_data_check_interval);
            let webhooks = webhook_settings(cli.webhook_allow_http);
            demo(
                data_dir,
                listen,
                alerts,
                no_data_every,
                webhooks,
                (cli.mqtt_url.as_deref(), cli.mqtt_ca_file.as_deref()),
                cli.mqtt_listen,
            )
            .await?;
        }
        Command::Migrate { database_url } => {
            vaxtrace_server::open(&database_url).await.context("migration failed")?;
            println!("database {} is up to date", redact(&database_url));
        }
        Command::ExportEpcis { server, token, facility_id, start, end, output } => {
            export_epcis(&server, &token, facility_id, start, end, output.as_deref()).await?;
        }
        Command::Token { command: TokenCommand::Create { database_url, role, scope, device_id, description } } => {
            let role = Role::parse(&role).with_context(|| {
                format!("unknown role '{role}'; use admin, national_officer, district_officer, depot_manager or device")
            })?;
            let new = NewToken::parse(role.as_i32(), &scope, &device_id, &description)?;
            let app = vaxtrace_server::open(&database_url).await.context("cannot open the database")?;
            let t = app.create_token_local(&new).await?;
            println!("token id {} ({}):\n{}", t.token.id, role.name(), t.secret);
        }
        Command::Token { command: TokenCommand::List { db, include_revoked } } => {
            cli_admin::token_list(db, include_revoked).await?;
        }
        Command::Token { command: TokenCommand::Revoke { db, id } } => cli_admin::token_revoke(db, &id).await?,
        Command::Import(a) => cli_admin::import(a).await?,
        Command::Export(a) => cli_admin::export(a).await?,
        Command::Device { command: DeviceCommand::Register(a) } => cli_admin::device_register(a).await?,
        Command::Backup(a) => cli_admin::backup(a).await?,
        Command::Completions { shell } => {
            use clap::CommandFactory as _;
            let mut cmd = Cli::command();
            clap_complete::generate(shell, &mut cmd, "vaxtrace-server", &mut std::io::stdout());
        }
    }
    Ok(())
}

/// Streams ExportEpcis from `server` into `output` (or stdout); the file is written whole or not
/// at all, so a failed export never leaves a truncated document behind.
async fn export_epcis(
    server: &str,
    token: &str,
    facility_id: String,
    start: chrono::DateTime<chrono::Utc>,
    end: chrono::DateTime<chrono::Utc>,
    output: Option<&std::path::Path>,
) -> anyhow::Result<()> {
    use vaxtrace_proto::v1 as pb;
    let channel = tonic::transport::Endpoint::from_shared(server.to_owned())
        .with_context(|| format!("--server {server} is not a URL such as http://127.0.0.1:50051"))?
        .connect()
        .await
        .with_context(|| format!("cannot connect to {server}"))?;
    let mut client = pb::report_service_client::ReportServiceClient::new(channel);
    let ts = |t: chrono::DateTime<chrono::Utc>| prost_types::Timestamp {
        seconds: t.timestamp(),
        nanos: i32::try_from(t.timestamp_subsec_nanos()).unwrap_or(0),
    };
    let mut req = tonic::Request::new(pb::ExportEpcisRequest {
        facility_id,
        start_time: Some(ts(start)),
        end_time: Some(ts(end)),
    });
    let bearer = format!("Bearer {}", token.trim());
    req.metadata_mut().insert("authorization", bearer.parse().context("the token holds characters a header cannot")?);
    let status_text = |s: tonic::Status| anyhow::anyhow!("{:?}: {}", s.code(), s.message());
    let mut stream = client.export_epcis(req).await.map_err(status_text)?.into_inner();
    let mut doc = Vec::new();
    while let Some(chunk) = stream.message().await.map_err(status_text)? {
        doc.extend_from_slice(&chunk.data);
    }
    match output {
        Some(path) => {
            let tmp = path.with_extension("partial");
            tokio::fs::write(&tmp, &doc).await.with_context(|| format!("cannot write {}", tmp.display()))?;
            tokio::fs::rename(&tmp, path).await.with_context(|| format!("cannot write {}", path.display()))?;
            eprintln!("wrote {} ({} bytes)", path.display(), doc.len());
        }
        None => {
            use std::io::Write as _;
            let mut out = std::io::stdout().lock();
            out.write_all(&doc)?;
            out.flush()?;
        }
    }
    Ok(())
}

/// Starts ingest on the external broker, or on an embedded one; returns where devices connect.
/// With `fallback` (the demo), a taken embedded port moves to a free one instead of failing.
async fn start_mqtt(
    app: &vaxtrace_server::App,
    (url, ca_file): (Option<&str>, Option<&std::path::Path>),
    listen: SocketAddr,
    fallback: bool,
) -> anyhow::Result<String> {
    Ok(start_mqtt_at(app, (url, ca_file), listen, fallback).await?.0)
}

/// [`start_mqtt`], also returning the broker's port.
async fn start_mqtt_at(
    app: &vaxtrace_server::App,
    (url, ca_file): (Option<&str>, Option<&std::path::Path>),
    listen: SocketAddr,
    fallback: bool,
) -> anyhow::Result<(String, String, u16)> {
    match url {
        Some(url) => {
            let client_id = format!("vaxtrace-server-{}", uuid::Uuid::now_v7().simple());
            let mut cfg =
                vaxtrace_server::ingest::IngestConfig::from_url(url, client_id).map_err(anyhow::Error::msg)?;
            if let Some(ca) = ca_file {
                cfg = cfg.trust_ca_file(ca).map_err(anyhow::Error::msg)?;
            }
            let scheme = if cfg.tls.is_some() { "mqtts" } else { "mqtt" };
            let shown = format!("{scheme}://{}:{}", cfg.host, cfg.port);
            let (host, port) = (cfg.host.clone(), cfg.port);
            vaxtrace_server::ingest::spawn(app.clone(), cfg);
            Ok((shown, host, port))
        }
        None => {
            let broker = match vaxtrace_server::broker::start(listen).await {
                Ok(b) => b,
                Err(vaxtrace_server::broker::BrokerError::PortTaken(..)) if fallback => {
                    let free = std::net::TcpListener::bind(SocketAddr::new(listen.ip(), 0))?.local_addr()?;
                    vaxtrace_server::broker::start(free).await?
                }
                Err(e) => return Err(e.into()),
            };
            let addr = broker.addr;
            vaxtrace_server::ingest::spawn_embedded(
                app.clone(),
                std::sync::Arc::new(broker),
                vaxtrace_server::ingest::WORKERS,
                vaxtrace_server::ingest::SHARE_GROUP,
            );
            Ok((format!("mqtt://{addr} (embedded broker)"), "127.0.0.1".to_owned(), addr.port()))
        }
    }
}

async fn demo(
    data_dir: Option<PathBuf>,
    listen: SocketAddr,
    (stock_alert_interval, overdue_days): (u64, i64),
    no_data_every: std::time::Duration,
    webhooks: vaxtrace_server::app::WebhookSettings,
    mqtt_url: (Option<&str>, Option<&std::path::Path>),
    mqtt_listen: SocketAddr,
) -> anyhow::Result<()> {
    let (dir, _guard) = match data_dir {
        Some(d) => {
            std::fs::create_dir_all(&d).with_context(|| format!("cannot create {}", d.display()))?;
            (d, None)
        }
        None => {
            let t = tempfile::Builder::new().prefix("vaxtrace-demo-").tempdir()?;
            (t.path().to_owned(), Some(t))
        }
    };
    let url = format!("sqlite://{}", dir.join("vaxtrace.db").display());
    let app =
        vaxtrace_server::open(&url).await.context("cannot open the demo database")?.with_webhook_settings(webhooks);
    app.bootstrap_admin().await?;
    let (admin, caller) = vaxtrace_server::demo::demo_admin(&app).await?;
    let seeded = vaxtrace_server::demo::seed(&app, &caller).await?;
    let (dio, depot) = vaxtrace_server::demo::people(&app, &caller).await?;
    // Port 50051 is often taken on a developer's machine; fall back to any free port.
    let listener = match TcpListener::bind(listen).await {
        Ok(l) => l,
        Err(e) => {
            tracing::warn!(%listen, error = %e, "preferred address taken; using a free port");
            TcpListener::bind(SocketAddr::new(listen.ip(), 0)).await?
        }
    };
    let addr = listener.local_addr()?;
    let (mqtt, mqtt_host, mqtt_port) = start_mqtt_at(&app, mqtt_url, mqtt_listen, true).await?;
    let loggers =
        vaxtrace_server::demo::start_loggers(&app, &caller, &mqtt_host, mqtt_port, &dir.join("loggers")).await?;
    println!(
        "\nvaxtrace demo is running.\n\
         \n  dashboard, stock desk   http://{addr}/  (sign in with a token below)\
         \n  gRPC + grpc-web + HTTP  http://{addr}\
         \n  health                  http://{addr}/healthz\
         \n  metrics                 http://{addr}/metrics\
         \n  MQTT (devices)          {mqtt}\
         \n  simulated loggers       {loggers} (one fridge drifts warm: a HEAT alarm and quarantine within a minute)\
         \n  database                {url}\
         \n  seeded                  {} facilities, {} storage units, {} products, {} lots, {} ledger entries{}\
         \n\n  district officer token (dashboard of the warming fridge's district): {}\
         \n  depot manager token (stock desk of that cold-chain point):          {}\
         \n  admin token (shown once): {}\
         \n\n  try:  grpcurl -plaintext -H 'authorization: Bearer {}' {addr} vaxtrace.v1.FacilityService/ListFacilities\
         \n\nPress Ctrl-C to stop.",
        seeded.facilities,
        seeded.storage_units,
        seeded.products,
        seeded.lots,
        seeded.ledger_entries,
        if seeded.facilities == 0 { " (already seeded)" } else { "" },
        dio.secret,
        depot.secret,
        admin.secret,
        admin.secret,
    );
    app.spawn_stock_alerts(std::time::Duration::from_secs(stock_alert_interval), overdue_days);
    app.spawn_no_data_sweep(no_data_every);
    app.spawn_readings_maintenance(None);
    app.spawn_webhooks();
    vaxtrace_server::serve(app, listener, vaxtrace_server::shutdown_signal()).await?;
    Ok(())
}

/// Webhook delivery as the API documents it, plain http only when the operator allows it.
fn webhook_settings(allow_http: bool) -> vaxtrace_server::app::WebhookSettings {
    vaxtrace_server::app::WebhookSettings { allow_http, ..Default::default() }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_redacted() {
        assert_eq!(redact("postgres://u:secret@h/db"), "postgres://u:***@h/db");
        assert_eq!(redact("sqlite://x.db"), "sqlite://x.db");
        assert!(!redact("postgres://u:p@ss@h/db").contains("ss@h"));
    }

    #[test]
    fn cli_is_consistent() {
        use clap::CommandFactory as _;
        Cli::command().debug_assert();
    }
}
