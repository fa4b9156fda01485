//! `tractor registry`: push, list, show, pull, tag, diff model versions,
//! and print one as a `ModelVersion` object.

use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};
use clap::{Args, Subcommand};

use tractor::registry::{
    self, ParentRef, Push, Pushed, Reference, Registry, VersionManifest, format_name,
};
use tractor::store::encryption;

/// Largest file `push` reads: bigger than any model tract serves here,
/// and a bound on the one allocation the file takes.
const MAX_PUSH_BYTES: u64 = 16 << 30;
/// Largest `--metrics` file.
const MAX_METRICS_FILE_BYTES: u64 = 1 << 20;

#[derive(Debug, Args)]
pub struct RegistryArgs {
    /// Where the registry is: a folder, file:// or s3://bucket/prefix (credentials
    /// from AWS_*). Default: $XDG_DATA_HOME/tractor/registry, else
    /// ~/.local/share/tractor/registry.
    #[arg(long, env = "TRACTOR_REGISTRY", global = true)]
    store: Option<String>,
    #[command(subcommand)]
    action: Action,
}

#[derive(Debug, Subcommand)]
enum Action {
    /// Store a model file as NAME@VERSION (content-addressed, immutable).
    Push(PushArgs),
    /// List the versions of every model, or of one.
    List {
        /// Only this model.
        name: Option<String>,
        /// One JSON manifest a line.
        #[arg(long)]
        json: bool,
    },
    /// Print one version's manifest.
    Show {
        /// NAME@VERSION or NAME@ALIAS.
        reference: Reference,
        /// The manifest as stored (JSON).
        #[arg(long)]
        json: bool,
    },
    /// Write a version's stored file, its digest checked.
    Pull {
        /// NAME@VERSION or NAME@ALIAS.
        reference: Reference,
        /// Where to write it.
        #[arg(long, short)]
        output: PathBuf,
    },
    /// Point ALIAS (champion, staging…) at a version; aliases move, versions never do.
    Tag {
        /// NAME@VERSION or NAME@ALIAS.
        reference: Reference,
        /// The alias (as a version: lowercase letters, digits, '-' and '.').
        alias: String,
        /// Who moved it, recorded with the alias; default $USER@host.
        #[arg(long, env = "TRACTOR_PUSHED_BY")]
        by: Option<String>,
    },
    /// Two versions side by side: metrics, size, signatures, lineage.
    Diff {
        /// The first version, NAME@VERSION or NAME@ALIAS.
        a: Reference,
        /// The second version.
        b: Reference,
        /// The rows as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Print the ModelVersion object of a version, for `kubectl apply` and GitOps.
    Manifest {
        /// NAME@VERSION or NAME@ALIAS.
        reference: Reference,
        /// The object's namespace.
        #[arg(long, short)]
        namespace: Option<String>,
        /// Label it for this ModelDeployment, whose controller lists its registry by label.
        #[arg(long)]
        deployment: Option<String>,
        /// The artifact's URI as the cluster reaches it; default the blob in this registry.
        #[arg(long)]
        artifact_uri: Option<String>,
    },
}

#[derive(Debug, Args)]
struct PushArgs {
    /// The model file (ONNX or NNEF).
    file: PathBuf,
    /// The model's name (as spec.model.name).
    #[arg(long)]
    name: String,
    /// The version (as spec.model.version); never reused for other content.
    #[arg(long = "version")]
    model_version: String,
    /// What this version was derived from: NAME@VERSION in this registry, or sha256:HEX.
    #[arg(long)]
    parent: Option<ParentRef>,
    /// Figures to record: a JSON object ({"accuracy": 0.97}) or a file holding one.
    #[arg(long)]
    metrics: Option<String>,
    /// Store it age-encrypted to this recipient (age1…) or file of recipients; repeatable.
    #[arg(long = "encrypt-to")]
    encrypt_to: Vec<String>,
    /// Who pushed it, recorded in the manifest; default $USER@host.
    #[arg(long, env = "TRACTOR_PUSHED_BY")]
    pushed_by: Option<String>,
}

/// The default registry folder, per user.
fn default_store() -> String {
    let data = std::env::var_os("XDG_DATA_HOME")
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/share")));
    match data {
        Some(dir) => dir.join("tractor/registry").display().to_string(),
        None => ".tractor-registry".into(),
    }
}

/// `$USER@host`, as far as the machine tells.
fn who() -> String {
    let user = std::env::var("USER").or_else(|_| std::env::var("LOGNAME")).unwrap_or_default();
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    match (user.trim(), host.trim()) {
        ("", "") => "unknown".into(),
        (user, "") => user.into(),
        ("", host) => format!("@{host}"),
        (user, host) => format!("{user}@{host}"),
    }
}

fn read_bounded(path: &Path, max: u64, what: &str) -> anyhow::Result<Vec<u8>> {
    let size =
        std::fs::metadata(path).with_context(|| format!("reading {}", path.display()))?.len();
    if size > max {
        bail!("{} is {size} bytes, over the {max} a {what} may have", path.display());
    }
    std::fs::read(path).with_context(|| format!("reading {}", path.display()))
}

fn metrics(arg: Option<&str>) -> anyhow::Result<std::collections::BTreeMap<String, f64>> {
    let Some(arg) = arg else { return Ok(Default::default()) };
    let text = if arg.trim_start().starts_with('{') {
        arg.to_string()
    } else {
        let bytes = read_bounded(Path::new(arg), MAX_METRICS_FILE_BYTES, "metrics file")?;
        String::from_utf8(bytes).context("the metrics file is not UTF-8")?
    };
    Ok(registry::parse_metrics(&text)?)
}

fn short(digest: &str) -> &str {
    digest.get(..12).unwrap_or(digest)
}

pub async fn run(args: RegistryArgs) -> anyhow::Result<()> {
    let location = args.store.unwrap_or_else(default_store);
    let registry = Registry::open(&location)?;
    match args.action {
        Action::Push(push) => run_push(&registry, push).await,
        Action::List { name, json } => {
            let versions = registry.list(name.as_deref()).await?;
            if json {
                for m in &versions {
                    println!("{}", serde_json::to_string(m)?);
                }
                return Ok(());
            }
            println!(
                "{:<24} {:<12} {:<14} {:>10} {:<5} {:<4} {:<20} {:<20} METRICS",
                "NAME", "VERSION", "SHA256", "BYTES", "FMT", "ENC", "ALIASES", "CREATED"
            );
            let mut aliases = std::collections::BTreeMap::new();
            for m in &versions {
                if !aliases.contains_key(&m.name) {
                    aliases.insert(m.name.clone(), registry.aliases(&m.name).await?);
                }
                let tags: Vec<&str> = aliases[&m.name]
                    .iter()
                    .filter(|a| a.version == m.version)
                    .map(|a| a.alias.as_str())
                    .collect();
                let figures: Vec<String> =
                    m.metrics.iter().map(|(k, v)| format!("{k}={v}")).collect();
                println!(
                    "{:<24} {:<12} {:<14} {:>10} {:<5} {:<4} {:<20} {:<20} {}",
                    m.name,
                    m.version,
                    short(&m.digest),
                    m.size_bytes,
                    format_name(m.format),
                    if m.stored.encryption.is_some() { "age" } else { "-" },
                    if tags.is_empty() { "-".to_string() } else { tags.join(",") },
                    m.created,
                    figures.join(" ")
                );
            }
            Ok(())
        }
        Action::Show { reference, json } => {
            let m = registry.resolve(&reference).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&m)?);
            } else {
                print!("{}", describe(&m, &registry));
            }
            Ok(())
        }
        Action::Pull { reference, output } => {
            let (m, bytes) = registry.pull(&reference).await?;
            // A temporary name beside the target, then a rename: no half-written model.
            let name = output.file_name().and_then(|n| n.to_str()).unwrap_or("model");
            let tmp = output.with_file_name(format!(".{name}.{}.partial", std::process::id()));
            std::fs::write(&tmp, &bytes).with_context(|| format!("writing {}", tmp.display()))?;
            std::fs::rename(&tmp, &output)
                .with_context(|| format!("writing {}", output.display()))?;
            let sealed = if m.stored.encryption.is_some() {
                " (age-encrypted: `age -d -i KEY` or `serve --decryption-identity KEY` opens it)"
            } else {
                ""
            };
            println!(
                "{} -> {} sha256:{} verified{sealed}",
                m.reference(),
                output.display(),
                m.stored.sha256
            );
            Ok(())
        }
        Action::Tag { reference, alias, by } => {
            let by = by.unwrap_or_else(who);
            let (record, before) = registry.tag(&reference, &alias, &by).await?;
            let was = before.map(|v| format!(" (was {v})")).unwrap_or_default();
            println!("{}@{} -> {}{was}", record.name, record.alias, record.version);
            Ok(())
        }
        Action::Diff { a, b, json } => {
            let (ma, mb) = (registry.resolve(&a).await?, registry.resolve(&b).await?);
            let rows = registry::diff(&ma, &mb);
            if json {
                println!("{}", serde_json::to_string_pretty(&rows)?);
                return Ok(());
            }
            let width = |pick: fn(&registry::DiffRow) -> &str| {
                rows.iter().map(|r| pick(r).len()).max().unwrap_or(0)
            };
            let (wf, wa) = (width(|r| &r.field), width(|r| &r.a));
            for row in &rows {
                let mark = if row.same() { ' ' } else { '*' };
                let change = match row.change {
                    Some(c) if c != 0.0 && c.fract() == 0.0 => format!("  ({c:+})"),
                    // Figures such as accuracy: four decimals, not f64 noise.
                    Some(c) if c != 0.0 => format!("  ({c:+.4})"),
                    _ => String::new(),
                };
                println!("{mark} {:<wf$}  {:<wa$}  {}{change}", row.field, row.a, row.b);
            }
            Ok(())
        }
        Action::Manifest { reference, namespace, deployment, artifact_uri } => {
            if let Some(d) = &deployment {
                registry::check_name(d).context("--deployment")?;
            }
            let m = registry.resolve(&reference).await?;
            let uri = artifact_uri.unwrap_or_else(|| registry.blob_uri(&m.stored.sha256));
            let object = m.model_version(&uri, namespace.as_deref(), deployment.as_deref());
            print!(
                "{}",
                serde_saphyr::to_string(&object).context("writing the ModelVersion as YAML")?
            );
            Ok(())
        }
    }
}

async fn run_push(registry: &Registry, args: PushArgs) -> anyhow::Result<()> {
    let recipients = if args.encrypt_to.is_empty() {
        Vec::new()
    } else {
        encryption::parse_recipients(&args.encrypt_to)?
    };
    let model = read_bounded(&args.file, MAX_PUSH_BYTES, "model")?;
    let file_name = args.file.file_name().and_then(|n| n.to_str()).unwrap_or_default().to_string();
    let push = Push {
        name: args.name,
        version: args.model_version,
        model: model.into(),
        file_name,
        parent: args.parent,
        metrics: metrics(args.metrics.as_deref())?,
        recipe: None,
        recipients,
        pushed_by: args.pushed_by.unwrap_or_else(who),
    };
    match registry.push(push).await? {
        Pushed::Created(m) => {
            let sealed = m
                .stored
                .encryption
                .as_ref()
                .map(|e| {
                    format!(
                        ", age-encrypted to {} recipients (stored sha256:{})",
                        e.recipients.len(),
                        m.stored.sha256
                    )
                })
                .unwrap_or_default();
            println!(
                "pushed {} sha256:{} ({} bytes, {}){sealed} to {}",
                m.reference(),
                m.digest,
                m.size_bytes,
                format_name(m.format),
                registry.location()
            );
        }
        Pushed::Unchanged(m) => {
            println!(
                "{} is already in the registry with this content (sha256:{}): nothing written",
                m.reference(),
                m.digest
            );
        }
    }
    Ok(())
}

/// `show`'s text: one field a line.
fn describe(m: &VersionManifest, registry: &Registry) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let mut line = |k: &str, v: String| {
        let _ = writeln!(out, "{k:<12} {v}");
    };
    line("version", m.reference());
    line("digest", format!("sha256:{}", m.digest));
    line("format", format_name(m.format).into());
    line("size", format!("{} bytes", m.size_bytes));
    line(
        "stored",
        format!(
            "{} ({} bytes, sha256:{})",
            registry.blob_uri(&m.stored.sha256),
            m.stored.size_bytes,
            m.stored.sha256
        ),
    );
    if let Some(e) = &m.stored.encryption {
        line("encrypted", format!("{} to {}", e.scheme, e.recipients.join(", ")));
    }
    for t in &m.inputs {
        line("input", t.to_string());
    }
    for t in &m.outputs {
        line("output", t.to_string());
    }
    if let Some(p) = m.parameters {
        line("parameters", p.to_string());
    }
    if let Some(o) = m.operators {
        line("operators", o.to_string());
    }
    if let Some(p) = &m.parent {
        let named = match (&p.name, &p.version) {
            (Some(n), Some(v)) => format!("{n}@{v} "),
            _ => String::new(),
        };
        line("parent", format!("{named}sha256:{}", p.digest));
    }
    for (k, v) in &m.metrics {
        line("metric", format!("{k}={v}"));
    }
    line("created", m.created.clone());
    line("pushed by", m.pushed_by.clone());
    out
}
