//! `tractor render`: what the controller would write for a ModelDeployment,
//! as YAML, without a cluster (for review before a merge).

use std::path::PathBuf;

use anyhow::{Context as _, bail};
use clap::Args;
use k8s_openapi::jiff::Timestamp;

use super::controller::OperatorOptions;
use tractor::controller::access::AdminToken;
use tractor::controller::render::{self, Stage, TOKEN_PLACEHOLDER};

#[derive(Debug, Args)]
pub struct RenderArgs {
    /// The ModelDeployment YAML. With several documents (as `tractor up`
    /// plays them), the last is rendered, or the one `--canary` names.
    #[arg(long, short = 'f')]
    pub file: PathBuf,
    /// Render the document of this version as a canary, next to the
    /// document before it in the file as the stable version.
    #[arg(long)]
    pub canary: Option<String>,
    /// The canary's weight in percent: one of its rollout steps' weights
    /// (default the first step's; 0 for a shadow step).
    #[arg(long, requires = "canary")]
    pub weight: Option<u32>,
    /// Namespace the ModelDeployment is applied in.
    #[arg(long, short = 'n', default_value = "default")]
    pub namespace: String,
    /// The operator's own namespace, which the NetworkPolicies let in.
    #[arg(long, env = "POD_NAMESPACE", default_value = "tractor-system")]
    pub operator_namespace: String,
    #[command(flatten)]
    pub operator: OperatorOptions,
}

pub fn run(args: RenderArgs) -> anyhow::Result<()> {
    tractor::crd::check_object_name("--namespace", &args.namespace)?;
    let mut docs = tractor::local::read_documents(&args.file)?;
    for doc in &mut docs {
        doc.metadata.namespace = Some(args.namespace.clone());
    }
    // The controller's token to the routers is made at its start; a render
    // shows where it goes, not a value.
    let admin = AdminToken::from_token(TOKEN_PLACEHOLDER.into());
    let config = args.operator.config(args.operator_namespace, admin, None)?;
    let (md, stage) = match &args.canary {
        None => (docs.last().context("the file holds no ModelDeployment")?, Stage::First),
        Some(version) => {
            let Some(at) = docs.iter().rposition(|d| &d.spec.model.version == version) else {
                bail!("no document of {} has version {version}", args.file.display());
            };
            let Some(stable) = at.checked_sub(1).map(|i| &docs[i]) else {
                bail!(
                    "version {version} is the first document of {}: a canary renders next to \
                     the stable version in the document before it",
                    args.file.display()
                );
            };
            (&docs[at], Stage::Canary { stable, weight: args.weight })
        }
    };
    let objects = render::render(md, &stage, &config, Timestamp::now())?;
    print!("{}", render::to_yaml(&objects).context("writing the objects as YAML")?);
    Ok(())
}
