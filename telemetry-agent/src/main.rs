//! `vaxtrace-agent`: the command line.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use vaxtrace_agent::agent;
use vaxtrace_agent::config::{Config, SourceConfig};

/// vaxtrace telemetry agent: fridge probes -> disk buffer -> MQTT, never losing a reading.
#[derive(Debug, Parser)]
#[command(version)]
struct Cli {
    /// The TOML config file (see agent.example.toml).
    #[arg(short, long, env = "VAXTRACE_AGENT_CONFIG", default_value = "/etc/vaxtrace/agent.toml")]
    config: PathBuf,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the agent (the default).
    Run,
    /// Validate the config (and the files it names), print a summary and exit.
    CheckConfig,
    /// Read the probes and print the readings; touches neither the buffer nor the network.
    Read {
        /// Read one sample and exit (currently the only mode).
        #[arg(long, default_value_t = true)]
        once: bool,
        /// Print JSON lines instead of text.
        #[arg(long)]
        json: bool,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        // No colour codes in journald or log files.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("VAXTRACE_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,rumqttc=warn")),
        )
        .init();
    let config = match Config::load(&cli.config).and_then(|c| c.check_files().map(|()| c)) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("vaxtrace-agent: {e}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("vaxtrace-agent: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match cli.command.unwrap_or(Command::Run) {
        Command::CheckConfig => {
            print_summary(&config);
            ExitCode::SUCCESS
        }
        Command::Read { once: _, json } => runtime.block_on(read_once(&config, json)),
        Command::Run => match runtime.block_on(agent::run(config, shutdown_signal())) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("vaxtrace-agent: {e:#}");
                ExitCode::FAILURE
            }
        },
    }
}

async fn shutdown_signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        () = term => {}
    }
}

fn print_summary(config: &Config) {
    let endpoint = config.mqtt_endpoint().ok();
    println!("config OK");
    println!("device_id     {}", config.device_id);
    println!("data_dir      {}", config.data_dir.display());
    println!("interval      {:?}", config.interval.0);
    if let Some(e) = endpoint {
        println!("broker        {}:{} ({})", e.host, e.port, if e.tls { "TLS" } else { "plain TCP" });
    }
    println!("username      {}", config.mqtt.username.as_deref().unwrap_or(&config.device_id));
    let signed = matches!(config.signing_key(), Ok(Some(_)));
    println!("signing       {}", if signed { "HMAC-SHA256" } else { "OFF (unsigned batches)" });
    let u = &config.uplink;
    println!(
        "uplink        batch {} readings, {} in flight, ack timeout {:?}",
        u.batch_size, u.max_inflight_batches, u.ack_timeout.0
    );
    println!("buffer        {} MiB max, {:?} when full", config.buffer.max_mib, config.buffer.full_policy);
    for (p, index) in config.probes.iter().zip(config.probe_indexes()) {
        let source = match &p.source {
            SourceConfig::Simulator { scenario } => format!("simulator {scenario:?}"),
            SourceConfig::Ds18b20 { sensor_id, path } => match path {
                Some(path) => format!("ds18b20 {}", path.display()),
                None => format!("ds18b20 {}", sensor_id.as_deref().unwrap_or("?")),
            },
            SourceConfig::File { path } => format!("file {}", path.display()),
            SourceConfig::Command { command, .. } => format!("command {}", command.join(" ")),
        };
        println!("probe {index:<7} {source}, profile {:?}, label {:?}", p.profile, p.label);
    }
}

async fn read_once(config: &Config, json: bool) -> ExitCode {
    let probes = agent::probes(config);
    let now = agent::now_ms();
    let results = agent::read_probes(&probes, now, 0, 0).await;
    let mut failed = false;
    for ((reading, fault), probe) in results.iter().zip(&probes) {
        let time = vaxtrace_agent::alarm::rfc3339(now);
        match (fault, json) {
            (Some(err), true) => {
                failed = true;
                println!(
                    "{}",
                    serde_json::json!({"probe": reading.probe, "label": probe.label, "time": time, "error": err})
                );
            }
            (Some(err), false) => {
                failed = true;
                println!("probe {} {:?}: ERROR {err}", reading.probe, probe.label);
            }
            (None, true) => println!(
                "{}",
                serde_json::json!({"probe": reading.probe, "label": probe.label, "time": time, "temp_c": reading.temp_c,
                    "power_on": reading.power_on, "door_open": reading.door_open})
            ),
            (None, false) => println!("probe {} {:?}: {:.2} °C", reading.probe, probe.label, reading.temp_c),
        }
    }
    if failed {
        eprintln!("vaxtrace-agent: at least one probe could not be read");
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
