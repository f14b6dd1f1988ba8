//! Carries out the planned chaos through the running topology's control endpoint, and puts
//! everything back at the end.

use std::path::Path;
use std::sync::Arc;

use fanfare_supervisor::{call_chaos, ChaosCommand};
use tokio_util::sync::CancellationToken;

use crate::ledger::Ledger;
use crate::liveness::Liveness;
use crate::plan::{ChaosAction, PlannedAction};

/// Runs the planned actions, each at its time (or at once when an earlier one ran late),
/// until the plan ends or `stop`. An action in progress is finished, never cut short: a
/// half-done restart would leave a node down that nobody restarts.
pub(crate) async fn run_plan(
    plan: Vec<PlannedAction>,
    run_dir: &Path,
    ledger: Arc<Ledger>,
    liveness: Arc<Liveness>,
    start: tokio::time::Instant,
    stop: CancellationToken,
) {
    for planned in plan {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep_until(start + planned.at) => {}
        }
        act(&planned.action, "", run_dir, &ledger, &liveness).await;
    }
}

/// One action; the time recorded is when it finished (for a heal: when the links are up).
/// `note` is appended to its name in the report.
async fn act(
    action: &ChaosAction,
    note: &str,
    run_dir: &Path,
    ledger: &Ledger,
    liveness: &Liveness,
) {
    let result = call_chaos(run_dir, &action.command()).await;
    let at = ledger.elapsed();
    let error = match result {
        Ok(status) => {
            liveness.update(&status);
            None
        }
        Err(error) => Some(error),
    };
    ledger.action_done(
        at,
        format!("{action}{note}"),
        action.is_partition(),
        matches!(action, ChaosAction::Heal),
        error,
    );
}

/// Heals every link and restarts every node that is not running, as the topology reports it.
pub(crate) async fn restore(
    run_dir: &Path,
    ledger: &Ledger,
    liveness: &Liveness,
) -> Result<(), String> {
    const NOTE: &str = " (end of chaos)";
    act(&ChaosAction::Heal, NOTE, run_dir, ledger, liveness).await;
    let status = call_chaos(run_dir, &ChaosCommand::Status).await?;
    liveness.update(&status);
    let stopped: Vec<String> = status["nodes"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|node| !node["running"].as_bool().unwrap_or(false))
        .filter_map(|node| node["name"].as_str().map(str::to_owned))
        .collect();
    for node in stopped {
        act(
            &ChaosAction::Restart { node },
            NOTE,
            run_dir,
            ledger,
            liveness,
        )
        .await;
    }
    Ok(())
}
