//! Writes the ONNX test fixtures (and, with `--bench`, the larger models the
//! benchmarks use) from the Rust definitions in `tests/common/onnx_builder.rs`.
//!
//! ```text
//! cargo run --example make_models -- tests/fixtures          # the committed fixtures
//! cargo run --example make_models -- --bench target/bench    # mlp-4x1024.onnx (~16 MiB), resnet18-w16-32.onnx (~2.8 MiB),
//!                                                            # mlp-34mb.onnx (33.6 MB)
//! cargo run --example make_models -- --examples examples/digits   # the untrained "bad version"
//! ```

#[path = "../tests/common/onnx_builder.rs"]
mod onnx_builder;

fn main() -> std::io::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let bench = args.iter().any(|a| a == "--bench");
    let examples = args.iter().any(|a| a == "--examples");
    let dir =
        args.iter().find(|a| !a.starts_with("--")).map(String::as_str).unwrap_or("tests/fixtures");
    std::fs::create_dir_all(dir)?;
    let models = if bench {
        vec![
            ("mlp-4x1024.onnx", onnx_builder::mlp("mlp_4x1024", &[1024, 1024, 1024, 1024, 1024])),
            ("resnet18-w16-32.onnx", onnx_builder::resnet18("resnet18_w16_32", 16, 32)),
            // Issue 17's size request: every layer past tract's 4 MiB folding budget.
            ("mlp-34mb.onnx", onnx_builder::mlp("mlp_34mb", &[1024, 2048, 2048, 1024])),
        ]
    } else if examples {
        onnx_builder::examples()
    } else {
        onnx_builder::fixtures()
    };
    for (name, bytes) in models {
        let path = std::path::Path::new(dir).join(name);
        std::fs::write(&path, &bytes)?;
        println!("{} ({} bytes)", path.display(), bytes.len());
    }
    Ok(())
}
