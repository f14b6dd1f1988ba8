use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use fanfare_supervisor::{ChaosCommand, ChaosRequest, LinkMode, UpOptions};
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
        /// Each datacenter in its own network namespace (its own address, veth links through a
        /// bridge); chaos partitions are cut in the kernel with nftables. Root only.
        #[arg(long)]
        netns: bool,
    },
    /// Validate, render or describe a topology file.
    Topology {
        #[command(subcommand)]
        command: TopologyCommand,
    },
    /// Generate deployment files from a topology: NATS Helm values, kustomize manifests,
    /// Compose, systemd units, alert rules and a dashboard.
    Deploy {
        #[command(subcommand)]
        command: DeployCommand,
    },
    /// Create the streams, consumers and buckets of a topology on running NATS servers.
    Provision {
        #[arg(default_value = DEFAULT_TOPOLOGY)]
        topology: PathBuf,
        /// The run directory of `fanfare up` (or the --out of `fanfare topology render`) whose
        /// `secrets/` hold the administrator's credentials and the CA; default
        /// .fanfare/run/<topology>.
        #[arg(long)]
        run_dir: Option<PathBuf>,
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
    /// Post likes or a comment to a frontend, as a client would, and print the answers.
    Publish {
        /// Topology file whose frontends to use.
        #[arg(long, global = true, default_value = DEFAULT_TOPOLOGY)]
        topology: PathBuf,
        /// Datacenter whose first frontend takes the request.
        #[arg(long, global = true, default_value = "dc1")]
        dc: String,
        /// A frontend's base URL, instead of one from the topology.
        #[arg(long, global = true)]
        url: Option<String>,
        /// Bearer token for a frontend with authentication on (see `fanfare token`).
        #[arg(long, global = true, env = "FANFARE_TOKEN", hide_env_values = true)]
        token: Option<String>,
        #[command(subcommand)]
        what: PublishWhat,
    },
    /// Mint a token for publishing (and watching private videos): HS256 from a secret file,
    /// or RS256/EdDSA from a PEM private key. Prints the token.
    Token(TokenArgs),
    /// Break a running `fanfare up` on purpose: cut links, kill and restart nodes.
    Chaos {
        /// Run directory of the `fanfare up` to act on (default .fanfare/run/<topology>).
        #[arg(long, global = true)]
        run_dir: Option<PathBuf>,
        /// Topology file the `fanfare up` runs, to find its run directory.
        #[arg(long, global = true, default_value = DEFAULT_TOPOLOGY)]
        topology: PathBuf,
        #[command(subcommand)]
        command: ChaosSubcommand,
    },
    /// Load generator: many SSE viewers of one video, comments at a fixed rate or likes as
    /// fast as possible, and what was delivered, how fast, and at what cost.
    Bench(Box<BenchArgs>),
}

#[derive(clap::Args)]
struct BenchArgs {
    /// fanfare (URLs from the topology) or generic (--sub-url and --pub-url, for peers).
    #[arg(long, value_enum, default_value = "fanfare")]
    target: BenchTarget,
    /// Topology file of the running `fanfare up` (target fanfare).
    #[arg(long, default_value = DEFAULT_TOPOLOGY)]
    topology: PathBuf,
    /// Run directory of that `fanfare up`, for its node pids (default .fanfare/run/<topology>).
    #[arg(long)]
    run_dir: Option<PathBuf>,
    /// Video watched and published to (default: a fresh id per run).
    #[arg(long)]
    video: Option<String>,
    /// SSE viewers to open.
    #[arg(long, default_value_t = 100)]
    viewers: usize,
    /// Spread the viewers over this many videos (`<video>-0` ..), one after the other; each
    /// comment goes to a different one of them, drawn at random. The hold comes first and
    /// measures every server process's CPU while idle.
    #[arg(long)]
    videos: Option<usize>,
    /// Frontends the viewers use, round-robin (default: every frontend of dc1).
    #[arg(long, value_delimiter = ',', conflicts_with = "dcs")]
    frontends: Vec<String>,
    /// Datacenters whose frontends the viewers use.
    #[arg(long, value_delimiter = ',')]
    dcs: Vec<String>,
    /// Frontend that receives comments and likes.
    #[arg(long, default_value = "dc1-fe1")]
    publish_frontend: String,
    /// Viewer URL of a peer; `{video}` is replaced (target generic).
    #[arg(long)]
    sub_url: Option<String>,
    /// Publish URL of a peer; `{video}` is replaced (target generic).
    #[arg(long)]
    pub_url: Option<String>,
    /// How a peer takes a published message.
    #[arg(long, value_enum, default_value = "raw")]
    pub_format: BenchPubFormat,
    /// Server processes to measure (target generic; fanfare reads them from the run directory).
    #[arg(long)]
    server_pid: Vec<u32>,
    /// Viewers bind source addresses 127.0.0.2 ..= 127.0.0.(N+1), for more ephemeral ports.
    #[arg(long, default_value_t = 8)]
    source_addrs: u8,
    /// Viewers connecting at once.
    #[arg(long, default_value_t = 512)]
    connect_concurrency: usize,
    /// Publish comments at this rate.
    #[arg(long)]
    comments_per_sec: Option<f64>,
    /// Post likes as fast as possible instead of (or besides) comments.
    #[arg(long)]
    likes: bool,
    /// How long to publish.
    #[arg(long, default_value = "2.5s", value_parser = fanfare_soak::parse_duration)]
    duration: Duration,
    /// Concurrent keep-alive publish connections.
    #[arg(long, default_value_t = 64)]
    publish_concurrency: usize,
    /// After publishing, how long to wait for every viewer to have everything.
    #[arg(long, default_value = "3s", value_parser = fanfare_soak::parse_duration)]
    drain: Duration,
    /// With nothing published: how long to hold the connections before measuring.
    #[arg(long, default_value = "2s", value_parser = fanfare_soak::parse_duration)]
    hold: Duration,
    /// Print the report as one JSON object.
    #[arg(long)]
    json: bool,
    /// Processes holding the viewers, this one included: one holds at most about 19,700
    /// connections here (its open-file limit), and one runtime reads only so fast.
    #[arg(long, default_value_t = 1)]
    processes: usize,
    /// Run as a viewer process of another bench (internal; the JSON is its share).
    #[arg(long, hide = true)]
    viewer_share: Option<String>,
}

#[derive(clap::Args)]
struct TokenArgs {
    /// HS256: file holding the shared secret (one trailing newline is ignored).
    #[arg(long, required_unless_present = "private_key_file")]
    secret_file: Option<PathBuf>,
    /// RS256 or EdDSA: PEM private key file (PKCS#8).
    #[arg(long, conflicts_with = "secret_file")]
    private_key_file: Option<PathBuf>,
    /// Signature algorithm.
    #[arg(long, value_enum, default_value = "hs256")]
    algorithm: TokenAlgorithm,
    /// Key id put in the header; the frontend picks its key by it.
    #[arg(long)]
    kid: Option<String>,
    /// The user the token speaks for (`sub`).
    #[arg(long)]
    sub: String,
    /// Audience (`aud`); must match the frontends' `[auth] audience`.
    #[arg(long, default_value = "fanfare")]
    aud: String,
    /// Issuer (`iss`), for frontends that check one.
    #[arg(long)]
    iss: Option<String>,
    /// Videos the token may act on: ids or `prefix*` patterns (default: every video).
    #[arg(long, value_delimiter = ',')]
    videos: Vec<String>,
    /// Actions the token allows: like, comment, view (default: every action).
    #[arg(long, value_delimiter = ',')]
    actions: Vec<String>,
    /// How long the token is valid.
    #[arg(long, default_value = "1h", value_parser = fanfare_soak::parse_duration)]
    ttl: Duration,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum TokenAlgorithm {
    Hs256,
    Rs256,
    Eddsa,
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum BenchTarget {
    Fanfare,
    Generic,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum BenchPubFormat {
    Raw,
    Pushpin,
}

#[derive(Subcommand)]
enum PublishWhat {
    /// `count` likes, one request each.
    Like {
        video: String,
        #[arg(long, default_value_t = 1)]
        count: u32,
        /// User id sent in the body (default `cli`; left out with --token, whose subject is
        /// the user).
        #[arg(long)]
        user: Option<String>,
    },
    /// One comment.
    Comment {
        video: String,
        text: String,
        /// As for `like`.
        #[arg(long)]
        user: Option<String>,
        /// Retrying with the same key stores the comment once.
        #[arg(long)]
        idempotency_key: Option<String>,
    },
}

#[derive(Subcommand)]
enum ChaosSubcommand {
    /// One datacenter: isolate it from all others. Several: cut every link among them.
    Partition {
        #[arg(required = true)]
        datacenters: Vec<String>,
        /// reset: links refused and torn down at once; drop: a silent black hole.
        #[arg(long, value_enum, default_value = "reset")]
        mode: CutMode,
    },
    /// Bring every link back up.
    Heal,
    /// SIGKILL one node (NATS server, dispatcher or frontend).
    Kill { node: String },
    /// Stop one node if it runs and start it again.
    Restart { node: String },
    /// Links and nodes.
    Status {
        #[arg(long)]
        json: bool,
    },
    /// Publish and watch under seeded chaos for a while, then check that every viewer got
    /// every accepted comment once and in order, and the exact like total. Exits 1 if not.
    Soak(SoakArgs),
}

#[derive(clap::Args)]
struct SoakArgs {
    /// How long to publish and break things (e.g. 5m, 90s, 1m30s).
    #[arg(long, default_value = "5m", value_parser = fanfare_soak::parse_duration)]
    duration: Duration,
    /// Seed of every chaos action and its timing (default: from the clock; printed).
    #[arg(long)]
    seed: Option<u64>,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
    /// Videos watched and published to.
    #[arg(long, default_value_t = 3)]
    videos: usize,
    /// SSE viewers opened on each frontend.
    #[arg(long, default_value_t = 2)]
    viewers_per_frontend: usize,
    /// Comments per second, per datacenter.
    #[arg(long, default_value_t = 5.0)]
    comments_per_sec: f64,
    /// Likes per second, per datacenter.
    #[arg(long, default_value_t = 10.0)]
    likes_per_sec: f64,
    /// Mean time between chaos actions (±25 %); 0s for none.
    #[arg(long, default_value = "20s", value_parser = fanfare_soak::parse_duration)]
    chaos_every: Duration,
    /// How long to wait at the end for everything to arrive.
    #[arg(long, default_value = "60s", value_parser = fanfare_soak::parse_duration)]
    settle: Duration,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum CutMode {
    Reset,
    Drop,
}

#[derive(Subcommand)]
enum DeployCommand {
    /// Write OUT/helm, OUT/kubernetes, OUT/compose, OUT/hosts and OUT/monitoring (emptied
    /// first); nothing secret unless --with-secrets, which also writes OUT/secrets (kept
    /// passwords are never replaced).
    Render {
        #[arg(default_value = DEFAULT_TOPOLOGY)]
        topology: PathBuf,
        #[arg(long)]
        out: PathBuf,
        /// Also write the passwords, auth keys, TLS files and the env files and Secret
        /// kustomizations that hand them over, under OUT/secrets.
        #[arg(long)]
        with_secrets: bool,
    },
}

#[derive(Subcommand)]
enum TopologyCommand {
    /// Check a topology file; errors name the file, the field and the problem.
    Check {
        #[arg(default_value = DEFAULT_TOPOLOGY)]
        topology: PathBuf,
    },
    /// Write the nats-server config of every server, and the secrets they use: passwords in
    /// OUT/secrets/credentials/<user>.password (unless the topology names a credentials_dir),
    /// TLS files in OUT/secrets/tls when TLS is on.
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

/// `RUST_LOG`, the log filter of every command.
fn log_filter() -> Option<String> {
    std::env::var("RUST_LOG").ok()
}

pub async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    if !matches!(
        cli.command,
        Command::Frontend { .. } | Command::Dispatcher { .. }
    ) {
        fanfare_telemetry::init_logs(log_filter().as_deref());
    }
    match cli.command {
        Command::Up {
            topology,
            run_dir,
            nats_server,
            quiet,
            netns,
        } => up(&topology, run_dir, nats_server, quiet, netns).await,
        Command::Topology { command } => topology_command(command),
        Command::Deploy {
            command:
                DeployCommand::Render {
                    topology,
                    out,
                    with_secrets,
                },
        } => {
            let loaded = Topology::load(&topology)?;
            let options = fanfare_deploy::RenderOptions { with_secrets };
            let written = fanfare_deploy::render(&loaded, &out, options)?;
            println!(
                "{}: {} files in {}",
                topology.display(),
                written.len(),
                out.display()
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Chaos {
            run_dir,
            topology,
            command,
        } => chaos(run_dir, &topology, command).await,
        Command::Provision { topology, run_dir } => provision(&topology, run_dir).await,
        Command::Publish {
            topology,
            dc,
            url,
            token,
            what,
        } => publish(&topology, &dc, url, token, what).await,
        Command::Token(args) => token(args),
        Command::Bench(args) => bench(*args).await,
        Command::Frontend { config } => {
            let env = settings::process_env();
            let settings: fanfare_frontend::Settings =
                settings::load(&config, "FANFARE_FRONTEND", env.clone())?;
            settings
                .validate()
                .map_err(|problem| anyhow::anyhow!("{}: {problem}", config.display()))?;
            let identity = fanfare_telemetry::NodeIdentity {
                service: "fanfare-frontend",
                dc: &settings.dc,
                node: &settings.name,
            };
            let traces = fanfare_telemetry::init_node_telemetry(
                log_filter().as_deref(),
                identity,
                &settings.telemetry,
                &env,
            )?;
            let listener = fanfare_frontend::bind(settings.listen)
                .with_context(|| format!("binding {}", settings.listen))?;
            let (shutdown, drain) = drain_on_sigterm()?;
            let outcome = fanfare_frontend::run(settings, listener, shutdown, drain).await;
            // Whatever the outcome, send the last spans (bounded: never hangs the exit).
            traces.shutdown().await;
            outcome?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Dispatcher { config } => {
            let env = settings::process_env();
            let settings: fanfare_dispatcher::Settings =
                settings::load(&config, "FANFARE_DISPATCHER", env.clone())?;
            settings
                .validate()
                .map_err(|problem| anyhow::anyhow!("{}: {problem}", config.display()))?;
            let identity = fanfare_telemetry::NodeIdentity {
                service: "fanfare-dispatcher",
                dc: &settings.dc,
                node: &settings.name,
            };
            let traces = fanfare_telemetry::init_node_telemetry(
                log_filter().as_deref(),
                identity,
                &settings.telemetry,
                &env,
            )?;
            let listener = tokio::net::TcpListener::bind(settings.admin)
                .await
                .with_context(|| format!("binding {}", settings.admin))?;
            let shutdown = shutdown_on_signals()?;
            let outcome = fanfare_dispatcher::run(settings, listener, shutdown).await;
            traces.shutdown().await;
            outcome?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// `fanfare publish`: prints each answer's body; exits 1 at the first one that is not 2xx.
async fn publish(
    topology: &Path,
    dc: &str,
    url: Option<String>,
    token: Option<String>,
    what: PublishWhat,
) -> anyhow::Result<ExitCode> {
    let base = match url {
        Some(url) => url,
        None => {
            let endpoints = Topology::load(topology)?.endpoints();
            endpoints
                .datacenters
                .into_iter()
                .find(|datacenter| datacenter.name == dc)
                .with_context(|| format!("{}: no datacenter {dc}", topology.display()))?
                .frontends
                .into_iter()
                .next()
                .with_context(|| format!("{}: {dc} has no frontend", topology.display()))?
                .url
        }
    };
    let base = base.trim_end_matches('/');
    let token = token.filter(|token| !token.is_empty());
    // With a token its subject is the user: a body user_id is sent only when asked for.
    let body_user = |user: Option<String>| match (user, &token) {
        (Some(user), _) => Some(user),
        (None, Some(_)) => None,
        (None, None) => Some("cli".to_owned()),
    };
    let requests: Vec<(String, serde_json::Value, Option<String>)> = match what {
        PublishWhat::Like { video, count, user } => {
            let mut body = serde_json::json!({});
            if let Some(user) = body_user(user) {
                body["user_id"] = user.into();
            }
            (0..count)
                .map(|_| {
                    let url = format!("{base}/v1/videos/{video}/likes");
                    (url, body.clone(), None)
                })
                .collect()
        }
        PublishWhat::Comment {
            video,
            text,
            user,
            idempotency_key,
        } => {
            let mut body = serde_json::json!({ "text": text });
            if let Some(user) = body_user(user) {
                body["user_id"] = user.into();
            }
            vec![(
                format!("{base}/v1/videos/{video}/comments"),
                body,
                idempotency_key,
            )]
        }
    };
    let authorization = token.map(|token| format!("Bearer {token}"));
    for (url, body, key) in requests {
        let mut headers = vec![("content-type", "application/json")];
        if let Some(key) = &key {
            headers.push(("idempotency-key", key.as_str()));
        }
        if let Some(authorization) = &authorization {
            headers.push(("authorization", authorization.as_str()));
        }
        let response =
            fanfare_client::http::request("POST", &url, &headers, body.to_string().into())
                .await
                .with_context(|| format!("POST {url}"))?;
        println!("{} {}", response.status, response.text().trim_end());
        if !(200..300).contains(&response.status) {
            return Ok(ExitCode::FAILURE);
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `fanfare token`: mints a token with `fanfare_auth::mint` and prints it.
fn token(args: TokenArgs) -> anyhow::Result<ExitCode> {
    use fanfare_auth::{KeyAlgorithm, SigningKey};
    let kid = args.kid.as_deref();
    let key = match (&args.secret_file, &args.private_key_file, args.algorithm) {
        (Some(secret), None, TokenAlgorithm::Hs256) => SigningKey::hs256_file(kid, secret)?,
        (None, Some(path), algorithm @ (TokenAlgorithm::Rs256 | TokenAlgorithm::Eddsa)) => {
            let algorithm = match algorithm {
                TokenAlgorithm::Rs256 => KeyAlgorithm::RS256,
                _ => KeyAlgorithm::EdDSA,
            };
            let pem = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
            SigningKey::from_pem(kid, algorithm, &pem)?
        }
        _ => anyhow::bail!(
            "--algorithm hs256 takes --secret-file; rs256 and eddsa take --private-key-file"
        ),
    };
    let mut claims = fanfare_auth::Claims::new(args.sub, args.aud, args.ttl);
    claims.iss = args.iss;
    if !args.videos.is_empty() {
        for pattern in &args.videos {
            fanfare_auth::VideoPattern::parse(pattern)
                .map_err(|message| anyhow::anyhow!("--videos: {message}"))?;
        }
        claims.videos = Some(args.videos);
    }
    if !args.actions.is_empty() {
        for action in &args.actions {
            action
                .parse::<fanfare_auth::Action>()
                .map_err(|message| anyhow::anyhow!("--actions: {message}"))?;
        }
        claims.actions = Some(args.actions);
    }
    println!("{}", fanfare_auth::mint(&key, &claims)?);
    Ok(ExitCode::SUCCESS)
}

/// A frontend's two ways to stop: SIGTERM starts a graceful drain (the second token), as a
/// rolling restart or an orchestrator asks; SIGINT, or a second SIGTERM, stops at once (the
/// first), as `fanfare up` does when the whole topology stops.
fn drain_on_sigterm() -> anyhow::Result<(CancellationToken, CancellationToken)> {
    let shutdown = CancellationToken::new();
    let drain = CancellationToken::new();
    let mut interrupt = signal(SignalKind::interrupt()).context("installing SIGINT handler")?;
    let mut terminate = signal(SignalKind::terminate()).context("installing SIGTERM handler")?;
    let (stop, start_drain) = (shutdown.clone(), drain.clone());
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = interrupt.recv() => {
                    tracing::info!("SIGINT: shutting down");
                    stop.cancel();
                    return;
                }
                _ = terminate.recv() => {
                    if start_drain.is_cancelled() {
                        tracing::info!("second SIGTERM: shutting down at once");
                        stop.cancel();
                        return;
                    }
                    tracing::info!("SIGTERM: draining");
                    start_drain.cancel();
                }
            }
        }
    });
    Ok((shutdown, drain))
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
            let secrets = fanfare_topology::NatsSecrets::prepare(&loaded, &out.join("secrets"))?;
            for rendered in
                loaded.render_nats_configs_secured(&out, &store, &Default::default(), &secrets)?
            {
                println!("{}", rendered.path.display());
            }
            if let Some(credentials) = &secrets.credentials {
                println!("credentials: {}", credentials.dir().display());
            }
            if let Some(tls) = &secrets.tls {
                println!("tls ca: {}", tls.ca_file().display());
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

fn default_run_dir(project_root: &Path, topology: &Path) -> PathBuf {
    let stem = topology
        .file_stem()
        .map(|stem| stem.to_string_lossy().into_owned())
        .unwrap_or_else(|| "topology".to_owned());
    project_root.join(".fanfare/run").join(stem)
}

async fn chaos(
    run_dir: Option<PathBuf>,
    topology: &Path,
    command: ChaosSubcommand,
) -> anyhow::Result<ExitCode> {
    let project_root = std::env::current_dir().context("reading the current directory")?;
    let run_dir = run_dir.unwrap_or_else(|| default_run_dir(&project_root, topology));
    let (request, json) = match command {
        ChaosSubcommand::Soak(args) => return soak(run_dir, topology, args).await,
        ChaosSubcommand::Partition { datacenters, mode } => {
            let mode = match mode {
                CutMode::Reset => LinkMode::Reset,
                CutMode::Drop => LinkMode::Drop,
            };
            (ChaosCommand::Partition { datacenters, mode }, false)
        }
        ChaosSubcommand::Heal => (ChaosCommand::Heal, false),
        ChaosSubcommand::Kill { node } => (ChaosCommand::Kill { node }, false),
        ChaosSubcommand::Restart { node } => (ChaosCommand::Restart { node }, false),
        ChaosSubcommand::Status { json } => (ChaosCommand::Status, json),
    };
    let status = fanfare_supervisor::call_chaos(&run_dir, &request)
        .await
        .map_err(|message| anyhow::anyhow!(message))?;
    if json {
        println!("{status}");
    } else {
        print_status(&status);
    }
    Ok(ExitCode::SUCCESS)
}

/// `fanfare chaos soak`: the run itself is `fanfare_soak::run`; this only builds its options,
/// prints the report and turns the verdict into the exit code.
async fn soak(run_dir: PathBuf, topology: &Path, args: SoakArgs) -> anyhow::Result<ExitCode> {
    let loaded = Topology::load(topology)?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let seed = args.seed.unwrap_or(now.as_nanos() as u64);
    // Unique per run even for the same seed: a rerun must not see the last run's comments.
    let run_tag = format!("{:x}", now.as_millis() % (1 << 40));
    let mut options = fanfare_soak::SoakOptions::new(loaded, run_dir, seed, run_tag);
    options.duration = args.duration;
    options.videos = args.videos;
    options.viewers_per_frontend = args.viewers_per_frontend;
    options.comments_per_sec = args.comments_per_sec;
    options.likes_per_sec = args.likes_per_sec;
    options.chaos_every = args.chaos_every;
    options.settle = args.settle;
    options.progress = true;
    eprintln!(
        "soak: seed {seed}, {:?} of chaos every ~{:?}, then up to {:?} to settle",
        args.duration, args.chaos_every, args.settle
    );
    let shutdown = shutdown_on_signals()?;
    let report = fanfare_soak::run(options, shutdown).await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", report.to_text());
    }
    Ok(if report.ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// `fanfare bench`: resolves the target into URLs and pids, runs `fanfare_bench::run` and
/// prints the report. Exits 1 when something was lost, duplicated or a viewer did not connect.
async fn bench(args: BenchArgs) -> anyhow::Result<ExitCode> {
    if let Some(share) = &args.viewer_share {
        fanfare_bench::fleet::serve_share(share).await?;
        return Ok(ExitCode::SUCCESS);
    }
    let video = args.video.unwrap_or_else(fanfare_bench::fresh_video_id);
    let mut options = match args.target {
        BenchTarget::Fanfare => {
            let topology = Topology::load(&args.topology)?;
            let project_root = std::env::current_dir().context("reading the current directory")?;
            let run_dir = args
                .run_dir
                .unwrap_or_else(|| default_run_dir(&project_root, &args.topology));
            let choice = if !args.frontends.is_empty() {
                fanfare_bench::FrontendChoice::Named(args.frontends)
            } else if !args.dcs.is_empty() {
                fanfare_bench::FrontendChoice::Datacenters(args.dcs)
            } else {
                fanfare_bench::FrontendChoice::Datacenters(vec!["dc1".to_owned()])
            };
            fanfare_bench::BenchOptions::for_fanfare(
                &topology,
                &choice,
                &args.publish_frontend,
                &run_dir,
                video,
            )?
        }
        BenchTarget::Generic => {
            let sub_url = args.sub_url.context("--target generic needs --sub-url")?;
            let pub_url = args.pub_url.context("--target generic needs --pub-url")?;
            let format = match args.pub_format {
                BenchPubFormat::Raw => fanfare_bench::PubFormat::Raw,
                BenchPubFormat::Pushpin => fanfare_bench::PubFormat::Pushpin,
            };
            fanfare_bench::BenchOptions::for_generic(
                &sub_url,
                &pub_url,
                format,
                video,
                &args.server_pid,
            )?
        }
    };
    options.viewers = args.viewers;
    options.videos = args.videos;
    options.source_addrs = args.source_addrs;
    options.connect_concurrency = args.connect_concurrency;
    options.comments = args
        .comments_per_sec
        .map(|per_sec| fanfare_bench::CommentLoad {
            per_sec,
            duration: args.duration,
        });
    options.likes = args.likes.then_some(args.duration);
    options.publish_concurrency = args.publish_concurrency;
    options.drain = args.drain;
    options.hold = args.hold;
    options.progress = true;
    options.processes = args.processes;
    options.viewer_command = vec![
        std::env::current_exe()
            .context("locating the fanfare binary")?
            .into_os_string(),
        "bench".into(),
        "--viewer-share".into(),
    ];
    let shutdown = shutdown_on_signals()?;
    let report = fanfare_bench::run(options, shutdown).await?;
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        print!("{}", report.to_text());
    }
    Ok(if report.ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn print_status(status: &serde_json::Value) {
    println!("links:");
    for link in status["links"].as_array().into_iter().flatten() {
        println!(
            "  {} <-> {}  {}",
            link["between"][0].as_str().unwrap_or("?"),
            link["between"][1].as_str().unwrap_or("?"),
            link["mode"].as_str().unwrap_or("?")
        );
    }
    println!("nodes:");
    for node in status["nodes"].as_array().into_iter().flatten() {
        let state = match node["pid"].as_u64() {
            Some(pid) => format!("running (pid {pid})"),
            None => "stopped".to_owned(),
        };
        println!(
            "  {:<12} {:<11} {:<5} {state}",
            node["name"].as_str().unwrap_or("?"),
            node["kind"].as_str().unwrap_or("?"),
            node["dc"].as_str().unwrap_or("?")
        );
    }
}

async fn provision(topology: &Path, run_dir: Option<PathBuf>) -> anyhow::Result<ExitCode> {
    let loaded = Topology::load(topology)?;
    let project_root = std::env::current_dir().context("reading the current directory")?;
    let run_dir = run_dir.unwrap_or_else(|| default_run_dir(&project_root, topology));
    let secrets = fanfare_topology::NatsSecrets::load_existing(&loaded, &run_dir.join("secrets"))?;
    let options = UpOptions::new(PathBuf::new(), PathBuf::new(), PathBuf::new());
    fanfare_supervisor::provision(&loaded, options.dispatch, &secrets).await?;
    println!("provisioned {} datacenters", loaded.datacenters.len());
    Ok(ExitCode::SUCCESS)
}

async fn up(
    topology_path: &Path,
    run_dir: Option<PathBuf>,
    nats_server: Option<PathBuf>,
    quiet: bool,
    netns: bool,
) -> anyhow::Result<ExitCode> {
    let topology = Topology::load(topology_path)?;
    if netns && !fanfare_supervisor::netns::is_root() {
        anyhow::bail!(
            "fanfare up --netns needs root: it creates network namespaces, veth links, a bridge \
             and nftables rules (run it as root, e.g. with sudo)"
        );
    }
    if !topology.auth.is_on() {
        eprintln!(
            "fanfare up: WARNING: authentication is OFF in {}: anyone can publish likes and \
             comments as any user. For anything but local testing, configure [auth] keys.",
            topology_path.display()
        );
    }
    let project_root = std::env::current_dir().context("reading the current directory")?;
    let env_nats = std::env::var("NATS_SERVER_BIN").ok();
    let nats_server = fanfare_supervisor::find_nats_server(
        nats_server.as_deref(),
        env_nats.as_deref(),
        &project_root,
    )?;
    let run_dir = run_dir.unwrap_or_else(|| default_run_dir(&project_root, topology_path));
    let fanfare_bin = std::env::current_exe().context("locating the fanfare binary")?;
    let mut options = UpOptions::new(run_dir, nats_server, fanfare_bin);
    options.echo_logs = !quiet;
    options.netns = netns;

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
    let control = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .context("binding the chaos control endpoint")?;
    let control_url = format!("http://{}", control.local_addr()?);
    let (requests, mut incoming) = tokio::sync::mpsc::channel::<ChaosRequest>(16);
    tokio::spawn(fanfare_supervisor::serve_control(
        control,
        requests,
        shutdown.clone(),
    ));
    running.set_control_url(control_url.clone());
    println!(
        "\nfanfare is up (run directory {})\n",
        running.run_dir().display()
    );
    println!("{}", running.describe());
    println!(
        "chaos:   fanfare chaos status --run-dir {}   (control {control_url})",
        running.run_dir().display()
    );
    println!("ready");
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            Some(request) = incoming.recv() => {
                eprintln!("fanfare up: chaos {:?}", request.command);
                let outcome = running.execute(request.command).await.map_err(|error| format!("{error:#}"));
                let _ = request.reply.send(outcome);
            }
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
