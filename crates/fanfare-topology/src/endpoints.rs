//! The endpoint listing published to tests and tools as JSON. Its serialized
//! shape is a public contract:
//!
//! ```json
//! {"datacenters":[{"name":"dc1",
//!   "frontends":[{"name":"dc1-fe1","url":"http://127.0.0.1:8111"}],
//!   "nats":[{"name":"dc1-nats1","client_url":"nats://127.0.0.1:4221","monitor_url":"http://127.0.0.1:8221"}],
//!   "dispatchers":[{"name":"dc1-disp1"}]}]}
//! ```
//!
//! Field order in the structs below is the order in the JSON; do not reorder.

use serde::{Deserialize, Serialize};

use crate::Topology;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Endpoints {
    pub datacenters: Vec<DatacenterEndpoints>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatacenterEndpoints {
    pub name: String,
    pub frontends: Vec<FrontendEndpoint>,
    pub nats: Vec<NatsEndpoint>,
    pub dispatchers: Vec<DispatcherEndpoint>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FrontendEndpoint {
    pub name: String,
    pub url: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NatsEndpoint {
    pub name: String,
    pub client_url: String,
    pub monitor_url: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DispatcherEndpoint {
    pub name: String,
}

pub(crate) fn of(t: &Topology) -> Endpoints {
    Endpoints {
        datacenters: t
            .datacenters
            .iter()
            .map(|dc| DatacenterEndpoints {
                name: dc.name.clone(),
                frontends: dc
                    .frontends
                    .iter()
                    .map(|f| FrontendEndpoint {
                        name: f.name.clone(),
                        url: f.url(),
                    })
                    .collect(),
                nats: dc
                    .nats
                    .iter()
                    .map(|n| NatsEndpoint {
                        name: n.name.clone(),
                        client_url: n.client_url(),
                        monitor_url: n.monitor_url(),
                    })
                    .collect(),
                dispatchers: dc
                    .dispatchers
                    .iter()
                    .map(|d| DispatcherEndpoint {
                        name: d.name.clone(),
                    })
                    .collect(),
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::fixtures::ONE_DC;

    #[test]
    fn endpoints_serialize_to_the_exact_contract_shape() {
        let t = Topology::from_toml_str(ONE_DC, "<string>").expect("valid");
        let json = serde_json::to_string(&t.endpoints()).expect("serialize");
        assert_eq!(
            json,
            r#"{"datacenters":[{"name":"dc1","frontends":[{"name":"dc1-fe1","url":"http://127.0.0.1:8111"}],"nats":[{"name":"dc1-nats1","client_url":"nats://127.0.0.1:4221","monitor_url":"http://127.0.0.1:8221"}],"dispatchers":[{"name":"dc1-disp1"}]}]}"#
        );
    }

    #[test]
    fn endpoints_read_back_from_json() {
        let t = Topology::from_toml_str(ONE_DC, "<string>").expect("valid");
        let json = serde_json::to_string_pretty(&t.endpoints()).expect("serialize");
        let back: Endpoints = serde_json::from_str(&json).expect("deserialize");
        assert_eq!(back, t.endpoints());
    }
}
