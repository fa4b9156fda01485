//! The tracing settings the operator hands on to the serving and router
//! pods it creates (docs/operator.md, "Traces").

use k8s_openapi::api::core::v1::EnvVar;

/// The operator's own `OTEL_*` variables its pods get as they are: where
/// spans go and how many are kept. `OTEL_SERVICE_NAME` is not among them:
/// each role gets its own ([`SERVE_SERVICE`], [`ROUTER_SERVICE`]).
pub const PASSED_ON: [&str; 5] = [
    "OTEL_EXPORTER_OTLP_ENDPOINT",
    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    "OTEL_TRACES_SAMPLER",
    "OTEL_TRACES_SAMPLER_ARG",
    "OTEL_RESOURCE_ATTRIBUTES",
];
/// `service.name` of the version pods' spans.
pub const SERVE_SERVICE: &str = "tractor-serve";
/// `service.name` of the router pods' spans.
pub const ROUTER_SERVICE: &str = "tractor-router";
/// The pods' filter when spans are exported: the request spans are debug
/// (off by default, as they cost the router CPU: `telemetry/requests.rs`).
pub const RUST_LOG_TRACING: &str = "info,tractor::requests=debug";

/// The `OTEL_*` settings of the operator, read once at start-up.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TracingConfig {
    /// The variables of [`PASSED_ON`] that are set and not empty, in that order.
    pub passed_on: Vec<(String, String)>,
}

impl TracingConfig {
    /// The settings `lookup` (the process's environment) has.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> TracingConfig {
        let passed_on = PASSED_ON
            .iter()
            .filter_map(|name| {
                let value = lookup(name)?;
                (!value.trim().is_empty()).then(|| (name.to_string(), value))
            })
            .collect();
        TracingConfig { passed_on }
    }

    /// Whether spans go anywhere: an endpoint is set.
    pub fn exports(&self) -> bool {
        self.passed_on.iter().any(|(name, _)| name.ends_with("_ENDPOINT"))
    }

    /// The environment of a pod whose spans are named `service`: nothing
    /// without an endpoint (the pods' environment stays as before).
    pub fn pod_env(&self, service: &str) -> Vec<EnvVar> {
        if !self.exports() {
            return Vec::new();
        }
        let var = |name: &str, value: &str| EnvVar {
            name: name.into(),
            value: Some(value.into()),
            ..EnvVar::default()
        };
        let mut env: Vec<EnvVar> =
            self.passed_on.iter().map(|(name, value)| var(name, value)).collect();
        env.push(var("OTEL_SERVICE_NAME", service));
        env.push(var("RUST_LOG", RUST_LOG_TRACING));
        env
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(pairs: &[(&str, &str)]) -> TracingConfig {
        TracingConfig::from_lookup(|name| {
            pairs.iter().find(|(n, _)| *n == name).map(|(_, v)| v.to_string())
        })
    }

    #[test]
    fn pods_get_tracing_only_with_an_endpoint() {
        let sampler_only = config(&[("OTEL_TRACES_SAMPLER", "always_on")]);
        assert!(sampler_only.pod_env(SERVE_SERVICE).is_empty());
        let on = config(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318"),
            ("OTEL_TRACES_SAMPLER", "parentbased_traceidratio"),
            ("OTEL_TRACES_SAMPLER_ARG", ""),
            ("OTEL_SERVICE_NAME", "tractor-operator"),
        ]);
        let env: Vec<(String, String)> = on
            .pod_env(ROUTER_SERVICE)
            .into_iter()
            .map(|e| (e.name, e.value.unwrap_or_default()))
            .collect();
        let names: Vec<&str> = env.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            names,
            ["OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_TRACES_SAMPLER", "OTEL_SERVICE_NAME", "RUST_LOG"],
            "empty values and the operator's own service name stay behind"
        );
        assert_eq!(env[2].1, ROUTER_SERVICE);
        assert_eq!(env[3].1, RUST_LOG_TRACING);
    }
}
