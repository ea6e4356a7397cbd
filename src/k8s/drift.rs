//! Version drift: what the catalog now says about a server, against what an instance runs.
//!
//! An instance has an upgrade when its server's image differs from the deployed one, or the
//! server's version differs from the version recorded at deploy time. The same rule is written
//! in SQL for `instances(filter: {upgradeAvailable})`:
//! `dataloaders::reads::InstanceFilter::UPGRADE_AVAILABLE_SQL`.

use dataloaders::models::ServerRow;

use serde_json::Value;

use super::manifests::{EnvDecl, InstanceSpec};

/// The declared environment of a server.
pub fn declared_env(requirements: &Value) -> Vec<EnvDecl> {
    requirements
        .get("envVars")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|v| serde_json::from_value(v.clone()).ok())
                .collect()
        })
        .unwrap_or_default()
}

/// How the declared environment changed between deploy time and now.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EnvChanges {
    /// Required now (with no default), and not required or not declared before.
    pub newly_required: Vec<String>,
    /// Declared before, no longer declared.
    pub removed: Vec<String>,
    /// Declared in both, with the secret flag flipped.
    pub secret_changed: Vec<String>,
}

/// An available upgrade of an instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upgrade {
    pub current_image: String,
    pub available_image: String,
    pub current_version: Option<String>,
    pub available_version: Option<String>,
    pub env_changes: EnvChanges,
}

fn needs_value(d: &EnvDecl) -> bool {
    d.required && d.default.is_none()
}

/// The environment changes from `before` to `now`.
pub fn env_changes(before: &[EnvDecl], now: &[EnvDecl]) -> EnvChanges {
    let find = |list: &[EnvDecl], n: &str| list.iter().find(|d| d.name == n).cloned();
    let mut c = EnvChanges::default();
    for d in now {
        match find(before, &d.name) {
            Some(b) if needs_value(&b) => {}
            _ if needs_value(d) => c.newly_required.push(d.name.clone()),
            _ => {}
        }
        if find(before, &d.name).is_some_and(|b| b.secret != d.secret) {
            c.secret_changed.push(d.name.clone());
        }
    }
    c.removed = before
        .iter()
        .filter(|b| find(now, &b.name).is_none())
        .map(|b| b.name.clone())
        .collect();
    c
}

/// What the environment looked like at deploy time: recorded since deploys record it, else
/// what can be read back from the variables the instance was given.
fn env_at_deploy(spec: &InstanceSpec) -> Vec<EnvDecl> {
    if let Some(schema) = &spec.env_schema {
        return schema.clone();
    }
    let plain = spec.env.iter().map(|e| (e.name.clone(), false));
    let secret = spec.secret_env.iter().map(|n| (n.clone(), true));
    plain
        .chain(secret)
        .map(|(name, secret)| EnvDecl {
            name,
            required: false,
            secret,
            default: None,
        })
        .collect()
}

/// The upgrade available to an instance running `spec`, given its server's current row; `None`
/// when it runs what the catalog offers (or the server has no deployable image).
pub fn upgrade_of(spec: &InstanceSpec, server: &ServerRow) -> Option<Upgrade> {
    let image = server.image.as_deref().filter(|i| !i.contains("://"))?;
    let version_moved = spec.server_version.is_some() && spec.server_version != server.version;
    if image == spec.image && !version_moved {
        return None;
    }
    Some(Upgrade {
        current_image: spec.image.clone(),
        available_image: image.to_string(),
        current_version: spec.server_version.clone(),
        available_version: server.version.clone(),
        env_changes: env_changes(
            &env_at_deploy(spec),
            &declared_env(&server.deployment_requirements),
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decl(name: &str, required: bool, secret: bool) -> EnvDecl {
        EnvDecl {
            name: name.into(),
            required,
            secret,
            default: None,
        }
    }

    #[test]
    fn env_changes_name_new_requirements_removals_and_secret_flips() {
        let before = [
            decl("TOKEN", true, true),
            decl("LEVEL", false, false),
            decl("OLD", false, false),
            decl("MODE", false, false),
        ];
        let mut with_default = decl("REGION", true, false);
        with_default.default = Some("eu".into());
        let now = [
            decl("TOKEN", true, false),
            decl("LEVEL", true, false),
            decl("MODE", false, false),
            decl("NEW_KEY", true, true),
            with_default,
        ];
        let c = env_changes(&before, &now);
        assert_eq!(c.newly_required, ["LEVEL", "NEW_KEY"]);
        assert_eq!(c.removed, ["OLD"]);
        assert_eq!(c.secret_changed, ["TOKEN"]);
        assert_eq!(env_changes(&now, &now), EnvChanges::default());
    }
}
