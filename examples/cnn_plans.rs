//! Where a convolutional network's batch time goes in tract (issue 17):
//! the same model planned several ways, each timed at batch 1 and a larger
//! batch, on one thread and on a pool of threads.
//!
//! usage: cargo run --release --example cnn_plans -- MODEL.onnx [BATCH, default 32] [THREADS, default 2]
//!        cargo run --release --example cnn_plans -- --ops MODEL.onnx [BATCH] [THREADS]
//!
//! With `--ops`, the time of each kind of op instead (summed over the
//! nodes, median run of each plan), one thread and THREADS threads.
//!
//! Plans: the batch axis symbolic (what tractor loads for any batch), the
//! batch fixed to BATCH, and the batch fixed to 1 run once per image (in
//! turn, or across THREADS threads with a state each). tract 0.23 gives a
//! 3x3 convolution lazy im2col (the patches read in place by the matrix
//! product) only when the batch is 1 and known (`should_use_lazy` in
//! tract-core's `conv.rs`); any other batch materializes every image's
//! patches first. In release only: tract's run loop is generic and built in
//! the calling crate.

use std::time::{Duration, Instant};

use tract_onnx::prelude::*;
use tract_onnx::tract_hir::internal::DimLike;
use tract_onnx::tract_hir::internal::tract_linalg::multithread::Executor;

/// Median ms of `f` over about `secs` seconds, after warm-up runs.
fn median_ms(secs: f64, mut f: impl FnMut()) -> f64 {
    for _ in 0..3 {
        f();
    }
    let mut times = Vec::new();
    let start = Instant::now();
    while times.len() < 5
        || (start.elapsed() < Duration::from_secs_f64(secs) && times.len() < 10_000)
    {
        let t = Instant::now();
        f();
        times.push(t.elapsed().as_secs_f64() * 1e3);
    }
    times.sort_by(f64::total_cmp);
    times[times.len() / 2]
}

type Plan = Arc<TypedSimplePlan>;

fn plan(bytes: &[u8], batch: Option<usize>, threads: usize) -> TractResult<Plan> {
    let mut m = tract_onnx::onnx().model_for_read(&mut &*bytes)?.into_typed()?;
    if let Some(b) = batch {
        let n = m.symbols.sym("N");
        m = m.set_symbols(&std::collections::HashMap::from([(n, TDim::Val(b as i64))]))?;
    }
    let options = RunOptions {
        executor: (threads > 1).then(|| Executor::multithread(threads)),
        ..RunOptions::default()
    };
    m.into_decluttered()?.into_optimized()?.into_runnable_with_options(&options)
}

fn input(shape: &[usize]) -> TValue {
    let n: usize = shape.iter().product();
    let data: Vec<f32> = (0..n).map(|i| ((i * 7919) % 1000) as f32 / 1000.0).collect();
    tract_ndarray::ArrayD::from_shape_vec(shape, data).expect("shape").into_tensor().into_tvalue()
}

/// Per op name, the ms it took in the median of `runs` runs of `plan`
/// on `x`, run `times` times in a row per measured run.
fn op_times(plan: &Plan, xs: &[TValue], runs: usize) -> TractResult<Vec<(String, f64)>> {
    let mut state = plan.spawn()?;
    let mut per_run: Vec<(f64, std::collections::BTreeMap<String, f64>)> = Vec::new();
    for r in 0..runs + 2 {
        let mut ops = std::collections::BTreeMap::<String, f64>::new();
        let start = Instant::now();
        for x in xs {
            state.run_plan_with_eval(tvec![x.clone()], |ctx, op_state, node, inputs| {
                let t = Instant::now();
                let out = tract_onnx::tract_core::plan::eval(ctx, op_state, node, inputs);
                *ops.entry(node.op().name().to_string()).or_default() +=
                    t.elapsed().as_secs_f64() * 1e3;
                out
            })?;
        }
        if r >= 2 {
            per_run.push((start.elapsed().as_secs_f64() * 1e3, ops));
        }
    }
    per_run.sort_by(|a, b| a.0.total_cmp(&b.0));
    let (total, ops) = per_run.swap_remove(per_run.len() / 2);
    let mut ops: Vec<(String, f64)> = ops.into_iter().collect();
    ops.sort_by(|a, b| b.1.total_cmp(&a.1));
    ops.insert(0, ("(whole run)".into(), total));
    Ok(ops)
}

fn ops_report(
    bytes: &[u8],
    shape: &dyn Fn(usize) -> Vec<usize>,
    batch: usize,
    pool: usize,
) -> TractResult<()> {
    println!("| plan | threads | op | ms |");
    println!("|---|---|---|---|");
    for threads in [1, pool] {
        let cases = [
            ("batch symbolic", plan(bytes, None, threads)?, vec![input(&shape(batch))]),
            (
                "batch fixed to 1, image by image",
                plan(bytes, Some(1), threads)?,
                (0..batch).map(|_| input(&shape(1))).collect(),
            ),
        ];
        for (name, p, xs) in cases {
            for (op, ms) in op_times(&p, &xs, 7)?.into_iter().take(7) {
                println!("| {name}, batch {batch} | {threads} | {op} | {ms:.3} |");
            }
        }
    }
    Ok(())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let ops = args.first().map(String::as_str) == Some("--ops");
    if ops {
        args.remove(0);
    }
    let path = args.first().ok_or("usage: cnn_plans MODEL.onnx [BATCH] [THREADS]")?;
    let batch: usize = args.get(1).map(|s| s.parse()).transpose()?.unwrap_or(32);
    let pool: usize = args.get(2).map(|s| s.parse()).transpose()?.unwrap_or(2);
    let bytes = std::fs::read(path)?;
    let probe = tract_onnx::onnx().model_for_read(&mut &*bytes)?.into_typed()?;
    let fact = probe.input_fact(0)?;
    let image: Vec<usize> =
        fact.shape.iter().skip(1).map(|d| d.to_usize()).collect::<Result<_, _>>()?;
    let shape = |b: usize| [vec![b], image.clone()].concat();
    if ops {
        return Ok(ops_report(&bytes, &shape, batch, pool)?);
    }
    let (one, many) = (input(&shape(1)), input(&shape(batch)));
    println!("| plan | threads | batch 1 ms | batch {batch} ms | batch {batch} per image ms |");
    println!("|---|---|---|---|---|");
    for threads in [1, pool] {
        let symbolic = plan(&bytes, None, threads)?;
        let mut s = symbolic.spawn()?;
        let a1 = median_ms(2.0, || {
            s.run(tvec![one.clone()]).expect("runs");
        });
        let ab = median_ms(3.0, || {
            s.run(tvec![many.clone()]).expect("runs");
        });
        println!("| batch symbolic | {threads} | {a1:.3} | {ab:.3} | {:.3} |", ab / batch as f64);
        let fixed = plan(&bytes, Some(batch), threads)?;
        let mut s = fixed.spawn()?;
        let fb = median_ms(3.0, || {
            s.run(tvec![many.clone()]).expect("runs");
        });
        println!("| batch fixed to {batch} | {threads} | - | {fb:.3} | {:.3} |", fb / batch as f64);
        let single = plan(&bytes, Some(1), threads)?;
        let mut s = single.spawn()?;
        let s1 = median_ms(2.0, || {
            s.run(tvec![one.clone()]).expect("runs");
        });
        let images: Vec<TValue> = (0..batch).map(|_| input(&shape(1))).collect();
        let sb = median_ms(3.0, || {
            for x in &images {
                s.run(tvec![x.clone()]).expect("runs");
            }
        });
        println!(
            "| batch fixed to 1, image by image | {threads} | {s1:.3} | {sb:.3} | {:.3} |",
            sb / batch as f64
        );
    }
    // One batch-1 plan on one thread each, the images shared out.
    let single = plan(&bytes, Some(1), 1)?;
    let images: Vec<TValue> = (0..batch).map(|_| input(&shape(1))).collect();
    let mut states: Vec<_> = (0..pool).map(|_| single.spawn()).collect::<TractResult<_>>()?;
    let split = median_ms(3.0, || {
        std::thread::scope(|scope| {
            for (w, state) in states.iter_mut().enumerate() {
                let images = &images;
                scope.spawn(move || {
                    for x in images.iter().skip(w).step_by(pool) {
                        state.run(tvec![x.clone()]).expect("runs");
                    }
                });
            }
        });
    });
    println!(
        "| batch fixed to 1, images split over {pool} threads | {pool}x1 | - | {split:.3} | {:.3} |",
        split / batch as f64
    );
    Ok(())
}
