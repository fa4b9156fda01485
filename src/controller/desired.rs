//! What a plan asks the cluster to hold: typed objects, in the order they
//! are written. The reconcile writes them ([`write`]); `tractor render`
//! prints them. One list for both, so a review of the render is a review
//! of what the controller will do.

use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ConfigMap, Secret, Service, ServiceAccount};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use kube::api::{Api, Patch, PostParams};
use kube::{Client, Resource, ResourceExt};
use serde::Serialize;

use super::{Error, FIELD_MANAGER, OperatorConfig, access, apply_params, objects};
use crate::crd::{ModelDeployment, ModelVersion, ValidSpec};
use crate::plan::Plan;

/// How an object is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Write {
    /// Server-side apply with the operator's field manager, forced.
    Apply,
    /// Created once and then left as it is: an existing object (409) is
    /// success. The router's token must never change under running pods;
    /// a registry entry never changes.
    CreateOnce,
}

/// One object the plan wants, with its kind as a type.
#[derive(Debug, Clone, Serialize)]
#[serde(untagged)]
pub enum Object {
    Deployment(Box<Deployment>),
    HorizontalPodAutoscaler(Box<HorizontalPodAutoscaler>),
    PodDisruptionBudget(Box<PodDisruptionBudget>),
    Service(Box<Service>),
    ConfigMap(Box<ConfigMap>),
    Secret(Box<Secret>),
    Job(Box<Job>),
    NetworkPolicy(Box<NetworkPolicy>),
    ServiceAccount(Box<ServiceAccount>),
    Role(Box<Role>),
    RoleBinding(Box<RoleBinding>),
    ModelVersion(Box<ModelVersion>),
}

impl Object {
    pub fn kind(&self) -> &'static str {
        match self {
            Object::Deployment(_) => "Deployment",
            Object::HorizontalPodAutoscaler(_) => "HorizontalPodAutoscaler",
            Object::PodDisruptionBudget(_) => "PodDisruptionBudget",
            Object::Service(_) => "Service",
            Object::ConfigMap(_) => "ConfigMap",
            Object::Secret(_) => "Secret",
            Object::Job(_) => "Job",
            Object::NetworkPolicy(_) => "NetworkPolicy",
            Object::ServiceAccount(_) => "ServiceAccount",
            Object::Role(_) => "Role",
            Object::RoleBinding(_) => "RoleBinding",
            Object::ModelVersion(_) => "ModelVersion",
        }
    }
}

#[derive(Debug, Clone)]
pub struct Desired {
    pub write: Write,
    pub object: Object,
}

impl Desired {
    pub fn name(&self) -> String {
        object_name(&self.object)
    }
}

fn apply(object: Object) -> Desired {
    Desired { write: Write::Apply, object }
}

/// Every object `plan` asks for, in an order that never leaves traffic
/// without a backend: versions before the routes that name them. `token`
/// goes into the router's token Secret, which is only ever created.
pub fn desired(
    md: &ModelDeployment,
    spec: &ValidSpec,
    plan: &Plan,
    config: &OperatorConfig,
    token: &str,
) -> Vec<Desired> {
    let mut out = vec![];
    if !plan.versions.is_empty() || !plan.weights.is_empty() {
        // Before the pods that mount it; the pods wait for it otherwise.
        out.push(Desired {
            write: Write::CreateOnce,
            object: Object::Secret(Box::new(access::token_secret(md, token))),
        });
        out.push(apply(Object::NetworkPolicy(Box::new(access::serve_network_policy(md, config)))));
    }
    for version in &plan.versions {
        if let Some(cm) = objects::processing_configmap(md, spec, &version.version) {
            out.push(apply(Object::ConfigMap(Box::new(cm))));
        }
        let deployment = objects::version_deployment(md, spec, version, config);
        out.push(apply(Object::Deployment(Box::new(deployment))));
        if let Some(hpa) = objects::version_autoscaler(md, spec, version) {
            out.push(apply(Object::HorizontalPodAutoscaler(Box::new(hpa))));
        }
        if let Some(budget) = objects::version_disruption_budget(md, spec, version) {
            out.push(apply(Object::PodDisruptionBudget(Box::new(budget))));
        }
        let service = objects::version_service(md, &version.version);
        out.push(apply(Object::Service(Box::new(service))));
    }
    if let Some(job) = &plan.job {
        out.push(apply(Object::ConfigMap(Box::new(objects::recipe_configmap(md, job)))));
        out.push(apply(Object::Job(Box::new(objects::optimize_job(md, job, config)))));
    }
    if let Some(version) = &plan.register {
        out.push(Desired {
            write: Write::CreateOnce,
            object: Object::ModelVersion(Box::new(objects::model_version(md, version.clone()))),
        });
    }
    if !plan.weights.is_empty() {
        out.push(apply(Object::ServiceAccount(Box::new(objects::router_service_account(md)))));
        out.push(apply(Object::Role(Box::new(objects::router_role(md)))));
        out.push(apply(Object::RoleBinding(Box::new(objects::router_role_binding(md)))));
        if let Some(cm) = access::router_auth_configmap(md, config) {
            out.push(apply(Object::ConfigMap(Box::new(cm))));
        }
        let routes = objects::routes_configmap(md, &plan.weights, plan.shadow.as_deref());
        out.push(apply(Object::ConfigMap(Box::new(routes))));
        out.push(apply(Object::Deployment(Box::new(objects::router_deployment(md, spec, config)))));
        if let Some(budget) = objects::router_disruption_budget(md, spec) {
            out.push(apply(Object::PodDisruptionBudget(Box::new(budget))));
        }
        out.push(apply(Object::Service(Box::new(objects::router_service(md)))));
        out.push(apply(Object::Service(Box::new(access::router_admin_service(md)))));
        let policy = access::router_network_policy(md, config);
        out.push(apply(Object::NetworkPolicy(Box::new(policy))));
    }
    out
}

/// Writes one object into `namespace`.
pub async fn write(client: &Client, namespace: &str, desired: &Desired) -> Result<(), Error> {
    let how = desired.write;
    match &desired.object {
        Object::Deployment(o) => put(client, namespace, how, o.as_ref()).await,
        Object::HorizontalPodAutoscaler(o) => put(client, namespace, how, o.as_ref()).await,
        Object::PodDisruptionBudget(o) => put(client, namespace, how, o.as_ref()).await,
        Object::Service(o) => put(client, namespace, how, o.as_ref()).await,
        Object::ConfigMap(o) => put(client, namespace, how, o.as_ref()).await,
        Object::Secret(o) => put(client, namespace, how, o.as_ref()).await,
        Object::Job(o) => put(client, namespace, how, o.as_ref()).await,
        Object::NetworkPolicy(o) => put(client, namespace, how, o.as_ref()).await,
        Object::ServiceAccount(o) => put(client, namespace, how, o.as_ref()).await,
        Object::Role(o) => put(client, namespace, how, o.as_ref()).await,
        Object::RoleBinding(o) => put(client, namespace, how, o.as_ref()).await,
        Object::ModelVersion(o) => put(client, namespace, how, o.as_ref()).await,
    }
    .map_err(|source| Error::Apply {
        kind: desired.object.kind(),
        name: object_name(&desired.object),
        source,
    })
}

fn object_name(object: &Object) -> String {
    match object {
        Object::Deployment(o) => o.name_any(),
        Object::HorizontalPodAutoscaler(o) => o.name_any(),
        Object::PodDisruptionBudget(o) => o.name_any(),
        Object::Service(o) => o.name_any(),
        Object::ConfigMap(o) => o.name_any(),
        Object::Secret(o) => o.name_any(),
        Object::Job(o) => o.name_any(),
        Object::NetworkPolicy(o) => o.name_any(),
        Object::ServiceAccount(o) => o.name_any(),
        Object::Role(o) => o.name_any(),
        Object::RoleBinding(o) => o.name_any(),
        Object::ModelVersion(o) => o.name_any(),
    }
}

async fn put<K>(client: &Client, namespace: &str, how: Write, object: &K) -> Result<(), kube::Error>
where
    K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>
        + Clone
        + Serialize
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
{
    let api: Api<K> = Api::namespaced(client.clone(), namespace);
    match how {
        Write::Apply => {
            api.patch(&object.name_any(), &apply_params(), &Patch::Apply(object)).await.map(|_| ())
        }
        Write::CreateOnce => {
            let params =
                PostParams { field_manager: Some(FIELD_MANAGER.into()), ..PostParams::default() };
            match api.create(&params, object).await {
                Ok(_) => Ok(()),
                Err(kube::Error::Api(e)) if e.code == 409 => Ok(()),
                Err(e) => Err(e),
            }
        }
    }
}
