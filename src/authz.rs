//! Authorization: what a caller may see and do (shared/DATA-MODEL.md, "Access Control").
//!
//! - Registry, server and cluster data: any authenticated caller.
//! - Instance data (instances, their operations, logs and monitoring samples): only in the
//!   namespaces granted to the caller (`namespace_grants`, managed by admins). Admins see every
//!   namespace. The request's [`dataloaders::Reader`] carries the allowed namespaces, so every
//!   instance statement (by id, nested pages, counts, root lists) filters in SQL; an instance in
//!   another namespace simply does not exist for the caller.
//! - Deployment operations: the `deployer` (or `admin`) role, in a granted namespace.
//! - Registries, clusters and grants: the `admin` role.
//!
//! Refusals are audited (`outcome = denied`) by the mutation layer; see
//! [`crate::graphql::mutation`].

use std::collections::BTreeSet;

use diesel::prelude::*;
use diesel_async::RunQueryDsl;

use dataloaders::DbPool;
use dataloaders::schema::namespace_grants;

use crate::auth::{Principal, Role};
use crate::error::{AppError, AppResult};

/// The namespaces whose instance data a caller may read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NamespaceAccess {
    /// Every namespace (admins, and everyone while authentication is off).
    All,
    /// Only these namespaces.
    Only(BTreeSet<String>),
}

impl NamespaceAccess {
    /// Nothing at all (anonymous callers).
    pub fn none() -> Self {
        NamespaceAccess::Only(BTreeSet::new())
    }

    /// Whether `namespace` is readable.
    pub fn allows(&self, namespace: &str) -> bool {
        match self {
            NamespaceAccess::All => true,
            NamespaceAccess::Only(set) => set.contains(namespace),
        }
    }

    /// The list a reader filters by (`None`: all).
    pub fn as_filter(&self) -> Option<Vec<String>> {
        match self {
            NamespaceAccess::All => None,
            NamespaceAccess::Only(set) => Some(set.iter().cloned().collect()),
        }
    }

    /// A canonical description, for cache scopes.
    pub fn canonical(&self) -> String {
        match self {
            NamespaceAccess::All => "*".into(),
            NamespaceAccess::Only(set) => set.iter().cloned().collect::<Vec<_>>().join(","),
        }
    }

    /// What a principal may see without consulting grants: admins everything, anonymous callers
    /// nothing, others nothing until their grants are loaded (fail closed).
    pub fn baseline(principal: &Principal) -> Self {
        if principal.authenticated && principal.has(Role::Admin) {
            NamespaceAccess::All
        } else {
            NamespaceAccess::none()
        }
    }

    /// The namespaces granted to `principal` (one statement, only for authenticated non-admins).
    pub async fn load(pool: &DbPool, principal: &Principal) -> AppResult<Self> {
        let base = Self::baseline(principal);
        if base == NamespaceAccess::All || !principal.authenticated {
            return Ok(base);
        }
        let mut conn = crate::db::conn(pool).await?;
        let granted: Vec<String> = namespace_grants::table
            .filter(namespace_grants::subject.eq(&principal.subject))
            .select(namespace_grants::namespace)
            .load(&mut conn)
            .await?;
        Ok(NamespaceAccess::Only(granted.into_iter().collect()))
    }
}

/// Validates a Kubernetes namespace name given as input (a DNS label).
pub fn validate_namespace(field: &str, ns: &str) -> AppResult<()> {
    if crate::validate::is_dns_label(ns) {
        Ok(())
    } else {
        Err(AppError::bad_input(
            field,
            "a namespace is 1 to 63 lowercase letters, digits and hyphens, starting and ending \
             with a letter or digit",
        ))
    }
}

/// Validates a grant subject (a token `sub`).
pub fn validate_subject(subject: &str) -> AppResult<()> {
    if subject.is_empty() || subject.len() > 256 || subject.chars().any(char::is_control) {
        return Err(AppError::bad_input(
            "subject",
            "subject must be 1 to 256 characters without control characters",
        ));
    }
    Ok(())
}

/// Grant writes, each in one transaction with its audit record.
pub mod store {
    use diesel::prelude::*;
    use diesel_async::{AsyncConnection, RunQueryDsl};

    use dataloaders::DbPool;
    use dataloaders::models::GrantRow;
    use dataloaders::schema::namespace_grants;

    use crate::audit::Actor;
    use crate::audit::{self, AuditEntry};
    use crate::error::{AppError, AppResult};

    async fn conn(pool: &DbPool) -> AppResult<dataloaders::DbConn> {
        Ok(crate::db::conn(pool).await?)
    }

    /// Grants `namespace` to `subject` (idempotent) and returns the grant.
    pub async fn grant(
        pool: &DbPool,
        actor: &Actor,
        subject: &str,
        namespace: &str,
    ) -> AppResult<GrantRow> {
        let mut c = conn(pool).await?;
        let (actor, subject, namespace) =
            (actor.clone(), subject.to_string(), namespace.to_string());
        c.transaction::<GrantRow, AppError, _>(async move |c| {
            diesel::insert_into(namespace_grants::table)
                .values((
                    namespace_grants::subject.eq(&subject),
                    namespace_grants::namespace.eq(&namespace),
                    namespace_grants::granted_by.eq(&actor.name),
                ))
                .on_conflict_do_nothing()
                .execute(c)
                .await?;
            let row = namespace_grants::table
                .filter(namespace_grants::subject.eq(&subject))
                .filter(namespace_grants::namespace.eq(&namespace))
                .select(GrantRow::as_select())
                .first(c)
                .await?;
            audit::record(
                c,
                AuditEntry::raw(
                    &actor,
                    "grantNamespace",
                    "grant",
                    Some(format!("{subject}/{namespace}")),
                    "success",
                ),
            )
            .await?;
            Ok(row)
        })
        .await
    }

    /// Revokes a grant; true when one was removed.
    pub async fn revoke(
        pool: &DbPool,
        actor: &Actor,
        subject: &str,
        namespace: &str,
    ) -> AppResult<bool> {
        let mut c = conn(pool).await?;
        let (actor, subject, namespace) =
            (actor.clone(), subject.to_string(), namespace.to_string());
        c.transaction::<bool, AppError, _>(async move |c| {
            let n = diesel::delete(
                namespace_grants::table
                    .filter(namespace_grants::subject.eq(&subject))
                    .filter(namespace_grants::namespace.eq(&namespace)),
            )
            .execute(c)
            .await?;
            audit::record(
                c,
                AuditEntry::raw(
                    &actor,
                    "revokeNamespace",
                    "grant",
                    Some(format!("{subject}/{namespace}")),
                    "success",
                )
                .details(serde_json::json!({ "removed": n > 0 })),
            )
            .await?;
            Ok(n > 0)
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn access_is_fail_closed() {
        assert_eq!(
            NamespaceAccess::baseline(&Principal::anonymous()),
            NamespaceAccess::none()
        );
        assert_eq!(
            NamespaceAccess::baseline(&Principal::local()),
            NamespaceAccess::All
        );
        let only = NamespaceAccess::Only(["a".to_string()].into_iter().collect());
        assert!(only.allows("a") && !only.allows("b"));
        assert_eq!(only.as_filter(), Some(vec!["a".to_string()]));
        assert_eq!(NamespaceAccess::All.as_filter(), None);
    }

    #[test]
    fn namespaces_are_validated() {
        assert!(validate_namespace("ns", "team-a").is_ok());
        for bad in ["", "-a", "a-", "A", "a_b", &"a".repeat(64)] {
            assert!(validate_namespace("ns", bad).is_err(), "{bad}");
        }
    }
}
