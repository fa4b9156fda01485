//! Re-reading a credentials file when it changes: the routes file's
//! pattern (`route/table.rs`), with two differences. Every event in the
//! directory counts, not only those naming the file: a Kubernetes Secret
//! volume swaps a `..data` symlink, so the file's own name never shows up
//! in an event. And the file is read with a size bound.

use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use notify_debouncer_mini::notify::RecursiveMode;
use notify_debouncer_mini::{DebounceEventResult, new_debouncer};

/// Quiet time after a change before the file is read: an editor's or a
/// kubelet's write is a burst of events that is one change.
const DEBOUNCE: Duration = Duration::from_millis(50);
/// How often the file is read when the directory cannot be watched, and
/// also between events when it can: a missed event then costs at most this
/// long, inside the 2 s a rotation is promised to take.
const POLL: Duration = Duration::from_secs(1);

/// Reads at most `max_bytes` of a file.
///
/// # Errors
/// The file cannot be read, or is larger than `max_bytes`.
pub fn read_bounded(path: &Path, max_bytes: u64) -> std::io::Result<Vec<u8>> {
    let file = std::fs::File::open(path)?;
    let mut bytes = Vec::new();
    file.take(max_bytes.saturating_add(1)).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > max_bytes {
        return Err(std::io::Error::other(format!("larger than {max_bytes} bytes")));
    }
    Ok(bytes)
}

/// Calls `changed` with the file's new bytes each time they differ from the
/// last seen, for as long as `owner` lives. `initial` is what the owner
/// already loaded, so an unchanged file is not applied twice.
pub async fn watch_file<T: Send + Sync>(
    path: PathBuf,
    max_bytes: u64,
    initial: Option<Vec<u8>>,
    owner: std::sync::Weak<T>,
    mut changed: impl FnMut(&T, std::io::Result<Vec<u8>>) + Send,
) {
    let (notify, mut events) = tokio::sync::mpsc::unbounded_channel::<()>();
    let debouncer = new_debouncer(DEBOUNCE, move |_: DebounceEventResult| {
        // An error is a change we may have missed: read the file again.
        let _ = notify.send(());
    })
    .and_then(|mut debouncer| {
        let dir = match path.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir,
            _ => Path::new("."),
        };
        debouncer.watcher().watch(dir, RecursiveMode::NonRecursive)?;
        Ok(debouncer)
    });
    let watching = debouncer.is_ok();
    if let Err(e) = &debouncer {
        tracing::warn!(error = %e, path = %path.display(), poll = ?POLL,
            "cannot watch the file; polling it instead");
    }
    let mut last = initial;
    loop {
        let read = {
            let path = path.clone();
            tokio::task::spawn_blocking(move || read_bounded(&path, max_bytes))
                .await
                .unwrap_or_else(|e| Err(std::io::Error::other(e.to_string())))
        };
        let differs = match (&read, &last) {
            (Ok(now), Some(before)) => now != before,
            _ => true,
        };
        // A file that cannot be read is reported once, not every poll.
        let report = differs && !(read.is_err() && last.is_none());
        if let Ok(bytes) = &read {
            last = Some(bytes.clone());
        } else {
            last = None;
        }
        let Some(alive) = owner.upgrade() else { return };
        if report {
            changed(&alive, read);
        }
        drop(alive);
        if watching {
            tokio::select! {
                Some(()) = events.recv() => {}
                () = tokio::time::sleep(POLL) => {}
            }
        } else {
            tokio::time::sleep(POLL).await;
        }
    }
}
