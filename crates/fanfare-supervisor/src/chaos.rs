//! Chaos on a running topology: cut and heal links between datacenters, kill and restart
//! nodes, report their state. `fanfare up` serves these on a loopback control endpoint
//! (its URL is in `state.json`) and `fanfare chaos ...` calls it; tests call
//! [`Running::execute`] directly.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::links::{pair, LinkMode};
use crate::{Running, SupervisorError};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "command", rename_all = "snake_case", deny_unknown_fields)]
pub enum ChaosCommand {
    /// One datacenter: isolate it from all others. Several: cut every link among them (the
    /// others keep their links to each of them).
    Partition {
        datacenters: Vec<String>,
        mode: LinkMode,
    },
    /// Bring every link back up.
    Heal,
    /// SIGKILL one node.
    Kill { node: String },
    /// Stop one node (if running) and start it again.
    Restart { node: String },
    /// Links and nodes.
    Status,
}

/// A command sent to the process that owns the [`Running`] topology, with where to answer.
pub struct ChaosRequest {
    pub command: ChaosCommand,
    pub reply: oneshot::Sender<Result<Value, String>>,
}

impl Running {
    pub async fn execute(&mut self, command: ChaosCommand) -> Result<Value, SupervisorError> {
        match command {
            ChaosCommand::Partition { datacenters, mode } => {
                let names: Vec<&str> = datacenters.iter().map(String::as_str).collect();
                self.partition(&names, mode).await?;
            }
            ChaosCommand::Heal => self.heal().await?,
            ChaosCommand::Kill { node } => {
                if !self.signal(&node, libc::SIGKILL) {
                    return Err(SupervisorError::UnknownNode(node));
                }
                self.wait_exited(&node, std::time::Duration::from_secs(5))
                    .await;
            }
            ChaosCommand::Restart { node } => self.restart(&node).await?,
            ChaosCommand::Status => {}
        }
        Ok(self.status())
    }

    /// Cuts links: see [`ChaosCommand::Partition`]. Returns once the cut holds (with
    /// namespaces: once the kernel's rules are in place).
    pub async fn partition(
        &self,
        datacenters: &[&str],
        mode: LinkMode,
    ) -> Result<(), SupervisorError> {
        let all: Vec<&str> = self
            .topology()
            .datacenters
            .iter()
            .map(|dc| dc.name.as_str())
            .collect();
        for dc in datacenters {
            if !all.contains(dc) {
                return Err(SupervisorError::UnknownDatacenter((*dc).to_owned()));
            }
        }
        match datacenters {
            [] => {}
            [alone] => {
                for other in all.iter().filter(|other| *other != alone) {
                    self.links().set(alone, other, mode);
                }
            }
            several => {
                for (index, a) in several.iter().enumerate() {
                    for b in &several[index + 1..] {
                        self.links().set(a, b, mode);
                    }
                }
            }
        }
        self.enforce_links().await
    }

    /// Brings every link back up.
    pub async fn heal(&self) -> Result<(), SupervisorError> {
        self.links().heal_all();
        self.enforce_links().await
    }

    /// `{"links":[{"between":["dc1","dc2"],"mode":"up"},..],"nodes":[{"name",..,"running"}]}`.
    pub fn status(&self) -> Value {
        let states = self.links().states();
        let names: Vec<&str> = self
            .topology()
            .datacenters
            .iter()
            .map(|dc| dc.name.as_str())
            .collect();
        let mut links = Vec::new();
        for (index, a) in names.iter().enumerate() {
            for b in &names[index + 1..] {
                let mode = states.get(&pair(a, b)).copied().unwrap_or(LinkMode::Up);
                links.push(json!({ "between": [a, b], "mode": mode }));
            }
        }
        let nodes: Vec<Value> = self
            .nodes()
            .into_iter()
            .map(|(name, kind, pid)| {
                let dc = self.topology().node(&name).map(|node| node.dc().to_owned());
                json!({ "name": name, "kind": kind, "dc": dc, "pid": pid, "running": pid.is_some() })
            })
            .collect();
        json!({ "links": links, "nodes": nodes })
    }
}

/// Serves `POST /v1/chaos` (body: a [`ChaosCommand`]) on `listener` until `shutdown`,
/// forwarding each command to whoever owns the topology.
pub async fn serve_control(
    listener: TcpListener,
    requests: mpsc::Sender<ChaosRequest>,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let router = Router::new()
        .route("/v1/chaos", post(handle))
        .with_state(requests);
    axum::serve(listener, router)
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await
}

async fn handle(
    State(requests): State<mpsc::Sender<ChaosRequest>>,
    Json(command): Json<ChaosCommand>,
) -> Response {
    let (reply, answer) = oneshot::channel();
    if requests
        .send(ChaosRequest { command, reply })
        .await
        .is_err()
    {
        return (StatusCode::SERVICE_UNAVAILABLE, "topology is stopping").into_response();
    }
    match answer.await {
        Ok(Ok(status)) => Json(status).into_response(),
        Ok(Err(message)) => {
            (StatusCode::BAD_REQUEST, Json(json!({ "error": message }))).into_response()
        }
        Err(_) => (StatusCode::SERVICE_UNAVAILABLE, "topology is stopping").into_response(),
    }
}

/// How long a chaos command may take end to end (a restart waits for the node to stop).
const CALL_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// Sends `command` to the `fanfare up` whose run directory is `run_dir`.
pub async fn call(run_dir: &std::path::Path, command: &ChaosCommand) -> Result<Value, String> {
    let state_path = run_dir.join("state.json");
    let state: Value = std::fs::read_to_string(&state_path)
        .ok()
        .and_then(|text| serde_json::from_str(&text).ok())
        .ok_or_else(|| {
            format!(
                "no running topology: cannot read {} (is `fanfare up` running with this run directory?)",
                state_path.display()
            )
        })?;
    let url = state["control_url"]
        .as_str()
        .ok_or_else(|| format!("{} has no control_url yet", state_path.display()))?;
    let body = serde_json::to_string(command).map_err(|error| error.to_string())?;
    let (status, text) = crate::monitor::post_json(
        crate::monitor::authority(url),
        "/v1/chaos",
        &body,
        CALL_TIMEOUT,
    )
    .await
    .ok_or_else(|| format!("the topology's control endpoint {url} does not answer"))?;
    let answer: Value = serde_json::from_str(&text).unwrap_or(Value::String(text));
    if status == 200 {
        Ok(answer)
    } else {
        Err(answer["error"]
            .as_str()
            .map(str::to_owned)
            .unwrap_or_else(|| answer.to_string()))
    }
}
