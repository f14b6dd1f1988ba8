//! Error types: one enum for every way loading or rendering a topology can fail.

use std::fmt;
use std::io;
use std::path::PathBuf;

/// One validation failure, located by a field path such as `frontend[1].listen`
/// or `settings.partitions`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub field: String,
    pub message: String,
}

impl Problem {
    pub(crate) fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Problem {
            field: field.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TopologyError {
    /// The topology file could not be read.
    #[error("cannot read topology file {}", path.display())]
    Read { path: PathBuf, source: io::Error },

    /// The text is not valid TOML or does not have the expected shape
    /// (unknown key, wrong type, bad duration...). `message` comes from the
    /// toml crate and carries line, column and key.
    #[error("{source_name}: {message}")]
    Parse {
        source_name: String,
        message: String,
    },

    /// The file parsed but breaks one or more rules; every problem found is
    /// listed, one per line, as `{source_name}: {field}: {message}`.
    #[error("{}", list_problems(source_name, problems))]
    Invalid {
        source_name: String,
        problems: Vec<Problem>,
    },

    /// A nats-server config file (or its directory) could not be written.
    #[error("cannot write nats-server config {}", path.display())]
    Render { path: PathBuf, source: io::Error },

    /// NATS credentials or TLS files could not be read or written.
    #[error("cannot read or write nats secrets at {}", path.display())]
    Secrets { path: PathBuf, source: io::Error },

    /// A given credentials directory lacks a password file or holds an unusable one.
    #[error("nats credentials at {}: {message}", path.display())]
    Credentials { path: PathBuf, message: String },

    /// The throwaway TLS certificates could not be generated.
    #[error("cannot generate nats tls certificates: {message}")]
    Certificate { message: String },

    /// The builder could not reserve a free loopback port.
    #[error("cannot reserve a free port on 127.0.0.1")]
    PortReservation { source: io::Error },
}

fn list_problems(source_name: &str, problems: &[Problem]) -> String {
    problems
        .iter()
        .map(|p| format!("{source_name}: {p}"))
        .collect::<Vec<_>>()
        .join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invalid_error_lists_one_problem_per_line_prefixed_by_source() {
        let err = TopologyError::Invalid {
            source_name: "topo.toml".into(),
            problems: vec![
                Problem::new("settings.partitions", "must be between 1 and 64, got 0"),
                Problem::new("frontend[2].dc", "unknown datacenter \"dc9\""),
            ],
        };
        assert_eq!(
            err.to_string(),
            "topo.toml: settings.partitions: must be between 1 and 64, got 0\n\
             topo.toml: frontend[2].dc: unknown datacenter \"dc9\""
        );
    }

    #[test]
    fn read_error_exposes_io_error_as_source() {
        let err = TopologyError::Read {
            path: PathBuf::from("/nope.toml"),
            source: io::Error::new(io::ErrorKind::NotFound, "gone"),
        };
        assert_eq!(err.to_string(), "cannot read topology file /nope.toml");
        let source = std::error::Error::source(&err).map(ToString::to_string);
        assert_eq!(source.as_deref(), Some("gone"));
    }
}
