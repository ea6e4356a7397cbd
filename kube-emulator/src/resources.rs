//! The table of emulated resource types.

/// Static description of one served resource type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResourceDef {
    pub group: &'static str,
    pub version: &'static str,
    pub plural: &'static str,
    pub singular: &'static str,
    pub kind: &'static str,
    pub namespaced: bool,
    pub short_names: &'static [&'static str],
    pub categories: &'static [&'static str],
    /// Subresources served besides the main resource (`status`, `scale`, `log`, `proxy`).
    pub subresources: &'static [&'static str],
    /// Field selector labels supported beyond metadata.name / metadata.namespace.
    pub field_labels: &'static [&'static str],
    /// Which storage the objects live in (events.k8s.io and core events share one).
    pub storage: &'static str,
    /// Verbs advertised by discovery.
    pub verbs: &'static [&'static str],
    /// True when strategic merge patch is allowed (built-in types).
    pub has_spec: bool,
}

/// The verbs of a fully served resource.
pub const ALL_VERBS: &[&str] = &[
    "create",
    "delete",
    "deletecollection",
    "get",
    "list",
    "patch",
    "update",
    "watch",
];
const NS_VERBS: &[&str] = &[
    "create", "delete", "get", "list", "patch", "update", "watch",
];
const READ_VERBS: &[&str] = &["get", "list"];
const CREATE_ONLY: &[&str] = &["create"];

const POD_FIELDS: &[&str] = &[
    "spec.nodeName",
    "spec.restartPolicy",
    "spec.schedulerName",
    "spec.serviceAccountName",
    "spec.hostNetwork",
    "status.phase",
    "status.podIP",
    "status.podIPs",
    "status.nominatedNodeName",
];
const CORE_EVENT_FIELDS: &[&str] = &[
    "involvedObject.kind",
    "involvedObject.namespace",
    "involvedObject.name",
    "involvedObject.uid",
    "involvedObject.apiVersion",
    "involvedObject.resourceVersion",
    "involvedObject.fieldPath",
    "reason",
    "reportingComponent",
    "source",
    "type",
];
const EVENTS_V1_FIELDS: &[&str] = &[
    "regarding.kind",
    "regarding.namespace",
    "regarding.name",
    "regarding.uid",
    "regarding.apiVersion",
    "regarding.resourceVersion",
    "regarding.fieldPath",
    "reason",
    "reportingController",
    "type",
];

pub static RESOURCES: &[ResourceDef] = &[
    ResourceDef {
        group: "",
        version: "v1",
        plural: "namespaces",
        singular: "namespace",
        kind: "Namespace",
        namespaced: false,
        short_names: &["ns"],
        categories: &[],
        subresources: &["status"],
        field_labels: &["status.phase"],
        storage: "namespaces",
        verbs: NS_VERBS,
        has_spec: true,
    },
    ResourceDef {
        group: "",
        version: "v1",
        plural: "nodes",
        singular: "node",
        kind: "Node",
        namespaced: false,
        short_names: &["no"],
        categories: &[],
        subresources: &["status"],
        field_labels: &["spec.unschedulable"],
        storage: "nodes",
        verbs: ALL_VERBS,
        has_spec: true,
    },
    ResourceDef {
        group: "",
        version: "v1",
        plural: "pods",
        singular: "pod",
        kind: "Pod",
        namespaced: true,
        short_names: &["po"],
        categories: &["all"],
        subresources: &["status", "log", "proxy"],
        field_labels: POD_FIELDS,
        storage: "pods",
        verbs: ALL_VERBS,
        has_spec: true,
    },
    ResourceDef {
        group: "",
        version: "v1",
        plural: "services",
        singular: "service",
        kind: "Service",
        namespaced: true,
        short_names: &["svc"],
        categories: &["all"],
        subresources: &["status", "proxy"],
        field_labels: &[],
        storage: "services",
        verbs: NS_VERBS,
        has_spec: true,
    },
    ResourceDef {
        group: "",
        version: "v1",
        plural: "events",
        singular: "event",
        kind: "Event",
        namespaced: true,
        short_names: &["ev"],
        categories: &[],
        subresources: &[],
        field_labels: CORE_EVENT_FIELDS,
        storage: "events",
        verbs: ALL_VERBS,
        has_spec: false,
    },
    ResourceDef {
        group: "",
        version: "v1",
        plural: "secrets",
        singular: "secret",
        kind: "Secret",
        namespaced: true,
        short_names: &[],
        categories: &[],
        subresources: &[],
        field_labels: &["type"],
        storage: "secrets",
        verbs: ALL_VERBS,
        has_spec: false,
    },
    ResourceDef {
        group: "",
        version: "v1",
        plural: "configmaps",
        singular: "configmap",
        kind: "ConfigMap",
        namespaced: true,
        short_names: &["cm"],
        categories: &[],
        subresources: &[],
        field_labels: &[],
        storage: "configmaps",
        verbs: ALL_VERBS,
        has_spec: false,
    },
    ResourceDef {
        group: "",
        version: "v1",
        plural: "serviceaccounts",
        singular: "serviceaccount",
        kind: "ServiceAccount",
        namespaced: true,
        short_names: &["sa"],
        categories: &[],
        subresources: &[],
        field_labels: &[],
        storage: "serviceaccounts",
        verbs: ALL_VERBS,
        has_spec: false,
    },
    ResourceDef {
        group: "apps",
        version: "v1",
        plural: "deployments",
        singular: "deployment",
        kind: "Deployment",
        namespaced: true,
        short_names: &["deploy"],
        categories: &["all"],
        subresources: &["status", "scale"],
        field_labels: &[],
        storage: "deployments",
        verbs: ALL_VERBS,
        has_spec: true,
    },
    ResourceDef {
        group: "apps",
        version: "v1",
        plural: "statefulsets",
        singular: "statefulset",
        kind: "StatefulSet",
        namespaced: true,
        short_names: &["sts"],
        categories: &["all"],
        subresources: &["status", "scale"],
        field_labels: &[],
        storage: "statefulsets",
        verbs: ALL_VERBS,
        has_spec: true,
    },
    ResourceDef {
        group: "apps",
        version: "v1",
        plural: "replicasets",
        singular: "replicaset",
        kind: "ReplicaSet",
        namespaced: true,
        short_names: &["rs"],
        categories: &["all"],
        subresources: &["status", "scale"],
        field_labels: &[],
        storage: "replicasets",
        verbs: ALL_VERBS,
        has_spec: true,
    },
    ResourceDef {
        group: "apiextensions.k8s.io",
        version: "v1",
        plural: "customresourcedefinitions",
        singular: "customresourcedefinition",
        kind: "CustomResourceDefinition",
        namespaced: false,
        short_names: &["crd", "crds"],
        categories: &["api-extensions"],
        subresources: &["status"],
        field_labels: &[],
        storage: "customresourcedefinitions",
        verbs: ALL_VERBS,
        has_spec: true,
    },
    ResourceDef {
        group: "events.k8s.io",
        version: "v1",
        plural: "events",
        singular: "event",
        kind: "Event",
        namespaced: true,
        short_names: &["ev"],
        categories: &[],
        subresources: &[],
        field_labels: EVENTS_V1_FIELDS,
        storage: "events",
        verbs: ALL_VERBS,
        has_spec: false,
    },
    ResourceDef {
        group: "networking.k8s.io",
        version: "v1",
        plural: "networkpolicies",
        singular: "networkpolicy",
        kind: "NetworkPolicy",
        namespaced: true,
        short_names: &["netpol"],
        categories: &[],
        subresources: &[],
        field_labels: &[],
        storage: "networkpolicies",
        verbs: ALL_VERBS,
        has_spec: true,
    },
    // Stored and served (server-side dry-runs of the gateway's own manifests), not enforced:
    // access is decided by the emulator's `AccessPolicy`, not by RBAC objects.
    ResourceDef {
        group: "rbac.authorization.k8s.io",
        version: "v1",
        plural: "clusterroles",
        singular: "clusterrole",
        kind: "ClusterRole",
        namespaced: false,
        short_names: &[],
        categories: &[],
        subresources: &[],
        field_labels: &[],
        storage: "clusterroles",
        verbs: ALL_VERBS,
        has_spec: true,
    },
    ResourceDef {
        group: "rbac.authorization.k8s.io",
        version: "v1",
        plural: "clusterrolebindings",
        singular: "clusterrolebinding",
        kind: "ClusterRoleBinding",
        namespaced: false,
        short_names: &[],
        categories: &[],
        subresources: &[],
        field_labels: &[],
        storage: "clusterrolebindings",
        verbs: ALL_VERBS,
        has_spec: true,
    },
    ResourceDef {
        group: "policy",
        version: "v1",
        plural: "poddisruptionbudgets",
        singular: "poddisruptionbudget",
        kind: "PodDisruptionBudget",
        namespaced: true,
        short_names: &["pdb"],
        categories: &[],
        subresources: &["status"],
        field_labels: &[],
        storage: "poddisruptionbudgets",
        verbs: ALL_VERBS,
        has_spec: true,
    },
    ResourceDef {
        group: "metrics.k8s.io",
        version: "v1beta1",
        plural: "pods",
        singular: "",
        kind: "PodMetrics",
        namespaced: true,
        short_names: &[],
        categories: &[],
        subresources: &[],
        field_labels: &[],
        storage: "podmetrics",
        verbs: READ_VERBS,
        has_spec: false,
    },
    ResourceDef {
        group: "metrics.k8s.io",
        version: "v1beta1",
        plural: "nodes",
        singular: "",
        kind: "NodeMetrics",
        namespaced: false,
        short_names: &[],
        categories: &[],
        subresources: &[],
        field_labels: &[],
        storage: "nodemetrics",
        verbs: READ_VERBS,
        has_spec: false,
    },
    ResourceDef {
        group: "authorization.k8s.io",
        version: "v1",
        plural: "selfsubjectaccessreviews",
        singular: "",
        kind: "SelfSubjectAccessReview",
        namespaced: false,
        short_names: &[],
        categories: &[],
        subresources: &[],
        field_labels: &[],
        storage: "selfsubjectaccessreviews",
        verbs: CREATE_ONLY,
        has_spec: false,
    },
    ResourceDef {
        group: "authorization.k8s.io",
        version: "v1",
        plural: "selfsubjectrulesreviews",
        singular: "",
        kind: "SelfSubjectRulesReview",
        namespaced: false,
        short_names: &[],
        categories: &[],
        subresources: &[],
        field_labels: &[],
        storage: "selfsubjectrulesreviews",
        verbs: CREATE_ONLY,
        has_spec: false,
    },
];

impl ResourceDef {
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.to_string()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// `deployments.apps` / `pods`: the "qualified resource" used in Status messages.
    pub fn qualified(&self) -> String {
        if self.group.is_empty() {
            self.plural.to_string()
        } else {
            format!("{}.{}", self.plural, self.group)
        }
    }

    /// `Deployment.apps` / `Pod`: the qualified kind used in 422 messages.
    pub fn qualified_kind(&self) -> String {
        if self.group.is_empty() {
            self.kind.to_string()
        } else {
            format!("{}.{}", self.kind, self.group)
        }
    }

    /// A custom resource (served for a CRD; its storage is `plural.group`)?
    pub fn is_custom(&self) -> bool {
        self.storage.contains('.')
    }

    pub fn list_kind(&self) -> String {
        format!("{}List", self.kind)
    }

    /// Served through the generic object store (CRUD + watch)?
    pub fn is_stored(&self) -> bool {
        !matches!(
            self.storage,
            "podmetrics" | "nodemetrics" | "selfsubjectaccessreviews" | "selfsubjectrulesreviews"
        )
    }
}

pub fn find(group: &str, version: &str, plural: &str) -> Option<&'static ResourceDef> {
    RESOURCES
        .iter()
        .find(|r| r.group == group && r.version == version && r.plural == plural)
}

/// The primary definition for a storage (used for the stored object's kind/apiVersion).
pub fn by_storage(storage: &str) -> &'static ResourceDef {
    RESOURCES
        .iter()
        .find(|r| r.storage == storage)
        .expect("known storage")
}

/// The (group, version) pairs of `defs`, in order of first appearance.
pub fn group_versions(defs: &[&'static ResourceDef]) -> Vec<(&'static str, &'static str)> {
    let mut out: Vec<(&str, &str)> = Vec::new();
    for r in defs {
        if !out.contains(&(r.group, r.version)) {
            out.push((r.group, r.version));
        }
    }
    out
}
