//! Reload-on-change for mounted files. Kubernetes updates ConfigMap and Secret volumes by
//! swapping a `..data` symlink, which replaces no file in place, so we watch the parent
//! directories (not the files) and decide "changed" by comparing content, with a slow poll
//! as a safety net for filesystems without inotify.

use std::path::PathBuf;
use std::time::Duration;

use notify::{RecursiveMode, Watcher};
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;

fn fingerprint(paths: &[PathBuf]) -> Option<[u8; 32]> {
    let mut h = Sha256::new();
    for p in paths {
        h.update(std::fs::read(p).ok()?);
        h.update([0u8]);
    }
    Some(h.finalize().into())
}

/// Whether an event can mean new content. notify's inotify backend also reports opens,
/// reads and read-only closes (`IN_OPEN`, `IN_ACCESS`, `IN_CLOSE_NOWRITE`); reacting to
/// them made the watcher feed itself, since `fingerprint` opens the watched files. A
/// close after writing is kept: it is how an in-place edit finishes. Errors are kept too
/// (the poll re-reads anyway).
fn may_change_content(ev: &notify::Event) -> bool {
    use notify::EventKind;
    use notify::event::{AccessKind, AccessMode};
    match ev.kind {
        EventKind::Access(AccessKind::Close(AccessMode::Write)) => true,
        EventKind::Access(_) => false,
        _ => true,
    }
}

/// Calls `reload` whenever the content of `paths` changes. `reload` returns an error
/// message to keep the old state; it is retried on the next change only.
pub fn spawn<F>(
    what: &'static str,
    paths: Vec<PathBuf>,
    poll: Duration,
    mut reload: F,
) -> tokio::task::JoinHandle<()>
where
    F: FnMut() -> Result<(), String> + Send + 'static,
{
    tokio::spawn(async move {
        let (tx, mut rx) = mpsc::channel::<()>(1);
        let watcher = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
            if res.as_ref().is_ok_and(may_change_content) {
                let _ = tx.try_send(());
            }
        });
        let _watcher = match watcher {
            Ok(mut w) => {
                let mut dirs: Vec<PathBuf> = Vec::new();
                for p in &paths {
                    let parent = match p.parent() {
                        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
                        _ => PathBuf::from("."),
                    };
                    // In a projected volume a sub-directory (`tls/`) is itself a symlink
                    // into `..data`; its swap is only visible one level up.
                    if parent.is_symlink()
                        && let Some(gp) = parent.parent()
                    {
                        dirs.push(gp.to_path_buf());
                    }
                    dirs.push(parent);
                }
                dirs.sort();
                dirs.dedup();
                for d in &dirs {
                    if let Err(e) = w.watch(d, RecursiveMode::NonRecursive) {
                        tracing::warn!(what, dir = %d.display(), error = %e, "cannot watch; polling only");
                    }
                }
                Some(w)
            }
            Err(e) => {
                tracing::warn!(what, error = %e, "file watching unavailable; polling only");
                None
            }
        };
        let mut last = fingerprint(&paths);
        let mut ticker = tokio::time::interval(poll);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = ticker.tick() => {}
                got = rx.recv() => {
                    if got.is_none() { break; }
                    // let a multi-file update (cert + key) settle before reading
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    while rx.try_recv().is_ok() {}
                }
            }
            let now = fingerprint(&paths);
            if now.is_none() || now == last {
                continue;
            }
            match reload() {
                Ok(()) => {
                    tracing::info!(what, "reloaded");
                    last = now;
                }
                Err(e) => {
                    tracing::error!(what, error = %e, "reload rejected; keeping the previous version");
                    last = now;
                }
            }
        }
    })
}
