//! `--with-secrets`: the secret material the generated files name, under `DIR/secrets/`
//! (never checked in: every file 0600, every directory 0700).
//!
//! - `credentials/<user>.password`: one password per NATS user. Files already there are
//!   kept, so rendering again does not rotate anything; a missing one is generated (delete a
//!   file to rotate that password). With `[settings.nats] credentials_dir` they are read from
//!   there instead.
//! - `auth/key-<i>[.pem]`: the `[auth]` keys, copied from the topology.
//! - `compose/nats-<dc>.env`, `hosts/nats-<dc>.env`: what a datacenter's NATS servers read
//!   from their environment (every password, the route URLs with the route password).
//! - `compose/tls/`, `hosts/tls/` (TLS on): throwaway CAs and certificates, kept when there.
//! - `kubernetes/<dc>/`: a kustomization making the datacenter's Secrets
//!   (`kubectl apply -k secrets/kubernetes/<dc>`). Kubernetes TLS certificates are not made
//!   here: the cluster's issuer writes `fanfare-nats-tls` (see deploy/README.md).

use std::path::{Path, PathBuf};

use fanfare_topology::{
    password_variable, route_list, route_urls, Datacenter, NatsCredentials, TlsFiles, Topology,
    GATEWAY_USER, ROUTES_VARIABLE, ROUTE_USER,
};

use crate::doc::Doc;
use crate::helm::{self, password_key};
use crate::kube::{pod_name, AUTH_SECRET, DISPATCHER_SECRET, FRONTEND_SECRET};
use crate::{compose, namespace, nodes, DeployError, Files};

pub(crate) fn render(topology: &Topology, files: &mut Files) -> Result<(), DeployError> {
    let secrets = files.root().join("secrets");
    private_dir(&secrets)?;
    let credentials = if topology.settings.nats.auth {
        Some(credentials(topology, &secrets.join("credentials"))?)
    } else {
        None
    };
    let keys = auth_keys(topology)?;
    for (name, text) in &keys {
        files.write_private(format!("secrets/auth/{name}"), text)?;
    }
    if topology.settings.nats.tls {
        keep_or_generate_tls(
            &compose::compose_topology(topology),
            &secrets.join("compose/tls"),
        )?;
        keep_or_generate_tls(topology, &secrets.join("hosts/tls"))?;
    }
    let Some(credentials) = credentials else {
        for dc in &topology.datacenters {
            kubernetes(topology, dc, None, &keys, files)?;
        }
        return Ok(());
    };
    let compose = compose::compose_topology(topology);
    for (dc, compose_dc) in topology.datacenters.iter().zip(&compose.datacenters) {
        let env = |routes: Vec<String>| env_file(topology, &credentials, &routes);
        files.write_private(
            format!("secrets/hosts/nats-{}.env", dc.name),
            &env(route_urls(dc, Some(&credentials))),
        )?;
        files.write_private(
            format!("secrets/compose/nats-{}.env", dc.name),
            &env(route_urls(compose_dc, Some(&credentials))),
        )?;
        kubernetes(topology, dc, Some(&credentials), &keys, files)?;
    }
    Ok(())
}

fn every_user(topology: &Topology) -> Vec<String> {
    fanfare_topology::client_users(topology)
        .into_iter()
        .map(|(user, _)| user)
        .chain([ROUTE_USER.to_owned(), GATEWAY_USER.to_owned()])
        .collect()
}

/// The passwords: from the topology's `credentials_dir`, else `dir` completed with new ones.
fn credentials(topology: &Topology, dir: &Path) -> Result<NatsCredentials, DeployError> {
    if let Some(given) = &topology.settings.nats.credentials_dir {
        return Ok(NatsCredentials::load(topology, given)?);
    }
    let fresh_dir = dir.with_file_name(".credentials-new");
    let fresh = NatsCredentials::generate(topology, &fresh_dir)?;
    private_dir(dir)?;
    for user in every_user(topology) {
        let kept = NatsCredentials::password_file_in(dir, &user);
        if !kept.exists() {
            std::fs::rename(fresh.password_file(&user), &kept).map_err(|source| {
                DeployError::Write {
                    path: kept.clone(),
                    source,
                }
            })?;
        }
    }
    let _ = std::fs::remove_dir_all(&fresh_dir);
    Ok(NatsCredentials::load(topology, dir)?)
}

fn keep_or_generate_tls(topology: &Topology, dir: &Path) -> Result<(), DeployError> {
    if !TlsFiles::in_dir(dir).ca_file().exists() {
        TlsFiles::generate(topology, dir)?;
    }
    Ok(())
}

/// `(file name, content)` of every `[auth]` key.
fn auth_keys(topology: &Topology) -> Result<Vec<(String, String)>, DeployError> {
    let mut keys = Vec::new();
    for (index, key) in topology.auth.keys.iter().enumerate() {
        let inline = key.secret.clone().or_else(|| key.public_key.clone());
        let file = key
            .secret_file
            .clone()
            .or_else(|| key.public_key_file.clone());
        let text = match (inline, file) {
            (Some(text), _) => text,
            (None, Some(path)) => read(&path)?,
            (None, None) => continue,
        };
        keys.push((nodes::key_file_name(index, key), text));
    }
    Ok(keys)
}

fn read(path: &Path) -> Result<String, DeployError> {
    std::fs::read_to_string(path).map_err(|source| DeployError::Read {
        path: path.to_path_buf(),
        source,
    })
}

/// `VAR='value'` lines; values never hold a quote (passwords are `[A-Za-z0-9-._~]`, route
/// URLs add `"`, `:`, `/`, `@`, `,`, `[`, `]` and spaces), and both systemd and Compose take
/// single-quoted values literally.
fn env_file(topology: &Topology, credentials: &NatsCredentials, routes: &[String]) -> String {
    let mut out = String::from("# NATS secrets of one datacenter's servers (0600)\n");
    for user in every_user(topology) {
        let password = credentials.password(&user).unwrap_or_default();
        out.push_str(&format!("{}='{password}'\n", password_variable(&user)));
    }
    out.push_str(&format!("{ROUTES_VARIABLE}='{}'\n", route_list(routes)));
    out
}

fn kubernetes(
    topology: &Topology,
    dc: &Datacenter,
    credentials: Option<&NatsCredentials>,
    keys: &[(String, String)],
    files: &mut Files,
) -> Result<(), DeployError> {
    let dir = PathBuf::from(format!("secrets/kubernetes/{}", dc.name));
    let mut generators = Vec::new();
    let mut secret = |name: &str,
                      entries: Vec<(String, String)>,
                      files: &mut Files|
     -> Result<(), DeployError> {
        let mut sources = Vec::new();
        for (key, value) in entries {
            let file = format!("{name}/{key}");
            files.write_private(dir.join(&file), &value)?;
            sources.push(format!("{key}={file}"));
        }
        generators.push(Doc::map([
            ("name", Doc::str(name)),
            ("files", Doc::strs(sources)),
        ]));
        Ok(())
    };
    if let Some(credentials) = credentials {
        let password = |user: &str| {
            (
                password_key(user),
                credentials.password(user).unwrap_or_default().to_owned(),
            )
        };
        let mut server: Vec<(String, String)> = every_user(topology)
            .iter()
            .map(|user| password(user))
            .collect();
        // The chart's pods, by their names in the headless Service.
        let routes: Vec<String> = (0..dc.nats.len())
            .map(|index| {
                format!(
                    "nats://{ROUTE_USER}:{}@{}.{}-headless:{}",
                    credentials.password(ROUTE_USER).unwrap_or_default(),
                    pod_name(helm::RELEASE, index),
                    helm::RELEASE,
                    helm::CLUSTER_PORT
                )
            })
            .collect();
        server.push(("routes".to_owned(), route_list(&routes)));
        secret(helm::SERVER_SECRET, server, files)?;
        let frontends = dc
            .frontends
            .iter()
            .map(|node| password(&node.name))
            .collect();
        secret(FRONTEND_SECRET, frontends, files)?;
        let dispatchers = dc
            .dispatchers
            .iter()
            .map(|node| password(&node.name))
            .collect();
        secret(DISPATCHER_SECRET, dispatchers, files)?;
    }
    if !keys.is_empty() {
        secret(AUTH_SECRET, keys.to_vec(), files)?;
    }
    let kustomization = Doc::map([
        ("apiVersion", Doc::str("kustomize.config.k8s.io/v1beta1")),
        ("kind", Doc::str("Kustomization")),
        ("namespace", Doc::str(namespace(&dc.name))),
        // The workloads and the chart name these Secrets exactly.
        (
            "generatorOptions",
            Doc::map([("disableNameSuffixHash", Doc::Bool(true))]),
        ),
        ("secretGenerator", Doc::List(generators)),
    ]);
    files.write_private(
        dir.join("kustomization.yaml"),
        &format!(
            "{}{}",
            crate::header(
                topology,
                &format!(
                    "Secrets of datacenter {}: kubectl apply -k secrets/kubernetes/{}",
                    dc.name, dc.name
                )
            ),
            kustomization.to_yaml()
        ),
    )
}

fn private_dir(dir: &Path) -> Result<(), DeployError> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|source| DeployError::Write {
            path: dir.to_path_buf(),
            source,
        })
}
