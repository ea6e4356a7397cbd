//! What a cluster offers the gateway beyond the core API: whether it serves the ToolHive
//! operator's `mcpservers` and `mcpremoteproxies` (`toolhive.stacklok.dev/v1beta1`) and whether
//! the gateway may create them (SelfSubjectAccessReview). The findings are `Cluster.capabilities`
//! entries ([`super::operator::MCPSERVERS`], [`super::operator::REMOTE_PROXIES`]); a deploy picks
//! its backend from them ([`backend_for`]).

use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SelfSubjectAccessReview, SelfSubjectAccessReviewSpec,
};
use kube::Api;
use kube::api::PostParams;

use super::manifests::Backend;
use super::operator::{self, Kind};

/// Whether the cluster's RBAC lets the caller `verb` `resource` of `group` (in `namespace`,
/// or cluster-wide).
pub async fn can(
    client: &kube::Client,
    verb: &str,
    group: &str,
    resource: &str,
    namespace: Option<&str>,
) -> Result<bool, kube::Error> {
    let review = SelfSubjectAccessReview {
        spec: SelfSubjectAccessReviewSpec {
            resource_attributes: Some(ResourceAttributes {
                verb: Some(verb.into()),
                group: Some(group.into()),
                resource: Some(resource.into()),
                namespace: namespace.map(str::to_string),
                ..Default::default()
            }),
            ..Default::default()
        },
        ..Default::default()
    };
    let api: Api<SelfSubjectAccessReview> = Api::all(client.clone());
    let r = api.create(&PostParams::default(), &review).await?;
    Ok(r.status.map(|s| s.allowed).unwrap_or(false))
}

/// The ToolHive resources the cluster serves and the gateway may create (cluster-wide or in
/// `namespace`). A cluster without the group (404) offers none; other errors are returned.
pub async fn toolhive(client: &kube::Client, namespace: &str) -> Result<Vec<String>, kube::Error> {
    let list = match client.list_api_group_resources(operator::API_VERSION).await {
        Ok(l) => l,
        Err(kube::Error::Api(s)) if s.code == 404 => return Ok(vec![]),
        Err(e) => return Err(e),
    };
    let mut out = Vec::new();
    for kind in [Kind::Server, Kind::RemoteProxy] {
        let plural = kind.resource().plural;
        if !list.resources.iter().any(|r| r.name == plural) {
            continue;
        }
        let group = kind.resource().group;
        if can(client, "create", &group, &plural, None).await?
            || can(client, "create", &group, &plural, Some(namespace)).await?
        {
            out.push(kind.capability().to_string());
        }
    }
    Ok(out)
}

/// The backend for a deploy on a cluster with `capabilities`: the operator wherever it serves
/// the instance's kind (the default), else the gateway's own workloads.
pub fn backend_for(capabilities: &[String], kind: Kind) -> Backend {
    if capabilities.iter().any(|c| c == kind.capability()) {
        Backend::Operator
    } else {
        Backend::Native
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_operator_is_the_default_where_it_runs() {
        let caps = vec!["apps/v1".to_string(), operator::MCPSERVERS.to_string()];
        assert_eq!(backend_for(&caps, Kind::Server), Backend::Operator);
        assert_eq!(backend_for(&caps, Kind::RemoteProxy), Backend::Native);
        assert_eq!(backend_for(&[], Kind::Server), Backend::Native);
    }
}
