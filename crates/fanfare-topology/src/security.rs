//! NATS security of a topology: one NATS user per fanfare node with the least privileges its
//! role needs, an administrator for provisioning, credentials for route and gateway
//! connections, and optional TLS on client, route and gateway connections.
//!
//! Every permission below is derived from what the code does (subject builders in
//! [`fanfare_model::names`] and the JetStream API subjects async-nats sends); anything not
//! listed is refused by the server with a permissions violation:
//! - a frontend publishes interactions to its datacenter's origin subjects (JetStream publish
//!   with ack), writes and deletes its own keys of the subscription bucket, reads the fan-out
//!   stream (stream info, direct gets) and the origin streams (message gets) for history,
//!   reads the totals bucket, receives batches on its own inbox subject and answers them;
//! - a dispatcher pulls and acknowledges its datacenter's dispatch consumers, watches the
//!   subscription bucket, reads and writes the totals bucket, sends batches to its
//!   datacenter's frontends, reads the origin streams and updates the fan-out stream (the
//!   heal bridge and the source restart);
//! - the administrator may call any JetStream API (streams, consumers, buckets), nothing
//!   else: it is what provisioning, the supervisor and tests use.
//!
//! Every user receives replies only under its own inbox prefix `_INBOX.<user>` (see
//! [`inbox_prefix`]), so no node can read another node's replies.
//!
//! Passwords are random per run unless the topology names a directory holding them
//! (`[settings.nats] credentials_dir`); they are written one file per user, 0600, and handed
//! to nodes as file paths, never inline.

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};

use fanfare_model::names;
use serde::Deserialize;

use crate::{Topology, TopologyError};

/// The provisioning and test user: JetStream administration only.
pub const ADMIN_USER: &str = "fanfare_admin";
/// Route (cluster) connections between the servers of one datacenter.
pub const ROUTE_USER: &str = "fanfare_route";
/// Gateway connections between datacenters.
pub const GATEWAY_USER: &str = "fanfare_gateway";

/// Shortest password accepted from a credentials directory.
const MIN_PASSWORD_LEN: usize = 16;
/// Random bytes of a generated password (hex encoded: 48 characters).
const PASSWORD_BYTES: usize = 24;

/// `[settings.nats]` of a topology file.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NatsSecurity {
    /// Users per role with least-privilege permissions, and route and gateway credentials.
    pub auth: bool,
    /// Directory with one `<user>.password` file per user; absent: passwords are generated
    /// for each run.
    pub credentials_dir: Option<PathBuf>,
    /// TLS on client, route and gateway connections, with a throwaway CA generated per run.
    pub tls: bool,
}

impl Default for NatsSecurity {
    fn default() -> Self {
        Self {
            auth: true,
            credentials_dir: None,
            tls: false,
        }
    }
}

/// What one NATS user may do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Permissions {
    pub publish: Vec<String>,
    pub subscribe: Vec<String>,
    /// May publish one reply to the reply subject of a message it received.
    pub allow_responses: bool,
}

/// The inbox prefix of `user`: replies to its requests (and JetStream deliveries) arrive under
/// `<prefix>.>`, which only that user may subscribe to.
pub fn inbox_prefix(user: &str) -> String {
    format!("_INBOX.{user}")
}

fn own_inbox(user: &str) -> String {
    format!("{}.>", inbox_prefix(user))
}

fn kv_stream(bucket: &str) -> String {
    format!("KV_{bucket}")
}

/// Permission subjects take wildcards only as whole tokens (`EVENTS_*` is a literal name), so
/// each origin stream is listed.
fn per_origin(api: &str, origins: &[&str]) -> Vec<String> {
    origins
        .iter()
        .map(|origin| format!("$JS.API.{api}.{}", names::origin_stream(origin)))
        .collect()
}

/// What frontend `name` of datacenter `dc` may do; `origins` are every datacenter of the
/// topology.
pub fn frontend_permissions(dc: &str, name: &str, origins: &[&str]) -> Permissions {
    let subs = names::subscription_bucket(dc);
    let totals = names::totals_bucket(dc);
    let fanout = names::fanout_stream(dc);
    let mut publish = vec![
        // Interactions, stored with an ack (the ack comes back to the own inbox).
        names::origin_subjects(dc),
        // Its own lease `f.<frontend>` and interest keys `v.<video>.<frontend>` only: put
        // and delete; and reading its lease back after a renewal's lost ack.
        format!("$KV.{subs}.{}", names::lease_key(name)),
        format!("$KV.{subs}.{}", names::interest_keys_of(name)),
        format!("$JS.API.STREAM.INFO.{}", kv_stream(&subs)),
        format!(
            "$JS.API.DIRECT.GET.{}.$KV.{subs}.{}",
            kv_stream(&subs),
            names::lease_key(name)
        ),
        // Viewer counts: its own reports, and asking any frontend for a full one.
        names::viewer_report(dc, name),
        names::VIEWER_SYNCS.to_owned(),
        // Like totals, read only.
        format!("$JS.API.STREAM.INFO.{}", kv_stream(&totals)),
        format!("$JS.API.DIRECT.GET.{}", kv_stream(&totals)),
        format!("$JS.API.DIRECT.GET.{}.>", kv_stream(&totals)),
        // History: the fan-out stream by direct get, the origin streams from their leader.
        format!("$JS.API.STREAM.INFO.{fanout}"),
        format!("$JS.API.DIRECT.GET.{fanout}"),
        format!("$JS.API.DIRECT.GET.{fanout}.>"),
    ];
    publish.extend(per_origin("STREAM.MSG.GET", origins));
    // Probing whether a silent frontend's datacenter answers (see the frontend's counts).
    publish.extend(per_origin("STREAM.INFO", origins));
    Permissions {
        publish,
        subscribe: vec![
            names::frontend_inbox(dc, name),
            own_inbox(name),
            names::VIEWER_REPORTS.to_owned(),
            names::viewer_sync(dc, name),
        ],
        // Confirms each dispatcher batch by answering its request.
        allow_responses: true,
    }
}

/// What dispatcher `name` of datacenter `dc` may do; `origins` are every datacenter of the
/// topology.
pub fn dispatcher_permissions(dc: &str, name: &str, origins: &[&str]) -> Permissions {
    let subs = kv_stream(&names::subscription_bucket(dc));
    let totals_bucket = names::totals_bucket(dc);
    let totals = kv_stream(&totals_bucket);
    let fanout = names::fanout_stream(dc);
    let mut publish = vec![
        // Batches to this datacenter's frontends.
        names::frontend_inboxes(dc),
        // Watching the subscription table: an ordered consumer with flow control.
        format!("$JS.API.STREAM.INFO.{subs}"),
        format!("$JS.API.CONSUMER.CREATE.{subs}"),
        format!("$JS.API.CONSUMER.CREATE.{subs}.>"),
        // A watch that fails deletes its consumer before making a new one.
        format!("$JS.API.CONSUMER.DELETE.{subs}.*"),
        format!("$JS.FC.{subs}.>"),
        // Deleting interest keys a dead frontend left behind (compare-and-set on revision).
        format!("$KV.{}.v.>", names::subscription_bucket(dc)),
        // Like totals: read, create and update (compare-and-set).
        format!("$JS.API.STREAM.INFO.{totals}"),
        format!("$JS.API.DIRECT.GET.{totals}"),
        format!("$JS.API.DIRECT.GET.{totals}.>"),
        format!("$KV.{totals_bucket}.*"),
        // The dispatch partitions: pull, acknowledge, consumer info, hand the pin over.
        format!("$JS.API.STREAM.INFO.{fanout}"),
        format!("$JS.API.CONSUMER.INFO.{fanout}.*"),
        format!("$JS.API.CONSUMER.MSG.NEXT.{fanout}.*"),
        format!("$JS.API.CONSUMER.UNPIN.{fanout}.*"),
        format!("$JS.ACK.{fanout}.>"),
        // The heal bridge: where the fan-out stream stands, origin reads, source restart.
        format!("$JS.API.DIRECT.GET.{fanout}"),
        format!("$JS.API.DIRECT.GET.{fanout}.>"),
        format!("$JS.API.STREAM.UPDATE.{fanout}"),
    ];
    publish.extend(per_origin("STREAM.INFO", origins));
    publish.extend(per_origin("STREAM.MSG.GET", origins));
    Permissions {
        publish,
        subscribe: vec![own_inbox(name)],
        allow_responses: false,
    }
}

/// What the administrator may do: any JetStream API call, nothing else.
pub fn admin_permissions() -> Permissions {
    Permissions {
        publish: vec!["$JS.API.>".to_owned()],
        subscribe: vec![own_inbox(ADMIN_USER)],
        allow_responses: false,
    }
}

/// Every client user of `t` with its permissions: the administrator, then every dispatcher and
/// frontend, in topology order.
pub fn client_users(t: &Topology) -> Vec<(String, Permissions)> {
    let origins: Vec<&str> = t.datacenters.iter().map(|dc| dc.name.as_str()).collect();
    let mut users = vec![(ADMIN_USER.to_owned(), admin_permissions())];
    for dc in &t.datacenters {
        for node in &dc.dispatchers {
            let permissions = dispatcher_permissions(&dc.name, &node.name, &origins);
            users.push((node.name.clone(), permissions));
        }
        for node in &dc.frontends {
            let permissions = frontend_permissions(&dc.name, &node.name, &origins);
            users.push((node.name.clone(), permissions));
        }
    }
    users
}

/// Passwords of every user of a topology, each also in its own file. `Debug` shows user names
/// only.
#[derive(Clone)]
pub struct NatsCredentials {
    dir: PathBuf,
    passwords: BTreeMap<String, String>,
}

impl std::fmt::Debug for NatsCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NatsCredentials")
            .field("dir", &self.dir)
            .field("users", &self.passwords.keys().collect::<Vec<_>>())
            .finish()
    }
}

fn every_user(t: &Topology) -> Vec<String> {
    let mut users: Vec<String> = client_users(t).into_iter().map(|(user, _)| user).collect();
    users.push(ROUTE_USER.to_owned());
    users.push(GATEWAY_USER.to_owned());
    users
}

fn secrets_error(path: &Path) -> impl FnOnce(io::Error) -> TopologyError + '_ {
    move |source| TopologyError::Secrets {
        path: path.to_path_buf(),
        source,
    }
}

/// Creates `dir` readable by its owner only.
fn private_dir(dir: &Path) -> Result<(), TopologyError> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(secrets_error(dir))
}

/// Writes `text` to a new file readable by its owner only.
pub(crate) fn write_private(path: &Path, text: &str) -> Result<(), TopologyError> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt;
    let _ = std::fs::remove_file(path);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(secrets_error(path))?;
    file.write_all(text.as_bytes()).map_err(secrets_error(path))
}

fn random_password() -> Result<String, TopologyError> {
    let mut bytes = [0u8; PASSWORD_BYTES];
    getrandom::fill(&mut bytes).map_err(|error| TopologyError::Secrets {
        path: PathBuf::from("<random>"),
        source: io::Error::other(error.to_string()),
    })?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// Passwords go into nats-server config strings and route/gateway URLs unescaped.
fn usable_password(password: &str) -> bool {
    password.len() >= MIN_PASSWORD_LEN
        && password
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._~".contains(&b))
}

impl NatsCredentials {
    /// The file holding `user`'s password in `dir`.
    pub fn password_file_in(dir: &Path, user: &str) -> PathBuf {
        dir.join(format!("{user}.password"))
    }

    /// New random passwords for every user of `t`, written to `dir` (0700; files 0600).
    pub fn generate(t: &Topology, dir: &Path) -> Result<Self, TopologyError> {
        private_dir(dir)?;
        let mut passwords = BTreeMap::new();
        for user in every_user(t) {
            let password = random_password()?;
            write_private(&Self::password_file_in(dir, &user), &password)?;
            passwords.insert(user, password);
        }
        Ok(Self {
            dir: dir.to_path_buf(),
            passwords,
        })
    }

    /// Reads every user's password of `t` from `dir`; a missing or unusable file is an error
    /// naming it.
    pub fn load(t: &Topology, dir: &Path) -> Result<Self, TopologyError> {
        let dir = std::path::absolute(dir).map_err(secrets_error(dir))?;
        let mut passwords = BTreeMap::new();
        for user in every_user(t) {
            let path = Self::password_file_in(&dir, &user);
            let text =
                std::fs::read_to_string(&path).map_err(|error| TopologyError::Credentials {
                    path: path.clone(),
                    message: format!("cannot read the password of {user}: {error}"),
                })?;
            let password = text.trim_end_matches(['\n', '\r']).to_owned();
            if !usable_password(&password) {
                return Err(TopologyError::Credentials {
                    path,
                    message: format!(
                        "the password of {user} must be at least {MIN_PASSWORD_LEN} characters \
                         of A-Z, a-z, 0-9, '-', '.', '_' or '~'"
                    ),
                });
            }
            passwords.insert(user, password);
        }
        Ok(Self { dir, passwords })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The file holding `user`'s password.
    pub fn password_file(&self, user: &str) -> PathBuf {
        Self::password_file_in(&self.dir, user)
    }

    pub fn password(&self, user: &str) -> Option<&str> {
        self.passwords.get(user).map(String::as_str)
    }

    pub(crate) fn required(&self, user: &str) -> &str {
        self.password(user).unwrap_or_default()
    }
}

/// The throwaway CA and one certificate per NATS server (for 127.0.0.1, localhost and the
/// server's host), PEM files in one directory.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    dir: PathBuf,
}

impl TlsFiles {
    /// Generates a CA and a certificate per server of `t` into `dir` (keys 0600). The CA's key
    /// is not kept: nothing can be signed by it after this.
    pub fn generate(t: &Topology, dir: &Path) -> Result<Self, TopologyError> {
        use rcgen::{
            BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
            KeyPair, KeyUsagePurpose,
        };
        let failed = |error: rcgen::Error| TopologyError::Certificate {
            message: error.to_string(),
        };
        private_dir(dir)?;
        let dir = std::path::absolute(dir).map_err(secrets_error(dir))?;
        let ca_key = KeyPair::generate().map_err(failed)?;
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).map_err(failed)?;
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "fanfare throwaway nats ca");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let ca_cert = ca_params.self_signed(&ca_key).map_err(failed)?;
        let tls = Self { dir: dir.clone() };
        write_private(&tls.ca_file(), &ca_cert.pem())?;
        let issuer = Issuer::new(ca_params, ca_key);
        for server in t.datacenters.iter().flat_map(|dc| &dc.nats) {
            let mut names = vec!["127.0.0.1".to_owned(), "localhost".to_owned()];
            let host = crate::net::connect_host(&server.host);
            if !names.contains(&host) {
                names.push(host);
            }
            let key = KeyPair::generate().map_err(failed)?;
            let mut params = CertificateParams::new(names).map_err(failed)?;
            params
                .distinguished_name
                .push(DnType::CommonName, server.name.clone());
            // Servers present it to clients, and to each other on routes and gateways.
            params.extended_key_usages = vec![
                ExtendedKeyUsagePurpose::ServerAuth,
                ExtendedKeyUsagePurpose::ClientAuth,
            ];
            params.key_usages = vec![
                KeyUsagePurpose::DigitalSignature,
                KeyUsagePurpose::KeyEncipherment,
            ];
            let cert = params.signed_by(&key, &issuer).map_err(failed)?;
            write_private(&tls.cert_file(&server.name), &cert.pem())?;
            write_private(&tls.key_file(&server.name), &key.serialize_pem())?;
        }
        Ok(tls)
    }

    /// TLS files a deployment puts in `dir` itself (`ca.pem`, `<server>.pem`,
    /// `<server>-key.pem`): nothing is generated.
    pub fn in_dir(dir: &Path) -> Self {
        Self {
            dir: dir.to_path_buf(),
        }
    }

    /// The CA certificate every client and server verifies the others with.
    pub fn ca_file(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }

    pub fn cert_file(&self, server: &str) -> PathBuf {
        self.dir.join(format!("{server}.pem"))
    }

    pub fn key_file(&self, server: &str) -> PathBuf {
        self.dir.join(format!("{server}-key.pem"))
    }
}

/// Everything the rendered configs and the nodes need to connect securely; `None` parts are
/// off.
#[derive(Debug, Clone, Default)]
pub struct NatsSecrets {
    pub credentials: Option<NatsCredentials>,
    pub tls: Option<TlsFiles>,
}

impl NatsSecrets {
    /// No authentication, no TLS.
    pub fn none() -> Self {
        Self::default()
    }

    /// What `t`'s `[settings.nats]` asks for: credentials read from its `credentials_dir`, or
    /// generated into `<dir>/credentials`; TLS files generated into `<dir>/tls`.
    pub fn prepare(t: &Topology, dir: &Path) -> Result<Self, TopologyError> {
        let security = &t.settings.nats;
        let credentials = if security.auth {
            Some(match &security.credentials_dir {
                Some(given) => NatsCredentials::load(t, given)?,
                None => {
                    let dir =
                        std::path::absolute(dir.join("credentials")).map_err(secrets_error(dir))?;
                    NatsCredentials::generate(t, &dir)?
                }
            })
        } else {
            None
        };
        let tls = if security.tls {
            Some(TlsFiles::generate(t, &dir.join("tls"))?)
        } else {
            None
        };
        Ok(Self { credentials, tls })
    }

    /// The secrets an earlier [`NatsSecrets::prepare`] into `dir` left (for tools that talk
    /// to a running topology, e.g. `fanfare provision`).
    pub fn load_existing(t: &Topology, dir: &Path) -> Result<Self, TopologyError> {
        let security = &t.settings.nats;
        let credentials = if security.auth {
            let given = security.credentials_dir.clone();
            Some(NatsCredentials::load(
                t,
                &given.unwrap_or_else(|| dir.join("credentials")),
            )?)
        } else {
            None
        };
        let tls = security.tls.then(|| TlsFiles {
            dir: std::path::absolute(dir.join("tls")).unwrap_or_else(|_| dir.join("tls")),
        });
        Ok(Self { credentials, tls })
    }

    /// How `user` connects to `urls`: its password file and the CA to verify servers with.
    pub fn client_settings(&self, user: &str) -> ClientSecrets {
        ClientSecrets {
            user: self.credentials.as_ref().map(|_| user.to_owned()),
            password_file: self
                .credentials
                .as_ref()
                .map(|credentials| credentials.password_file(user)),
            tls_ca_file: self.tls.as_ref().map(TlsFiles::ca_file),
        }
    }
}

/// A client's share of [`NatsSecrets`]: what goes into its NATS settings.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientSecrets {
    pub user: Option<String>,
    pub password_file: Option<PathBuf>,
    pub tls_ca_file: Option<PathBuf>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shipped(name: &str) -> Topology {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../topology")
            .join(name);
        Topology::load(&path).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn generated_passwords_are_private_files_and_differ() {
        use std::os::unix::fs::PermissionsExt;
        let t = shipped("local-3dc.toml");
        let dir = tempfile::tempdir().expect("tempdir");
        let secrets = NatsSecrets::prepare(&t, dir.path()).expect("prepare");
        let credentials = secrets.credentials.expect("auth is on by default");
        assert!(secrets.tls.is_none(), "tls is off by default");
        let admin = credentials.password(ADMIN_USER).expect("admin");
        let frontend = credentials.password("dc1-fe1").expect("frontend");
        assert_ne!(admin, frontend);
        assert!(usable_password(admin));
        for user in [ADMIN_USER, ROUTE_USER, GATEWAY_USER, "dc1-fe1", "dc3-disp2"] {
            let path = credentials.password_file(user);
            let mode = std::fs::metadata(&path).expect("file").permissions().mode();
            assert_eq!(mode & 0o777, 0o600, "{}", path.display());
            assert_eq!(
                std::fs::read_to_string(&path).expect("read"),
                credentials.password(user).expect("password")
            );
        }
        let mode = std::fs::metadata(credentials.dir())
            .expect("dir")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o700);
        let debug = format!("{credentials:?}");
        assert!(!debug.contains(admin), "Debug must not show passwords");
    }

    #[test]
    fn given_credentials_are_loaded_and_a_missing_one_is_named() {
        let t = shipped("local-3dc.toml");
        let dir = tempfile::tempdir().expect("tempdir");
        let generated = NatsCredentials::generate(&t, dir.path()).expect("generate");
        let loaded = NatsCredentials::load(&t, dir.path()).expect("load");
        assert_eq!(loaded.password("dc2-fe1"), generated.password("dc2-fe1"));
        std::fs::remove_file(generated.password_file("dc2-fe1")).expect("remove");
        let error = NatsCredentials::load(&t, dir.path()).expect_err("missing file");
        assert!(error.to_string().contains("dc2-fe1.password"), "{error}");
        write_private(&generated.password_file("dc2-fe1"), "short").expect("write");
        let error = NatsCredentials::load(&t, dir.path()).expect_err("short password");
        assert!(error.to_string().contains("at least 16"), "{error}");
    }

    #[test]
    fn frontends_and_dispatchers_get_only_their_own_subjects() {
        let frontend = frontend_permissions("dc1", "dc1-fe1", &["dc1", "dc2"]);
        assert!(frontend
            .publish
            .contains(&"fanfare.events.dc1.*.*".to_owned()));
        for own in ["$KV.SUBS_dc1.f.dc1-fe1", "$KV.SUBS_dc1.v.*.dc1-fe1"] {
            assert!(frontend.publish.contains(&own.to_owned()), "{own}");
        }
        assert!(
            !frontend
                .publish
                .iter()
                .any(|s| s.starts_with("$KV.SUBS_dc1.") && !s.ends_with("dc1-fe1")),
            "no other frontend's keys"
        );
        assert!(frontend
            .publish
            .contains(&"fanfare.viewers.report.dc1.dc1-fe1".to_owned()));
        assert_eq!(
            frontend.subscribe,
            [
                "fanfare.dc1.fe.dc1-fe1",
                "_INBOX.dc1-fe1.>",
                "fanfare.viewers.report.>",
                "fanfare.viewers.sync.dc1.dc1-fe1"
            ]
        );
        assert!(frontend.allow_responses);
        assert!(!frontend.publish.iter().any(|s| s.contains("STREAM.DELETE")
            || s.contains("STREAM.UPDATE")
            || s.starts_with("fanfare.dc1.fe")));
        assert!(frontend
            .publish
            .contains(&"$JS.API.STREAM.MSG.GET.EVENTS_dc2".to_owned()));
        let dispatcher = dispatcher_permissions("dc2", "dc2-disp1", &["dc1", "dc2"]);
        assert!(dispatcher
            .publish
            .contains(&"$JS.API.STREAM.INFO.EVENTS_dc1".to_owned()));
        assert!(dispatcher.publish.contains(&"fanfare.dc2.fe.*".to_owned()));
        assert!(
            dispatcher.publish.contains(&"$KV.SUBS_dc2.v.>".to_owned()),
            "clears stale interest keys, never leases"
        );
        assert!(!dispatcher
            .publish
            .iter()
            .any(|s| s.starts_with("fanfare.events") || s.contains('*') && s.contains("EVENTS_")));
        assert_eq!(dispatcher.subscribe, ["_INBOX.dc2-disp1.>"]);
        assert!(!dispatcher.allow_responses);
    }

    #[test]
    fn tls_files_hold_a_ca_and_a_certificate_per_server() {
        let t = shipped("local-3dc.toml");
        let dir = tempfile::tempdir().expect("tempdir");
        let tls = TlsFiles::generate(&t, &dir.path().join("tls")).expect("generate");
        let ca = std::fs::read_to_string(tls.ca_file()).expect("ca");
        assert!(ca.starts_with("-----BEGIN CERTIFICATE-----"));
        for server in ["dc1-nats1", "dc2-nats1", "dc3-nats1"] {
            let cert = std::fs::read_to_string(tls.cert_file(server)).expect("cert");
            assert!(cert.starts_with("-----BEGIN CERTIFICATE-----"));
            let key = std::fs::read_to_string(tls.key_file(server)).expect("key");
            assert!(key.contains("PRIVATE KEY"));
        }
    }
}
