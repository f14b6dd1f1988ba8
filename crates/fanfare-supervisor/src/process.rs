//! One supervised child process: spawned with its output logged (and optionally echoed with a
//! node prefix), watched until it exits, signalled by pid.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWriteExt, BufReader};
use tokio::sync::{mpsc, watch};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum NodeKind {
    Nats,
    Dispatcher,
    Frontend,
}

impl NodeKind {
    /// The `fanfare` subcommand that runs this kind of node.
    pub fn subcommand(self) -> &'static str {
        match self {
            NodeKind::Nats => "nats-server",
            NodeKind::Dispatcher => "dispatcher",
            NodeKind::Frontend => "frontend",
        }
    }
}

/// A child that exited, as reported to the supervisor.
#[derive(Debug, Clone)]
pub struct ChildExit {
    pub name: String,
    pub kind: NodeKind,
    pub status: String,
}

pub(crate) struct Child {
    name: String,
    kind: NodeKind,
    pid: Option<u32>,
    log_path: PathBuf,
    /// Set once by the watcher task when the process exits (its status, as text).
    exited: watch::Receiver<Option<String>>,
}

/// What to run: program, arguments, variables added to the inherited environment, and the
/// network namespace to run in (a `/run/netns/<name>` file; none: the supervisor's own).
pub(crate) struct Launch<'a> {
    pub(crate) program: &'a Path,
    pub(crate) args: &'a [String],
    pub(crate) env: &'a [(String, String)],
    pub(crate) netns: Option<&'a Path>,
}

impl Child {
    pub(crate) fn spawn(
        name: &str,
        kind: NodeKind,
        launch: Launch<'_>,
        log_path: &Path,
        echo: bool,
        exits: mpsc::UnboundedSender<ChildExit>,
    ) -> std::io::Result<Self> {
        let mut command = tokio::process::Command::new(launch.program);
        command
            .args(launch.args)
            .envs(launch.env.iter().map(|(key, value)| (key, value)))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        // Opened here, entered between fork and exec; the child does not keep it (CLOEXEC).
        let netns = launch.netns.map(std::fs::File::open).transpose()?;
        detach_and_die_with_parent(&mut command, netns.as_ref());
        let mut child = command.spawn()?;
        drop(netns);
        let pid = child.id();
        let log = Arc::new(tokio::sync::Mutex::new(
            std::fs::File::create(log_path).map(tokio::fs::File::from_std)?,
        ));
        if let Some(stdout) = child.stdout.take() {
            tokio::spawn(copy_lines(stdout, name.to_owned(), log.clone(), echo));
        }
        if let Some(stderr) = child.stderr.take() {
            tokio::spawn(copy_lines(stderr, name.to_owned(), log, echo));
        }
        let (exited_sender, exited) = watch::channel(None);
        let exit_name = name.to_owned();
        tokio::spawn(async move {
            let status = match child.wait().await {
                Ok(status) => status.to_string(),
                Err(error) => format!("unknown ({error})"),
            };
            let _ = exited_sender.send(Some(status.clone()));
            let _ = exits.send(ChildExit {
                name: exit_name,
                kind,
                status,
            });
        });
        Ok(Self {
            name: name.to_owned(),
            kind,
            pid,
            log_path: log_path.to_path_buf(),
            exited,
        })
    }

    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    pub(crate) fn kind(&self) -> NodeKind {
        self.kind
    }

    pub(crate) fn log_path(&self) -> &Path {
        &self.log_path
    }

    /// The pid while the process runs.
    pub(crate) fn pid(&self) -> Option<u32> {
        if self.exit_status().is_some() {
            return None;
        }
        self.pid
    }

    pub(crate) fn exit_status(&self) -> Option<String> {
        self.exited.borrow().clone()
    }

    /// Signals the process if it still runs; only ever our own child, by its pid.
    pub(crate) fn signal(&self, signal: i32) -> bool {
        let Some(pid) = self.pid() else {
            return false;
        };
        send_signal(pid, signal)
    }

    pub(crate) async fn wait_exited(&self, timeout: Duration) -> bool {
        let mut exited = self.exited.clone();
        let outcome = tokio::time::timeout(timeout, exited.wait_for(Option::is_some)).await;
        outcome.is_ok()
    }
}

async fn copy_lines(
    output: impl AsyncRead + Unpin,
    name: String,
    log: Arc<tokio::sync::Mutex<tokio::fs::File>>,
    echo: bool,
) {
    let mut lines = BufReader::new(output).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        if echo {
            println!("[{name}] {line}");
        }
        let mut file = log.lock().await;
        let _ = file.write_all(line.as_bytes()).await;
        let _ = file.write_all(b"\n").await;
    }
}

#[allow(unsafe_code)]
fn send_signal(pid: u32, signal: i32) -> bool {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return false;
    };
    // SAFETY: kill(2) has no memory-safety preconditions; the pid is one of our children.
    unsafe { libc::kill(pid, signal) == 0 }
}

#[allow(unsafe_code)]
fn detach_and_die_with_parent(
    command: &mut tokio::process::Command,
    netns: Option<&std::fs::File>,
) {
    use std::os::fd::AsRawFd;
    let netns = netns.map(AsRawFd::as_raw_fd);
    // SAFETY: the closure runs between fork and exec and only calls prctl(2), setpgid(2) and
    // setns(2), which are async-signal-safe; the namespace fd stays open until spawn returns.
    unsafe {
        command.pre_exec(move || {
            if let Some(fd) = netns {
                if libc::setns(fd, libc::CLONE_NEWNET) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            // Its own process group: a Ctrl-C in the terminal reaches only the supervisor,
            // which then stops the nodes before the NATS servers.
            if libc::setpgid(0, 0) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}
