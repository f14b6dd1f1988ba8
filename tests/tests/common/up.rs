//! A `fanfare up` of the whole binary, for the tests that drive it from outside.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use fanfare_testkit::cluster::{fanfare_bin, nats_server_bin, workspace_root, PortBlock};
use fanfare_testkit::DcShape;
use fanfare_topology::{FrontendLimits, Settings, Topology};

/// A `fanfare up` child, stopped with SIGTERM (and killed if it will not stop) when dropped, so
/// a failing assertion leaves nothing behind. Its nodes die with it (PR_SET_PDEATHSIG).
pub struct Up(Child);

impl Drop for Up {
    fn drop(&mut self) {
        let Ok(pid) = libc::pid_t::try_from(self.0.id()) else {
            return;
        };
        // SAFETY: kill(2) has no memory-safety preconditions; the pid is our own child's.
        #[allow(unsafe_code)]
        unsafe {
            libc::kill(pid, libc::SIGTERM);
        }
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while std::time::Instant::now() < deadline {
            if matches!(self.0.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Up {
    /// Ends `fanfare up` as a crash would: SIGKILL, no cleanup of its own.
    pub fn crash(mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `fanfare up` on `topology_file` and waits for its `ready` line.
pub fn start_up(topology_file: &std::path::Path, run_dir: &std::path::Path) -> Up {
    start_up_with(topology_file, run_dir, &[])
}

/// [`start_up`] with more arguments (e.g. `--netns`).
pub fn start_up_with(
    topology_file: &std::path::Path,
    run_dir: &std::path::Path,
    extra: &[&str],
) -> Up {
    let mut child = Command::new(fanfare_bin().unwrap())
        .arg("up")
        .arg(topology_file)
        .args(extra)
        .arg("--quiet")
        .arg("--run-dir")
        .arg(run_dir)
        .arg("--nats-server")
        .arg(nats_server_bin().unwrap())
        .current_dir(workspace_root())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("fanfare up starts");
    let stdout = child.stdout.take().unwrap();
    let up = Up(child);
    let (ready_sender, ready) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if line == "ready" {
                let _ = ready_sender.send(());
            }
        }
    });
    ready
        .recv_timeout(Duration::from_secs(120))
        .expect("fanfare up prints ready within 120s");
    up
}

/// The topology of a test that drives `fanfare up` from outside as a load does (the bench, its
/// scripts, the soak): authentication off and limits unthrottled, since they publish as fast
/// as they can from one address, on the ports of `ports`. Written to `<dir>/<name>.toml`;
/// returns the topology and that file.
pub fn load_topology(
    ports: &PortBlock,
    settings: Settings,
    datacenters: &[(&str, DcShape)],
    dir: &std::path::Path,
    name: &str,
) -> (Topology, std::path::PathBuf) {
    let mut builder = Topology::builder()
        .auth(fanfare_auth::AuthSettings::off())
        .settings(Settings {
            frontend_limits: FrontendLimits::Unthrottled,
            ..settings
        });
    for &(dc, shape) in datacenters {
        builder = builder.dc(dc, shape);
    }
    let topology = builder.build_with_ports_from(ports.first()).unwrap();
    let file = dir.join(format!("{name}.toml"));
    std::fs::write(&file, topology.to_toml_string()).unwrap();
    (topology, file)
}
