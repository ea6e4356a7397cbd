//! The gateway never adopts, overwrites or deletes an object it did not create: before an
//! apply or a delete, an existing object must carry the gateway's managed-by label and the
//! instance's label. Anything else is someone else's, and the request is refused with
//! `CONFLICT` naming the object.

use kube::api::{ApiResource, DynamicObject};
use kube::{Api, ResourceExt};
use uuid::Uuid;

use super::manifests::{INSTANCE_LABEL, InstanceSpec, MANAGED_BY};
use super::operator::{self, Kind};
use crate::error::{AppError, AppResult};

/// One object an instance consists of: kind (for messages), resource, name.
#[derive(Debug, Clone)]
pub struct Target {
    pub kind: &'static str,
    pub resource: ApiResource,
    pub name: String,
}

impl Target {
    /// A core/v1 or other built-in object.
    pub fn builtin<K>(name: &str) -> Target
    where
        K: kube::Resource<DynamicType = ()>,
    {
        Target {
            kind: leak_kind(&K::kind(&())),
            resource: ApiResource::erase::<K>(&()),
            name: name.to_string(),
        }
    }
}

fn leak_kind(k: &str) -> &'static str {
    match k {
        "Deployment" => "Deployment",
        "Service" => "Service",
        "Secret" => "Secret",
        "ConfigMap" => "ConfigMap",
        "NetworkPolicy" => "NetworkPolicy",
        "MCPServer" => "MCPServer",
        "MCPRemoteProxy" => "MCPRemoteProxy",
        _ => "object",
    }
}

/// Every object an instance named `name` writes, whatever its state.
pub fn targets(name: &str, spec: &InstanceSpec) -> Vec<Target> {
    use k8s_openapi::api::apps::v1::Deployment;
    use k8s_openapi::api::core::v1::{ConfigMap, Secret, Service};
    use k8s_openapi::api::networking::v1::NetworkPolicy;
    let mut out = Vec::new();
    if spec.is_operator() {
        let kind = Kind::of(spec);
        out.push(Target {
            kind: kind.name(),
            resource: kind.resource(),
            name: name.to_string(),
        });
        for s in operator::secret_names(name, spec.secret_env.len()) {
            out.push(Target::builtin::<Secret>(&s));
        }
        if operator::permission_profile(spec).is_some() {
            out.push(Target::builtin::<ConfigMap>(&operator::permissions_name(
                name,
            )));
        }
        return out;
    }
    out.push(Target::builtin::<Deployment>(name));
    if spec.is_network() {
        out.push(Target::builtin::<Service>(name));
    }
    if spec.wants_network_policy() {
        out.push(Target::builtin::<NetworkPolicy>(name));
    }
    if spec.secret_name.is_some() {
        out.push(Target::builtin::<Secret>(&super::manifests::secret_name(
            name,
        )));
    }
    out
}

/// Whether labels say the object belongs to `instance` (`None`: to any gateway instance).
pub fn is_ours(
    labels: &std::collections::BTreeMap<String, String>,
    instance: Option<Uuid>,
) -> bool {
    labels.get(MANAGED_BY.0).map(String::as_str) == Some(MANAGED_BY.1)
        && match instance {
            Some(id) => labels.get(INSTANCE_LABEL) == Some(&id.to_string()),
            None => labels.contains_key(INSTANCE_LABEL),
        }
}

/// The refusal for an object that is not the instance's.
pub fn conflict(kind: &str, namespace: &str, name: &str) -> AppError {
    AppError::Conflict(format!(
        "{kind} {namespace}/{name} already exists and was not created by the gateway for this \
         instance; the gateway does not take over, change or delete objects it did not create: \
         choose another instance name"
    ))
}

/// Checks that each target is absent or the instance's (`instance: None` before the
/// instance exists: then any existing object is a conflict). A 404 on the resource kind
/// (its API group is not served) counts as absent.
pub async fn check(
    client: &kube::Client,
    namespace: &str,
    instance: Option<Uuid>,
    targets: &[Target],
) -> AppResult<()> {
    for t in targets {
        let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), namespace, &t.resource);
        let found = match api.get_opt(&t.name).await {
            Ok(f) => f,
            Err(kube::Error::Api(s)) if s.code == 404 => None,
            Err(e) => {
                return Err(super::kube_err(
                    &e,
                    &format!("reading {} {}", t.kind, t.name),
                ));
            }
        };
        if let Some(o) = found {
            let ours = instance.is_some_and(|id| is_ours(o.labels(), Some(id)));
            if !ours {
                return Err(conflict(t.kind, namespace, &t.name));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    #[test]
    fn only_the_instance_labels_make_an_object_ours() {
        let id = Uuid::from_u128(1);
        let mut l = BTreeMap::new();
        assert!(!is_ours(&l, Some(id)));
        l.insert(MANAGED_BY.0.to_string(), MANAGED_BY.1.to_string());
        assert!(!is_ours(&l, Some(id)));
        l.insert(INSTANCE_LABEL.to_string(), Uuid::from_u128(2).to_string());
        assert!(!is_ours(&l, Some(id)));
        assert!(is_ours(&l, None));
        l.insert(INSTANCE_LABEL.to_string(), id.to_string());
        assert!(is_ours(&l, Some(id)));
        l.insert(MANAGED_BY.0.to_string(), "helm".into());
        assert!(!is_ours(&l, Some(id)));
        let msg = conflict("Service", "ns", "web").public_message();
        assert!(msg.contains("Service ns/web"), "{msg}");
    }
}
