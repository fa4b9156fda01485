//! The committed ONNX fixtures are exactly what `examples/make_models.rs`
//! writes; regenerate with `cargo run --example make_models -- tests/fixtures`.

#[path = "common/onnx_builder.rs"]
mod onnx_builder;

#[test]
fn committed_fixtures_match_their_generator() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    for (name, bytes) in onnx_builder::fixtures() {
        let committed = std::fs::read(dir.join(name)).unwrap_or_else(|e| {
            panic!("{name}: {e}; run `cargo run --example make_models -- tests/fixtures`")
        });
        assert!(
            committed == bytes,
            "{name} drifted from tests/common/onnx_builder.rs; run `cargo run --example make_models -- tests/fixtures`"
        );
    }
}

#[test]
fn committed_examples_match_their_generator() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/digits");
    for (name, bytes) in onnx_builder::examples() {
        let committed = std::fs::read(dir.join(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(
            committed == bytes,
            "{name} drifted; run `cargo run --example make_models -- --examples examples/digits`"
        );
    }
}
