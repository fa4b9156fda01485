//! Progress through per-layer work inside a pass (timing each layer's
//! forms can take minutes on a large model): a bar on a terminal, log
//! lines elsewhere (a Job's log, a CI log), at most one every few seconds
//! so a model of thousands of layers does not flood them.

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};

/// Least time between two log lines; the first and the last always print.
const LINE_EVERY: Duration = Duration::from_secs(2);

pub struct Progress {
    what: &'static str,
    total: usize,
    done: usize,
    bar: Option<ProgressBar>,
    last_line: Option<Instant>,
}

impl Progress {
    /// Progress through `total` items of `what` ("timing layers").
    pub fn new(what: &'static str, total: usize) -> Self {
        let bar = on_terminal().then(|| {
            let bar = ProgressBar::new(total as u64);
            let style =
                ProgressStyle::with_template("{prefix} [{bar:30}] {pos}/{len} {msg} ({eta})")
                    .map(|s| s.progress_chars("=> "))
                    .unwrap_or_else(|_| ProgressStyle::default_bar());
            bar.set_style(style);
            bar.set_prefix(what);
            bar
        });
        Progress { what, total, done: 0, bar, last_line: None }
    }

    /// One more item done; `item` names it (a node).
    pub fn step(&mut self, item: &str) {
        self.done += 1;
        if let Some(bar) = &self.bar {
            bar.set_message(item.to_string());
            bar.inc(1);
            return;
        }
        let due = self.last_line.is_none_or(|at| at.elapsed() >= LINE_EVERY);
        if due || self.done == self.total {
            self.last_line = Some(Instant::now());
            tracing::info!(
                done = self.done,
                total = self.total,
                item,
                "{}: {} of {} ({item})",
                self.what,
                self.done,
                self.total
            );
        }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

/// A person watching: stderr is a terminal and the logs are not JSON (a
/// bar's redraws in a JSON log collector would be noise).
fn on_terminal() -> bool {
    let json = std::env::var("TRACTOR_LOG_FORMAT").is_ok_and(|v| v.eq_ignore_ascii_case("json"));
    !json && std::io::stderr().is_terminal()
}
