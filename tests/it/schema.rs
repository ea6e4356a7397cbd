//! The committed SDL matches the code, and carries every name of the outside contract.

#[test]
fn schema_graphql_is_current() {
    let committed = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/schema.graphql"))
        .expect("schema.graphql is committed");
    let generated = hivegraph::graphql::sdl();
    assert!(
        committed == generated,
        "schema.graphql is stale: run `cargo run -q -- schema > schema.graphql` and commit it"
    );
}

/// Every type, field, enum value and root named in shared/CONTRACT.md.
#[test]
fn the_contract_names_are_all_there() {
    let sdl = hivegraph::graphql::sdl();
    let schema = async_graphql::parser::parse_schema(&sdl).expect("the SDL parses");
    use async_graphql::parser::types::{TypeKind, TypeSystemDefinition};
    let mut fields: std::collections::HashMap<String, Vec<String>> = Default::default();
    for def in &schema.definitions {
        if let TypeSystemDefinition::Type(t) = def {
            let name = t.node.name.node.to_string();
            let members: Vec<String> = match &t.node.kind {
                TypeKind::Object(o) => o
                    .fields
                    .iter()
                    .map(|f| f.node.name.node.to_string())
                    .collect(),
                TypeKind::Interface(o) => o
                    .fields
                    .iter()
                    .map(|f| f.node.name.node.to_string())
                    .collect(),
                TypeKind::Enum(e) => e
                    .values
                    .iter()
                    .map(|v| v.node.value.node.to_string())
                    .collect(),
                TypeKind::InputObject(i) => i
                    .fields
                    .iter()
                    .map(|f| f.node.name.node.to_string())
                    .collect(),
                _ => vec![],
            };
            fields.insert(name, members);
        }
    }
    let expect = |ty: &str, names: &[&str]| {
        let have = fields
            .get(ty)
            .unwrap_or_else(|| panic!("type {ty} is missing"));
        for n in names {
            assert!(have.iter().any(|h| h == n), "{ty}.{n} is missing");
        }
    };
    expect(
        "Registry",
        &[
            "id",
            "name",
            "url",
            "description",
            "status",
            "serverCount",
            "lastSyncAt",
            "createdAt",
            "updatedAt",
            "metadata",
            "authConfig",
            "servers",
        ],
    );
    expect(
        "Server",
        &[
            "id",
            "registry",
            "name",
            "description",
            "version",
            "image",
            "transport",
            "tier",
            "status",
            "category",
            "capabilities",
            "repositoryUrl",
            "networkPermissions",
            "pullCount",
            "stars",
            "lastUpdated",
            "deploymentRequirements",
            "instances",
        ],
    );
    expect(
        "Instance",
        &[
            "id",
            "server",
            "name",
            "namespace",
            "status",
            "phase",
            "replicas",
            "deployedAt",
            "configuration",
            "resourceUsage",
            "healthStatus",
            "logs",
            "events",
            "deployment",
            "cluster",
            "metrics",
            "latestMetrics",
        ],
    );
    expect(
        "Deployment",
        &[
            "id",
            "instance",
            "server",
            "initiatedBy",
            "status",
            "startedAt",
            "completedAt",
            "parameters",
            "steps",
            "errors",
            "rollbackInfo",
        ],
    );
    expect(
        "Cluster",
        &[
            "id",
            "name",
            "endpoint",
            "context",
            "status",
            "version",
            "capabilities",
            "resourceQuota",
            "accessLevel",
            "lastCheckedAt",
            "instances",
        ],
    );
    expect(
        "MonitoringMetrics",
        &[
            "instanceId",
            "timestamp",
            "cpuUsage",
            "memoryUsage",
            "networkIO",
            "requestCount",
            "responseTime",
            "errorRate",
            "healthChecks",
        ],
    );
    expect(
        "InstanceEvent",
        &[
            "type",
            "reason",
            "message",
            "count",
            "firstSeen",
            "lastSeen",
            "objectKind",
            "objectName",
        ],
    );
    expect(
        "RegistryStatus",
        &["ACTIVE", "INACTIVE", "ERROR", "SYNCING"],
    );
    expect("Transport", &["STDIO", "HTTP", "SSE"]);
    expect("ServerTier", &["OFFICIAL", "COMMUNITY"]);
    expect("ServerStatus", &["AVAILABLE", "DEPRECATED", "EXPERIMENTAL"]);
    expect(
        "InstanceStatus",
        &["PENDING", "RUNNING", "FAILED", "TERMINATED", "STOPPED"],
    );
    expect(
        "InstancePhase",
        &["DEPLOYING", "READY", "SCALING", "TERMINATING"],
    );
    expect("HealthStatus", &["HEALTHY", "UNHEALTHY", "UNKNOWN"]);
    expect(
        "DeploymentStatus",
        &[
            "INITIATED",
            "IN_PROGRESS",
            "COMPLETED",
            "FAILED",
            "CANCELLED",
        ],
    );
    expect(
        "ClusterStatus",
        &["CONNECTED", "DISCONNECTED", "UNAUTHORIZED"],
    );
    expect("AccessLevel", &["READ_ONLY", "DEPLOY", "ADMIN"]);
    expect(
        "QueryRoot",
        &[
            "registries",
            "registry",
            "servers",
            "server",
            "instances",
            "instance",
            "deployments",
            "deployment",
            "clusters",
            "cluster",
            "node",
        ],
    );
    expect(
        "MutationRoot",
        &[
            "createRegistry",
            "updateRegistry",
            "deleteRegistry",
            "syncRegistry",
            "registerCluster",
            "refreshCluster",
            "updateCluster",
            "deleteCluster",
            "deployServer",
            "cancelDeployment",
            "scaleInstance",
            "restartInstance",
            "rollbackInstance",
            "deleteInstance",
        ],
    );
    expect(
        "SubscriptionRoot",
        &[
            "instanceStatus",
            "instanceEvents",
            "instanceMetrics",
            "deploymentProgress",
            "registrySync",
        ],
    );
    expect(
        "CreateRegistryInput",
        &[
            "name",
            "url",
            "description",
            "format",
            "syncIntervalSeconds",
            "authConfig",
            "metadata",
        ],
    );
    expect(
        "RegistryAuthInput",
        &[
            "bearerToken",
            "username",
            "password",
            "headerName",
            "headerValue",
        ],
    );
    expect(
        "RegisterClusterInput",
        &["name", "context", "inCluster", "credentials"],
    );
    expect(
        "ClusterCredentialsInput",
        &[
            "kubeconfig",
            "server",
            "certificateAuthorityData",
            "bearerToken",
            "clientCertificateData",
            "clientKeyData",
            "insecureSkipTlsVerify",
        ],
    );
    expect(
        "DeployServerInput",
        &[
            "serverId",
            "clusterId",
            "namespace",
            "name",
            "replicas",
            "env",
            "args",
            "resources",
        ],
    );
    expect("EnvValueInput", &["name", "value"]);
    expect("RegistryConnection", &["edges", "pageInfo", "totalCount"]);
}
