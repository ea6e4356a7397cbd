//! Per-request context: the reader with its statement counter, the batching loader, and who is
//! asking.

use std::sync::Arc;

use async_graphql::Context;
use async_graphql::dataloader::DataLoader;
use dataloaders::{DbPool, MAX_BATCH_SIZE, PollGate, QueryStats, Reader};

use crate::auth::{Principal, Role};
use crate::authz::NamespaceAccess;
use crate::cache::{AuthScope, CachedReads};
use crate::error::{AppError, AppResult};

/// Data every resolver of one request shares.
pub struct RequestCtx {
    /// The read side, counting this request's statements.
    pub reader: Reader,
    /// Batches and caches loads for the duration of the request.
    pub loader: DataLoader<Reader>,
    /// The request's correlation id (also in logs and the audit trail).
    pub request_id: String,
    /// Who is asking (the principal's subject, for audit records).
    pub actor: String,
    /// Who is asking, with their roles.
    pub principal: Principal,
    /// The namespaces whose instance data the caller may read (the reader filters by them).
    pub access: NamespaceAccess,
    /// What the caller may see; cached answers are shared only within one scope.
    pub scope: AuthScope,
    /// Keeps the loader from cutting a batch while the request is being polled: wrap the
    /// request's execution in `gate.holding(..)` (see `dataloaders::batch`).
    pub gate: PollGate,
}

impl RequestCtx {
    /// A context for one request whose namespace access is the principal's baseline: admins see
    /// every namespace, everyone else none (see [`RequestCtx::authorized`] for granted ones).
    pub fn new(pool: DbPool, request_id: String, principal: Principal) -> Self {
        let access = NamespaceAccess::baseline(&principal);
        Self::with_access(pool, request_id, principal, access)
    }

    /// A context for one request with the namespace grants of the principal loaded.
    pub async fn authorized(
        pool: DbPool,
        request_id: String,
        principal: Principal,
    ) -> AppResult<Self> {
        let access = NamespaceAccess::load(&pool, &principal).await?;
        Ok(Self::with_access(pool, request_id, principal, access))
    }

    /// A context for one request with explicit namespace access.
    pub fn with_access(
        pool: DbPool,
        request_id: String,
        principal: Principal,
        access: NamespaceAccess,
    ) -> Self {
        let reader = Reader::scoped(pool, access.as_filter());
        let gate = PollGate::new();
        let loader_gate = gate.clone();
        let loader = DataLoader::new(reader.clone(), move |load| {
            tokio::spawn(loader_gate.waiting(load))
        })
        .max_batch_size(MAX_BATCH_SIZE);
        let scope = AuthScope::of(&principal, &access);
        RequestCtx {
            reader,
            loader,
            request_id,
            actor: principal.subject.clone(),
            principal,
            access,
            scope,
            gate,
        }
    }

    /// Refuses callers who may not read: UNAUTHENTICATED without valid credentials, FORBIDDEN
    /// for a token that carries no role (reads need at least `viewer`; a token issued for
    /// another purpose grants nothing).
    pub fn require_authenticated(&self) -> Result<(), AppError> {
        self.require(Role::Viewer)
    }

    /// Refuses callers without `role` in `namespace` (a namespace the caller named, so refusing
    /// it leaks nothing).
    pub fn require_in_namespace(&self, role: Role, namespace: &str) -> Result<(), AppError> {
        self.require(role)?;
        if !self.access.allows(namespace) {
            return Err(AppError::Forbidden(format!(
                "namespace {namespace} is not granted to you"
            )));
        }
        Ok(())
    }

    /// Refuses callers without `role`: UNAUTHENTICATED without credentials, FORBIDDEN otherwise.
    pub fn require(&self, role: Role) -> Result<(), AppError> {
        if !self.principal.authenticated {
            return Err(AppError::Unauthenticated);
        }
        if !self.principal.has(role) {
            let name = format!("{role:?}").to_lowercase();
            return Err(AppError::Forbidden(format!("this needs the {name} role")));
        }
        Ok(())
    }

    /// The statement counter of this request.
    pub fn stats(&self) -> Arc<QueryStats> {
        self.reader.stats()
    }

    /// The request context from a resolver's context.
    ///
    /// # Panics
    /// When the request was executed without one, which is a wiring bug.
    pub fn of<'a>(ctx: &'a Context<'_>) -> &'a RequestCtx {
        ctx.data_unchecked::<Arc<RequestCtx>>()
    }

    /// The request's reads through the cross-request caches (when the schema has services).
    pub fn reads<'a>(ctx: &'a Context<'_>) -> CachedReads<'a> {
        let rc = Self::of(ctx);
        let caches = ctx.data_opt::<crate::state::Services>().map(|s| &s.caches);
        CachedReads::new(caches, &rc.scope, &rc.loader)
    }
}
