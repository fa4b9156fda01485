//! The child processes of a local `up`: spawned with the typed arguments,
//! supervised and restarted with back-off, as the kubelet does.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::process::Command;

use super::launch::Child;
use super::state::write_whole;
use super::{HEALTH_TIMEOUT, LocalError, ROUTER_START, Runner};
use crate::contract::args::{self, RoutesAt};

/// The line of a child's log that says why it stopped: its last line that is
/// not routine (INFO and below) logging. A process killed from outside has
/// none, and then its exit status says enough.
pub(super) fn why_it_stopped(log: &str) -> Option<&str> {
    log.lines().rev().map(str::trim).find(|&line| {
        let head = line.char_indices().nth(40).map_or(line, |(end, _)| &line[..end]);
        !line.is_empty() && ![" INFO ", " DEBUG ", " TRACE "].iter().any(|l| head.contains(l))
    })
}

pub(super) fn free_port() -> Result<u16, LocalError> {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|source| LocalError::Spawn { what: "a free port".into(), source })
}

pub(super) struct Server {
    pub(super) child: Child,
    pub(super) port: u16,
    pub(super) grpc_port: u16,
    pub(super) log: PathBuf,
}

/// A version whose process keeps stopping is restarted after 1, 2, 4... s
/// (at most 30 s), as the kubelet backs off a crashing container.
pub(super) struct Backoff {
    pub(super) restarts: u32,
    pub(super) next: std::time::Instant,
    pub(super) reason: String,
}

impl Backoff {
    pub(super) fn new() -> Self {
        Backoff { restarts: 0, next: std::time::Instant::now(), reason: String::new() }
    }

    /// Another failure: the next try waits twice as long as the last
    /// (1, 2, 4... s, at most [`MAX_BACKOFF`]). Returns that wait.
    pub(super) fn failed(&mut self, reason: String) -> Duration {
        let delay = Duration::from_secs(1u64 << self.restarts.min(5)).min(MAX_BACKOFF);
        self.restarts += 1;
        self.next = std::time::Instant::now() + delay;
        self.reason = reason;
        delay
    }
}

pub(super) const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// A version taken out of the routes keeps running this long, so the router
/// (which re-reads its routes file every 250 ms) has moved its traffic away
/// before the process stops: no request lands on a closed port.
pub(super) const DRAIN: Duration = Duration::from_secs(1);

impl Runner {
    pub(super) fn spawn(
        &self,
        what: &str,
        args: &[String],
        log: &Path,
    ) -> Result<Child, LocalError> {
        let spawn_error = |source| LocalError::Spawn { what: what.to_string(), source };
        if let Some(launcher) = &self.launcher {
            return launcher.launch(args, log).map(Child::Launched).map_err(spawn_error);
        }
        let log_file = std::fs::File::create(log)
            .map_err(|source| LocalError::State { path: log.display().to_string(), source })?;
        let mut command = Command::new(&self.config.tractor);
        command.args(args).stdout(Stdio::null()).stderr(log_file).kill_on_drop(true);
        #[cfg(target_os = "linux")]
        // SAFETY: prctl is async-signal-safe and touches only the child.
        // kill_on_drop needs `up` to unwind; if `up` itself is killed, the
        // kernel still stops the children.
        unsafe {
            command.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
                Ok(())
            });
        }
        command.spawn().map(Child::Process).map_err(spawn_error)
    }

    /// Starts the router and waits until it answers, so that a port already
    /// in use is an error at once rather than a router that never was.
    pub(super) async fn start_router(&mut self) -> Result<(), LocalError> {
        let routes = self.dir.join("routes.json");
        // A table left by an earlier run names ports that are gone, or are
        // now someone else's: start empty; the next tick writes the real one.
        write_whole(&routes, b"{\"backends\": []}")?;
        self.routes = None;
        let admin = free_port()?;
        let mut route = args::route(
            &format!("127.0.0.1:{}", self.config.port),
            &format!("127.0.0.1:{admin}"),
            &RoutesAt::File(routes.display().to_string()),
        );
        if self.config.grpc_port != 0 {
            route = args::with_grpc_port(route, self.config.grpc_port);
        }
        let mut args = route.argv();
        args.extend(self.auth.iter().flat_map(super::auth::LocalAuth::router_argv));
        let log = self.dir.join("route.log");
        let mut child = self.spawn("route", &args, &log)?;
        let deadline = std::time::Instant::now() + ROUTER_START;
        while std::time::Instant::now() < deadline {
            if let Ok(Some(status)) = child.try_wait() {
                let text = std::fs::read_to_string(&log).unwrap_or_default();
                let reason = why_it_stopped(&text).unwrap_or("nothing in its log").to_string();
                return Err(LocalError::Router(format!("{status}: {reason}")));
            }
            let health = format!("http://127.0.0.1:{admin}/healthz");
            if self.http.get(&health).timeout(HEALTH_TIMEOUT).send().await.is_ok() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        self.router = Some((child, admin));
        Ok(())
    }

    /// A router that stopped is started again (after 1, 2, 4... s while it
    /// keeps failing), and the event is shown, as for a version's server.
    pub(super) async fn supervise_router(&mut self) {
        if let Some((child, _)) = &mut self.router
            && let Ok(Some(status)) = child.try_wait()
        {
            let text = std::fs::read_to_string(self.dir.join("route.log")).unwrap_or_default();
            let reason =
                why_it_stopped(&text).map_or(status.to_string(), |l| format!("{status}: {l}"));
            self.emit(
                "Warning",
                "RouterExited",
                &format!("router exited ({reason}); restarting"),
                &[],
            );
            self.router = None;
        }
        if self.router.is_some() || std::time::Instant::now() < self.router_backoff.next {
            return;
        }
        match self.start_router().await {
            Ok(()) => {
                self.router_backoff.restarts = 0;
                self.emit(
                    "Normal",
                    "RouterStarted",
                    &format!("router on http://127.0.0.1:{}", self.config.port),
                    &[],
                );
            }
            Err(e) => {
                let delay = self.router_backoff.failed(e.to_string());
                self.emit(
                    "Warning",
                    "RouterFailed",
                    &format!("{e}; trying again in {}s", delay.as_secs()),
                    &[],
                );
            }
        }
    }

    pub(super) async fn stop(&mut self) {
        for (_, mut server) in std::mem::take(&mut self.servers) {
            let _ = server.child.kill().await;
        }
        for (_, mut server) in std::mem::take(&mut self.draining) {
            let _ = server.child.kill().await;
        }
        if let Some((mut child, _)) = self.router.take() {
            let _ = child.kill().await;
        }
        if let Some((_, mut child, _)) = self.job.take() {
            let _ = child.kill().await;
        }
    }
}
