use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use fanfare_supervisor::UpOptions;
use fanfare_topology::Topology;
use tokio::signal::unix::{signal, SignalKind};
use tokio_util::sync::CancellationToken;

use crate::settings;

const DEFAULT_TOPOLOGY: &str = "topology/local-3dc.toml";

#[derive(Parser)]
#[command(
    name = "fanfare",
    version,
    about = "Real-time likes and comments on live video, over SSE, across datacenters"
)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a whole topology on this machine: NATS servers, dispatchers and frontends.
    Up {
        /// Topology file.
        #[arg(default_value = DEFAULT_TOPOLOGY)]
        topology: PathBuf,
        /// Where configs, data and logs go (emptied at start); default .fanfare/run/<topology>.
        #[arg(long)]
        run_dir: Option<PathBuf>,
        /// The nats-server binary (else NATS_SERVER_BIN, .tools/nats/bin, PATH).
        #[arg(long)]
        nats_server: Option<PathBuf>,
        /// Do not echo the nodes' logs (they are still written to the run directory).
        #[arg(long)]
        quiet: bool,
    },
    /// Validate, render or describe a topology file.
    Topology {
        #[command(subcommand)]
        command: TopologyCommand,
    },
    /// Create the streams, consumers and buckets of a topology on running NATS servers.
    Provision {
        #[arg(default_value = DEFAULT_TOPOLOGY)]
        topology: PathBuf,
    },
    /// Run one frontend.
    Frontend {
        #[arg(long)]
        config: PathBuf,
    },
    /// Run one dispatcher.
    Dispatcher {
        #[arg(long)]
        config: PathBuf,
    },
}

#[derive(Subcommand)]
enum TopologyCommand {
    /// Check a topology file; errors name the file, the field and the problem.
    Check {
        #[arg(default_value = DEFAULT_TOPOLOGY)]
        topology: PathBuf,
    },
    /// Write the nats-server config of every server.
    Render {
        #[arg(default_value = DEFAULT_TOPOLOGY)]
        topology: PathBuf,
        #[arg(long)]
        out: PathBuf,
        /// JetStream storage root written into the configs (default OUT/jetstream).
        #[arg(long)]
        store_dir: Option<PathBuf>,
    },
    /// Print the URLs of every node.
    Endpoints {
        #[arg(default_value = DEFAULT_TOPOLOGY)]
        topology: PathBuf,
        #[arg(long)]
        json: bool,
    },
}

pub async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Up {
            topology,
            run_dir,
            nats_server,
            quiet,
        } => up(&topology, run_dir, nats_server, quiet).await,
        Command::Topology { command } => topology_command(command),
        Command::Provision { topology } => provision(&topology).await,
        Command::Frontend { config } => {
            let settings: fanfare_frontend::Settings =
                settings::load(&config, "FANFARE_FRONTEND", settings::process_env())?;
            settings
                .validate()
                .map_err(|problem| anyhow::anyhow!("{}: {problem}", config.display()))?;
            let listener = tokio::net::TcpListener::bind(settings.listen)
                .await
                .with_context(|| format!("binding {}", settings.listen))?;
            let shutdown = shutdown_on_signals()?;
            fanfare_frontend::run(settings, listener, shutdown).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Dispatcher { config } => {
            let settings: fanfare_dispatcher::Settings =
                settings::load(&config, "FANFARE_DISPATCHER", settings::process_env())?;
            settings
                .validate()
                .map_err(|problem| anyhow::anyhow!("{}: {problem}", config.display()))?;
            let listener = tokio::net::TcpListener::bind(settings.admin)
                .await
                .with_context(|| format!("binding {}", settings.admin))?;
            let shutdown = shutdown_on_signals()?;
            fanfare_dispatcher::run(settings, listener, shutdown).await?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// A token cancelled by the first SIGINT or SIGTERM.
fn shutdown_on_signals() -> anyhow::Result<CancellationToken> {
    let token = CancellationToken::new();
    let mut interrupt = signal(SignalKind::interrupt()).context("installing SIGINT handler")?;
    let mut terminate = signal(SignalKind::terminate()).context("installing SIGTERM handler")?;
    let cancel = token.clone();
    tokio::spawn(async move {
        tokio::select! {
            _ = interrupt.recv() => {}
            _ = terminate.recv() => {}
        }
        tracing::info!("signal received, shutting down");
        cancel.cancel();
    });
    Ok(token)
}

fn topology_command(command: TopologyCommand) -> anyhow::Result<ExitCode> {
    match command {
        TopologyCommand::Check { topology } => {
            let loaded = Topology::load(&topology)?;
            let nodes = loaded.nodes().count();
            println!(
                "{}: ok ({} datacenters, {nodes} nodes)",
                topology.display(),
                loaded.datacenters.len()
            );
        }
        TopologyCommand::Render {
            topology,
            out,
            store_dir,
        } => {
            let loaded = Topology::load(&topology)?;
            let store = store_dir.unwrap_or_else(|| out.join("jetstream"));
            for rendered in loaded.render_nats_configs(&out, &store)? {
                println!("{}", rendered.path.display());
            }
        }
        TopologyCommand::Endpoints { topology, json } => {
            let loaded = Topology::load(&topology)?;
            let endpoints = loaded.endpoints();
            if json {
                println!("{}", serde_json::to_string(&endpoints)?);
            } else {
                for dc in &endpoints.datacenters {
                    println!("{}", dc.name);
                    for frontend in &dc.frontends {
                        println!("  frontend   {:<12} {}", frontend.name, frontend.url);
                    }
                    for nats in &dc.nats {
                        println!(
                            "  nats       {:<12} {} {}",
                            nats.name, nats.client_url, nats.monitor_url
                        );
                    }
                    for dispatcher in &dc.dispatchers {
                        println!("  dispatcher {}", dispatcher.name);
                    }
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn provision(topology: &Path) -> anyhow::Result<ExitCode> {
    let loaded = Topology::load(topology)?;
    let options = UpOptions::new(PathBuf::new(), PathBuf::new(), PathBuf::new());
    fanfare_supervisor::provision(&loaded, options.dispatch).await?;
    println!("provisioned {} datacenters", loaded.datacenters.len());
    Ok(ExitCode::SUCCESS)
}

async fn up(
    topology_path: &Path,
    run_dir: Option<PathBuf>,
    nats_server: Option<PathBuf>,
    quiet: bool,
) -> anyhow::Result<ExitCode> {
    let topology = Topology::load(topology_path)?;
    let project_root = std::env::current_dir().context("reading the current directory")?;
    let env_nats = std::env::var("NATS_SERVER_BIN").ok();
    let nats_server = fanfare_supervisor::find_nats_server(
        nats_server.as_deref(),
        env_nats.as_deref(),
        &project_root,
    )?;
    let stem = topology_path
        .file_stem()
        .map(|stem| stem.to_string_lossy().into_owned())
        .unwrap_or_else(|| "topology".to_owned());
    let run_dir = run_dir.unwrap_or_else(|| project_root.join(".fanfare/run").join(stem));
    let fanfare_bin = std::env::current_exe().context("locating the fanfare binary")?;
    let mut options = UpOptions::new(run_dir, nats_server, fanfare_bin);
    options.echo_logs = !quiet;

    let shutdown = shutdown_on_signals()?;
    eprintln!("fanfare up: starting {}", topology_path.display());
    let starting = fanfare_supervisor::start(&topology, &options);
    let mut running = tokio::select! {
        _ = shutdown.cancelled() => {
            eprintln!("fanfare up: interrupted during start-up");
            return Ok(ExitCode::FAILURE);
        }
        running = starting => running?,
    };
    println!(
        "\nfanfare is up (run directory {})\n",
        running.run_dir().display()
    );
    println!("{}", running.describe());
    println!("ready");
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            exit = running.next_exit() => match exit {
                Some(exit) => eprintln!("fanfare up: {} exited ({}); the rest keeps running", exit.name, exit.status),
                None => break,
            },
        }
    }
    eprintln!("fanfare up: stopping");
    running.stop().await;
    eprintln!("fanfare up: stopped");
    Ok(ExitCode::SUCCESS)
}
