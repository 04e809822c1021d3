//! Logging set-up shared by every qnet process.

use tracing_subscriber::EnvFilter;

/// Installs the global tracing subscriber: filter from `RUST_LOG` (default `info` for
/// qnet crates, `warn` for the rest), human-readable lines on stderr, or JSON lines
/// when `QNET_LOG_JSON=1`. Calling it twice is harmless.
pub fn init() {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        EnvFilter::new("warn,qnet=info,qnet_broker=info,qnet_node=info,qnet_controller=info")
    });
    let json = std::env::var("QNET_LOG_JSON").is_ok_and(|v| v == "1");
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = if json {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
}

/// Completes on SIGINT or SIGTERM: the graceful-shutdown signal of every role.
pub async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
