use std::collections::HashMap;

use super::testing::{mlp, two_convs};
use super::*;
use crate::crd::recipe::CalibrationMethod;

#[test]
fn skip_list_and_weight_stats() {
    let m = mlp();
    let (layers, skipped) = find_layers(graph::graph(&m).unwrap(), &["fc2".into()]);
    assert_eq!(layers.len(), 1);
    assert_eq!(skipped, vec![Skipped { node: "fc2".into(), reason: "listed in skip".into() }]);
    let q = rewrite(
        &m,
        &layers,
        &[Form::WeightInt8],
        &Settings { block: 32, int8_block: None, stochastic: false, seed: 0 },
    )
    .unwrap();
    let g = graph::graph(&q).unwrap();
    assert!(g.initializer.iter().any(|t| t.name == "w2" && t.data_type == graph::FLOAT));
    assert!(g.initializer.iter().any(|t| t.data_type == graph::INT8 && t.dims == vec![8, 4]));
}

#[test]
fn each_layer_left_fp32_is_reported_with_what_was_measured() {
    let timing = |form, ratio: [f64; 2]| FormTiming {
        form,
        us: [10.0 * ratio[0], 100.0 * ratio[1]],
        float_us: [10.0, 100.0],
        ratio,
        repeated: false,
    };
    let choice = |node: &str, form, measured| LayerChoice {
        node: node.into(),
        op: "MatMul".into(),
        form,
        measured,
        kept_because: None,
    };
    let choices = vec![
        choice("fc0", "int4-unpacked-split", vec![timing("int4-unpacked-split", [1.08, 1.02])]),
        choice(
            "fc1",
            "float",
            vec![timing("int4-unpacked", [1.31, 1.2]), timing("int4-nbits", [1.5, 0.9])],
        ),
        choice("fc2", "float", vec![timing("int4-unpacked", [1.0, 1.0])]),
    ];
    let paired = |r: [f64; 2]| WholeTiming {
        quantized_layers: 2,
        paired: Paired { float_us: [10.0, 100.0], us: [12.0, 100.0], ratio: r },
    };
    let check = WholeModelCheck {
        timings: vec![paired([1.2, 1.0]), paired([1.05, 1.0])],
        reverted: vec!["fc2".into()],
    };
    let floor = NoiseFloor::from_timings(Vec::new(), DEFAULT_MAX_SLOWDOWN);
    let kept = kept_float_reasons(&choices, &check, &floor);
    assert_eq!(kept.iter().map(|k| k.node.as_str()).collect::<Vec<_>>(), vec!["fc1", "fc2"]);
    assert_eq!(
        kept[0].reason,
        "every form measured slower than the 1.10x bound: int4-unpacked 1.31x at batch 1, \
             1.20x at batch 32; int4-nbits 1.50x at batch 1, 0.90x at batch 32"
    );
    assert_eq!(
        kept[1].reason,
        "put back by the whole-model check: the model measured 1.20x at batch 1, 1.00x at \
             batch 32 against fp32, over the 1.10x bound"
    );
}

#[test]
fn the_bound_decides_which_layers_convert() {
    // One layer 8% slower, one 15%: the default 1.10 converts the first
    // (the old 3% limit kept both fp32), a 1.20 bound both.
    struct Fixed(Vec<[f64; 2]>);
    impl Timer for Fixed {
        fn compare(&mut self, forms: &[Form], _: std::time::Duration) -> Result<Paired, PassError> {
            let mut ratio = [1.0; 2];
            for i in (0..forms.len()).filter(|i| forms[*i] != Form::Float) {
                ratio = [ratio[0] + self.0[i][0] - 1.0, ratio[1] + self.0[i][1] - 1.0];
            }
            Ok(Paired { float_us: [1.0; 2], us: ratio, ratio })
        }
    }
    for (bound, expected) in [
        (DEFAULT_MAX_SLOWDOWN, vec![Form::Int4Unpacked, Form::Float]),
        (1.2, vec![Form::Int4Unpacked, Form::Int4Unpacked]),
    ] {
        let mut timer = Fixed(vec![[1.08, 1.0], [1.0, 1.15]]);
        let floor = NoiseFloor::measure(2, bound, &mut timer).unwrap();
        let forms: Vec<Form> = (0..2)
            .map(|i| choose_layer(i, 2, &[Form::Int4Unpacked], &floor, &mut timer).unwrap().0)
            .collect();
        assert_eq!(forms, expected, "bound {bound}");
    }
}

#[test]
fn weights_with_wrapping_or_empty_dims_never_size_a_buffer() {
    // Issue 11: [2^32, 2^32] wraps to 0 elements in 64 bits and used to
    // match the empty data, then size 16 GiB per-channel buffers; a
    // zero dimension leaves the other one free the same way.
    for dims in [vec![1i64 << 32, 1 << 32], vec![0, 1 << 40]] {
        let mut m = mlp();
        let w2 = graph::graph_mut(&mut m).unwrap().initializer.iter_mut().find(|t| t.name == "w2");
        let w2 = w2.unwrap();
        w2.dims = dims.clone();
        w2.raw_data.clear();
        let (layers, skipped) = find_layers(graph::graph(&m).unwrap(), &[]);
        assert_eq!(
            layers.iter().map(|l| l.node.as_str()).collect::<Vec<_>>(),
            vec!["fc1"],
            "{dims:?}"
        );
        assert!(skipped.iter().all(|s| s.node == "fc2"), "{skipped:?}");
    }
}

/// The models the pass writes, pinned byte for byte: a restructuring
/// of this module must not change a single byte of any form.
#[test]
fn written_models_are_pinned_byte_for_byte() {
    use sha2::Digest;
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/models");
    let read = |f: &str| std::fs::read(dir.join(f)).unwrap();
    let recipe = |mode, block_size, stochastic| Quantize {
        mode,
        block_size,
        stochastic,
        seed: 5,
        calibration_method: CalibrationMethod::Minmax,
        calibration: None,
        fallback: true,
        skip: Vec::new(),
        max_slowdown: None,
    };
    let mut lines = Vec::new();
    for (file, calibration) in [
        ("digits-mlp-v1.onnx", "digits-calibration.npz"),
        ("digits-cnn.onnx", "digits-calibration-images.npz"),
    ] {
        let m = graph::decode(&read(file)).unwrap();
        let ctx = Context {
            calibration: Some(
                super::super::Dataset::parse(calibration, &read(calibration)).unwrap(),
            ),
            validation: None,
            models: HashMap::new(),
            measure: false,
            memory_budget: None,
        };
        let mut recipes = Vec::new();
        for mode in [
            QuantizeMode::WeightInt8,
            QuantizeMode::DynamicInt8,
            QuantizeMode::StaticInt8,
            QuantizeMode::WeightInt4,
        ] {
            recipes.push(recipe(mode, None, false));
            recipes.push(recipe(mode, Some(16), true));
        }
        let mut nbits = recipe(QuantizeMode::WeightInt4, None, false);
        nbits.fallback = false;
        recipes.push(nbits);
        let mut entropy = recipe(QuantizeMode::StaticInt8, None, false);
        entropy.calibration_method = CalibrationMethod::Entropy;
        recipes.push(entropy);
        for q in &recipes {
            let (out, _) = quantize(&m, q, &ctx).unwrap();
            let sha = hex::encode(sha2::Sha256::digest(graph::encode(&out)));
            lines.push(format!(
                "{file} {:?} {:?} stochastic={} fallback={} {:?}: {sha}",
                q.mode, q.block_size, q.stochastic, q.fallback, q.calibration_method
            ));
        }
        let (layers, _) = find_layers(graph::graph(&m).unwrap(), &[]);
        let settings = Settings { block: 32, int8_block: Some(16), stochastic: false, seed: 0 };
        let forms: &[Form] = if file.contains("cnn") {
            &[Form::WeightInt8Block]
        } else {
            &[Form::WeightInt8Block, Form::WeightInt8Split]
        };
        for form in forms {
            let out = rewrite(&m, &layers, &vec![*form; layers.len()], &settings).unwrap();
            let sha = hex::encode(sha2::Sha256::digest(graph::encode(&out)));
            lines.push(format!("{file} {form:?}: {sha}"));
        }
    }
    // The synthetic graphs reach every bias tail: Gemm with transB, a
    // bias and beta 0.5 (the Mul), and Convs with and without a bias.
    let mut beta = mlp();
    let gemm = &mut graph::graph_mut(&mut beta).unwrap().node[0];
    gemm.attribute.push(graph::float_attr("beta", 0.5));
    let convs = two_convs();
    let static_form = uint8_params(-1.0, 2.0);
    let dense = [
        Form::WeightInt8,
        Form::WeightInt8Block,
        Form::WeightInt8Split,
        Form::DynamicInt8,
        static_form,
        Form::Int4Unpacked,
        Form::Int4NBits,
    ];
    let conv_forms = [
        Form::WeightInt8,
        Form::WeightInt8Block,
        Form::DynamicInt8,
        static_form,
        Form::Int4Unpacked,
    ];
    for (label, m, forms) in
        [("mlp", mlp(), &dense[..]), ("beta", beta, &dense[..]), ("conv", convs, &conv_forms[..])]
    {
        let (layers, _) = find_layers(graph::graph(&m).unwrap(), &[]);
        for (int8_block, stochastic) in [(None, false), (Some(16), true)] {
            let settings = Settings { block: 16, int8_block, stochastic, seed: 11 };
            for form in forms {
                let out = rewrite(&m, &layers, &vec![*form; layers.len()], &settings).unwrap();
                let sha = hex::encode(sha2::Sha256::digest(graph::encode(&out)));
                lines.push(format!("{label} {form:?} {int8_block:?} {stochastic}: {sha}"));
            }
        }
    }
    let got = lines.join("\n");
    assert_eq!(got, PINNED.trim(), "\n{got}");
}

const PINNED: &str = "
digits-mlp-v1.onnx WeightInt8 None stochastic=false fallback=true Minmax: 1ef966acaa73c319c3435b75a6880652fb65394a4bce9279734b60908f284610
digits-mlp-v1.onnx WeightInt8 Some(16) stochastic=true fallback=true Minmax: 8851926b78f5498295225a2c21b656e8599915a481eb92ea8ddc9077cd5641ea
digits-mlp-v1.onnx DynamicInt8 None stochastic=false fallback=true Minmax: 41802f2f384d6b9220356599b6185d249cdd54bc2989784a798a823eb64a97c4
digits-mlp-v1.onnx DynamicInt8 Some(16) stochastic=true fallback=true Minmax: 672d9e5b3458326cb2ee4550abdb5526caf4382c076e1bb6550162c79f3188cd
digits-mlp-v1.onnx StaticInt8 None stochastic=false fallback=true Minmax: cec7ce6eec37b2357365a9942ff15786bb05713a24f11aeb79c092100e27544c
digits-mlp-v1.onnx StaticInt8 Some(16) stochastic=true fallback=true Minmax: 0eb90f4ef9fdcd7dac6fac5eb8d0409aa3f947a8b87996b83f95ca4d1a44b9e1
digits-mlp-v1.onnx WeightInt4 None stochastic=false fallback=true Minmax: 3995bb541a6e108fc00f6b925bb0e9bb3ac3f8229b344502c8962b0f1af9d1fd
digits-mlp-v1.onnx WeightInt4 Some(16) stochastic=true fallback=true Minmax: f240ac258e6b95e190dccc3d083b2c8a788c87194c8b624912adbaf5909412ba
digits-mlp-v1.onnx WeightInt4 None stochastic=false fallback=false Minmax: 41622e369a046c1db5b61a0f2ba236cd5074da750c981c79ac90d9c205650738
digits-mlp-v1.onnx StaticInt8 None stochastic=false fallback=true Entropy: 9308c5e3dccdaaa34c6befeb6664e6cef65165854dccff8236750f53c634b25b
digits-mlp-v1.onnx WeightInt8Block: c9355de332b4cbddc07506163c9c808c6a1cf3f1410334cc6e0f90cf12b57c13
digits-mlp-v1.onnx WeightInt8Split: aa635c4d5d7f60826165a225362f724f2bf912025ae0070584eab38b70de1653
digits-cnn.onnx WeightInt8 None stochastic=false fallback=true Minmax: 01f46afb5cdb94565b5276810f1712b83f373a8ffd5c637228eeb48670194685
digits-cnn.onnx WeightInt8 Some(16) stochastic=true fallback=true Minmax: 6863dc9f2f66c55c8a81473ada9f411fb215de204f9a9f8fb78512d3ebd8afb9
digits-cnn.onnx DynamicInt8 None stochastic=false fallback=true Minmax: ac2eaf926587169e73b52d77d5a999c99b1e2c6285c029caa6c80d280d3b1df8
digits-cnn.onnx DynamicInt8 Some(16) stochastic=true fallback=true Minmax: c37074fa4c37771c8dc5adb923d9807d78adfc73f31b7ff0d91d54cb2b883f91
digits-cnn.onnx StaticInt8 None stochastic=false fallback=true Minmax: ea01bdd1b3014bcb8ad6a7393cf4392b2b3941f783763196b950ca4f9e417e64
digits-cnn.onnx StaticInt8 Some(16) stochastic=true fallback=true Minmax: 819cb2b7d6dece43d48cc746cfbbedd55b68efeb7befbc6ff575bce37f36f22b
digits-cnn.onnx WeightInt4 None stochastic=false fallback=true Minmax: a6c1a275a43b344d336acc364ac3224982b2f87afe5e24eede09ec19a41539ae
digits-cnn.onnx WeightInt4 Some(16) stochastic=true fallback=true Minmax: a8d33112ae7959a0566fa336c36d8a3407cc480100e8c20079ceb468d936d889
digits-cnn.onnx WeightInt4 None stochastic=false fallback=false Minmax: aa59e408f380c76e71e9d0d0539bc4274db9c089341d1f223ee31ea3c8bbf5cc
digits-cnn.onnx StaticInt8 None stochastic=false fallback=true Entropy: 5ce4ae87b990d0d727fdef78bee1f713bffd13304c877438be5ed2f8f128ed6d
digits-cnn.onnx WeightInt8Block: b84cdb505c29cd5e8b35f9bdf4b9a6c67fa5741a85e2c826e56def5448038c65
mlp WeightInt8 None false: efa3514a8c4dd5a5b5b52a0a4e3c1ce798ba69a18d33f5e800e317e2ec8e0faa
mlp WeightInt8Block None false: 651c3b0ad4c9653c0513222e99023d0dfb6d72ac9757e3ff23de884c1c0e7639
mlp WeightInt8Split None false: 1c1ae8ef56bc588e1685b75f4d4c658440ff2c7d33d4297666ba8a366f087150
mlp DynamicInt8 None false: fcf362defeab33366393a58810c31d99d12bc8395d5759207ef47d5d656648cf
mlp StaticInt8 { scale: 0.011764706, zero_point: 85 } None false: 02a97197642e7dd07486904f7224e882ed79151716621ba9e583282e6487d21b
mlp Int4Unpacked None false: f6135961221e4dd20cca0c4cc0fa2bbda43f68f989ddd30b403bac2d0b17c00e
mlp Int4NBits None false: dd9135cc477b02223b4ab77dc78832d7924338c54cc392b8baf930f8fa258a63
mlp WeightInt8 Some(16) true: 4a9f0101cb25d09ae4079147092465cb87b5db83993c2accb84bc4d8d522f397
mlp WeightInt8Block Some(16) true: 779d65beac86d980933d6168492b8bff21b01463d1b78c1f027f60840b9d5cc6
mlp WeightInt8Split Some(16) true: 268d9b65878b36794ce184fb33d0120bdc7a5ccd86dcbf404dd08f8b9628007c
mlp DynamicInt8 Some(16) true: a6593b0580fab57045a397d047f99eec1eb583d68cb7441192b23872bab6a9ab
mlp StaticInt8 { scale: 0.011764706, zero_point: 85 } Some(16) true: 2e1f3980727f2ea86325fd76f2a313bb72635f13efeddeee8861180e2b814d8d
mlp Int4Unpacked Some(16) true: 2733918f055a0ec5465d51873ad9b46b6142fce8a1993ca263bd16f2dd0db82e
mlp Int4NBits Some(16) true: 83cd12f565233f0351c2cab418c084679fbe380a21d13e74090add14e4868089
beta WeightInt8 None false: 191ed091ce72c12f42e8bc5fb013fb5b72753382d4bf9da1379faa776d2109f3
beta WeightInt8Block None false: 78b8b093b878b47114a35fcc53198d3fbd189796b585a5d81edb52baa48d8895
beta WeightInt8Split None false: 708c2f75060bbb994fca1d753a2934e788659b80038792ba46520146d3ec742f
beta DynamicInt8 None false: e400cfefce929a2eb7833a031e6a1c0acddf199c5eccbd05711a2b4c4a7a5be5
beta StaticInt8 { scale: 0.011764706, zero_point: 85 } None false: 0b6ce066ef6702f5b5773c0fe7e4c45ed76cd5d8eaa46f9b57cb504d937ae8ab
beta Int4Unpacked None false: 84c833a412e592fce5e67b6f3e8c2749fa7a41f87003aa62e522af85690e8734
beta Int4NBits None false: b1d2b2f78e8e70f8bb10719eea44cf75c2d1e49beda67f8027934031e66d627b
beta WeightInt8 Some(16) true: 7ece7a8a15a2067f5f05f8f6da68e4c7ebcb8c56936c793fc1a623e76aee421d
beta WeightInt8Block Some(16) true: be138ba4e0738c7682834f25713c9bbbc89f54ed1d4783b37bc2e465e3e6294b
beta WeightInt8Split Some(16) true: 9ce94d84b8866570a1a007cd18e49b7fcd31729e4ec223f57ee4f98eaa6ee0df
beta DynamicInt8 Some(16) true: 4e2197b262efe780684501d516926b140036981289082b16a7200f144f219344
beta StaticInt8 { scale: 0.011764706, zero_point: 85 } Some(16) true: 632d11c19ff4b6968266856012d7afee44783e52dfba3d2949765bae57974813
beta Int4Unpacked Some(16) true: adba3878e6372aeb95ba98b0eb80ac76d692d33922ae6c5ec81224f81d67cfe4
beta Int4NBits Some(16) true: 00b3b0ccca5ffb1507f269323e8674868ea81ad00ae54fcf94c82c9c6b71ef15
conv WeightInt8 None false: 5312f0a6d33f7eca8e26b9abadba25cacdb80936e42a2607e8d17f5bf0e1bd07
conv WeightInt8Block None false: fd0c311219c7593d5986760e5f7d705f07ec1bbce8e4733badae8667beed7abc
conv DynamicInt8 None false: ccb407522ecabef186048b9461dbb187285ff2cab1fe0a99ce72c949ea28829e
conv StaticInt8 { scale: 0.011764706, zero_point: 85 } None false: 38557758a65dd2ed48b6ea4c9c5ea1f3be4217788acd63bb6f1ec331d741cd62
conv Int4Unpacked None false: f92aa11ab230fe7ca9f3b2f9d00097235ef338ef3e586887cb842acd6981892d
conv WeightInt8 Some(16) true: 50bf4c700ec8e5027f6ad0633d83c6c04f3238af6514f3c6540a5c83c2c66f03
conv WeightInt8Block Some(16) true: 1a41f8f62fbd3183dcc4289d10a32fbe65d6141e6887ba83af6c66d99f27487d
conv DynamicInt8 Some(16) true: b561b18e886b29c5e79e1a53f32c37a13e7f44fdb19c460caea6948c5d22210e
conv StaticInt8 { scale: 0.011764706, zero_point: 85 } Some(16) true: 7e4208b904bc60e8ed5901e76293ea30f068df4271d72d995cdde29affa217f0
conv Int4Unpacked Some(16) true: 443c1eff7389b3ce6a2ff7afec50f5ca35d73093d5df8be85ea823cf21f1870d
";
