//! The chaos schedule: which action happens when, decided entirely by the seed.
//!
//! [`plan`] simulates the whole run up front, tracking what it has broken (the one partition,
//! the nodes it killed) so that its own rules hold: at most one partition at a time, healed
//! 10–40 s after it began; every killed node restarted 3–15 s later; at most one node down
//! per datacenter, so a datacenter is never without a frontend for longer than one restart
//! delay. The runner then only replays the list, which is what makes a seed reproducible
//! whatever the machine's timing.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use fanfare_supervisor::{ChaosCommand, LinkMode};
use fanfare_topology::Topology;
use serde::Serialize;

use crate::rng::SeededRng;

/// How long a partition lasts before its heal.
const PARTITION_LASTS: (Duration, Duration) = (Duration::from_secs(10), Duration::from_secs(40));
/// How long a killed node stays down before its restart.
const DOWN_FOR: (Duration, Duration) = (Duration::from_secs(3), Duration::from_secs(15));

/// The node names of one datacenter, by kind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DatacenterNodes {
    pub name: String,
    pub nats: Vec<String>,
    pub dispatchers: Vec<String>,
    pub frontends: Vec<String>,
}

/// What chaos can act on: every datacenter and its nodes, in topology order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterShape {
    pub datacenters: Vec<DatacenterNodes>,
}

impl ClusterShape {
    pub fn of(topology: &Topology) -> Self {
        let names = |items: Vec<&String>| items.into_iter().cloned().collect();
        Self {
            datacenters: topology
                .datacenters
                .iter()
                .map(|dc| DatacenterNodes {
                    name: dc.name.clone(),
                    nats: names(dc.nats.iter().map(|n| &n.name).collect()),
                    dispatchers: names(dc.dispatchers.iter().map(|d| &d.name).collect()),
                    frontends: names(dc.frontends.iter().map(|f| &f.name).collect()),
                })
                .collect(),
        }
    }

    fn dc_of(&self, node: &str) -> Option<&str> {
        self.datacenters
            .iter()
            .find(|dc| {
                dc.nats
                    .iter()
                    .chain(&dc.dispatchers)
                    .chain(&dc.frontends)
                    .any(|name| name == node)
            })
            .map(|dc| dc.name.as_str())
    }
}

/// A cut is either refused at once (`reset`) or a silent black hole (`drop`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CutMode {
    Reset,
    Drop,
}

/// One chaos action.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum ChaosAction {
    /// Cut one datacenter off from all the others.
    Isolate { dc: String, mode: CutMode },
    /// Cut the link between two datacenters only.
    Cut { a: String, b: String, mode: CutMode },
    /// Bring every link back up.
    Heal,
    /// SIGKILL a node.
    Kill { node: String },
    /// Stop a node gracefully (SIGTERM) and start it again.
    Restart { node: String },
}

impl ChaosAction {
    pub fn command(&self) -> ChaosCommand {
        let link_mode = |mode: &CutMode| match mode {
            CutMode::Reset => LinkMode::Reset,
            CutMode::Drop => LinkMode::Drop,
        };
        match self {
            ChaosAction::Isolate { dc, mode } => ChaosCommand::Partition {
                datacenters: vec![dc.clone()],
                mode: link_mode(mode),
            },
            ChaosAction::Cut { a, b, mode } => ChaosCommand::Partition {
                datacenters: vec![a.clone(), b.clone()],
                mode: link_mode(mode),
            },
            ChaosAction::Heal => ChaosCommand::Heal,
            ChaosAction::Kill { node } => ChaosCommand::Kill { node: node.clone() },
            ChaosAction::Restart { node } => ChaosCommand::Restart { node: node.clone() },
        }
    }

    pub fn is_partition(&self) -> bool {
        matches!(self, ChaosAction::Isolate { .. } | ChaosAction::Cut { .. })
    }
}

impl fmt::Display for CutMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            CutMode::Reset => "reset",
            CutMode::Drop => "drop",
        })
    }
}

impl fmt::Display for ChaosAction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ChaosAction::Isolate { dc, mode } => write!(f, "isolate {dc} ({mode})"),
            ChaosAction::Cut { a, b, mode } => write!(f, "cut {a}<->{b} ({mode})"),
            ChaosAction::Heal => f.write_str("heal"),
            ChaosAction::Kill { node } => write!(f, "kill {node}"),
            ChaosAction::Restart { node } => write!(f, "restart {node}"),
        }
    }
}

/// An action and when it is due, counted from the start of the run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedAction {
    pub at: Duration,
    pub action: ChaosAction,
}

/// The kinds of disruption a tick chooses among (uniformly, then a random target).
#[derive(Debug, Clone, Copy)]
enum Disruption {
    Isolate,
    Cut,
    EarlyHeal,
    KillDispatcher,
    KillFrontend,
    KillNats,
    Restart,
}

/// Every action of a run of `duration` with a disruption every `chaos_every` (±25 %), for
/// `seed`. Follow-ups (heals, restarts) that would fall after `duration` are left out: the end
/// of the run heals and restarts whatever is still broken.
pub fn plan(
    seed: u64,
    shape: &ClusterShape,
    chaos_every: Duration,
    duration: Duration,
) -> Vec<PlannedAction> {
    let mut rng = SeededRng::new(seed);
    let mut actions = Vec::new();
    let mut partition_heal_at: Option<Duration> = None;
    // Killed node -> when it is restarted.
    let mut down: BTreeMap<String, Duration> = BTreeMap::new();
    if chaos_every.is_zero() {
        return actions;
    }
    let jittered = |rng: &mut SeededRng| rng.between(chaos_every * 3 / 4, chaos_every * 5 / 4);
    let mut tick = jittered(&mut rng);
    loop {
        // Follow-ups due before the next tick come first, in time order.
        let next_restart = down.iter().map(|(node, at)| (*at, node.clone())).min();
        let next_follow_up = match (partition_heal_at, next_restart) {
            (Some(heal), Some((restart, _))) if heal <= restart => Some((heal, None)),
            (Some(heal), None) => Some((heal, None)),
            (_, Some((restart, node))) => Some((restart, Some(node))),
            (None, None) => None,
        };
        if let Some((at, node)) = next_follow_up {
            if at <= tick && at < duration {
                let action = match node {
                    None => {
                        partition_heal_at = None;
                        ChaosAction::Heal
                    }
                    Some(node) => {
                        down.remove(&node);
                        ChaosAction::Restart { node }
                    }
                };
                actions.push(PlannedAction { at, action });
                continue;
            }
        }
        if tick >= duration {
            break;
        }
        let down_dcs: Vec<&str> = down.keys().filter_map(|node| shape.dc_of(node)).collect();
        let whole: Vec<&DatacenterNodes> = shape
            .datacenters
            .iter()
            .filter(|dc| !down_dcs.contains(&dc.name.as_str()))
            .collect();
        let killable = |pick: fn(&DatacenterNodes) -> &Vec<String>| -> Vec<String> {
            whole
                .iter()
                .flat_map(|dc| pick(dc).iter().cloned())
                .collect()
        };
        let dispatchers = killable(|dc| &dc.dispatchers);
        let frontends = killable(|dc| &dc.frontends);
        let nats = killable(|dc| &dc.nats);
        let mut choices = Vec::new();
        let partitionable = shape.datacenters.len() >= 2;
        if partitionable && partition_heal_at.is_none() {
            choices.push(Disruption::Isolate);
            choices.push(Disruption::Cut);
        }
        if partition_heal_at.is_some() {
            choices.push(Disruption::EarlyHeal);
        }
        for (nodes, kind) in [
            (&dispatchers, Disruption::KillDispatcher),
            (&frontends, Disruption::KillFrontend),
            (&nats, Disruption::KillNats),
        ] {
            if !nodes.is_empty() {
                choices.push(kind);
            }
        }
        let all_whole: Vec<String> = [&dispatchers, &frontends, &nats]
            .into_iter()
            .flatten()
            .cloned()
            .collect();
        if !all_whole.is_empty() {
            choices.push(Disruption::Restart);
        }
        let at = tick;
        tick += jittered(&mut rng);
        let Some(choice) = rng.pick(&choices).copied() else {
            continue;
        };
        let mode = |rng: &mut SeededRng| {
            if rng.coin() {
                CutMode::Reset
            } else {
                CutMode::Drop
            }
        };
        let action = match choice {
            Disruption::Isolate => {
                let dc = rng.pick(&shape.datacenters).map(|dc| dc.name.clone());
                let mode = mode(&mut rng);
                partition_heal_at = Some(at + rng.between(PARTITION_LASTS.0, PARTITION_LASTS.1));
                ChaosAction::Isolate {
                    dc: dc.unwrap_or_default(),
                    mode,
                }
            }
            Disruption::Cut => {
                let count = shape.datacenters.len() as u64;
                let first = rng.below(count) as usize;
                let second = (first + 1 + rng.below(count - 1) as usize) % count as usize;
                let (a, b) = (first.min(second), first.max(second));
                let mode = mode(&mut rng);
                partition_heal_at = Some(at + rng.between(PARTITION_LASTS.0, PARTITION_LASTS.1));
                ChaosAction::Cut {
                    a: shape.datacenters[a].name.clone(),
                    b: shape.datacenters[b].name.clone(),
                    mode,
                }
            }
            Disruption::EarlyHeal => {
                partition_heal_at = None;
                ChaosAction::Heal
            }
            Disruption::KillDispatcher | Disruption::KillFrontend | Disruption::KillNats => {
                let nodes = match choice {
                    Disruption::KillDispatcher => &dispatchers,
                    Disruption::KillFrontend => &frontends,
                    _ => &nats,
                };
                let node = rng.pick(nodes).cloned().unwrap_or_default();
                down.insert(node.clone(), at + rng.between(DOWN_FOR.0, DOWN_FOR.1));
                ChaosAction::Kill { node }
            }
            Disruption::Restart => ChaosAction::Restart {
                node: rng.pick(&all_whole).cloned().unwrap_or_default(),
            },
        };
        actions.push(PlannedAction { at, action });
    }
    actions
}

#[cfg(test)]
mod tests {
    use super::*;

    fn three_dcs(frontends: usize) -> ClusterShape {
        ClusterShape {
            datacenters: (1..=3)
                .map(|d| DatacenterNodes {
                    name: format!("dc{d}"),
                    nats: vec![format!("dc{d}-nats1")],
                    dispatchers: vec![format!("dc{d}-disp1"), format!("dc{d}-disp2")],
                    frontends: (1..=frontends).map(|f| format!("dc{d}-fe{f}")).collect(),
                })
                .collect(),
        }
    }

    const EVERY: Duration = Duration::from_secs(20);
    const FIVE_MINUTES: Duration = Duration::from_secs(300);

    #[test]
    fn the_same_seed_plans_the_same_actions_at_the_same_times() {
        let shape = three_dcs(2);
        let first = plan(7, &shape, EVERY, FIVE_MINUTES);
        assert_eq!(first, plan(7, &shape, EVERY, FIVE_MINUTES));
        assert!(first.len() >= 10, "{first:?}");
        assert_ne!(first, plan(8, &shape, EVERY, FIVE_MINUTES));
    }

    #[test]
    fn disruptions_come_every_period_with_jitter_and_nothing_after_the_end() {
        let actions = plan(3, &three_dcs(2), EVERY, FIVE_MINUTES);
        for pair in actions.windows(2) {
            assert!(pair[0].at <= pair[1].at, "in time order: {actions:?}");
        }
        assert!(actions.iter().all(|planned| planned.at < FIVE_MINUTES));
        let first = actions[0].at;
        assert!(
            first >= EVERY * 3 / 4 && first <= EVERY * 5 / 4,
            "{first:?}"
        );
    }

    /// Replays a plan and checks its invariants: one partition at a time, healed within
    /// 40 s; every kill restarted within 15 s unless the run ends first; at most one node down
    /// per datacenter.
    #[test]
    fn plans_keep_one_partition_and_one_dead_node_per_datacenter_and_repair_both() {
        for seed in 0..200 {
            let shape = three_dcs(1 + (seed as usize % 2));
            let actions = plan(seed, &shape, Duration::from_secs(8), FIVE_MINUTES);
            let mut partition_since: Option<Duration> = None;
            let mut down: BTreeMap<String, Duration> = BTreeMap::new();
            for planned in &actions {
                match &planned.action {
                    action if action.is_partition() => {
                        assert!(partition_since.is_none(), "seed {seed}: two partitions");
                        partition_since = Some(planned.at);
                    }
                    ChaosAction::Heal => {
                        let since = partition_since.take().expect("a heal ends a partition");
                        assert!(planned.at - since <= PARTITION_LASTS.1, "seed {seed}");
                    }
                    ChaosAction::Kill { node } => {
                        let dc = shape.dc_of(node).unwrap();
                        assert!(
                            down.keys().all(|other| shape.dc_of(other) != Some(dc)),
                            "seed {seed}: second node down in {dc}"
                        );
                        down.insert(node.clone(), planned.at);
                    }
                    ChaosAction::Restart { node } => {
                        if let Some(killed_at) = down.remove(node) {
                            assert!(planned.at - killed_at <= DOWN_FOR.1, "seed {seed}");
                        }
                    }
                    _ => unreachable!(),
                }
            }
            for killed_at in down.values() {
                assert!(
                    FIVE_MINUTES - *killed_at <= DOWN_FOR.1,
                    "seed {seed}: never restarted"
                );
            }
            if let Some(since) = partition_since {
                assert!(
                    FIVE_MINUTES - since <= PARTITION_LASTS.1,
                    "seed {seed}: never healed"
                );
            }
        }
    }

    #[test]
    fn a_single_datacenter_gets_no_partitions() {
        let shape = ClusterShape {
            datacenters: three_dcs(1).datacenters.into_iter().take(1).collect(),
        };
        let actions = plan(5, &shape, EVERY, FIVE_MINUTES);
        assert!(!actions.is_empty());
        assert!(actions.iter().all(|planned| !planned.action.is_partition()));
    }
}
