//! The packaging's files as the packaging tests read them: the repository
//! root, and the operator's ClusterRole from `deploy/rbac.yaml`.

use std::path::{Path, PathBuf};

use k8s_openapi::api::rbac::v1::{ClusterRole, PolicyRule};
use serde_json::Value;

pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

/// The rules of the operator's ClusterRole, from deploy/rbac.yaml (which
/// .ci/manifests.sh keeps equal to what the chart renders).
pub fn operator_rules() -> Vec<PolicyRule> {
    let text = read(&root().join("deploy/rbac.yaml"));
    let role = text
        .split("\n---\n")
        .filter_map(|doc| serde_saphyr::from_str::<Value>(doc).ok())
        .find(|doc| doc["kind"] == "ClusterRole")
        .expect("a ClusterRole in deploy/rbac.yaml");
    let role: ClusterRole = serde_json::from_value(role).unwrap();
    role.rules.unwrap_or_default()
}

/// Whether a rule without resource names grants `verb` on `group/resource`.
pub fn allows(rules: &[PolicyRule], group: &str, resource: &str, verb: &str) -> bool {
    rules.iter().any(|rule| {
        rule.resource_names.is_none()
            && rule.api_groups.iter().flatten().any(|g| g == group || g == "*")
            && rule.resources.iter().flatten().any(|r| r == resource || r == "*")
            && rule.verbs.iter().any(|v| v == verb || v == "*")
    })
}
