use std::fmt;

/// What went wrong talking to NATS, by kind. The message carries the cause (`opening bucket
/// SUBS_dc1: timed out`), so `source()` is empty and nothing is printed twice.
#[derive(Debug)]
pub struct FabricError {
    kind: FabricErrorKind,
    context: String,
    source: Option<Box<dyn std::error::Error + Send + Sync>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FabricErrorKind {
    /// No connection to any server of the datacenter could be made.
    Connect,
    /// The servers refused the node's credentials (wrong user or password): retrying cannot
    /// help, so start-up fails at once.
    Unauthorized,
    /// Creating or updating a stream, consumer or bucket failed.
    Provision,
    /// A publish was refused, or could not be sent: the interaction is not stored.
    Publish,
    /// A publish was sent but not acknowledged in time: it may still be stored (the client
    /// sends what it buffered once it reconnects), so the publisher must be told the outcome
    /// is unknown rather than that it failed.
    PublishOutcomeUnknown,
    /// Reading or writing a key-value bucket failed.
    KeyValue,
    /// Consuming a stream failed.
    Consume,
    /// A message could not be decoded.
    Decode,
}

impl FabricError {
    pub fn new(
        kind: FabricErrorKind,
        context: impl Into<String>,
        source: impl Into<Box<dyn std::error::Error + Send + Sync>>,
    ) -> Self {
        Self {
            kind,
            context: context.into(),
            source: Some(source.into()),
        }
    }

    /// An error with no underlying cause beyond `context`.
    pub fn plain(kind: FabricErrorKind, context: impl Into<String>) -> Self {
        Self {
            kind,
            context: context.into(),
            source: None,
        }
    }

    pub fn kind(&self) -> FabricErrorKind {
        self.kind
    }
}

impl fmt::Display for FabricError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.source {
            Some(source) => write!(f, "{}: {source}", self.context),
            None => f.write_str(&self.context),
        }
    }
}

impl std::error::Error for FabricError {}
