//! The configurable access policy behind SelfSubjectAccessReview / SelfSubjectRulesReview,
//! also enforced on every resource request (403 Forbidden).

use serde_json::{Value, json};

/// One RBAC-like rule. Empty `namespaces` means every namespace and the cluster scope.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyRule {
    pub verbs: Vec<String>,
    pub api_groups: Vec<String>,
    /// Resource names as in RBAC (`pods`, `pods/log`, `deployments/scale`, `*`).
    pub resources: Vec<String>,
    pub namespaces: Vec<String>,
}

impl PolicyRule {
    pub fn new(verbs: &[&str], groups: &[&str], resources: &[&str], namespaces: &[&str]) -> Self {
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect();
        PolicyRule {
            verbs: s(verbs),
            api_groups: s(groups),
            resources: s(resources),
            namespaces: s(namespaces),
        }
    }

    fn applies_in(&self, ns: Option<&str>) -> bool {
        self.namespaces.is_empty() || ns.is_some_and(|n| self.namespaces.iter().any(|x| x == n))
    }

    pub fn allows(&self, verb: &str, group: &str, resource: &str, ns: Option<&str>) -> bool {
        let any = |list: &[String], v: &str| list.iter().any(|x| x == "*" || x == v);
        self.applies_in(ns)
            && any(&self.verbs, verb)
            && any(&self.api_groups, group)
            && any(&self.resources, resource)
    }
}

/// Access policy presets plus custom rule lists.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum AccessPolicy {
    /// cluster-admin: everything.
    #[default]
    Admin,
    /// get/list/watch on everything, nothing else.
    ReadOnly,
    /// Deploy rights (deployments, services, configmaps, secrets, network policies, events)
    /// and read access to pods/logs/replicasets/metrics, only in the given namespaces.
    DeployOnly(Vec<String>),
    /// Explicit rules.
    Rules(Vec<PolicyRule>),
}

const READ: &[&str] = &["get", "list", "watch"];
const WRITE: &[&str] = &[
    "get",
    "list",
    "watch",
    "create",
    "update",
    "patch",
    "delete",
    "deletecollection",
];

impl AccessPolicy {
    pub fn rules(&self) -> Vec<PolicyRule> {
        match self {
            AccessPolicy::Admin => vec![PolicyRule::new(&["*"], &["*"], &["*"], &[])],
            AccessPolicy::ReadOnly => vec![PolicyRule::new(READ, &["*"], &["*"], &[])],
            AccessPolicy::DeployOnly(nss) => {
                let ns: Vec<&str> = nss.iter().map(String::as_str).collect();
                vec![
                    PolicyRule::new(
                        WRITE,
                        &["apps"],
                        &["deployments", "deployments/scale", "deployments/status"],
                        &ns,
                    ),
                    PolicyRule::new(
                        WRITE,
                        &[""],
                        &["services", "configmaps", "secrets", "services/proxy"],
                        &ns,
                    ),
                    PolicyRule::new(WRITE, &["networking.k8s.io"], &["networkpolicies"], &ns),
                    PolicyRule::new(
                        &["create", "patch", "update"],
                        &["", "events.k8s.io"],
                        &["events"],
                        &ns,
                    ),
                    PolicyRule::new(
                        READ,
                        &["", "events.k8s.io"],
                        &["events", "pods", "pods/log", "pods/status"],
                        &ns,
                    ),
                    PolicyRule::new(READ, &["apps"], &["replicasets"], &ns),
                    PolicyRule::new(READ, &["metrics.k8s.io"], &["pods"], &ns),
                    PolicyRule::new(&["get"], &[""], &["namespaces"], &ns),
                ]
            }
            AccessPolicy::Rules(r) => r.clone(),
        }
    }

    /// Self-review endpoints are always allowed (system:basic-user).
    pub fn allows(&self, verb: &str, group: &str, resource: &str, ns: Option<&str>) -> bool {
        if group == "authorization.k8s.io"
            && matches!(
                resource,
                "selfsubjectaccessreviews" | "selfsubjectrulesreviews"
            )
            && verb == "create"
        {
            return true;
        }
        self.rules()
            .iter()
            .any(|r| r.allows(verb, group, resource, ns))
    }

    /// `SelfSubjectRulesReview.status` for a namespace.
    pub fn rules_review_status(&self, ns: &str) -> Value {
        let mut rules: Vec<Value> = vec![json!({
            "verbs": ["create"],
            "apiGroups": ["authorization.k8s.io"],
            "resources": ["selfsubjectaccessreviews", "selfsubjectrulesreviews"],
        })];
        for r in self.rules() {
            if r.applies_in(Some(ns)) {
                rules.push(
                    json!({"verbs": r.verbs, "apiGroups": r.api_groups, "resources": r.resources}),
                );
            }
        }
        let non_resource = match self {
            AccessPolicy::Admin => json!([{"verbs": ["*"], "nonResourceURLs": ["*"]}]),
            _ => {
                json!([{"verbs": ["get"], "nonResourceURLs": ["/api", "/api/*", "/apis", "/apis/*", "/healthz", "/livez", "/openapi", "/openapi/*", "/readyz", "/version", "/version/"]}])
            }
        };
        json!({"resourceRules": rules, "nonResourceRules": non_resource, "incomplete": false})
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deploy_only() {
        let p = AccessPolicy::DeployOnly(vec!["team".into()]);
        assert!(p.allows("create", "apps", "deployments", Some("team")));
        assert!(!p.allows("create", "apps", "deployments", Some("other")));
        assert!(!p.allows("delete", "", "pods", Some("team")));
        assert!(p.allows("get", "", "pods/log", Some("team")));
        assert!(AccessPolicy::ReadOnly.allows("list", "", "pods", None));
        assert!(!AccessPolicy::ReadOnly.allows("create", "", "pods", Some("x")));
    }
}
