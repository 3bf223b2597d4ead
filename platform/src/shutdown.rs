//! Process signals turned into one cancellation token, the parent of every task a binary spawns.

use tokio_util::sync::CancellationToken;

/// Resolves on the first SIGINT (Ctrl-C) or SIGTERM.
pub async fn signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = match tokio::signal::unix::signal(
            tokio::signal::unix::SignalKind::terminate(),
        ) {
            Ok(term) => term,
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGTERM; only Ctrl-C stops this process");
                let _ = ctrl_c.await;
                return;
            }
        };
        tokio::select! {
            _ = ctrl_c => {},
            _ = term.recv() => {},
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

/// A token cancelled when the process is asked to stop.
pub fn on_signal() -> CancellationToken {
    let token = CancellationToken::new();
    let child = token.clone();
    tokio::spawn(async move {
        signal().await;
        tracing::info!("stop requested; draining");
        child.cancel();
    });
    token
}

/// Cancels `token` once standard input reaches its end (or fails): the parent that holds it open
/// has gone. A thread of its own, because reading a terminal or a pipe blocks.
pub fn on_stdin_closed(token: CancellationToken) {
    let spawned = std::thread::Builder::new().name("stdin-watch".into()).spawn(move || {
        use std::io::Read;
        let mut stdin = std::io::stdin().lock();
        let mut buf = [0u8; 64];
        while matches!(stdin.read(&mut buf), Ok(n) if n > 0) {}
        tracing::info!("standard input closed (the supervisor has gone); draining");
        token.cancel();
    });
    if let Err(e) = spawned {
        tracing::warn!(error = %e, "cannot watch standard input; only signals stop this process");
    }
}
