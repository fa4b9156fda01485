//! `tractor infer`: one V2 request from a JSON file.

use std::path::PathBuf;

use anyhow::Context as _;
use clap::Args;

use tractor::client::{self, Endpoint};

#[derive(Debug, Args)]
pub struct InferArgs {
    /// The server or router: http(s)://HOST:PORT (its gRPC port with
    /// --protocol grpc).
    #[arg(long, env = "TRACTOR_URL")]
    pub url: String,
    /// The model's name, as its metadata gives it.
    #[arg(long)]
    pub model: String,
    /// One version of it (`/versions/V`); without it, the one served.
    #[arg(long)]
    pub model_version: Option<String>,
    /// V2 request JSON ({"inputs": [...]}); `-` reads standard input.
    #[arg(long)]
    pub input: PathBuf,
    /// `grpc` sends the request's tensors to the gRPC port (--url
    /// http://HOST:8001) and prints the answer as V2 JSON.
    #[arg(long, value_enum, default_value = "rest")]
    pub protocol: client::Protocol,
}

pub async fn run(args: InferArgs) -> anyhow::Result<()> {
    let body = if args.input.as_os_str() == "-" {
        let mut buf = Vec::new();
        std::io::Read::read_to_end(&mut std::io::stdin(), &mut buf)
            .context("reading standard input")?;
        buf
    } else {
        std::fs::read(&args.input).with_context(|| format!("reading {}", args.input.display()))?
    };
    let request = serde_json::from_slice::<serde_json::Value>(&body)
        .with_context(|| format!("{} is not JSON", args.input.display()))?;
    if args.protocol == client::Protocol::Grpc {
        let mut grpc = client::grpc_client(&args.url, None).await?;
        let mut message = client::grpc_from_json(&args.model, &request)?;
        message.model_version = args.model_version.unwrap_or_default();
        let answer = client::grpc_infer(&mut grpc, &args.url, message).await?;
        println!("{}", serde_json::to_string_pretty(&answer)?);
        return Ok(());
    }
    let endpoint = Endpoint::new(&args.url, &args.model, args.model_version.as_deref());
    let http = reqwest::Client::new();
    let answer = client::post_json(&http, &endpoint.infer_url(), body).await?;
    println!("{}", serde_json::to_string_pretty(&answer)?);
    Ok(())
}
