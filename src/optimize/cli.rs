//! What `tractor optimize` and `tractor merge` do between parsing flags and
//! exiting: fetch, build the recipe, run, write the model and the report.

use std::path::PathBuf;

use clap::builder::TypedValueParser as _;

use super::{Context, Dataset, OptimizeError, Report};
use crate::crd::recipe::{
    Convert, ConvertFormat, Merge, MergeMode, Metric, NameMap, Pass, Prune, PruneMethod, Quantize,
    QuantizeMode, Recipe, Validation,
};
use crate::store::{self, StoreError};

/// Errors of the optimize and merge commands.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("reading {path}: {source}")]
    ReadFile {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Recipe(#[from] crate::crd::recipe::RecipeError),
    #[error("{0}")]
    Flags(String),
    #[error("data file {file}: {source}")]
    Data {
        file: String,
        #[source]
        source: super::data::DataError,
    },
    #[error(transparent)]
    Optimize(#[from] OptimizeError),
    #[error(transparent)]
    FlagValue(#[from] FlagValueError),
    #[error("writing the report: {0}")]
    Report(String),
}

/// A flag value that does not read as what the flag takes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FlagValueError {
    #[error("unknown size suffix {0:?}; expected a byte count with Ki, Mi, Gi, Ti, k, M, G or T")]
    SizeSuffix(String),
    #[error("{0:?} is not a byte count")]
    NotBytes(String),
    #[error("the memory budget must be more than 0 bytes")]
    NoBytes,
    #[error("{0:?} is more bytes than 2^64")]
    TooManyBytes(String),
    #[error("unknown prune method {0:?}; expected magnitude or structured")]
    PruneMethod(String),
    #[error("sparsity {0:?} is not a number")]
    Sparsity(String),
}

/// The `tractor optimize` options, as flags give them: the subcommand
/// flattens this type, so the flags and what the library reads cannot drift.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct OptimizeOptions {
    /// Model to optimize (ONNX): a path or object-store URI.
    #[arg(long)]
    pub input: String,
    /// Where to write the result: a path or object-store URI.
    #[arg(long)]
    pub output: String,
    /// Recipe file (YAML or JSON), the CRD's `spec.optimize` type.
    #[arg(long)]
    pub recipe: Option<PathBuf>,
    /// Fold constants, batch norms into the layer before them, MatMul + Add
    /// into Gemm, and drop Identity and Dropout (exact up to rounding).
    #[arg(long)]
    pub fold: bool,
    /// `magnitude:SPARSITY` or `structured:SPARSITY`.
    #[arg(long)]
    pub prune: Option<String>,
    /// dynamic-int8, static-int8, weight-int8 or weight-int4.
    #[arg(long)]
    pub quantize: Option<QuantizeMode>,
    /// Elements per quantization block along the reduction axis (weight-int4:
    /// default 32; int8: per output channel unless given).
    #[arg(long)]
    pub block_size: Option<usize>,
    /// Calibration data for static-int8 (.npz, .npy or CSV).
    #[arg(long)]
    pub calibration: Option<String>,
    /// Convert to this format at the end (nnef: an uncompressed tar).
    #[arg(long, value_parser = clap::builder::PossibleValuesParser::new(["nnef"])
        .map(|_| ConvertFormat::Nnef))]
    pub convert: Option<ConvertFormat>,
    /// Validation data (.npz or CSV) for the accuracy gate.
    #[arg(long)]
    pub validate: Option<String>,
    /// accuracy, mse or cross-entropy.
    #[arg(long)]
    pub metric: Option<Metric>,
    /// Largest allowed drop: accuracy points, or MSE / cross-entropy increase.
    #[arg(long)]
    pub max_drop: Option<f64>,
    /// Where to write the JSON report; printed when absent.
    #[arg(long)]
    pub report: Option<String>,
    /// Skip latency measurements and the per-layer speed fallback.
    #[arg(long)]
    pub no_measure: bool,
    /// Memory this run may use, in bytes or with a Kubernetes suffix
    /// (`512Mi`, `4Gi`, `8G`); a model may declare weights of at most an
    /// eighth of it. Default: the memory available when it starts (the
    /// smaller of MemAvailable and the cgroup's limit).
    #[arg(long, value_parser = parse_bytes)]
    pub memory_budget: Option<u64>,
    /// Largest slowdown against fp32 that a quantized layer may cost before
    /// it stays fp32 (overrides the recipe's `maxSlowdown`; default 1.10).
    #[arg(long)]
    pub max_slowdown: Option<f64>,
}

/// Parses a byte count: digits, then optionally a Kubernetes quantity
/// suffix (`Ki` `Mi` `Gi` `Ti` binary, `k` `M` `G` `T` decimal), as a Pod's
/// memory limit is written.
///
/// Written here: the byte-size crates each parse their own spelling, none
/// of them Kubernetes quantities, and one flag is not worth a dependency.
///
/// # Errors
/// Anything else, zero, or a size past 2^64.
pub fn parse_bytes(s: &str) -> Result<u64, FlagValueError> {
    let digits = s.trim().find(|c: char| !c.is_ascii_digit()).unwrap_or(s.trim().len());
    let (number, suffix) = s.trim().split_at(digits);
    let multiplier: u64 = match suffix {
        "" => 1,
        "k" => 1000,
        "M" => 1000u64.pow(2),
        "G" => 1000u64.pow(3),
        "T" => 1000u64.pow(4),
        "Ki" => 1 << 10,
        "Mi" => 1 << 20,
        "Gi" => 1 << 30,
        "Ti" => 1 << 40,
        other => return Err(FlagValueError::SizeSuffix(other.to_string())),
    };
    let n: u64 = number.parse().map_err(|_| FlagValueError::NotBytes(s.to_string()))?;
    match n.checked_mul(multiplier) {
        Some(0) => Err(FlagValueError::NoBytes),
        Some(bytes) => Ok(bytes),
        None => Err(FlagValueError::TooManyBytes(s.to_string())),
    }
}

/// Parses `magnitude:0.5` / `structured:0.5`.
///
/// # Errors
/// Any other shape.
pub fn parse_prune_flag(s: &str) -> Result<Prune, FlagValueError> {
    let (method, sparsity) = s.split_once(':').unwrap_or((s, "0.5"));
    let method = match method {
        "magnitude" => PruneMethod::Magnitude,
        "structured" => PruneMethod::Structured,
        other => return Err(FlagValueError::PruneMethod(other.to_string())),
    };
    let sparsity: f64 =
        sparsity.parse().map_err(|_| FlagValueError::Sparsity(sparsity.to_string()))?;
    Ok(Prune { method, sparsity, global: false, norm: Default::default(), skip: Vec::new() })
}

/// The recipe the options describe: the `--recipe` file, or the pass flags
/// in the order fold, prune, quantize, convert; `--validate` flags set (or
/// override) the gate.
///
/// # Errors
/// Both a recipe file and pass flags, unreadable files, incomplete gates.
pub fn build_recipe(o: &OptimizeOptions) -> Result<Recipe, CliError> {
    let flags_given = o.fold || o.prune.is_some() || o.quantize.is_some() || o.convert.is_some();
    let mut recipe = match &o.recipe {
        Some(path) if flags_given => {
            return Err(CliError::Flags(format!(
                "give passes either in {} or as flags, not both",
                path.display()
            )));
        }
        Some(path) => {
            let text = std::fs::read_to_string(path).map_err(|source| CliError::ReadFile {
                path: path.display().to_string(),
                source,
            })?;
            Recipe::parse(&text)?
        }
        None => {
            let mut passes = Vec::new();
            if o.fold {
                passes.push(Pass::Fold);
            }
            if let Some(p) = &o.prune {
                passes.push(Pass::Prune(parse_prune_flag(p)?));
            }
            if let Some(mode) = o.quantize {
                passes.push(Pass::Quantize(Quantize {
                    block_size: o.block_size,
                    ..Quantize::new(mode)
                }));
            } else if o.block_size.is_some() {
                return Err(CliError::Flags("--block-size needs --quantize".into()));
            }
            if o.max_slowdown.is_some() && o.quantize.is_none() {
                return Err(CliError::Flags("--max-slowdown needs --quantize".into()));
            }
            if let Some(format) = o.convert {
                passes.push(Pass::Convert(Convert { format, compress: false, batch: None }));
            }
            Recipe { passes, validation: None }
        }
    };
    match (&o.validate, o.metric, o.max_drop) {
        (Some(data), metric, max_drop) => {
            recipe.validation = Some(Validation {
                data: data.clone(),
                metric: metric.unwrap_or(Metric::Accuracy),
                max_drop: max_drop
                    .ok_or_else(|| CliError::Flags("--validate needs --max-drop".into()))?,
            });
        }
        (None, None, None) => {}
        (None, ..) if recipe.validation.is_some() => {
            if let Some(v) = recipe.validation.as_mut() {
                v.metric = o.metric.unwrap_or(v.metric);
                v.max_drop = o.max_drop.unwrap_or(v.max_drop);
            }
        }
        (None, ..) => {
            return Err(CliError::Flags("--metric and --max-drop need --validate DATA".into()));
        }
    }
    if let Some(bound) = o.max_slowdown {
        let mut quantizes = 0;
        for pass in &mut recipe.passes {
            if let Pass::Quantize(q) = pass {
                q.max_slowdown = Some(bound);
                quantizes += 1;
            }
        }
        if quantizes == 0 {
            return Err(CliError::Flags("--max-slowdown needs a quantize pass".into()));
        }
    }
    recipe.check()?;
    Ok(recipe)
}

async fn fetch_data(location: &str) -> Result<Dataset, CliError> {
    let artifact = store::fetch(location, None).await?;
    Dataset::parse(&artifact.file_name, &artifact.bytes)
        .map_err(|source| CliError::Data { file: location.to_string(), source })
}

/// The outcome of `tractor optimize` for `main` to turn into an exit code.
#[derive(Debug)]
pub struct Finished {
    pub report: Report,
    /// Where the model was written; `None` when the gate refused it.
    pub written: Option<String>,
    /// sha256 (hex) and size of the optimized model.
    pub sha256: String,
    pub size_bytes: u64,
}

/// Runs `tractor optimize`: the model is written only when the gate passes,
/// and any file already at the output location is removed when it fails.
/// The report is written (or printed) either way.
///
/// # Errors
/// Fetch and write failures, bad flags or recipe, failing passes.
pub async fn optimize(o: &OptimizeOptions) -> Result<Finished, CliError> {
    let recipe = build_recipe(o)?;
    let input = store::fetch(&o.input, None).await?;
    let mut ctx =
        Context { measure: !o.no_measure, memory_budget: o.memory_budget, ..Context::default() };
    for pass in &recipe.passes {
        match pass {
            Pass::Quantize(q) if q.mode == QuantizeMode::StaticInt8 => {
                let location =
                    o.calibration.clone().or_else(|| q.calibration.clone()).ok_or_else(|| {
                        CliError::Flags("static-int8 needs --calibration DATA".into())
                    })?;
                ctx.calibration = Some(fetch_data(&location).await?);
            }
            Pass::Merge(m) => fetch_models(&mut ctx, &m.models).await?,
            _ => {}
        }
    }
    if let Some(v) = &recipe.validation {
        ctx.validation = Some((fetch_data(&v.data).await?, v.metric, v.max_drop));
    }
    let outcome = run_blocking(input, recipe, ctx, "optimizer").await?;
    let sha256 = store::sha256_hex(&outcome.bytes);
    let size_bytes = outcome.bytes.len() as u64;
    let written = if outcome.report.passed {
        Some(store::put(&o.output, outcome.bytes.into()).await?)
    } else {
        store::delete(&o.output).await?;
        None
    };
    write_report(o.report.as_deref(), &outcome.report).await?;
    Ok(Finished { report: outcome.report, written, sha256, size_bytes })
}

/// Fetches the models a merge pass names into `ctx`, by location.
async fn fetch_models(ctx: &mut Context, locations: &[String]) -> Result<(), CliError> {
    for location in locations {
        ctx.models.insert(location.clone(), store::fetch(location, None).await?.bytes.to_vec());
    }
    Ok(())
}

/// Runs `recipe` on `input` off the async runtime: the passes and the
/// measurements are CPU-bound. `task` names the run when its thread fails.
async fn run_blocking(
    input: store::Artifact,
    recipe: Recipe,
    ctx: Context,
    task: &str,
) -> Result<super::Outcome, CliError> {
    tokio::task::spawn_blocking(move || super::run(&input.bytes, &recipe, &ctx))
        .await
        .map_err(|e| CliError::Flags(format!("the {task} task failed: {e}")))?
        .map_err(CliError::from)
}

async fn write_report(
    location: Option<&str>,
    report: &impl serde::Serialize,
) -> Result<(), CliError> {
    let json = serde_json::to_string_pretty(report).map_err(|e| CliError::Report(e.to_string()))?;
    match location {
        Some(l) => {
            store::put(l, json.into_bytes().into()).await?;
        }
        None => println!("{json}"),
    }
    Ok(())
}

/// `tractor merge compose|average`.
#[derive(Debug, Clone, clap::Args)]
pub struct MergeOptions {
    /// compose (FIRST SECOND) or average (MODEL...).
    #[arg(value_parser = clap::builder::PossibleValuesParser::new(["compose", "average"])
        .map(|mode| if mode == "compose" { MergeMode::Compose } else { MergeMode::Average }))]
    pub mode: MergeMode,
    /// The models to merge, in order (paths or object-store URIs).
    #[arg(required = true, num_args = 2..)]
    pub models: Vec<String>,
    /// compose: OUT=IN wires output OUT of the first to input IN of the second.
    #[arg(long)]
    pub map: Vec<String>,
    /// Where to write the merged model: a path or object-store URI.
    #[arg(long)]
    pub output: String,
}

/// Runs `tractor merge`: the first model with a merge pass naming the rest.
///
/// # Errors
/// Fetch failures, malformed `--map`, and merge refusals.
pub async fn merge(o: &MergeOptions) -> Result<Report, CliError> {
    let (first, rest) = o
        .models
        .split_first()
        .ok_or_else(|| CliError::Flags("merge needs at least two models".into()))?;
    let map = o
        .map
        .iter()
        .map(|m| {
            m.split_once('=')
                .map(|(output, input)| NameMap { output: output.into(), input: input.into() })
                .ok_or_else(|| CliError::Flags(format!("--map {m:?} is not OUT=IN")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let recipe = Recipe {
        passes: vec![Pass::Merge(Merge { mode: o.mode, models: rest.to_vec(), map })],
        validation: None,
    };
    recipe.check()?;
    let input = store::fetch(first, None).await?;
    let mut ctx = Context::default();
    fetch_models(&mut ctx, rest).await?;
    let outcome = run_blocking(input, recipe, ctx, "merge").await?;
    store::put(&o.output, outcome.bytes.into()).await?;
    Ok(outcome.report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_build_a_recipe_in_order() {
        let o = OptimizeOptions {
            fold: true,
            prune: Some("structured:0.25".into()),
            quantize: Some(QuantizeMode::DynamicInt8),
            validate: Some("d.npz".into()),
            max_drop: Some(1.0),
            ..Default::default()
        };
        let r = build_recipe(&o).unwrap();
        let names: Vec<_> = r.passes.iter().map(Pass::name).collect();
        assert_eq!(names, vec!["fold", "prune", "quantize"]);
        let Pass::Prune(p) = &r.passes[1] else { panic!() };
        assert_eq!((p.method, p.sparsity), (PruneMethod::Structured, 0.25));
        assert_eq!(r.validation.unwrap().metric, Metric::Accuracy);
        let no_drop = OptimizeOptions { validate: Some("d.npz".into()), ..Default::default() };
        assert!(build_recipe(&no_drop).unwrap_err().to_string().contains("--max-drop"));
        assert!(parse_prune_flag("random:0.5").is_err());
    }

    #[test]
    fn the_block_size_flag_goes_to_the_quantize_pass() {
        let o = OptimizeOptions {
            quantize: Some(QuantizeMode::WeightInt8),
            block_size: Some(32),
            ..Default::default()
        };
        let Pass::Quantize(q) = &build_recipe(&o).unwrap().passes[0] else { panic!() };
        assert_eq!((q.mode, q.block_size), (QuantizeMode::WeightInt8, Some(32)));
        let alone = OptimizeOptions { block_size: Some(32), ..Default::default() };
        assert!(build_recipe(&alone).unwrap_err().to_string().contains("needs --quantize"));
    }

    #[test]
    fn the_max_slowdown_flag_reaches_every_quantize_pass_and_is_checked() {
        let o = OptimizeOptions {
            quantize: Some(QuantizeMode::WeightInt4),
            max_slowdown: Some(1.25),
            ..Default::default()
        };
        let Pass::Quantize(q) = &build_recipe(&o).unwrap().passes[0] else { panic!() };
        assert_eq!(q.max_slowdown, Some(1.25));
        let alone = OptimizeOptions { max_slowdown: Some(1.25), ..Default::default() };
        assert!(build_recipe(&alone).unwrap_err().to_string().contains("needs --quantize"));
        let faster = OptimizeOptions { max_slowdown: Some(0.9), ..o };
        assert!(build_recipe(&faster).unwrap_err().to_string().contains("maxSlowdown 0.9"));
    }

    #[test]
    fn memory_budgets_read_as_kubernetes_quantities() {
        assert_eq!(parse_bytes("1000"), Ok(1000));
        assert_eq!(parse_bytes("512Mi"), Ok(512 << 20));
        assert_eq!(parse_bytes("4Gi"), Ok(4 << 30));
        assert_eq!(parse_bytes("8G"), Ok(8_000_000_000));
        assert!(parse_bytes("4GB").unwrap_err().to_string().contains("unknown size suffix"));
        assert!(parse_bytes("0").unwrap_err().to_string().contains("more than 0"));
        assert!(parse_bytes("99999999999Ti").unwrap_err().to_string().contains("2^64"));
        assert!(parse_bytes("Gi").unwrap_err().to_string().contains("not a byte count"));
    }
}
