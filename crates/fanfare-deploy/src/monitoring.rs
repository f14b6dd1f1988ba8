//! What to watch: Prometheus alert rules (with promtool unit tests), a scrape config for the
//! hosts layout, and a Grafana dashboard, all over fanfare's own metrics
//! (`crates/fanfare-telemetry`: every series carries `dc` and `node`) and the NATS exporter's
//! (`prometheus-nats-exporter -prefix=nats`, as the Helm chart runs it: gateway traffic and
//! consumer lag).
//!
//! Job names: `fanfare-frontend`, `fanfare-dispatcher`, `nats` (the scrape config uses them;
//! on Kubernetes, relabel the pods' `app.kubernetes.io/name` into `job`).

use fanfare_topology::Topology;

use crate::doc::Doc;
use crate::{DeployError, Files};

/// Every fanfare metric the rules and the dashboard read; a test checks each against what the
/// nodes really export.
#[cfg(test)]
const FANFARE_METRICS: [&str; 16] = [
    "fanfare_frontend_viewers",
    "fanfare_frontend_connections_total",
    "fanfare_frontend_publish_total",
    "fanfare_frontend_publish_seconds_bucket",
    "fanfare_frontend_batches_received_total",
    "fanfare_frontend_events_sent_total",
    "fanfare_frontend_viewers_lagged_total",
    "fanfare_frontend_interest_errors_total",
    "fanfare_frontend_history_errors_total",
    "fanfare_frontend_replay_resets_total",
    "fanfare_dispatcher_deliveries_total",
    "fanfare_dispatcher_batches_total",
    "fanfare_dispatcher_messages_total",
    "fanfare_dispatcher_bridged_total",
    "fanfare_dispatcher_partitions_owned",
    "fanfare_dispatcher_round_messages_bucket",
];

/// Fan-out consumers further behind than this many interactions for 2 minutes page someone.
const LAG_ALERT: u64 = 10_000;

struct Alert {
    name: &'static str,
    expr: String,
    for_: &'static str,
    severity: &'static str,
    summary: &'static str,
}

fn alerts(topology: &Topology) -> Vec<Alert> {
    let partitions = topology.settings.partitions;
    let remote_gateways = topology.datacenters.len().saturating_sub(1);
    let mut alerts = vec![
        Alert {
            name: "FanfareNodeDown",
            expr: "up{job=~\"fanfare-frontend|fanfare-dispatcher\"} == 0".to_owned(),
            for_: "1m",
            severity: "critical",
            summary: "{{ $labels.instance }} ({{ $labels.job }}) does not answer /metrics",
        },
        Alert {
            name: "FanfarePartitionsUnowned",
            expr: format!("sum by (dc) (fanfare_dispatcher_partitions_owned) < {partitions}"),
            for_: "1m",
            severity: "critical",
            summary: "{{ $labels.dc }}: only {{ $value }} of the dispatch partitions have a dispatcher; viewers there miss interactions",
        },
        Alert {
            name: "FanfarePublishFailing",
            expr: "sum by (dc) (rate(fanfare_frontend_publish_total{outcome!=\"Accepted\",outcome!=\"Rejected\"}[5m])) / sum by (dc) (rate(fanfare_frontend_publish_total[5m])) > 0.01".to_owned(),
            for_: "5m",
            severity: "critical",
            summary: "{{ $labels.dc }}: more than 1% of publish requests are not stored",
        },
        Alert {
            name: "FanfarePublishSlow",
            expr: "histogram_quantile(0.99, sum by (dc, le) (rate(fanfare_frontend_publish_seconds_bucket[5m]))) > 0.1".to_owned(),
            for_: "10m",
            severity: "warning",
            summary: "{{ $labels.dc }}: p99 of publish to stored is above 100 ms",
        },
        Alert {
            name: "FanfareViewersCutOff",
            expr: "sum by (dc, node) (rate(fanfare_frontend_viewers_lagged_total[5m])) > 1".to_owned(),
            for_: "10m",
            severity: "warning",
            summary: "{{ $labels.node }}: more than one slow viewer a second is cut off",
        },
        Alert {
            name: "FanfareSubscriptionTableErrors",
            expr: "sum by (dc, node) (rate(fanfare_frontend_interest_errors_total[5m])) > 0".to_owned(),
            for_: "5m",
            severity: "warning",
            summary: "{{ $labels.node }} cannot write its subscription-table entries; its viewers may stop receiving",
        },
        Alert {
            name: "FanfareHistoryErrors",
            expr: "sum by (dc, node) (rate(fanfare_frontend_history_errors_total[5m])) > 0".to_owned(),
            for_: "5m",
            severity: "warning",
            summary: "{{ $labels.node }} cannot read history: resumes fail",
        },
        Alert {
            name: "FanfareCatchingUp",
            expr: "sum by (dc) (rate(fanfare_dispatcher_bridged_total[1m])) > 0".to_owned(),
            for_: "5m",
            severity: "warning",
            summary: "{{ $labels.dc }} has been catching up on another datacenter's stream for 5 minutes (a gateway link keeps failing?)",
        },
        Alert {
            name: "FanfareFanoutLag",
            expr: format!("max by (stream_name) (nats_consumer_num_pending{{stream_name=~\"FANOUT_.*\"}}) > {LAG_ALERT}"),
            for_: "2m",
            severity: "critical",
            summary: "{{ $labels.stream_name }}: dispatchers are more than 10,000 interactions behind",
        },
    ];
    if remote_gateways > 0 {
        alerts.push(Alert {
            name: "NatsGatewayDown",
            // A server with no gateway left has no gateway series at all: its varz still
            // shows it is there.
            expr: format!(
                "count by (server_id) (nats_gatewayz_outbound_gateway_conn_uptime_seconds) < {remote_gateways} \
                 or (count by (server_id) (nats_varz_connections) unless count by (server_id) (nats_gatewayz_outbound_gateway_conn_uptime_seconds))"
            ),
            for_: "1m",
            severity: "critical",
            summary: "NATS server {{ $labels.server_id }} has no gateway to every other datacenter: interactions published there do not cross until it heals",
        });
    }
    alerts
}

pub(crate) fn render(topology: &Topology, files: &mut Files) -> Result<(), DeployError> {
    let rules = Doc::map([(
        "groups",
        Doc::list([Doc::map([
            ("name", Doc::str("fanfare")),
            (
                "rules",
                Doc::list(alerts(topology).into_iter().map(|alert| {
                    Doc::map([
                        ("alert", Doc::str(alert.name)),
                        ("expr", Doc::str(alert.expr)),
                        ("for", Doc::str(alert.for_)),
                        ("labels", Doc::map([("severity", Doc::str(alert.severity))])),
                        (
                            "annotations",
                            Doc::map([("summary", Doc::str(alert.summary))]),
                        ),
                    ])
                })),
            ),
        ])]),
    )]);
    let header = |what: &str| crate::header(topology, what);
    files.write(
        "monitoring/prometheus/fanfare-rules.yaml",
        &format!(
            "{}{}",
            header("Prometheus alert rules: promtool check rules fanfare-rules.yaml"),
            rules.to_yaml()
        ),
    )?;
    files.write(
        "monitoring/prometheus/fanfare-rules.test.yaml",
        &format!(
            "{}{}",
            header("promtool test rules fanfare-rules.test.yaml"),
            rule_tests(topology).to_yaml()
        ),
    )?;
    files.write(
        "monitoring/prometheus/scrape-hosts.yaml",
        &format!(
            "{}{}",
            header("Scrape configs for the hosts layout (merge into prometheus.yml)"),
            scrape_configs(topology).to_yaml()
        ),
    )?;
    files.write(
        "monitoring/grafana/fanfare-dashboard.json",
        &dashboard(topology).to_json(),
    )
}

fn series(labels: &str, values: &str) -> Doc {
    Doc::map([("series", Doc::str(labels)), ("values", Doc::str(values))])
}

fn expected(name: &str, at: &str, alerts: Vec<Doc>) -> Doc {
    Doc::map([
        ("eval_time", Doc::str(at)),
        ("alertname", Doc::str(name)),
        ("exp_alerts", Doc::List(alerts)),
    ])
}

/// An alert expected to fire with `labels`, its summary rendered as Prometheus would (labels
/// and `value` substituted into the template).
fn fired(topology: &Topology, name: &str, labels: Vec<(&str, String)>, value: &str) -> Doc {
    let template = alerts(topology)
        .into_iter()
        .find(|alert| alert.name == name)
        .map(|alert| alert.summary)
        .unwrap_or_default();
    let mut summary = template.replace("{{ $value }}", value);
    for (label, text) in &labels {
        summary = summary.replace(&format!("{{{{ $labels.{label} }}}}"), text);
    }
    let mut all = labels;
    let severity = alerts(topology)
        .into_iter()
        .find(|alert| alert.name == name)
        .map(|alert| alert.severity)
        .unwrap_or_default();
    all.push(("severity", severity.to_owned()));
    Doc::map([
        (
            "exp_labels",
            Doc::map(all.into_iter().map(|(k, v)| (k, Doc::str(v)))),
        ),
        (
            "exp_annotations",
            Doc::map([("summary", Doc::str(summary))]),
        ),
    ])
}

/// One test per kind of rule: the alert fires on a broken series after its `for`, and stays
/// quiet on a healthy one.
fn rule_tests(topology: &Topology) -> Doc {
    let partitions = topology.settings.partitions;
    let dc = topology
        .datacenters
        .first()
        .map(|dc| dc.name.clone())
        .unwrap_or_default();
    let owned_all = format!("{partitions}x15");
    let owned_lost = format!("{partitions}x4 {}x10", partitions.saturating_sub(1));
    let mut series_list = vec![
        series(&format!("fanfare_dispatcher_partitions_owned{{dc=\"{dc}\",node=\"{dc}-disp1\"}}"), &owned_lost),
        series("fanfare_dispatcher_partitions_owned{dc=\"healthy\",node=\"healthy-disp1\"}", &owned_all),
        series("up{job=\"fanfare-frontend\",instance=\"fe:8080\"}", "1 1 0 0 0"),
        series(
            "nats_consumer_num_pending{stream_name=\"FANOUT_dc1\",consumer_name=\"dispatch-p0\"}",
            "0 20000x10",
        ),
        series(
            &format!("fanfare_frontend_publish_total{{dc=\"{dc}\",node=\"{dc}-fe1\",kind=\"Comment\",outcome=\"Accepted\"}}"),
            "0+60x15",
        ),
        series(
            &format!("fanfare_frontend_publish_total{{dc=\"{dc}\",node=\"{dc}-fe1\",kind=\"Comment\",outcome=\"Unavailable\"}}"),
            "0+6x15",
        ),
    ];
    let mut alerts = vec![
        expected(
            "FanfarePartitionsUnowned",
            "10m",
            vec![fired(
                topology,
                "FanfarePartitionsUnowned",
                vec![("dc", dc.clone())],
                &partitions.saturating_sub(1).to_string(),
            )],
        ),
        expected(
            "FanfareNodeDown",
            "4m",
            vec![fired(
                topology,
                "FanfareNodeDown",
                vec![
                    ("job", "fanfare-frontend".to_owned()),
                    ("instance", "fe:8080".to_owned()),
                ],
                "0",
            )],
        ),
        expected(
            "FanfareFanoutLag",
            "5m",
            vec![fired(
                topology,
                "FanfareFanoutLag",
                vec![("stream_name", "FANOUT_dc1".to_owned())],
                "20000",
            )],
        ),
        expected(
            "FanfarePublishFailing",
            "14m",
            vec![fired(
                topology,
                "FanfarePublishFailing",
                vec![("dc", dc.clone())],
                "0.09090909090909091",
            )],
        ),
        expected("FanfareCatchingUp", "10m", vec![]),
    ];
    if topology.datacenters.len() > 1 {
        let others = topology.datacenters.len() - 1;
        series_list.push(series("nats_varz_connections{server_id=\"s1\"}", "5+0x15"));
        for gateway in 0..others {
            let values = if gateway == 0 { "1+60x3" } else { "1+60x15" };
            series_list.push(series(
                &format!("nats_gatewayz_outbound_gateway_conn_uptime_seconds{{server_id=\"s1\",remote_gateway_name=\"r{gateway}\"}}"),
                values,
            ));
        }
        alerts.push(expected(
            "NatsGatewayDown",
            "10m",
            vec![fired(
                topology,
                "NatsGatewayDown",
                vec![("server_id", "s1".to_owned())],
                &(others - 1).max(1).to_string(),
            )],
        ));
    }
    Doc::map([
        ("rule_files", Doc::strs(["fanfare-rules.yaml"])),
        ("evaluation_interval", Doc::str("1m")),
        (
            "tests",
            Doc::list([Doc::map([
                ("interval", Doc::str("1m")),
                ("input_series", Doc::List(series_list)),
                ("alert_rule_test", Doc::List(alerts)),
            ])]),
        ),
    ])
}

fn scrape_configs(topology: &Topology) -> Doc {
    let job = |name: &str, targets: Vec<(String, String)>| -> Doc {
        Doc::map([
            ("job_name", Doc::str(name)),
            (
                "static_configs",
                Doc::list(targets.into_iter().map(|(target, dc)| {
                    Doc::map([
                        ("targets", Doc::strs([target])),
                        ("labels", Doc::map([("dc", Doc::str(dc))])),
                    ])
                })),
            ),
        ])
    };
    let mut frontends = Vec::new();
    let mut dispatchers = Vec::new();
    for dc in &topology.datacenters {
        frontends.extend(
            dc.frontends
                .iter()
                .map(|n| (n.listen.to_string(), dc.name.clone())),
        );
        dispatchers.extend(
            dc.dispatchers
                .iter()
                .map(|n| (n.admin.to_string(), dc.name.clone())),
        );
    }
    Doc::map([(
        "scrape_configs",
        Doc::list([
            job("fanfare-frontend", frontends),
            job("fanfare-dispatcher", dispatchers),
        ]),
    )])
}

fn panel(id: i64, title: &str, unit: &str, y: i64, x: i64, exprs: &[(&str, &str)]) -> Doc {
    Doc::map([
        ("id", Doc::int(id)),
        ("type", Doc::str("timeseries")),
        ("title", Doc::str(title)),
        (
            "datasource",
            Doc::map([
                ("type", Doc::str("prometheus")),
                ("uid", Doc::str("${datasource}")),
            ]),
        ),
        (
            "gridPos",
            Doc::map([
                ("h", Doc::int(8)),
                ("w", Doc::int(12)),
                ("x", Doc::int(x)),
                ("y", Doc::int(y)),
            ]),
        ),
        (
            "fieldConfig",
            Doc::map([
                ("defaults", Doc::map([("unit", Doc::str(unit))])),
                ("overrides", Doc::list([])),
            ]),
        ),
        (
            "targets",
            Doc::list(exprs.iter().enumerate().map(|(index, (expr, legend))| {
                Doc::map([
                    (
                        "refId",
                        Doc::str(((b'A' + index as u8) as char).to_string()),
                    ),
                    ("expr", Doc::str(*expr)),
                    ("legendFormat", Doc::str(*legend)),
                ])
            })),
        ),
    ])
}

/// A dashboard panel: title, unit, and its queries with their legends.
type Panel = (
    &'static str,
    &'static str,
    &'static [(&'static str, &'static str)],
);

fn dashboard(topology: &Topology) -> Doc {
    let panels: [Panel; 10] = [
        ("Open viewer streams", "short", &[("sum by (dc) (fanfare_frontend_viewers)", "{{dc}}")]),
        ("Viewer streams opened /s", "ops", &[("sum by (dc) (rate(fanfare_frontend_connections_total[1m]))", "{{dc}}")]),
        (
            "Publish requests /s by outcome",
            "reqps",
            &[("sum by (dc, outcome) (rate(fanfare_frontend_publish_total[1m]))", "{{dc}} {{outcome}}")],
        ),
        (
            "Publish to stored, p50 and p99",
            "s",
            &[
                ("histogram_quantile(0.5, sum by (dc, le) (rate(fanfare_frontend_publish_seconds_bucket[5m])))", "{{dc}} p50"),
                ("histogram_quantile(0.99, sum by (dc, le) (rate(fanfare_frontend_publish_seconds_bucket[5m])))", "{{dc}} p99"),
            ],
        ),
        (
            "Deliveries /s (dispatchers to frontends, frontends to viewers)",
            "ops",
            &[
                ("sum by (dc) (rate(fanfare_dispatcher_deliveries_total[1m]))", "{{dc}} to frontends"),
                ("sum by (dc) (rate(fanfare_frontend_events_sent_total[1m]))", "{{dc}} SSE events"),
            ],
        ),
        (
            "Batches /s and interactions per round",
            "ops",
            &[
                ("sum by (dc) (rate(fanfare_dispatcher_batches_total[1m]))", "{{dc}} batches sent"),
                ("sum by (dc) (rate(fanfare_frontend_batches_received_total[1m]))", "{{dc}} batches received"),
                ("sum by (dc) (rate(fanfare_dispatcher_messages_total[1m]))", "{{dc}} interactions consumed"),
            ],
        ),
        (
            "Fan-out consumer lag (interactions pending)",
            "short",
            &[("max by (stream_name) (nats_consumer_num_pending{stream_name=~\"FANOUT_.*\"})", "{{stream_name}}")],
        ),
        (
            "Catch-up after a heal: interactions read from origin streams /s",
            "ops",
            &[("sum by (dc) (rate(fanfare_dispatcher_bridged_total[1m]))", "{{dc}}")],
        ),
        (
            "Gateway traffic between datacenters",
            "Bps",
            &[
                ("sum by (gateway_name, remote_gateway_name) (rate(nats_gatewayz_outbound_gateway_conn_out_bytes[1m]))", "{{gateway_name}} to {{remote_gateway_name}}"),
                ("sum by (gateway_name, remote_gateway_name) (rate(nats_gatewayz_inbound_gateway_conn_in_bytes[1m]))", "{{gateway_name}} from {{remote_gateway_name}}"),
            ],
        ),
        (
            "Dispatch partitions owned, viewers cut off /s",
            "short",
            &[
                ("sum by (dc) (fanfare_dispatcher_partitions_owned)", "{{dc}} partitions owned"),
                ("sum by (dc) (rate(fanfare_frontend_viewers_lagged_total[5m]))", "{{dc}} viewers cut off"),
            ],
        ),
    ];
    let panels = panels
        .iter()
        .enumerate()
        .map(|(index, (title, unit, exprs))| {
            let index = index as i64;
            panel(
                index + 1,
                title,
                unit,
                (index / 2) * 8,
                (index % 2) * 12,
                exprs,
            )
        });
    Doc::map([
        ("uid", Doc::str("fanfare")),
        ("title", Doc::str(format!("fanfare ({})", topology.source))),
        ("tags", Doc::strs(["fanfare", "nats"])),
        ("timezone", Doc::str("browser")),
        ("schemaVersion", Doc::int(39)),
        ("version", Doc::int(1)),
        ("refresh", Doc::str("10s")),
        (
            "time",
            Doc::map([("from", Doc::str("now-1h")), ("to", Doc::str("now"))]),
        ),
        (
            "templating",
            Doc::map([(
                "list",
                Doc::list([Doc::map([
                    ("name", Doc::str("datasource")),
                    ("type", Doc::str("datasource")),
                    ("query", Doc::str("prometheus")),
                ])]),
            )]),
        ),
        ("panels", Doc::list(panels)),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;
    use fanfare_telemetry::{DispatcherMetrics, FrontendMetrics, PublishKind, PublishOutcome};

    /// What a frontend and a dispatcher export once every metric has a sample.
    fn exported() -> String {
        let mut registry = fanfare_telemetry::node_registry("dc1", "n1");
        let frontend = FrontendMetrics::register(&mut registry);
        let dispatcher = DispatcherMetrics::register(&mut registry);
        for outcome in [
            PublishOutcome::Accepted,
            PublishOutcome::Rejected,
            PublishOutcome::Unavailable,
        ] {
            frontend.published(PublishKind::Comment, outcome, 0.001);
        }
        dispatcher.partition_owned(0);
        fanfare_telemetry::render(&registry)
    }

    #[test]
    fn every_metric_the_rules_and_dashboard_read_is_exported() {
        let text = exported();
        for metric in FANFARE_METRICS {
            assert!(
                text.lines()
                    .any(|line| line.starts_with(metric)
                        && line[metric.len()..].starts_with(['{', ' '])),
                "{metric} is not exported:\n{text}"
            );
        }
        let t = Topology::from_toml_str(
            &std::fs::read_to_string(
                std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                    .join("../../topology/local-3dc.toml"),
            )
            .expect("topology"),
            "local-3dc.toml",
        )
        .expect("valid");
        let mut used = String::new();
        for alert in alerts(&t) {
            used.push_str(&alert.expr);
        }
        used.push_str(&dashboard(&t).to_json());
        let mut rest = used.as_str();
        while let Some(at) = rest.find("fanfare_") {
            let name: String = rest[at..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            assert!(
                FANFARE_METRICS.contains(&name.as_str()),
                "{name} is read but not in FANFARE_METRICS"
            );
            rest = &rest[at + name.len()..];
        }
    }

    #[test]
    fn publish_outcomes_in_the_rules_are_the_exported_label_values() {
        let text = exported();
        let t = Topology::builder()
            .auth(fanfare_auth::AuthSettings::off())
            .dc(
                "dc1",
                fanfare_topology::DcShape {
                    nats: 1,
                    dispatchers: 1,
                    frontends: 1,
                },
            )
            .build_with_free_ports()
            .expect("topology");
        let failing = alerts(&t)
            .into_iter()
            .find(|alert| alert.name == "FanfarePublishFailing")
            .expect("rule");
        for outcome in ["Accepted", "Rejected"] {
            let label = format!("outcome=\"{outcome}\"");
            assert!(text.contains(&label), "no {label}:\n{text}");
            assert!(failing.expr.contains(&format!("outcome!=\"{outcome}\"")));
        }
    }
}
