//! Subscription roots. Each stream first sends the current state, then every change.
//!
//! Changes come from the process-wide [`PubSub`] hub (PostgreSQL `LISTEN/NOTIFY`), which loads a
//! changed row once per process and shares it with every subscriber of that row. A subscriber
//! that falls behind skips to the newest state (it reloads it once), so a slow client never makes
//! the gateway buffer without bound.

use std::collections::HashSet;

use async_graphql::{Context, ID, Subscription};
use futures_util::Stream;
use tokio::sync::broadcast::error::RecvError;

use crate::changes::Topic;
use crate::error::AppError;
use crate::graphql::context::RequestCtx;
use crate::graphql::types::*;
use crate::ids::{self, Kind};
use crate::pubsub::{PubSub, Snapshot, load};
use crate::state::Services;

/// The current state of `topic`, then each new state; ends when the row is gone.
fn follow(
    hub: PubSub,
    pool: dataloaders::DbPool,
    topic: Topic,
) -> impl Stream<Item = Result<Snapshot, AppError>> {
    async_stream::stream! {
        // Subscribe before reading, so that no change between the two is missed.
        let mut rx = hub.subscribe(topic);
        match load(&pool, topic).await {
            Ok(Snapshot::Gone) => return,
            Ok(s) => yield Ok(s),
            Err(e) => { yield Err(AppError::from(e)); return; }
        }
        loop {
            let next = match rx.recv().await {
                Ok(s) => s,
                Err(RecvError::Lagged(_)) => match load(&pool, topic).await {
                    Ok(s) => s,
                    Err(e) => { yield Err(AppError::from(e)); continue; }
                },
                Err(RecvError::Closed) => return,
            };
            if matches!(next, Snapshot::Gone) {
                return;
            }
            yield Ok(next);
        }
    }
}

/// Whether a snapshot is the final state of a terminated instance.
fn is_terminated(s: &Result<Snapshot, AppError>) -> bool {
    matches!(s, Ok(Snapshot::Instance(row)) if row.status == dataloaders::enums::InstanceStatus::Terminated)
}

/// `source` up to and including the first state of a terminated instance: a deleted instance's
/// streams send its final state and complete.
fn until_terminated(
    source: impl Stream<Item = Result<Snapshot, AppError>>,
) -> impl Stream<Item = Result<Snapshot, AppError>> {
    async_stream::stream! {
        futures_util::pin_mut!(source);
        while let Some(s) = futures_util::StreamExt::next(&mut source).await {
            let last = is_terminated(&s);
            yield s;
            if last {
                return;
            }
        }
    }
}

fn hub(ctx: &Context<'_>) -> (PubSub, dataloaders::DbPool) {
    let services = ctx.data_unchecked::<Services>();
    (services.pubsub.clone(), services.pool.clone())
}

/// The caller, who must be authenticated (a schema executed without a request context has no
/// caller: refused).
fn caller<'a>(ctx: &'a Context<'_>) -> Result<&'a RequestCtx, AppError> {
    let rc = ctx
        .data_opt::<std::sync::Arc<RequestCtx>>()
        .ok_or(AppError::Unauthenticated)?;
    rc.require_authenticated()?;
    Ok(rc)
}

/// Checked at subscribe time: the topic's object exists and the caller may see it. Registries
/// are readable by every authenticated caller; instances (and so their events, metrics and
/// operations) only in the caller's namespaces. A hidden object answers NOT_FOUND, like a missing
/// one, and the refusal is audited.
async fn authorize(
    ctx: &Context<'_>,
    action: &'static str,
    topic: Topic,
    what: &'static str,
) -> Result<(), AppError> {
    let result = check_visible(ctx, topic, what).await;
    if let Err(e) = &result
        && e.is_denial()
        && let (Some(services), Some(rc)) = (
            ctx.data_opt::<Services>(),
            ctx.data_opt::<std::sync::Arc<RequestCtx>>(),
        )
    {
        let actor = crate::audit::Actor {
            name: rc.actor.clone(),
            request_id: rc.request_id.clone(),
        };
        let target = match topic {
            Topic::Instance(id) | Topic::Deployment(id) | Topic::Registry(id) => {
                Some(id.to_string())
            }
            _ => None,
        };
        crate::audit::record_standalone(
            &services.pool,
            crate::audit::AuditEntry::raw(&actor, action, what, target, "denied")
                .details(serde_json::json!({ "code": e.code() })),
        )
        .await;
    }
    result
}

async fn check_visible(
    ctx: &Context<'_>,
    topic: Topic,
    what: &'static str,
) -> Result<(), AppError> {
    let rc = caller(ctx)?;
    let (_, pool) = hub(ctx);
    let namespace = match load(&pool, topic).await? {
        Snapshot::Gone => return Err(AppError::NotFound(what)),
        Snapshot::Instance(row) => Some(row.namespace.clone()),
        Snapshot::Deployment(row) => match load(&pool, Topic::Instance(row.instance_id)).await? {
            Snapshot::Instance(inst) => Some(inst.namespace.clone()),
            _ => return Err(AppError::NotFound(what)),
        },
        _ => None,
    };
    match namespace {
        Some(ns) if !rc.access.allows(&ns) => Err(AppError::Hidden(what)),
        _ => Ok(()),
    }
}

/// The audit action of a refused instance subscription.
const SUBSCRIBE_INSTANCE: &str = "subscribeInstance";

/// The subscription root: live instance status, events, metrics, deployment progress and registry sync.
pub struct SubscriptionRoot;

/// The subscription root: live instance status, events, metrics, deployment progress and registry sync.
#[Subscription]
impl SubscriptionRoot {
    /// The instance's status, phase, replicas and health: the current state first, then every
    /// change. Completes after the TERMINATED state (at once for an instance already
    /// terminated).
    async fn instance_status(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The instance's id.")] instance_id: ID,
    ) -> async_graphql::Result<impl Stream<Item = Result<Instance, AppError>>> {
        use futures_util::StreamExt;
        caller(ctx)?;
        let id = ids::decode(Kind::Instance, &instance_id, "instanceId")?;
        authorize(ctx, SUBSCRIBE_INSTANCE, Topic::Instance(id), "instance").await?;
        let (hub, pool) = hub(ctx);
        let mut last = None;
        Ok(
            until_terminated(follow(hub, pool, Topic::Instance(id))).filter_map(move |s| {
                let out = match s {
                    Ok(Snapshot::Instance(row)) if last != Some(row.updated_at) => {
                        last = Some(row.updated_at);
                        Some(Ok(Instance((*row).clone())))
                    }
                    Ok(_) => None,
                    Err(e) => Some(Err(e)),
                };
                futures_util::future::ready(out)
            }),
        )
    }

    /// Kubernetes events of the instance and its pods: the recent events first, then each new one.
    /// Completes when the instance is terminated.
    async fn instance_events(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The instance's id.")] instance_id: ID,
    ) -> async_graphql::Result<impl Stream<Item = Result<InstanceEvent, AppError>>> {
        use futures_util::StreamExt;
        caller(ctx)?;
        let id = ids::decode(Kind::Instance, &instance_id, "instanceId")?;
        authorize(ctx, SUBSCRIBE_INSTANCE, Topic::Instance(id), "instance").await?;
        let (hub, pool) = hub(ctx);
        let mut seen: HashSet<String> = HashSet::new();
        Ok(
            until_terminated(follow(hub, pool, Topic::Instance(id))).flat_map(move |s| {
                let fresh: Vec<Result<InstanceEvent, AppError>> = match s {
                    Err(e) => vec![Err(e)],
                    Ok(Snapshot::Instance(row)) => {
                        let events: Vec<serde_json::Value> =
                            serde_json::from_value(row.events.clone()).unwrap_or_default();
                        events
                            .into_iter()
                            .filter(|e| seen.insert(event_identity(e)))
                            .filter_map(|e| serde_json::from_value::<InstanceEvent>(e).ok())
                            .map(Ok)
                            .collect()
                    }
                    Ok(_) => Vec::new(),
                };
                futures_util::stream::iter(fresh)
            }),
        )
    }

    /// Monitoring samples of the instance: the newest first, then each new sample. Completes when
    /// the instance is terminated.
    async fn instance_metrics(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The instance's id.")] instance_id: ID,
    ) -> async_graphql::Result<impl Stream<Item = Result<MonitoringMetrics, AppError>>> {
        use futures_util::StreamExt;
        caller(ctx)?;
        let id = ids::decode(Kind::Instance, &instance_id, "instanceId")?;
        authorize(ctx, SUBSCRIBE_INSTANCE, Topic::Instance(id), "instance").await?;
        let (hub, pool) = hub(ctx);
        let mut last = None;
        let instance = until_terminated(follow(hub.clone(), pool.clone(), Topic::Instance(id)));
        let ended = async move {
            futures_util::pin_mut!(instance);
            while instance.next().await.is_some() {}
        };
        Ok(metrics_stream(hub, pool, id)
            .take_until(ended)
            .filter_map(move |s| {
                let out = match s {
                    Ok(Snapshot::Metrics(row)) if last != Some(row.id) => {
                        last = Some(row.id);
                        Some(Ok(MonitoringMetrics::raw((*row).clone())))
                    }
                    Ok(_) => None,
                    Err(e) => Some(Err(e)),
                };
                futures_util::future::ready(out)
            }))
    }

    /// Progress of a deployment operation: the current state first, then each step; completes
    /// when the operation ends.
    async fn deployment_progress(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The operation's id.")] deployment_id: ID,
    ) -> async_graphql::Result<impl Stream<Item = Result<Deployment, AppError>>> {
        caller(ctx)?;
        let id = ids::decode(Kind::Deployment, &deployment_id, "deploymentId")?;
        authorize(
            ctx,
            "deploymentProgress",
            Topic::Deployment(id),
            "deployment",
        )
        .await?;
        let (hub, pool) = hub(ctx);
        let source = follow(hub, pool, Topic::Deployment(id));
        Ok(async_stream::stream! {
            let mut last = None;
            futures_util::pin_mut!(source);
            while let Some(s) = futures_util::StreamExt::next(&mut source).await {
                match s {
                    Ok(Snapshot::Deployment(row)) => {
                        if last == Some(row.updated_at) {
                            continue;
                        }
                        last = Some(row.updated_at);
                        let done = row.status.is_terminal();
                        yield Ok(Deployment((*row).clone()));
                        if done {
                            break;
                        }
                    }
                    Ok(_) => {}
                    Err(e) => yield Err(e),
                }
            }
        })
    }

    /// Sync progress of a registry: the current state first, then every change of status,
    /// server count or error. Ends when the registry is deleted.
    async fn registry_sync(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The registry's id.")] registry_id: ID,
    ) -> async_graphql::Result<impl Stream<Item = Result<Registry, AppError>>> {
        use futures_util::StreamExt;
        caller(ctx)?;
        let id = ids::decode(Kind::Registry, &registry_id, "registryId")?;
        authorize(ctx, "registrySync", Topic::Registry(id), "registry").await?;
        let (hub, pool) = hub(ctx);
        let mut last = None;
        Ok(follow(hub, pool, Topic::Registry(id)).filter_map(move |s| {
            let out = match s {
                Ok(Snapshot::Registry(row)) if last != Some(row.updated_at) => {
                    last = Some(row.updated_at);
                    Some(Ok(Registry((*row).clone())))
                }
                Ok(_) => None,
                Err(e) => Some(Err(e)),
            };
            futures_util::future::ready(out)
        }))
    }
}

/// Metrics have no row until the first sample: follow the topic without requiring one.
fn metrics_stream(
    hub: PubSub,
    pool: dataloaders::DbPool,
    instance: uuid::Uuid,
) -> impl Stream<Item = Result<Snapshot, AppError>> {
    let topic = Topic::Metrics(instance);
    async_stream::stream! {
        let mut rx = hub.subscribe(topic);
        match load(&pool, topic).await {
            Ok(Snapshot::Gone) => {}
            Ok(s) => yield Ok(s),
            Err(e) => yield Err(AppError::from(e)),
        }
        loop {
            match rx.recv().await {
                Ok(s) => yield Ok(s),
                Err(RecvError::Lagged(_)) => match load(&pool, topic).await {
                    Ok(s) => yield Ok(s),
                    Err(e) => yield Err(AppError::from(e)),
                },
                Err(RecvError::Closed) => return,
            }
        }
    }
}

/// What makes two event records the same event (a repeated event keeps its identity while its
/// count grows, and is sent again then).
fn event_identity(e: &serde_json::Value) -> String {
    format!(
        "{}|{}|{}|{}|{}",
        e["objectKind"], e["objectName"], e["reason"], e["count"], e["lastSeen"]
    )
}
