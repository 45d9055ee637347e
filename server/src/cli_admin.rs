//! The admin commands of `vaxtrace-server`: bulk import and export, token list/revoke, device
//! registration and backup. They open the database directly (like `token create`): onboarding
//! starts from an empty database with no server yet, and a one-transaction import needs the
//! database anyway.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};
use clap::{Args, Subcommand};
use vaxtrace_server::onboard::dhis2::LevelMap;
use vaxtrace_server::onboard::export::ExportOptions;
use vaxtrace_server::onboard::{ConsoleProgress, ImportOptions, SourceFile, format};

/// The database flag every admin command takes.
#[derive(Debug, Clone, Args)]
pub struct Db {
    /// Database: `sqlite://PATH`, `sqlite::memory:` or `postgres://USER@HOST/DB`.
    #[arg(long, env = "VAXTRACE_DATABASE_URL", default_value = "sqlite://vaxtrace.db", hide_env_values = true)]
    pub database_url: String,
}

/// `import`: validate and load a directory of onboarding CSV files.
#[derive(Debug, Args)]
pub struct ImportArgs {
    #[command(flatten)]
    pub db: Db,
    /// Directory of CSV files named as in onboarding/README.md (facilities.csv, storage_units.csv,
    /// products.csv, lots.csv, opening_balances.csv, policies.csv, devices.csv, probes.csv,
    /// tokens.csv, and/or a DHIS2 organisationUnits.csv). Missing files are simply not imported.
    #[arg(long)]
    pub dir: PathBuf,
    /// Check everything and print every problem as FILE:LINE:COLUMN: REASON, then stop without
    /// writing (exit status 1 when there is a problem).
    #[arg(long)]
    pub dry_run: bool,
    /// DHIS2 level → facility kind, over the default 1=national_store,2=state_store,
    /// 3=district_store,4=cold_chain_point (deeper levels take the deepest mapping); `skip` leaves a
    /// level out and hangs its children from the nearest kept ancestor. Example: 5=session_site.
    #[arg(long, value_name = "LEVEL=KIND,...", default_value = "")]
    pub dhis2_levels: String,
    /// Write the secrets the import creates (token bearer strings, generated logger keys) to this
    /// new file (kind,subject,id,secret; mode 0600) instead of standard output. They are shown once.
    #[arg(long, value_name = "FILE")]
    pub secrets_out: Option<PathBuf>,
}

/// What `export` writes.
#[derive(Debug, Subcommand)]
pub enum ExportWhat {
    /// The readings of one storage unit in [start, end) as CSV, in reading-time order.
    Readings(ReadingsArgs),
}

/// `export`: every entity in the import formats, or (subcommand) a unit's readings.
#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
pub struct ExportArgs {
    #[command(subcommand)]
    pub what: Option<ExportWhat>,
    #[command(flatten)]
    pub db: Db,
    /// Directory to write the CSV files to (created if missing; files in it are replaced).
    #[arg(long, required = true)]
    pub dir: Option<PathBuf>,
    /// Also write each logger's HMAC key (key_hex): a secret, for moving loggers to another
    /// database without re-provisioning them. Tokens never leave: only their hashes are stored.
    #[arg(long)]
    pub include_device_keys: bool,
}

/// `export readings`.
#[derive(Debug, Args)]
pub struct ReadingsArgs {
    #[command(flatten)]
    pub db: Db,
    /// Storage unit id.
    #[arg(long, required_unless_present = "facility", conflicts_with = "facility")]
    pub unit: Option<String>,
    /// Facility code of the unit (with --unit-name), instead of --unit.
    #[arg(long, requires = "unit_name")]
    pub facility: Option<String>,
    /// Storage unit name at --facility.
    #[arg(long, requires = "facility")]
    pub unit_name: Option<String>,
    /// First instant, RFC 3339 (for example 2026-11-01T00:00:00Z).
    #[arg(long)]
    pub start: chrono::DateTime<chrono::Utc>,
    /// End instant (exclusive), RFC 3339; default: now.
    #[arg(long)]
    pub end: Option<chrono::DateTime<chrono::Utc>>,
    /// Write to this file instead of standard output.
    #[arg(long, short)]
    pub output: Option<PathBuf>,
}

/// `device register`.
#[derive(Debug, Args)]
pub struct DeviceRegisterArgs {
    #[command(flatten)]
    pub db: Db,
    /// Manufacturer serial (unique).
    #[arg(long)]
    pub serial: String,
    /// Facility code where the logger hangs.
    #[arg(long)]
    pub facility: String,
    /// A probe: INDEX=UNIT_NAME[:LABEL], the unit at --facility; repeat for each probe (1..16).
    #[arg(long = "probe", value_name = "INDEX=UNIT[:LABEL]", required = true)]
    pub probes: Vec<String>,
    /// Expected seconds between readings (60..86400).
    #[arg(long, default_value_t = 300)]
    pub interval: i64,
    /// Display name.
    #[arg(long, default_value = "")]
    pub name: String,
    /// Make and model.
    #[arg(long, default_value = "")]
    pub model: String,
    /// Accept unsigned batches (third-party loggers that cannot sign).
    #[arg(long)]
    pub unsigned_allowed: bool,
    /// The HMAC key the logger already holds, in hex; default: a new random key, printed once.
    #[arg(long, hide_env_values = true)]
    pub key_hex: Option<String>,
}

/// `backup`.
#[derive(Debug, Args)]
pub struct BackupArgs {
    #[command(flatten)]
    pub db: Db,
    /// The backup file to create (must not exist). SQLite only: PostgreSQL prints pg_dump
    /// guidance and exits with status 2.
    #[arg(long)]
    pub out: PathBuf,
}

fn open_err(url: &str) -> String {
    format!("cannot open the database {}", crate::redact(url))
}

/// Runs `import`.
pub async fn import(a: ImportArgs) -> anyhow::Result<()> {
    let levels: LevelMap = a.dhis2_levels.parse().map_err(|e| anyhow::anyhow!("--dhis2-levels: {e}"))?;
    let files =
        vaxtrace_server::onboard::read_dir(&a.dir).with_context(|| format!("cannot read {}", a.dir.display()))?;
    if files.is_empty() {
        bail!("{} holds no .csv files (see onboarding/README.md for the file names)", a.dir.display());
    }
    // Opened first, so a secrets file that cannot be written fails before anything is imported.
    let mut secrets_file = match &a.secrets_out {
        Some(path) if !a.dry_run => Some((path.clone(), create_private(path)?)),
        _ => None,
    };
    let app = vaxtrace_server::open(&a.db.database_url).await.with_context(|| open_err(&a.db.database_url))?;
    let progress = ConsoleProgress::new("import");
    let result = app.import_files(&files, &ImportOptions { levels }, a.dry_run, &progress).await;
    let out = match result {
        Ok(o) => o,
        Err(e) => {
            discard(&mut secrets_file);
            return Err(e).context("the import failed; nothing was written");
        }
    };
    let mut stdout = std::io::stdout().lock();
    for p in &out.problems {
        writeln!(stdout, "{p}")?;
    }
    let names: Vec<&str> = files.iter().map(|f| f.name.as_str()).collect();
    if !out.problems.is_empty() {
        discard(&mut secrets_file);
        let files_hit: std::collections::BTreeSet<&str> = out.problems.iter().map(|p| p.file.as_str()).collect();
        bail!("import refused: {} problem(s) in {} file(s); nothing was written", out.problems.len(), files_hit.len());
    }
    let verb = if a.dry_run { "would import" } else { "imported" };
    writeln!(stdout, "{verb} from {} ({}):", a.dir.display(), names.join(", "))?;
    write!(stdout, "{}", out.summary)?;
    if a.dry_run {
        writeln!(stdout, "dry run: {} rows checked, no problem; nothing was written", out.rows_read)?;
        return Ok(());
    }
    if out.written {
        let secs = out.write_time.as_secs_f64();
        // Display only: a rounded rate is exact enough.
        #[allow(clippy::cast_precision_loss, clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        let rate = if secs > 0.0 { (out.rows_written as f64 / secs).round() as u64 } else { 0 };
        writeln!(
            stdout,
            "wrote {} rows in one transaction in {:.2} s ({rate} rows/s; validation {:.2} s)",
            out.rows_written,
            secs,
            out.validate_time.as_secs_f64()
        )?;
    } else {
        writeln!(stdout, "nothing new: the database already holds every row")?;
    }
    match secrets_file {
        Some((path, mut f)) => {
            f.write_all(&vaxtrace_server::onboard::secrets_csv(&out.secrets))
                .and_then(|()| f.sync_all())
                .with_context(|| format!("imported, but could not write the secrets to {}", path.display()))?;
            writeln!(stdout, "{} secret(s) written to {} (shown nowhere else)", out.secrets.len(), path.display())?;
        }
        None if !out.secrets.is_empty() => {
            writeln!(stdout, "secrets (shown once, store them safely):")?;
            stdout.write_all(&vaxtrace_server::onboard::secrets_csv(&out.secrets))?;
        }
        None => {}
    }
    Ok(())
}

/// Creates a new file readable by its owner only.
fn create_private(path: &Path) -> anyhow::Result<std::fs::File> {
    let mut o = std::fs::OpenOptions::new();
    o.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut o, 0o600);
    o.open(path).with_context(|| format!("cannot create {} (it must not exist yet)", path.display()))
}

fn discard(f: &mut Option<(PathBuf, std::fs::File)>) {
    if let Some((path, file)) = f.take() {
        drop(file);
        let _ = std::fs::remove_file(path);
    }
}

/// Writes `bytes` to `path` whole or not at all.
fn write_atomic(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let tmp = path.with_extension("partial");
    std::fs::write(&tmp, bytes).with_context(|| format!("cannot write {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("cannot write {}", path.display()))
}

/// Runs `export` and `export readings`.
pub async fn export(a: ExportArgs) -> anyhow::Result<()> {
    if let Some(ExportWhat::Readings(r)) = a.what {
        return export_readings(r).await;
    }
    let dir = a.dir.context("--dir is required")?;
    let app = vaxtrace_server::open(&a.db.database_url).await.with_context(|| open_err(&a.db.database_url))?;
    let progress = ConsoleProgress::new("export");
    let files = app.export_files(ExportOptions { include_device_keys: a.include_device_keys }).await?;
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let total: usize = files.iter().map(|f| f.rows).sum();
    vaxtrace_server::onboard::Progress::start(&progress, "rows", u64::try_from(total).unwrap_or(u64::MAX));
    for f in &files {
        write_atomic(&dir.join(f.name), &f.bytes)?;
        vaxtrace_server::onboard::Progress::advance(&progress, u64::try_from(f.rows).unwrap_or(0));
    }
    vaxtrace_server::onboard::Progress::finish(&progress);
    let mut stdout = std::io::stdout().lock();
    for f in &files {
        writeln!(stdout, "wrote {} ({} rows)", dir.join(f.name).display(), f.rows)?;
    }
    if a.include_device_keys {
        writeln!(stdout, "devices.csv holds the loggers' HMAC keys: keep it as secret as the keys")?;
    }
    Ok(())
}

async fn export_readings(r: ReadingsArgs) -> anyhow::Result<()> {
    let app = vaxtrace_server::open(&r.db.database_url).await.with_context(|| open_err(&r.db.database_url))?;
    let unit = match (r.unit, r.facility, r.unit_name) {
        (Some(u), _, _) => u,
        (None, Some(f), Some(n)) => app.find_unit(&f, &n).await?,
        _ => bail!("give --unit ID, or --facility CODE with --unit-name NAME"),
    };
    let progress = ConsoleProgress::new("export readings");
    let n = match &r.output {
        Some(path) => {
            let tmp = path.with_extension("partial");
            let mut f = std::io::BufWriter::new(
                std::fs::File::create(&tmp).with_context(|| format!("cannot create {}", tmp.display()))?,
            );
            let n = app.export_readings(&unit, r.start, r.end, &mut f, &progress).await;
            let n = match n {
                Ok(n) => n,
                Err(e) => {
                    drop(f);
                    let _ = std::fs::remove_file(&tmp);
                    return Err(e.into());
                }
            };
            f.flush()?;
            drop(f);
            std::fs::rename(&tmp, path).with_context(|| format!("cannot write {}", path.display()))?;
            n
        }
        None => {
            let mut out = std::io::stdout();
            app.export_readings(&unit, r.start, r.end, &mut out, &progress).await?
        }
    };
    eprintln!("exported {n} readings");
    Ok(())
}

/// Runs `device register`: the device and probe rows go through the import's validation.
pub async fn device_register(a: DeviceRegisterArgs) -> anyhow::Result<()> {
    let mut probes = Vec::new();
    for p in &a.probes {
        let (index, rest) = p.split_once('=').with_context(|| format!("--probe {p}: expected INDEX=UNIT[:LABEL]"))?;
        let (unit, label) = rest.split_once(':').unwrap_or((rest, ""));
        probes.push(vec![a.serial.clone(), index.trim().to_owned(), unit.to_owned(), label.to_owned()]);
    }
    let device = vec![
        a.serial.clone(),
        a.facility.clone(),
        a.name.clone(),
        a.model.clone(),
        a.interval.to_string(),
        a.unsigned_allowed.to_string(),
        "true".to_owned(),
        a.key_hex.clone().unwrap_or_default(),
    ];
    let files = vec![
        SourceFile { name: format::DEVICES.name.into(), bytes: format::write_csv(format::DEVICES.columns, [device]) },
        SourceFile { name: format::PROBES.name.into(), bytes: format::write_csv(format::PROBES.columns, probes) },
    ];
    let app = vaxtrace_server::open(&a.db.database_url).await.with_context(|| open_err(&a.db.database_url))?;
    let progress = vaxtrace_server::onboard::NoProgress;
    let out = app.import_files(&files, &ImportOptions::default(), false, &progress).await?;
    if !out.problems.is_empty() {
        for p in &out.problems {
            // The rows were built from flags: name the flag's column, not a file line.
            eprintln!("{}: {}", p.column, p.reason);
        }
        bail!("the device was not registered");
    }
    if !out.written {
        println!("device {} is already registered with these settings; nothing changed", a.serial);
        return Ok(());
    }
    match out.secrets.iter().find(|s| s.kind == "device_key") {
        Some(s) => println!(
            "device {} registered as {}\nHMAC key (shown once, put it in the agent's key_hex):\n{}",
            a.serial, s.id, s.secret
        ),
        None => println!("device {} registered with the given key", a.serial),
    }
    Ok(())
}

/// Runs `backup`.
pub async fn backup(a: BackupArgs) -> anyhow::Result<()> {
    let url = &a.db.database_url;
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        eprintln!(
            "PostgreSQL is backed up with its own tools, which take a consistent snapshot while vaxtrace runs:\n\
             \n  pg_dump --format=custom --file={} '{}'\n\
             \nRestore into an empty database with:\n\
             \n  pg_restore --no-owner --dbname='postgres://USER@HOST/NEWDB' {}\n\
             \nNothing was written by vaxtrace-server.",
            a.out.display(),
            crate::redact(url),
            a.out.display()
        );
        std::process::exit(2);
    }
    if a.out.exists() {
        bail!("{} exists; a backup never overwrites a file", a.out.display());
    }
    let app = vaxtrace_server::open(url).await.with_context(|| open_err(url))?;
    let path = a.out.to_str().context("the --out path is not valid UTF-8")?;
    app.backup(path).await.with_context(|| format!("the backup to {} failed", a.out.display()))?;
    let size = std::fs::metadata(&a.out).map(|m| m.len()).unwrap_or(0);
    println!(
        "backed up {} to {} ({size} bytes); open it with --database-url sqlite://{}",
        crate::redact(url),
        a.out.display(),
        a.out.display()
    );
    Ok(())
}

/// Runs `token list`.
pub async fn token_list(db: Db, include_revoked: bool) -> anyhow::Result<()> {
    let app = vaxtrace_server::open(&db.database_url).await.with_context(|| open_err(&db.database_url))?;
    let tokens = app.list_tokens_local(include_revoked).await?;
    let mut w = csv::WriterBuilder::new().terminator(csv::Terminator::Any(b'\n')).from_writer(std::io::stdout());
    w.write_record(["id", "role", "scope_facility_id", "device_id", "description", "created_at", "revoked_at"])?;
    for t in tokens {
        w.write_record([
            t.id,
            t.role.name().to_owned(),
            t.scope_facility_id.unwrap_or_default(),
            t.device_id.unwrap_or_default(),
            t.description,
            t.created_at.to_rfc3339(),
            t.revoked_at.map(|r| r.to_rfc3339()).unwrap_or_default(),
        ])?;
    }
    w.flush()?;
    Ok(())
}

/// Runs `token revoke`.
pub async fn token_revoke(db: Db, id: &str) -> anyhow::Result<()> {
    let app = vaxtrace_server::open(&db.database_url).await.with_context(|| open_err(&db.database_url))?;
    match app.revoke_token_local(id).await? {
        Some(t) => {
            let at = t.revoked_at.map(|r| r.to_rfc3339()).unwrap_or_default();
            println!("token {} ({}, {}) revoked at {at}", t.id, t.role.name(), t.description);
            Ok(())
        }
        None => bail!("no token with id {id}"),
    }
}
