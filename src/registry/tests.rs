//! The registry against a local folder, with the repository's models.
//! `tests/registry.rs` runs the command line against a folder and S3.

use super::*;

fn model(name: &str) -> Bytes {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/models").join(name);
    Bytes::from(std::fs::read(path).unwrap())
}

fn push(name: &str, version: &str, file: &str) -> Push {
    Push {
        name: name.into(),
        version: version.into(),
        model: model(file),
        file_name: file.into(),
        parent: None,
        metrics: BTreeMap::new(),
        recipe: None,
        recipients: Vec::new(),
        pushed_by: "test".into(),
    }
}

#[tokio::test]
async fn versions_are_immutable_and_aliases_move() {
    let dir = tempfile::tempdir().unwrap();
    let registry = Registry::open(dir.path().to_str().unwrap()).unwrap();
    let Pushed::Created(v1) =
        registry.push(push("digits", "1", "digits-mlp-v1.onnx")).await.unwrap()
    else {
        panic!("not created")
    };
    assert_eq!(
        v1.inputs,
        [TensorSignature { name: "input".into(), datatype: "FP32".into(), shape: vec![-1, 64] }]
    );
    assert!(v1.parameters.unwrap() > 1000 && v1.operators.unwrap() > 0, "{v1:?}");
    let again = registry.push(push("digits", "1", "digits-mlp-v1.onnx")).await.unwrap();
    assert!(matches!(again, Pushed::Unchanged(_)));
    let other = registry.push(push("digits", "1", "digits-mlp-v2.onnx")).await.unwrap_err();
    assert_eq!(other.kind(), "version_exists", "{other}");

    let mut second = push("digits", "2", "digits-mlp-v2.onnx");
    second.parent = Some("digits@1".parse().unwrap());
    second.metrics = parse_metrics(r#"{"accuracy": 0.978}"#).unwrap();
    let v2 = registry.push(second).await.unwrap().manifest().clone();
    assert_eq!(v2.parent.as_ref().unwrap().digest, v1.digest);

    let (alias, before) =
        registry.tag(&"digits@1".parse().unwrap(), "champion", "t").await.unwrap();
    assert_eq!((alias.version.as_str(), before), ("1", None));
    let (_, before) = registry.tag(&"digits@2".parse().unwrap(), "champion", "t").await.unwrap();
    assert_eq!(before.as_deref(), Some("1"));
    let champion = registry.resolve(&"digits@champion".parse().unwrap()).await.unwrap();
    assert_eq!(champion.version, "2");
    let taken = registry.tag(&"digits@1".parse().unwrap(), "2", "t").await.unwrap_err();
    assert_eq!(taken.kind(), "name_taken");
    let taken = registry.push(push("digits", "champion", "digits-mlp-v1.onnx")).await.unwrap_err();
    assert_eq!(taken.kind(), "name_taken");

    let listed = registry.list(None).await.unwrap();
    assert_eq!(listed.iter().map(|m| m.reference()).collect::<Vec<_>>(), ["digits@1", "digits@2"]);
    let (m, bytes) = registry.pull(&"digits@champion".parse().unwrap()).await.unwrap();
    assert_eq!(store::sha256_hex(&bytes), m.digest);

    let rows = diff(&v1, &v2);
    let accuracy = rows.iter().find(|r| r.field == "accuracy").unwrap();
    assert_eq!((accuracy.a.as_str(), accuracy.b.as_str()), ("-", "0.978"));
    assert!(rows.iter().find(|r| r.field == "inputs").unwrap().same());
    let mv = v2.model_version(&registry.blob_uri(&v2.stored.sha256), Some("ml"), Some("digits"));
    assert_eq!(mv.spec.artifact.sha256, v2.stored.sha256);
    assert_eq!(mv.spec.metrics.summary.as_deref(), Some("accuracy=0.9780"));
    assert_eq!(mv.spec.parent, Some(format!("sha256:{}", v1.digest)));
}

#[tokio::test]
async fn damaged_and_oversized_objects_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let registry = Registry::open(dir.path().to_str().unwrap()).unwrap();
    let m =
        registry.push(push("digits", "1", "digits-mlp-v1.onnx")).await.unwrap().manifest().clone();
    let blob = dir.path().join("blobs/sha256").join(&m.stored.sha256);
    let mut bytes = std::fs::read(&blob).unwrap();
    bytes[100] ^= 1;
    std::fs::write(&blob, &bytes).unwrap();
    let err = registry.pull(&"digits@1".parse().unwrap()).await.unwrap_err();
    assert_eq!(err.kind(), "digest_mismatch", "{err}");
    bytes.push(0);
    std::fs::write(&blob, &bytes).unwrap();
    let err = registry.pull(&"digits@1".parse().unwrap()).await.unwrap_err();
    assert_eq!(err.kind(), "digest_mismatch", "{err}");

    let manifest = dir.path().join("models/digits/versions/1.json");
    std::fs::write(&manifest, vec![b' '; (MAX_MANIFEST_BYTES + 1) as usize]).unwrap();
    let err = registry.resolve(&"digits@1".parse().unwrap()).await.unwrap_err();
    assert_eq!(err.kind(), "bad_manifest", "{err}");
    std::fs::write(&manifest, b"{\"apiVersion\": 3}").unwrap();
    let err = registry.resolve(&"digits@1".parse().unwrap()).await.unwrap_err();
    assert_eq!(err.kind(), "bad_manifest", "{err}");
    // One damaged manifest does not hide the others.
    registry.push(push("digits", "2", "digits-mlp-v2.onnx")).await.unwrap();
    assert_eq!(registry.list(Some("digits")).await.unwrap().len(), 1);

    let mut not_a_model = push("x", "1", "digits-mlp-v1.onnx");
    not_a_model.model = Bytes::from_static(b"not a model");
    assert_eq!(registry.push(not_a_model).await.unwrap_err().kind(), "read_model");
}

#[test]
fn metrics_are_bounded_finite_numbers() {
    assert_eq!(parse_metrics(r#"{"accuracy": 0.9, "latencyMs": 3}"#).unwrap().len(), 2);
    for bad in ["[1]", r#"{"a": "x"}"#, r#"{"a b": 1}"#, r#"{"": 1}"#, "{", r#"{"a": 1e999}"#] {
        assert!(parse_metrics(bad).is_err(), "{bad}");
    }
    let many: Vec<String> = (0..=MAX_METRICS).map(|i| format!("\"m{i}\": 1")).collect();
    assert!(parse_metrics(&format!("{{{}}}", many.join(","))).is_err());
    assert!("sha256:abc".parse::<ParentRef>().is_err());
    assert!(matches!(format!("sha256:{}", "a".repeat(64)).parse(), Ok(ParentRef::Digest(_))));
}
