//! The benchmark's fleet: N `ModelDeployment`s of five shapes over seven
//! namespaces, the edit that starts a canary on some of them, and the check
//! that each one holds what the controller should have made of it, so that
//! a run that reconciled nothing (or the wrong thing) fails instead of
//! printing figures.

use std::collections::BTreeMap;
use std::sync::Arc;

use http::{Method, StatusCode};
use serde_json::{Value, json};

use super::fake_api::{Control, DEPLOYMENTS, FakeApi, JOBS};

pub const MODEL_DEPLOYMENTS: &str = "tractor.dev/v1alpha1/modeldeployments";
const MODEL_VERSIONS: &str = "tractor.dev/v1alpha1/modelversions";
const SERVICES: &str = "v1/services";
const CONFIGMAPS: &str = "v1/configmaps";
const SECRETS: &str = "v1/secrets";
const AUTOSCALERS: &str = "autoscaling/v2/horizontalpodautoscalers";
const NAMESPACES: usize = 7;

/// What a `ModelDeployment` asks for, beyond a model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// Two replicas, no steps: a new version is promoted once ready.
    Plain,
    /// Two canary steps with pauses and an analysis.
    Steps,
    /// Steps, and an HPA per serving version.
    Autoscaled,
    /// Steps, batching, and input/output processing (a ConfigMap per version).
    Processing,
    /// Steps, and an optimization Job before each version serves.
    Optimized,
}

impl Shape {
    pub const ALL: [Shape; 5] =
        [Shape::Plain, Shape::Steps, Shape::Autoscaled, Shape::Processing, Shape::Optimized];

    pub fn name(self) -> &'static str {
        match self {
            Shape::Plain => "plain",
            Shape::Steps => "steps",
            Shape::Autoscaled => "autoscaled",
            Shape::Processing => "processing",
            Shape::Optimized => "optimized",
        }
    }
}

/// Three in ten plain, three with steps, two autoscaled, one with
/// processing, one optimized.
pub fn shape(i: usize) -> Shape {
    match i % 10 {
        0..=2 => Shape::Plain,
        3..=5 => Shape::Steps,
        6 | 7 => Shape::Autoscaled,
        8 => Shape::Processing,
        _ => Shape::Optimized,
    }
}

/// The second stage moves a quarter of those with steps to version 2.
pub fn gets_canary(i: usize) -> bool {
    shape(i) != Shape::Plain && (i / 10).is_multiple_of(4)
}

pub fn name(i: usize) -> String {
    format!("md-{i:04}")
}

pub fn namespace(i: usize) -> String {
    format!("team-{}", i % NAMESPACES)
}

fn source(i: usize, version: &str) -> Value {
    let uri = format!("s3://models/{}-v{version}.onnx", name(i));
    json!({ "uri": uri, "sha256": tractor::store::sha256_hex(uri.as_bytes()) })
}

/// The spec of the `i`th `ModelDeployment` at `version`.
pub fn spec(i: usize, version: &str) -> Value {
    let mut spec = json!({
        "model": { "name": format!("model-{}", i % 10), "version": version, "source": source(i, version) },
        "rollout": {
            "steps": [{ "weight": 10, "pause": "10m" }, { "weight": 50, "pause": "10m" }],
            "analysis": { "interval": "30s", "minRequests": 10, "maxErrorRate": 0.05,
                          "maxLatencyP99": "100ms", "failureLimit": 2 }
        }
    });
    match shape(i) {
        Shape::Plain => {
            spec["rollout"] = json!({ "steps": [] });
            spec["serving"] = json!({ "replicas": 2 });
        }
        Shape::Steps => {}
        Shape::Autoscaled => {
            spec["serving"] = json!({ "autoscaling":
                { "minReplicas": 2, "maxReplicas": 5, "targetInflight": 8 } });
        }
        Shape::Processing => {
            spec["serving"] = json!({
                "batching": { "maxBatchSize": 8, "maxBatchDelay": "2ms" },
                "processing": {
                    "inputs": [{ "name": "features", "features": { "fields": [
                        { "name": "age", "mean": 48.5, "std": 13.1 },
                        { "name": "bmi", "mean": 26.4, "std": 4.4 } ] } }],
                    "outputs": [{ "name": "target", "affine": { "scale": 77.0, "offset": 152.1 } }]
                }
            });
        }
        Shape::Optimized => spec["optimize"] = json!({ "passes": [{ "type": "fold" }] }),
    }
    spec
}

/// Creates the fleet at version 1, as `kubectl apply` of N files would.
pub fn create(api: &FakeApi, n: usize) {
    for i in 0..n {
        let md = json!({ "apiVersion": "tractor.dev/v1alpha1", "kind": "ModelDeployment",
            "metadata": { "name": name(i), "namespace": namespace(i) }, "spec": spec(i, "1") });
        api.put(MODEL_DEPLOYMENTS, &namespace(i), md);
    }
}

/// A fresh fake API with the fleet created in it, serving on a loopback
/// port until the runtime stops; and its URL.
///
/// # Errors
/// No loopback port to listen on.
pub async fn serve(n: usize) -> Result<(FakeApi, String), String> {
    let api = FakeApi::new(Some(control(n)));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.map_err(|e| e.to_string())?;
    let url = format!("http://{}", listener.local_addr().map_err(|e| e.to_string())?);
    tokio::spawn(api.clone().serve(listener));
    create(&api, n);
    Ok((api, url))
}

/// Asks for version 2 on those [`gets_canary`] picks; returns how many.
pub fn start_canaries(api: &FakeApi, n: usize) -> usize {
    let picked: Vec<usize> = (0..n).filter(|&i| gets_canary(i)).collect();
    for &i in &picked {
        let patch = json!({ "spec": spec(i, "2") });
        assert!(api.patch(MODEL_DEPLOYMENTS, &namespace(i), &name(i), &patch), "{}", name(i));
    }
    picked.len()
}

/// Which story the fleet is at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// Every one serving version 1.
    Deployed,
    /// Those [`gets_canary`] picks with version 2 at its first step (10%).
    Canary,
}

impl Stage {
    pub fn parse(s: &str) -> Option<Stage> {
        match s {
            "deployed" => Some(Stage::Deployed),
            "canary" => Some(Stage::Canary),
            _ => None,
        }
    }
}

/// What the `i`th one must show at `stage`: phase, canary, route weights.
fn expected(i: usize, stage: Stage) -> (&'static str, Option<u64>, BTreeMap<String, u64>) {
    if stage == Stage::Canary && gets_canary(i) {
        let weights = BTreeMap::from([("1".into(), 90), ("2".into(), 10)]);
        ("Progressing", Some(10), weights)
    } else {
        ("Succeeded", None, BTreeMap::from([("1".into(), 100)]))
    }
}

/// The quick half of [`check`]: how many status phases are not yet right.
pub fn phases_pending(api: &FakeApi, n: usize, stage: Stage) -> usize {
    (0..n)
        .filter(|&i| {
            let (phase, weight, _) = expected(i, stage);
            !api.read(MODEL_DEPLOYMENTS, &namespace(i), &name(i), |md| {
                md.is_some_and(|md| {
                    let status = &md["status"];
                    status["phase"] == phase
                        && status["stable"]["version"] == "1"
                        && status["canary"]["weight"].as_u64() == weight
                })
            })
        })
        .count()
}

/// Everything wrong with the fleet at `stage`, one line each (empty: all
/// reconciled): the status, and every object the controller owes each one.
pub fn check(api: &FakeApi, n: usize, stage: Stage) -> Vec<String> {
    let mut problems = vec![];
    for i in 0..n {
        check_one(api, i, stage, &mut problems);
    }
    problems
}

fn check_one(api: &FakeApi, i: usize, stage: Stage, problems: &mut Vec<String>) {
    let (ns, md) = (namespace(i), name(i));
    let (phase, weight, weights) = expected(i, stage);
    let mut problem =
        |what: String| problems.push(format!("{ns}/{md} ({}): {what}", shape(i).name()));
    let Some(uid) = api.read(MODEL_DEPLOYMENTS, &ns, &md, |o| {
        let status = &o?["status"];
        let seen = (
            status["phase"].clone(),
            status["stable"]["version"].clone(),
            status["canary"]["weight"].as_u64(),
        );
        if seen != (json!(phase), json!("1"), weight) {
            problem(format!("status {seen:?}, expected ({phase}, 1, {weight:?})"));
        }
        o?["metadata"]["uid"].as_str().map(str::to_string)
    }) else {
        return problem("the ModelDeployment is missing".into());
    };
    let present = |resource: &str, name: &str| api.read(resource, &ns, name, |o| o.is_some());
    let versions: Vec<&String> = weights.keys().collect();
    for version in &versions {
        let object = format!("{md}-v{version}");
        let owned = api.read(DEPLOYMENTS, &ns, &object, |d| {
            d.map(|d| {
                let ready = d["status"]["readyReplicas"].as_i64().unwrap_or(0) > 0;
                let labels = &d["metadata"]["labels"];
                let labelled = labels["tractor.dev/deployment"] == md.as_str()
                    && labels["tractor.dev/version"] == version.as_str();
                let owner = d["metadata"]["ownerReferences"][0]["uid"] == uid.as_str();
                ready && labelled && owner
            })
        });
        match owned {
            None => problem(format!("no Deployment {object}")),
            Some(false) => problem(format!("Deployment {object} not ready, labelled and owned")),
            Some(true) => {}
        }
        let wanted = [
            (SERVICES, object.clone(), true),
            (AUTOSCALERS, object.clone(), shape(i) == Shape::Autoscaled),
            (CONFIGMAPS, format!("{object}-processing"), shape(i) == Shape::Processing),
            (MODEL_VERSIONS, object.clone(), shape(i) == Shape::Optimized),
            (JOBS, format!("{md}-optimize-v{version}"), false),
        ];
        for (resource, name, wanted) in wanted {
            if present(resource, &name) != wanted {
                let kind = resource.rsplit('/').next().unwrap_or(resource);
                problem(format!("{kind} {name}: {}", if wanted { "missing" } else { "left over" }));
            }
        }
    }
    for (resource, name) in [
        (DEPLOYMENTS, md.clone()),
        (SERVICES, md.clone()),
        (SECRETS, format!("{md}-backend-token")),
    ] {
        if !present(resource, &name) {
            problem(format!("{resource} {name} missing"));
        }
    }
    let routes = api.read(CONFIGMAPS, &ns, &format!("{md}-routes"), |cm| {
        let table: Value = serde_json::from_str(cm?["data"]["routes.json"].as_str()?).ok()?;
        let backends = table["backends"].as_array()?;
        Some(
            backends
                .iter()
                .map(|b| {
                    (
                        b["version"].as_str().unwrap_or_default().to_string(),
                        b["weight"].as_u64().unwrap_or(0),
                    )
                })
                .collect::<BTreeMap<_, _>>(),
        )
    });
    if routes.as_ref() != Some(&weights) {
        problem(format!("routes {routes:?}, expected {weights:?}"));
    }
}

/// How many of the fleet's `n` have each shape, and how many get a canary.
pub fn census(n: usize) -> String {
    let mut parts: Vec<String> = Shape::ALL
        .iter()
        .map(|s| format!("{} {}", (0..n).filter(|&i| shape(i) == *s).count(), s.name()))
        .collect();
    parts.push(format!("{} canaries", (0..n).filter(|&i| gets_canary(i)).count()));
    parts.join(", ")
}

/// The `/bench/` paths a worker in another process uses: `check?stage=`,
/// `canary` (POST), `requests`.
pub fn control(n: usize) -> Control {
    Arc::new(move |api: &FakeApi, method: &Method, path: &str, query: &str| {
        let stage = url::form_urlencoded::parse(query.as_bytes())
            .find(|(k, _)| k == "stage")
            .and_then(|(_, v)| Stage::parse(&v));
        match (method, path, stage) {
            (&Method::GET, "check", Some(stage)) => {
                let problems = check(api, n, stage);
                (
                    StatusCode::OK,
                    json!({ "count": problems.len(), "first": problems.iter().take(10).collect::<Vec<_>>() }),
                )
            }
            (&Method::POST, "canary", _) => {
                (StatusCode::OK, json!({ "edited": start_canaries(api, n) }))
            }
            (&Method::GET, "requests", _) => (StatusCode::OK, json!(api.requests())),
            _ => (StatusCode::NOT_FOUND, json!({ "error": format!("no /bench/{path}") })),
        }
    })
}
