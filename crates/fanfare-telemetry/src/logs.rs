use tracing_subscriber::EnvFilter;

/// Installs the process's log subscriber: human-readable lines on stderr, filtered by
/// `FANFARE_LOG` (falling back to `info`). Safe to call more than once.
pub fn init_logs(filter: Option<&str>) {
    let filter = filter
        .map(EnvFilter::new)
        .unwrap_or_else(|| EnvFilter::new("info,async_nats=warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .try_init();
}
