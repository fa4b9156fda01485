//! The `tractor` binary: parse the command line, run the subcommand, and
//! turn its error into a non-zero exit with the reason.

use std::process::ExitCode;

use clap::Parser;

mod cli;

use cli::{Cli, Command};

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    // Within the runtime's context: a trace exporter sends on it.
    let telemetry = {
        let _context = runtime.enter();
        tractor::telemetry::init(&format!("tractor-{}", role(&cli.command)))
    };
    let outcome = runtime.block_on(dispatch(cli.command));
    // Queued spans go out before the exit (serve and route have drained by
    // now, on SIGTERM or Ctrl-C), from this thread, while the runtime the
    // export runs on is still up.
    telemetry.shutdown();
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let text = cli::error_text(&e);
            eprintln!("error: {text}");
            report_to_kubernetes(&text);
            ExitCode::FAILURE
        }
    }
}

async fn dispatch(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Serve(args) => cli::serve::run(args).await,
        Command::Bench(args) => cli::bench::run(args).await,
        Command::Infer(args) => cli::infer::run(args).await,
        Command::Optimize(args) => cli::optimize::run(args).await,
        Command::Merge(options) => cli::optimize::run_merge(options).await,
        Command::Crd => cli::crd::run(),
        Command::Render(args) => cli::render::run(args),
        Command::Controller(args) => cli::controller::run(args).await,
        Command::Rollout(args) => cli::rollout::run(args).await,
        Command::Route(args) => cli::route::run(args).await,
        Command::Up(args) => cli::up::run(args).await,
        Command::Registry(args) => cli::registry::run(args).await,
    }
}

/// The subcommand's name, for the default `service.name` of its traces.
fn role(command: &Command) -> &'static str {
    match command {
        Command::Serve(_) => "serve",
        Command::Bench(_) => "bench",
        Command::Infer(_) => "infer",
        Command::Optimize(_) => "optimize",
        Command::Merge(_) => "merge",
        Command::Crd => "crd",
        Command::Render(_) => "render",
        Command::Controller(_) => "controller",
        Command::Rollout(_) => "rollout",
        Command::Route(_) => "router",
        Command::Up(_) => "up",
        Command::Registry(_) => "registry",
    }
}

/// In a Kubernetes container, the reason a process stopped goes to the
/// termination message too, where the controller reads it (a processing spec
/// that does not fit the model, a refused digest) to put it in the status.
/// A message already written (the optimizer's result) is kept.
fn report_to_kubernetes(message: &str) {
    const TERMINATION_LOG: &str = "/dev/termination-log";
    let empty = std::fs::metadata(TERMINATION_LOG).is_ok_and(|m| m.len() == 0);
    if empty {
        let cut: String =
            message.chars().take(tractor::contract::job::MAX_TERMINATION_MESSAGE).collect();
        let _ = std::fs::write(TERMINATION_LOG, cut);
    }
}
