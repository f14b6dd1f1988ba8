//! `fanfare deploy render`: the checked-in files under `deploy/` are exactly what the shipped
//! topologies render to, and what it writes passes each target's own tools, offline:
//! `kubectl kustomize` and strict schema validation for every overlay and Secret
//! kustomization, `nats-server -t` for every server config (with the rendered secrets in its
//! environment), `promtool check rules` and `promtool test rules`, `systemd-analyze verify` for
//! the units, the Compose schema, and every node config through the nodes' own settings
//! checks. `scripts/install-deploy-tools` installs the tools; a missing one fails the test
//! with that hint.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use fanfare_testkit::cluster::{fanfare_bin, nats_server_bin, workspace_root};

/// Longest any one tool may take.
const TOOL_TIMEOUT: Duration = Duration::from_secs(120);

const SHIPPED: [&str; 2] = ["local-3dc", "local-3dc-ha"];

fn render(topology: &Path, out: &Path, with_secrets: bool) {
    let mut args = vec![
        "deploy".to_owned(),
        "render".to_owned(),
        topology.display().to_string(),
        "--out".to_owned(),
        out.display().to_string(),
    ];
    if with_secrets {
        args.push("--with-secrets".to_owned());
    }
    let output = Command::new(fanfare_bin().expect("fanfare binary"))
        .args(&args)
        .current_dir(workspace_root())
        .output()
        .expect("fanfare runs");
    assert!(
        output.status.success(),
        "fanfare {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Every file under `dir` (but `secrets/`), relative path → content.
fn tree(dir: &Path) -> BTreeMap<PathBuf, String> {
    fn walk(root: &Path, dir: &Path, files: &mut BTreeMap<PathBuf, String>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let relative = path.strip_prefix(root).expect("under root").to_path_buf();
            if relative.starts_with("secrets") {
                continue;
            }
            if path.is_dir() {
                walk(root, &path, files);
            } else {
                let text = std::fs::read_to_string(&path).unwrap_or_default();
                files.insert(relative, text);
            }
        }
    }
    let mut files = BTreeMap::new();
    walk(dir, dir, &mut files);
    files
}

#[test]
fn checked_in_deploy_files_are_what_the_shipped_topologies_render_to() {
    let root = workspace_root();
    for name in SHIPPED {
        let fresh = tempfile::tempdir().expect("tempdir");
        render(
            &root.join(format!("topology/{name}.toml")),
            fresh.path(),
            false,
        );
        let rendered = tree(fresh.path());
        let checked_in = tree(&root.join("deploy").join(name));
        let hint = format!(
            "deploy/{name} is stale: run `fanfare deploy render topology/{name}.toml --out deploy/{name}` and commit the result"
        );
        let rendered_names: Vec<_> = rendered.keys().collect();
        let checked_in_names: Vec<_> = checked_in.keys().collect();
        assert_eq!(rendered_names, checked_in_names, "{hint}");
        for (path, text) in &rendered {
            assert!(
                checked_in.get(path) == Some(text),
                "{hint} ({} differs)",
                path.display()
            );
        }
    }
}

/// A tool: `name` from the deploy venv (scripts/install-deploy-tools) or PATH.
fn tool(name: &str) -> PathBuf {
    let venv = std::env::var_os("FANFARE_DEPLOY_TOOLS")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join(".tools/deploy/bin"));
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::iter::once(venv)
        .chain(std::env::split_paths(&path))
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
        .unwrap_or_else(|| {
            panic!("{name} not found: run scripts/install-deploy-tools (scripts/test does)")
        })
}

/// Runs a tool to completion within [`TOOL_TIMEOUT`]; panics with its output unless it
/// succeeds. Returns stdout.
fn run(command: &mut Command) -> String {
    let started = Instant::now();
    let described = format!("{command:?}");
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|error| panic!("{described}: {error}"));
    // Read both pipes on threads so a chatty tool never blocks on a full pipe.
    let mut stdout = child.stdout.take().expect("stdout");
    let mut stderr = child.stderr.take().expect("stderr");
    let out = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = std::io::Read::read_to_string(&mut stdout, &mut text);
        text
    });
    let err = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = std::io::Read::read_to_string(&mut stderr, &mut text);
        text
    });
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if started.elapsed() > TOOL_TIMEOUT {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{described} took longer than {TOOL_TIMEOUT:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let stdout = out.join().unwrap_or_default();
    let stderr = err.join().unwrap_or_default();
    assert!(
        status.success(),
        "{described} failed ({status}):\n{stdout}\n{stderr}"
    );
    stdout
}

fn files_in(dir: &Path, extension: &str) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|error| panic!("{}: {error}", dir.display()))
        .flatten()
        .map(|entry| entry.path())
        .filter(|path| path.extension().is_some_and(|ext| ext == extension))
        .collect();
    files.sort();
    files
}

fn dirs_in(dir: &Path) -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|error| panic!("{}: {error}", dir.display()))
        .flatten()
        .map(|entry| entry.path())
        .filter(|path| path.is_dir())
        .collect();
    dirs.sort();
    dirs
}

/// `KEY='value'` lines of a rendered env file.
fn env_file(path: &Path) -> Vec<(String, String)> {
    std::fs::read_to_string(path)
        .unwrap_or_else(|error| panic!("{}: {error}", path.display()))
        .lines()
        .filter(|line| !line.starts_with('#') && !line.is_empty())
        .filter_map(|line| line.split_once('='))
        .map(|(key, value)| (key.to_owned(), value.trim_matches('\'').to_owned()))
        .collect()
}

fn check_kubernetes(out: &Path) {
    let kubectl = tool("kubectl");
    let validate = tool("kubernetes-validate");
    let built = out.join("built");
    std::fs::create_dir_all(&built).expect("dir");
    let mut kustomizations = dirs_in(&out.join("kubernetes/overlays"));
    kustomizations.extend(dirs_in(&out.join("secrets/kubernetes")));
    assert!(kustomizations.len() >= 4, "{kustomizations:?}");
    let mut manifests = Vec::new();
    for (index, dir) in kustomizations.iter().enumerate() {
        let yaml = run(Command::new(&kubectl).arg("kustomize").arg(dir));
        assert!(yaml.contains("kind:"), "{}: empty build", dir.display());
        let path = built.join(format!("{index}.yaml"));
        std::fs::write(&path, yaml).expect("write");
        manifests.push(path);
    }
    let overlay = std::fs::read_to_string(&manifests[0]).expect("read");
    for kind in [
        "kind: StatefulSet",
        "kind: Service",
        "kind: PodDisruptionBudget",
        "kind: HorizontalPodAutoscaler",
        "kind: ConfigMap",
        "kind: Namespace",
        "path: /readyz",
        "path: /healthz",
        "terminationGracePeriodSeconds",
    ] {
        assert!(overlay.contains(kind), "no {kind} in\n{overlay}");
    }
    run(Command::new(&validate)
        .args(["--strict", "--quiet"])
        .args(&manifests));
}

fn check_nats_configs(out: &Path) {
    let nats_server = nats_server_bin().expect("nats-server");
    for (dir, secrets) in [
        ("compose/nats", "secrets/compose"),
        ("hosts/etc/fanfare/nats", "secrets/hosts"),
    ] {
        let configs = files_in(&out.join(dir), "conf");
        assert!(!configs.is_empty(), "no configs in {dir}");
        for config in configs {
            let text = std::fs::read_to_string(&config).expect("read");
            let server = config.file_stem().expect("stem").to_string_lossy();
            let dc = server
                .rsplit_once('-')
                .map(|(dc, _)| dc)
                .unwrap_or_default();
            // TLS files are where the hosts (or containers) keep them: here, in the secrets.
            let checked = out.join(secrets).join(format!("{server}.checked.conf"));
            let tls_dir = out.join(secrets).join("tls");
            let text = text.replace("/etc/fanfare/tls", &tls_dir.display().to_string());
            std::fs::write(&checked, &text).expect("write");
            let mut command = Command::new(&nats_server);
            command.arg("-t").arg("-c").arg(&checked);
            if text.contains("$FANFARE_NATS_") {
                for (key, value) in env_file(&out.join(secrets).join(format!("nats-{dc}.env"))) {
                    command.env(key, value);
                }
            }
            run(&mut command);
        }
    }
}

fn check_prometheus(out: &Path) {
    let promtool = tool("promtool");
    let dir = out.join("monitoring/prometheus");
    run(Command::new(&promtool)
        .args(["check", "rules", "fanfare-rules.yaml"])
        .current_dir(&dir));
    run(Command::new(&promtool)
        .args(["test", "rules", "fanfare-rules.test.yaml"])
        .current_dir(&dir));
    let dashboard = std::fs::read_to_string(out.join("monitoring/grafana/fanfare-dashboard.json"))
        .expect("dashboard");
    let dashboard: serde_json::Value = serde_json::from_str(&dashboard).expect("json");
    assert!(dashboard["panels"].as_array().is_some_and(|p| p.len() >= 8));
}

/// `systemd-analyze verify` in a root of its own: the units, stand-ins for the two binaries
/// (verify checks that they are executable), and the host's system units they refer to.
fn check_systemd(out: &Path) {
    let analyze = tool("systemd-analyze");
    let root = out.join("systemd-root");
    let units_dir = root.join("etc/systemd/system");
    let bin = root.join("usr/local/bin");
    std::fs::create_dir_all(&units_dir).expect("dir");
    std::fs::create_dir_all(&bin).expect("dir");
    for name in ["fanfare", "nats-server"] {
        let path = bin.join(name);
        std::fs::write(&path, "#!/bin/sh\n").expect("write");
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    }
    let system = root.join("usr/lib/systemd/system");
    std::fs::create_dir_all(&system).expect("dir");
    for entry in std::fs::read_dir("/lib/systemd/system")
        .expect("system units")
        .flatten()
    {
        if entry.path().is_file() {
            let _ = std::fs::copy(entry.path(), system.join(entry.file_name()));
        }
    }
    let mut instances = Vec::new();
    for unit in files_in(&out.join("hosts/systemd"), "service") {
        let name = unit
            .file_name()
            .expect("name")
            .to_string_lossy()
            .into_owned();
        std::fs::copy(&unit, units_dir.join(&name)).expect("copy");
        let instance = name.replace("@.", "@example.");
        std::os::unix::fs::symlink(&name, units_dir.join(&instance)).expect("link");
        instances.push(instance);
    }
    assert_eq!(instances.len(), 3);
    let mut command = Command::new(&analyze);
    command
        .args(["verify", "--man=no"])
        .arg(format!("--root={}", root.display()))
        .args(&instances)
        .current_dir(&units_dir);
    let started = Instant::now();
    let output = command.output().expect("systemd-analyze runs");
    assert!(started.elapsed() < TOOL_TIMEOUT);
    // verify also reports unknown settings without failing: any word from it is a finding.
    assert!(
        output.status.success() && output.stderr.is_empty() && output.stdout.is_empty(),
        "systemd-analyze verify: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

fn check_compose(out: &Path) {
    run(Command::new(tool("check-jsonschema"))
        .args(["--builtin-schema", "vendor.compose-spec"])
        .arg(out.join("compose/compose.yaml")));
}

/// Every node config parses into the node's settings and passes their checks.
fn check_node_configs(out: &Path) {
    let mut configs = Vec::new();
    for dir in dirs_in(&out.join("kubernetes/overlays")) {
        configs.extend(files_in(&dir.join("nodes"), "toml"));
    }
    configs.extend(files_in(&out.join("compose/nodes"), "toml"));
    configs.extend(files_in(&out.join("hosts/etc/fanfare/nodes"), "toml"));
    assert!(!configs.is_empty());
    for config in configs {
        let text = std::fs::read_to_string(&config).expect("read");
        let kind = if text.contains("\nadmin = ") {
            "dispatcher"
        } else {
            "frontend"
        };
        let outcome = if kind == "frontend" {
            toml::from_str::<fanfare_frontend::Settings>(&text)
                .map_err(|error| error.to_string())
                .and_then(|settings| {
                    // Key files are mounted where the config says, not here.
                    let mut settings = settings;
                    settings.auth.keys.clear();
                    settings.auth.mode = fanfare_auth::AuthMode::Off;
                    settings.validate()
                })
        } else {
            toml::from_str::<fanfare_dispatcher::Settings>(&text)
                .map_err(|error| error.to_string())
                .and_then(|settings| settings.validate())
        };
        if let Err(problem) = outcome {
            panic!("{}: {problem}", config.display());
        }
    }
}

fn check_all(topology: &Path) {
    let out = tempfile::tempdir().expect("tempdir");
    render(topology, out.path(), true);
    check_kubernetes(out.path());
    check_nats_configs(out.path());
    check_prometheus(out.path());
    check_systemd(out.path());
    check_compose(out.path());
    check_node_configs(out.path());
}

#[test]
fn rendered_deployments_of_the_shipped_topologies_pass_every_tool() {
    for name in SHIPPED {
        check_all(&workspace_root().join(format!("topology/{name}.toml")));
    }
}

#[test]
fn a_deployment_with_auth_tls_and_tokens_passes_every_tool_and_keeps_its_passwords() {
    let topology = workspace_root().join("tests/fixtures/deploy/secure.toml");
    check_all(&topology);
    let out = tempfile::tempdir().expect("tempdir");
    render(&topology, out.path(), true);
    let password = out.path().join("secrets/credentials/east-fe1.password");
    let first = std::fs::read_to_string(&password).expect("password");
    std::fs::remove_file(out.path().join("secrets/credentials/west-fe1.password")).expect("rm");
    render(&topology, out.path(), true);
    assert_eq!(
        std::fs::read_to_string(&password).expect("password"),
        first,
        "rendering again must not rotate a kept password"
    );
    assert!(out
        .path()
        .join("secrets/credentials/west-fe1.password")
        .exists());
    let values = std::fs::read_to_string(out.path().join("helm/east.yaml")).expect("values");
    for expected in [
        "secretName: fanfare-nats-tls",
        "tlsCA:",
        "serverNamePrefix: east-",
    ] {
        assert!(values.contains(expected), "no {expected} in\n{values}");
    }
    for file in tree(out.path()).keys() {
        let text = std::fs::read_to_string(out.path().join(file)).expect("read");
        assert!(
            !text.contains(&first),
            "{} holds a password",
            file.display()
        );
    }
}
