//! Which nodes run right now, as the topology last reported it. The chaos runner updates it
//! from the status every chaos call answers with; publishers and viewers read it to pick a
//! frontend that is up.

use std::collections::HashSet;
use std::sync::RwLock;

use serde_json::Value;

#[derive(Default)]
pub(crate) struct Liveness {
    running: RwLock<HashSet<String>>,
}

impl Liveness {
    /// Takes in a chaos status: `{"nodes":[{"name":..,"running":bool},..],..}`.
    pub(crate) fn update(&self, status: &Value) {
        let running: HashSet<String> = status["nodes"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|node| node["running"].as_bool().unwrap_or(false))
            .filter_map(|node| node["name"].as_str().map(str::to_owned))
            .collect();
        *self
            .running
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = running;
    }

    pub(crate) fn is_running(&self, node: &str) -> bool {
        self.running
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .contains(node)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_status_replaces_what_runs() {
        let liveness = Liveness::default();
        liveness.update(&serde_json::json!({"nodes": [
            {"name": "dc1-fe1", "running": true},
            {"name": "dc1-fe2", "running": false},
        ]}));
        assert!(liveness.is_running("dc1-fe1"));
        assert!(!liveness.is_running("dc1-fe2"));
        liveness.update(&serde_json::json!({"nodes": []}));
        assert!(!liveness.is_running("dc1-fe1"));
    }
}
