//! A real fanfare topology for one test: `Cluster::builder().dc("dc1", shape).start()`.
//!
//! It is the same code path as `fanfare up` ([`fanfare_supervisor::start`]), on ports picked
//! free at start, in a temporary run directory. Dropping the cluster kills every process it
//! started (and only those).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{anyhow, Context};
use fanfare_auth::AuthSettings;
use fanfare_supervisor::{Running, UpOptions};
use fanfare_topology::{DcShape, Settings, Topology};

use crate::{http, wait};

/// Where the workspace is: the test kit lives in `crates/fanfare-testkit`.
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The `nats-server` binary: `NATS_SERVER_BIN`, else the project-local install.
pub fn nats_server_bin() -> anyhow::Result<PathBuf> {
    let env_value = std::env::var("NATS_SERVER_BIN").ok();
    fanfare_supervisor::find_nats_server(None, env_value.as_deref(), &workspace_root())
        .map_err(|error| anyhow!("{error}"))
}

/// The `fanfare` binary the nodes run: `FANFARE_BIN`, else the one cargo built next to the
/// running test (`target/<profile>/fanfare`).
pub fn fanfare_bin() -> anyhow::Result<PathBuf> {
    if let Ok(path) = std::env::var("FANFARE_BIN") {
        return Ok(PathBuf::from(path));
    }
    let exe = std::env::current_exe().context("locating the test binary")?;
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .ok_or_else(|| anyhow!("unexpected test binary location {}", exe.display()))?;
    let candidate = profile_dir.join("fanfare");
    if !candidate.is_file() {
        anyhow::bail!(
            "{} not found: build it first (`cargo build --bin fanfare`; scripts/test does)",
            candidate.display()
        );
    }
    Ok(candidate)
}

pub struct ClusterBuilder {
    datacenters: Vec<(String, DcShape)>,
    settings: Settings,
    /// Authentication of every frontend: off unless a test hands keys to [`ClusterBuilder::auth`].
    auth: AuthSettings,
    /// Applied to the node options of every start attempt.
    options: Box<dyn Fn(&mut UpOptions) + Send + Sync>,
    /// Each datacenter in its own network namespace (see [`ClusterBuilder::netns`]).
    netns: bool,
}

impl ClusterBuilder {
    pub fn dc(mut self, name: &str, shape: DcShape) -> Self {
        self.datacenters.push((name.to_owned(), shape));
        self
    }

    /// Adjusts topology settings (partitions, interest TTL, ...).
    pub fn settings(mut self, adjust: impl FnOnce(&mut Settings)) -> Self {
        adjust(&mut self.settings);
        self
    }

    /// Runs every frontend with this `[auth]` (keys, audience, private videos), through the
    /// topology file as `fanfare up` would.
    pub fn auth(mut self, auth: AuthSettings) -> Self {
        self.auth = auth;
        self
    }

    /// Adjusts how nodes run (frontend and dispatcher settings, dispatch timers); a closure,
    /// so a test can hand the nodes addresses it only knows at run time.
    pub fn options(mut self, adjust: impl Fn(&mut UpOptions) + Send + Sync + 'static) -> Self {
        self.options = Box::new(adjust);
        self
    }

    /// Runs each datacenter in its own network namespace, partitions cut in the kernel, as
    /// `fanfare up --netns` does. Root only: a test that asks for it without root fails with a
    /// message saying so, it is never skipped.
    pub fn netns(mut self) -> Self {
        self.netns = true;
        self
    }

    /// Starts the topology on free ports. Ports are picked free but only bound when the
    /// processes start, so a test running alongside can take one first: a start that fails is
    /// retried on new ports, a few times.
    pub async fn start(self) -> anyhow::Result<Cluster> {
        const ATTEMPTS: usize = 3;
        let mut last_error = None;
        for attempt in 1..=ATTEMPTS {
            match self.start_once().await {
                Ok(cluster) => return Ok(cluster),
                Err(error) => {
                    eprintln!("fanfare-testkit: start attempt {attempt} failed: {error:#}");
                    last_error = Some(error);
                }
            }
        }
        Err(last_error.unwrap_or_else(|| anyhow!("no start attempted")))
    }

    async fn start_once(&self) -> anyhow::Result<Cluster> {
        let ports = PortBlock::acquire()?;
        let mut builder = Topology::builder()
            .settings(self.settings.clone())
            .auth(self.auth.clone());
        for (name, shape) in &self.datacenters {
            builder = builder.dc(name.clone(), *shape);
        }
        let topology = builder.build_with_ports_from(ports.first())?;
        let dir = tempfile::Builder::new()
            .prefix("fanfare-test-")
            .tempdir()
            .context("creating the run directory")?;
        let mut options =
            UpOptions::new(dir.path().join("run"), nats_server_bin()?, fanfare_bin()?);
        // Viewers that leave are noticed at the next keep-alive write.
        options.frontend.keepalive = Duration::from_millis(500);
        // Tests publish as fast as they can from one address: no rate limits or connection
        // caps unless a test sets its own (tests/tests/limits.rs does).
        options.frontend.limits = fanfare_frontend::LimitSettings::unthrottled();
        options.internal_ports_from = Some(ports.first() + PortBlock::SIZE / 2);
        options.netns = self.netns;
        (self.options)(&mut options);
        let running = tokio::time::timeout(
            Duration::from_secs(120),
            fanfare_supervisor::start(&topology, &options),
        )
        .await
        .map_err(|_| anyhow!("topology did not start within 120s"))??;
        if std::env::var_os("FANFARE_TEST_KEEP").is_some() {
            // Keep configs, data and logs for a post-mortem.
            let kept = dir.keep();
            eprintln!("fanfare-testkit: run directory kept at {}", kept.display());
            return Ok(Cluster {
                running: Some(running),
                _dir: None,
                _ports: ports,
            });
        }
        Ok(Cluster {
            running: Some(running),
            _dir: Some(dir),
            _ports: ports,
        })
    }
}

/// A running topology; see the module docs.
pub struct Cluster {
    running: Option<Running>,
    /// Run directory (configs, data, logs); removed on drop unless `FANFARE_TEST_KEEP` is set.
    _dir: Option<tempfile::TempDir>,
    /// The block of ports this cluster owns until it is dropped.
    _ports: PortBlock,
}

impl Cluster {
    pub fn builder() -> ClusterBuilder {
        ClusterBuilder {
            datacenters: Vec::new(),
            settings: Settings {
                interest_ttl: Duration::from_secs(3),
                partitions: 4,
                // A restarted frontend drains, but briefly: tests restart several.
                frontend: fanfare_topology::FrontendSettings {
                    drain_grace: Duration::from_millis(500),
                    drain_window: Duration::from_secs(2),
                },
                ..Settings::default()
            },
            auth: AuthSettings::off(),
            options: Box::new(|_| {}),
            netns: false,
        }
    }

    fn running(&self) -> &Running {
        self.running
            .as_ref()
            .expect("cluster is running until dropped")
    }

    pub fn topology(&self) -> &Topology {
        self.running().topology()
    }

    /// Base URL of a frontend (`http://127.0.0.1:PORT`).
    pub fn frontend(&self, name: &str) -> String {
        self.topology()
            .datacenters
            .iter()
            .flat_map(|dc| &dc.frontends)
            .find(|frontend| frontend.name == name)
            .map(|frontend| frontend.url())
            .unwrap_or_else(|| panic!("no frontend {name}"))
    }

    /// Viewer stream URL of `video` on frontend `name`.
    pub fn events_url(&self, name: &str, video: &str) -> String {
        format!("{}/v1/videos/{video}/events", self.frontend(name))
    }

    pub fn admin_url(&self, node: &str) -> String {
        let topology = self.topology();
        for dc in &topology.datacenters {
            if let Some(dispatcher) = dc.dispatchers.iter().find(|d| d.name == node) {
                return format!("http://{}", dispatcher.admin);
            }
            if let Some(frontend) = dc.frontends.iter().find(|f| f.name == node) {
                return frontend.url();
            }
        }
        panic!("no dispatcher or frontend {node}")
    }

    /// Everything node `node` has logged so far (its stdout and stderr, as the supervisor
    /// writes them to the run directory).
    pub fn node_log(&self, node: &str) -> anyhow::Result<String> {
        self.read_run_file("logs", &format!("{node}.log"))
    }

    /// The config file the supervisor wrote for node `node`.
    pub fn node_config(&self, node: &str) -> anyhow::Result<String> {
        self.read_run_file("nodes", &format!("{node}.toml"))
    }

    fn read_run_file(&self, dir: &str, file: &str) -> anyhow::Result<String> {
        let path = self.running().run_dir().join(dir).join(file);
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))
    }

    pub fn dispatchers(&self, dc: &str) -> Vec<String> {
        self.topology()
            .datacenter(dc)
            .map(|dc| dc.dispatchers.iter().map(|d| d.name.clone()).collect())
            .unwrap_or_default()
    }

    /// Client URLs of one datacenter's NATS servers.
    pub fn nats_urls(&self, dc: &str) -> Vec<String> {
        self.topology()
            .datacenter(dc)
            .map(|dc| dc.client_urls())
            .unwrap_or_default()
    }

    /// A client of `dc`'s NATS servers as the administrator (JetStream administration only).
    pub async fn nats_client(&self, dc: &str) -> anyhow::Result<async_nats::Client> {
        self.nats_client_as(dc, fanfare_topology::ADMIN_USER).await
    }

    /// A client of `dc`'s NATS servers with the credentials (and permissions) of NATS user
    /// `user`: a node name, or [`fanfare_topology::ADMIN_USER`].
    pub async fn nats_client_as(&self, dc: &str, user: &str) -> anyhow::Result<async_nats::Client> {
        let settings = self.nats_settings(dc, user);
        Ok(fanfare_fabric::connect(&settings, "fanfare-test").await?)
    }

    /// How NATS user `user` reaches `dc`: urls, password file, CA.
    pub fn nats_settings(&self, dc: &str, user: &str) -> fanfare_fabric::NatsSettings {
        self.running()
            .nats_settings(dc, user, fanfare_fabric::NatsSettings::default())
    }

    /// The run directory (configs, secrets, logs).
    pub fn run_dir(&self) -> &Path {
        self.running().run_dir()
    }

    pub fn pid(&self, node: &str) -> Option<u32> {
        self.running().pid(node)
    }

    /// Stops `node` (SIGTERM: a frontend drains) if it runs, starts it again as `fanfare chaos
    /// restart` does, and waits until it answers `/readyz`.
    pub async fn restart(&mut self, node: &str) -> anyhow::Result<()> {
        let running = self
            .running
            .as_mut()
            .ok_or_else(|| anyhow!("the cluster is stopped"))?;
        running.restart(node).await?;
        let url = format!("{}/readyz", self.admin_url(node));
        wait::until(
            &format!("{node} to be ready again"),
            Duration::from_secs(30),
            || async {
                let response = http::get(&url).await.ok()?;
                (response.status == 200).then_some(())
            },
        )
        .await
    }

    /// Waits (at most `timeout`) for `node` to exit by itself; true when it has.
    pub async fn wait_exited(&self, node: &str, timeout: Duration) -> bool {
        self.running().wait_exited(node, timeout).await
    }

    /// Sends `signal` to a node started by this cluster and waits (bounded) for it to exit.
    pub async fn kill(&self, node: &str, signal: i32) -> anyhow::Result<()> {
        if !self.running().signal(node, signal) {
            anyhow::bail!("{node} is not running");
        }
        if !self
            .running()
            .wait_exited(node, Duration::from_secs(20))
            .await
        {
            anyhow::bail!("{node} did not exit within 20s of signal {signal}");
        }
        Ok(())
    }

    /// The subscription table as dispatcher `node` sees it.
    pub async fn table(&self, node: &str) -> anyhow::Result<BTreeMap<String, BTreeSet<String>>> {
        let response = http::get(&format!("{}/v1/table", self.admin_url(node))).await?;
        Ok(response.json()?)
    }

    /// Waits until every running dispatcher of `dc` sees exactly `frontends` as the viewers of
    /// `video` (an empty set: the video is absent).
    pub async fn wait_for_interest(
        &self,
        dc: &str,
        video: &str,
        frontends: &[&str],
        timeout: Duration,
    ) -> anyhow::Result<()> {
        let wanted: BTreeSet<String> = frontends.iter().map(|name| name.to_string()).collect();
        let dispatchers: Vec<String> = self
            .dispatchers(dc)
            .into_iter()
            .filter(|name| self.pid(name).is_some())
            .collect();
        let what = format!("dispatchers of {dc} to see {video} -> {wanted:?}");
        wait::until(&what, timeout, || async {
            for dispatcher in &dispatchers {
                let table = self.table(dispatcher).await.ok()?;
                let seen = table.get(video).cloned().unwrap_or_default();
                if seen != wanted {
                    return None;
                }
            }
            Some(())
        })
        .await
    }

    /// Opens a viewer stream of `video` on `frontend`, and waits until every running
    /// dispatcher of its datacenter routes the video to that frontend, so that what is
    /// published next reaches the viewer.
    pub async fn watch(
        &self,
        frontend: &str,
        video: &str,
    ) -> anyhow::Result<crate::sse::SseStream> {
        let dc = self
            .topology()
            .node(frontend)
            .map(|node| node.dc().to_owned())
            .ok_or_else(|| anyhow!("no frontend {frontend}"))?;
        let stream = crate::sse::SseStream::connect(&self.events_url(frontend, video), &[]).await?;
        let dispatchers: Vec<String> = self
            .dispatchers(&dc)
            .into_iter()
            .filter(|name| self.pid(name).is_some())
            .collect();
        let what = format!("dispatchers of {dc} to route {video} to {frontend}");
        wait::until(&what, Duration::from_secs(30), || async {
            for dispatcher in &dispatchers {
                let table = self.table(dispatcher).await.ok()?;
                if !table
                    .get(video)
                    .is_some_and(|frontends| frontends.contains(frontend))
                {
                    return None;
                }
            }
            Some(())
        })
        .await?;
        Ok(stream)
    }

    /// Sum of every series of metric `name` on node `node`'s `/metrics`.
    pub async fn metric(&self, node: &str, name: &str) -> anyhow::Result<f64> {
        let response = http::get(&format!("{}/metrics", self.admin_url(node))).await?;
        Ok(sum_metric(&response.text(), name))
    }

    /// Cuts links between datacenters (one name: isolate it; several: cut every link among
    /// them), as `fanfare chaos partition` does.
    pub async fn partition(&self, datacenters: &[&str], mode: fanfare_supervisor::LinkMode) {
        self.running()
            .partition(datacenters, mode)
            .await
            .expect("datacenters of this cluster");
    }

    /// Brings every link back up.
    pub async fn heal(&self) {
        self.running().heal().await.expect("links heal");
    }

    /// The network namespace `dc` runs in, when the cluster runs in namespaces.
    pub fn namespace(&self, dc: &str) -> Option<PathBuf> {
        self.running().namespace(dc)
    }

    /// Stops every node gracefully (nodes first, NATS servers last).
    pub async fn stop(mut self) {
        if let Some(running) = self.running.take() {
            running.stop().await;
        }
    }
}

/// A block of loopback ports owned by one test cluster, through an exclusive lock on a slot
/// file. Ports picked from the kernel's ephemeral range would race with tests running in
/// parallel (between picking a port and a node binding it, seconds pass); the blocks lie
/// below that range and no two running clusters share one. The lock goes with the process,
/// so a killed test frees its block.
pub struct PortBlock {
    slot: u16,
    _lock: std::fs::File,
}

impl PortBlock {
    /// Ports per block: the first half for the topology, the second for internal gateway
    /// ports.
    pub const SIZE: u16 = 200;
    const FIRST: u16 = 20_000;
    const SLOTS: u16 = 60;

    pub fn acquire() -> anyhow::Result<Self> {
        let dir = std::env::temp_dir().join("fanfare-test-ports");
        std::fs::create_dir_all(&dir).context("creating the port slot directory")?;
        for slot in 0..Self::SLOTS {
            let path = dir.join(format!("slot-{slot}.lock"));
            let file = std::fs::OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .open(&path)
                .with_context(|| format!("opening {}", path.display()))?;
            if file.try_lock().is_ok() {
                return Ok(Self { slot, _lock: file });
            }
        }
        anyhow::bail!("all {} port blocks are in use", Self::SLOTS)
    }

    pub fn first(&self) -> u16 {
        Self::FIRST + self.slot * Self::SIZE
    }
}

/// Sums the samples of `name` (any labels) in a Prometheus text exposition.
pub fn sum_metric(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            let metric = series.split('{').next()?;
            (metric == name).then(|| value.parse::<f64>().ok())?
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_every_series_of_one_metric_only() {
        let text = "# HELP a_total x\na_total{dc=\"dc1\"} 2\na_total{dc=\"dc2\"} 3\na_total_bucket 9\nb 1\n";
        assert_eq!(sum_metric(text, "a_total"), 5.0);
        assert_eq!(sum_metric(text, "missing"), 0.0);
    }
}
