//! `tractor up`: a ModelDeployment run locally, processes instead of pods.

use std::path::PathBuf;

use anyhow::Context as _;
use clap::Args;

#[derive(Debug, Args)]
pub struct UpArgs {
    /// The ModelDeployment YAML (several documents play in order).
    #[arg(long, short = 'f')]
    pub file: PathBuf,
    /// Port of the router, where clients send requests.
    #[arg(long, default_value_t = 8080)]
    pub port: u16,
    /// Where artifacts, logs and the status are kept, so a restart resumes.
    #[arg(long, default_value = ".tractor")]
    pub state_dir: PathBuf,
    /// Print events as JSON lines.
    #[arg(long)]
    pub json: bool,
    /// Callers' tokens for the router (see docs/security.md); repeat for
    /// several files. The versions then accept only the router's own token.
    #[arg(long = "auth-file", env = "TRACTOR_AUTH_FILE", value_delimiter = ',')]
    pub auth_files: Vec<PathBuf>,
    /// Port of the router's gRPC API (each version serves gRPC on a port
    /// of its own behind it), e.g. 8081; 0, the default, turns it off.
    #[arg(long, default_value_t = 0)]
    pub grpc_port: u16,
}

pub async fn run(args: UpArgs) -> anyhow::Result<()> {
    let config = tractor::local::UpConfig {
        file: args.file,
        port: args.port,
        state_dir: args.state_dir,
        json: args.json,
        auth_files: args.auth_files,
        grpc_port: args.grpc_port,
        tractor: std::env::current_exe().context("finding the tractor binary")?,
    };
    tractor::local::up(config, tractor::serve::shutdown_signal()).await?;
    Ok(())
}
