//! How `up` starts its children: processes of the `tractor` binary, or,
//! where a [`Launcher`] is given (the conformance suite), whatever it plays
//! them with. Either way the runner sees one [`Child`] and talks to it over
//! the same loopback HTTP (health, the router's statistics).

use std::path::Path;
use std::process::ExitStatus;

/// Starts a child role in place of a `tractor` process.
///
/// The runner passes the argv it would give the `tractor` binary
/// (`serve ...`, `route ...`, `optimize ...`, built by
/// [`crate::contract::args`]) and the file where the child's standard error
/// would go; what it does with them is the launcher's business, as long as
/// it answers where the arguments say (`--http-port`, `--admin-listen`).
pub trait Launcher: Send + Sync {
    /// # Errors
    /// The child cannot be started; `up` reports it as it would a failed spawn.
    fn launch(&self, argv: &[String], log: &Path) -> std::io::Result<Box<dyn Launched>>;
}

/// A child a [`Launcher`] started.
pub trait Launched: Send {
    /// `Some` once it stopped, as [`std::process::Child::try_wait`].
    ///
    /// # Errors
    /// Its state cannot be read.
    fn try_wait(&mut self) -> std::io::Result<Option<ExitStatus>>;
    /// Stops it; the runner does not look at it again.
    fn kill(&mut self);
}

/// One child of the runner: a process it spawned, or one a [`Launcher`]
/// started. The methods are the ones the runner uses of a process.
pub(super) enum Child {
    Process(tokio::process::Child),
    Launched(Box<dyn Launched>),
}

impl Child {
    pub(super) fn try_wait(&mut self) -> std::io::Result<Option<ExitStatus>> {
        match self {
            Child::Process(child) => child.try_wait(),
            Child::Launched(child) => child.try_wait(),
        }
    }

    pub(super) async fn kill(&mut self) -> std::io::Result<()> {
        match self {
            Child::Process(child) => child.kill().await,
            Child::Launched(child) => {
                child.kill();
                Ok(())
            }
        }
    }
}
