//! `hivegraph registry sync <name-or-id> | --all`: runs syncs in-process against DATABASE_URL and
//! prints their results. A progress bar is drawn on stderr only when stderr is a terminal.

use std::io::IsTerminal;
use std::sync::Arc;
use std::time::Instant;

use dataloaders::enums::RegistryStatus;
use dataloaders::models::RegistryRow;
use dataloaders::schema::registries;
use diesel::prelude::*;
use diesel_async::RunQueryDsl;
use indicatif::{ProgressBar, ProgressStyle};
use uuid::Uuid;

use super::progress::{ProgressEvent, SyncProgress};
use super::{SyncOutcome, SyncService};
use crate::audit::Actor;
use crate::config::{DatabaseConfig, Mode, RegistryPolicy, SecretKeyConfig, SyncConfig};
use crate::registries::store::open_auth;

/// What the command was asked to do.
pub struct SyncCommand {
    pub target: Option<String>,
    pub all: bool,
    pub json: bool,
    pub database: DatabaseConfig,
    pub sync: SyncConfig,
    pub policy: RegistryPolicy,
    pub keys: SecretKeyConfig,
    /// Who runs it, for the audit log (`cli:USER`).
    pub user: String,
}

struct Bar(ProgressBar);

impl SyncProgress for Bar {
    fn event(&self, e: ProgressEvent) {
        match e {
            ProgressEvent::Connecting { host } => {
                self.0.set_message(format!("fetching from {host}"))
            }
            ProgressEvent::Page {
                page,
                entries,
                bytes,
            } => {
                self.0.set_message(format!(
                    "page {page}: {entries} entries, {:.1} MiB",
                    bytes as f64 / 1048576.0
                ));
                self.0.tick();
            }
            ProgressEvent::Read { entries } => {
                self.0.set_message(format!("read {entries} entries"))
            }
            ProgressEvent::Storing { entries } => {
                self.0.set_message(format!("storing {entries} servers"))
            }
            ProgressEvent::Done => self.0.finish_and_clear(),
        }
    }
}

/// Peak resident memory of this process in MiB (Linux `VmHWM`), if known.
pub fn peak_rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

async fn resolve(
    conn: &mut diesel_async::AsyncPgConnection,
    target: &str,
) -> anyhow::Result<RegistryRow> {
    let by_id = Uuid::parse_str(target)
        .ok()
        .or_else(|| crate::ids::decode(crate::ids::Kind::Registry, target, "id").ok());
    let q = registries::table.select(RegistryRow::as_select());
    let found = match by_id {
        Some(id) => q
            .filter(registries::id.eq(id))
            .first(conn)
            .await
            .optional()?,
        None => q
            .filter(
                diesel::dsl::sql::<diesel::sql_types::Bool>("lower(name) = lower(")
                    .bind::<diesel::sql_types::Text, _>(target.to_string())
                    .sql(")"),
            )
            .first(conn)
            .await
            .optional()?,
    };
    found.ok_or_else(|| anyhow::anyhow!("no registry named or with id {target:?}"))
}

fn describe(o: &SyncOutcome) -> String {
    let r = &o.report;
    if o.status == RegistryStatus::Active {
        format!(
            "registry {}: ACTIVE, {} servers ({} container, {} remote); {} added, {} updated, {} unchanged, \
             {} removed, {} kept as removed upstream, {} skipped; {} {} read, {} entries in {} page(s), {:.2} s",
            o.registry_name,
            o.server_count,
            r.container_servers,
            r.remote_servers,
            r.added,
            r.updated,
            r.unchanged,
            r.removed,
            r.marked_removed,
            r.skipped_count,
            match r.mode {
                super::SyncMode::Full => "full",
                super::SyncMode::Incremental => "incremental",
            },
            r.format.map(super::formats::format_name).unwrap_or("?"),
            r.entries,
            r.pages,
            r.duration_ms as f64 / 1000.0
        )
    } else {
        format!(
            "registry {}: {} — {}",
            o.registry_name,
            o.status.as_db_str().to_uppercase(),
            r.error.as_deref().unwrap_or("unknown error")
        )
    }
}

/// A one-shot sync allocates a few hundred MiB of fresh memory once (the document, its parsed
/// tree, the normalised servers). With transparent huge pages the allocator's regions are
/// backed by 2 MiB pages that the kernel zeroes on first touch: that zeroing was half of the
/// command's CPU time on the first sync of 10,000 servers (scripts/lib/bench-findings.md).
/// The long-running gateway, which reuses its memory, is left as it is.
fn decline_huge_pages() {
    #[cfg(target_os = "linux")]
    if let Err(e) = rustix::thread::disable_transparent_huge_pages(true) {
        tracing::debug!(error = %e, "could not decline transparent huge pages");
    }
}

/// Runs the command. Fails (non-zero exit) when any registry did not sync.
pub async fn run(cmd: SyncCommand) -> anyhow::Result<()> {
    let t0 = Instant::now();
    decline_huge_pages();
    let pool = crate::db::pool(&cmd.database)?;
    if !crate::db::migrations_current(&pool).await {
        anyhow::bail!(
            "the database is unreachable or its schema is not current: run `hivegraph migrate` first"
        );
    }
    let keys = Arc::new(crate::secrets::Keyring::from_config(&cmd.keys, Mode::Dev)?);
    let service = SyncService::new(
        pool.clone(),
        keys.clone(),
        cmd.database.url(),
        cmd.sync.clone(),
        &cmd.policy,
        // A one-shot command serves no reads.
        crate::cache::Caches::disabled(),
    )?;
    let targets: Vec<RegistryRow> = {
        let mut conn = crate::db::conn(&pool).await?;
        if cmd.all {
            registries::table
                .select(RegistryRow::as_select())
                .order(registries::name)
                .load(&mut conn)
                .await?
        } else {
            vec![resolve(&mut conn, cmd.target.as_deref().unwrap_or_default()).await?]
        }
    };
    let actor = Actor {
        name: format!("cli:{}", cmd.user),
        request_id: Uuid::new_v4().to_string(),
    };
    let terminal = std::io::stderr().is_terminal();
    let mut results = Vec::new();
    let mut failed = 0usize;
    for row in targets {
        if row.auth_config.is_some()
            && let Err(e) = open_auth(&keys, &row)
        {
            failed += 1;
            let msg = format!(
                "registry {}: its stored credentials cannot be opened ({}); set HIVEGRAPH_SECRET_KEY to the gateway's key",
                row.name,
                e.public_message()
            );
            eprintln!("{msg}");
            results.push(
                serde_json::json!({ "registry": row.name, "status": "NOT_STARTED", "error": msg }),
            );
            continue;
        }
        let progress: Arc<dyn SyncProgress> = if terminal {
            let bar = ProgressBar::new_spinner();
            bar.set_style(
                ProgressStyle::with_template("{spinner} {prefix}: {msg} [{elapsed}]")
                    .expect("valid template"),
            );
            bar.set_prefix(row.name.clone());
            bar.enable_steady_tick(std::time::Duration::from_millis(120));
            Arc::new(Bar(bar))
        } else {
            Arc::new(super::NoProgress)
        };
        let started = service.start(row.id, Some(&actor), progress).await;
        let outcome = match started {
            Ok((_, handle)) => {
                tokio::select! {
                    r = handle => r.map_err(|e| anyhow::anyhow!("the sync task failed: {e}"))?,
                    _ = tokio::signal::ctrl_c() => {
                        eprintln!("interrupted: stopping the sync");
                        service.shutdown(std::time::Duration::from_secs(10)).await;
                        anyhow::bail!("interrupted");
                    }
                }
            }
            Err(e) => {
                failed += 1;
                let msg = format!("registry {}: {}", row.name, e.public_message());
                eprintln!("{msg}");
                results.push(serde_json::json!({ "registry": row.name, "status": "NOT_STARTED", "error": msg }));
                continue;
            }
        };
        if outcome.status != RegistryStatus::Active {
            failed += 1;
        }
        if cmd.json {
            results.push(serde_json::json!({
                "registry": outcome.registry_name,
                "id": outcome.registry_id,
                "status": outcome.status.as_db_str().to_uppercase(),
                "serverCount": outcome.server_count,
                "report": outcome.report.to_json(),
            }));
        } else {
            println!("{}", describe(&outcome));
        }
    }
    if cmd.json {
        let doc = serde_json::json!({
            "results": results,
            "elapsedSeconds": t0.elapsed().as_secs_f64(),
            "peakRssMiB": peak_rss_mib(),
        });
        println!("{}", serde_json::to_string_pretty(&doc)?);
    }
    if failed > 0 {
        anyhow::bail!(
            "{failed} registr{} did not sync",
            if failed == 1 { "y" } else { "ies" }
        );
    }
    Ok(())
}
