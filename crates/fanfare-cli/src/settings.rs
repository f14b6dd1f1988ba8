//! Node configuration: a TOML file, then environment overrides
//! (`FANFARE_FRONTEND__LISTEN=127.0.0.1:9000`, `FANFARE_DISPATCHER__NATS__URLS=nats://a,nats://b`),
//! deserialized into the node's one typed `Settings` and validated.

use std::collections::HashMap;
use std::path::Path;

use anyhow::{anyhow, Context};
use serde::de::DeserializeOwned;

/// Loads `file` with overrides from `env` (the process environment in production, a map in
/// tests) under `prefix` (`FANFARE_FRONTEND`).
pub fn load<T: DeserializeOwned>(
    file: &Path,
    prefix: &str,
    env: HashMap<String, String>,
) -> anyhow::Result<T> {
    if !file.is_file() {
        return Err(anyhow!("config file {} does not exist", file.display()));
    }
    let environment = config::Environment::with_prefix(prefix)
        .prefix_separator("__")
        .separator("__")
        .list_separator(",")
        .with_list_parse_key("nats.urls")
        .try_parsing(true)
        .source(Some(env));
    let loaded = config::Config::builder()
        .add_source(config::File::from(file).format(config::FileFormat::Toml))
        .add_source(environment)
        .build()
        .with_context(|| format!("reading {}", file.display()))?;
    loaded
        .try_deserialize()
        .map_err(|error| anyhow!("{}: {error}", file.display()))
}

pub fn process_env() -> HashMap<String, String> {
    std::env::vars().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(text: &str) -> tempfile::NamedTempFile {
        let file = tempfile::Builder::new().suffix(".toml").tempfile().unwrap();
        std::fs::write(file.path(), text).unwrap();
        file
    }

    #[test]
    fn environment_overrides_the_file() {
        let file = write("name = \"fe1\"\ndc = \"dc1\"\nlisten = \"127.0.0.1:8000\"\n");
        let env = HashMap::from([
            (
                "FANFARE_FRONTEND__LISTEN".to_owned(),
                "127.0.0.1:9000".to_owned(),
            ),
            (
                "FANFARE_FRONTEND__NATS__URLS".to_owned(),
                "nats://127.0.0.1:1,nats://127.0.0.1:2".to_owned(),
            ),
            ("FANFARE_FRONTEND__KEEPALIVE".to_owned(), "3s".to_owned()),
            ("UNRELATED".to_owned(), "x".to_owned()),
        ]);
        let settings: fanfare_frontend::Settings =
            load(file.path(), "FANFARE_FRONTEND", env).unwrap();
        assert_eq!(settings.name, "fe1");
        assert_eq!(settings.listen.port(), 9000);
        assert_eq!(settings.nats.urls.len(), 2);
        assert_eq!(settings.keepalive, std::time::Duration::from_secs(3));
    }

    #[test]
    fn authentication_can_be_turned_off_from_the_environment() {
        let file = write("name = \"fe1\"\n");
        let settings: fanfare_frontend::Settings =
            load(file.path(), "FANFARE_FRONTEND", HashMap::new()).unwrap();
        assert!(settings.auth.is_on(), "on unless configured otherwise");
        let env = HashMap::from([("FANFARE_FRONTEND__AUTH__MODE".to_owned(), "off".to_owned())]);
        let settings: fanfare_frontend::Settings =
            load(file.path(), "FANFARE_FRONTEND", env).unwrap();
        assert!(!settings.auth.is_on());
        assert_eq!(settings.validate(), Ok(()));
    }

    #[test]
    fn unknown_fields_are_errors_naming_the_file() {
        let file = write("name = \"fe1\"\nlisen = \"127.0.0.1:8000\"\n");
        let error =
            load::<fanfare_frontend::Settings>(file.path(), "FANFARE_FRONTEND", HashMap::new())
                .unwrap_err()
                .to_string();
        assert!(error.contains("lisen"), "{error}");
        assert!(
            error.contains(&file.path().display().to_string()),
            "{error}"
        );
    }
}
