//! The kinds of change the database announces (`NOTIFY hivegraph_changes`, see the
//! `change_notifications` migration): the caches drop what a change makes stale, and the pubsub
//! hub fans changes out to subscriptions.

use uuid::Uuid;

/// What changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Topic {
    /// A registry row.
    Registry(Uuid),
    /// An instance row.
    Instance(Uuid),
    /// A deployment operation row.
    Deployment(Uuid),
    /// A new monitoring sample of an instance.
    Metrics(Uuid),
}

impl Topic {
    /// Parses a NOTIFY payload.
    pub fn parse(payload: &str) -> Option<Topic> {
        let (kind, id) = payload.split_once(':')?;
        let id = Uuid::parse_str(id).ok()?;
        Some(match kind {
            "registry" => Topic::Registry(id),
            "instance" => Topic::Instance(id),
            "deployment" => Topic::Deployment(id),
            "metrics" => Topic::Metrics(id),
            _ => return None,
        })
    }
}
