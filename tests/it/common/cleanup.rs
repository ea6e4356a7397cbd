//! Test databases are dropped after use: each `TestDb` holds a guard that drops its database when
//! the last handle goes (also when the test panics). A test process killed before that (a
//! timeout) leaves its database behind; the next harness start drops those, by age: the creation
//! time is in the name (`hg_test_{unix seconds}_{uuid}`), so concurrent test processes never drop
//! each other's live databases, and names of another shape are never touched.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl, SimpleAsyncConnection};

use super::admin_url;

/// Databases older than this are left over (a test is stopped after 5 minutes, see
/// .config/nextest.toml).
const STALE_AFTER: Duration = Duration::from_secs(60 * 60);

const PREFIX: &str = "hg_test_";

/// A new database name that carries its creation time.
pub fn fresh_name() -> String {
    format!("{PREFIX}{}_{}", now_secs(), uuid::Uuid::new_v4().simple())
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs()
}

/// The creation time of a database this harness named, or None for any other name.
fn created_at(name: &str) -> Option<u64> {
    let (secs, id) = name.strip_prefix(PREFIX)?.split_once('_')?;
    let valid = secs.len() == 10
        && secs.bytes().all(|b| b.is_ascii_digit())
        && id.len() == 32
        && id.bytes().all(|b| b.is_ascii_hexdigit());
    valid.then(|| secs.parse().ok()).flatten()
}

/// Drops the databases earlier runs of this harness left behind (older than `STALE_AFTER`; a
/// few per process, so that a backlog does not hold up one test).
pub async fn drop_stale(admin: &mut AsyncPgConnection) {
    #[derive(diesel::QueryableByName)]
    struct Db {
        #[diesel(sql_type = diesel::sql_types::Text)]
        datname: String,
    }
    let names =
        diesel::sql_query("SELECT datname FROM pg_database WHERE datname LIKE 'hg\\_test\\_%'")
            .load::<Db>(admin)
            .await
            .unwrap_or_default();
    let cutoff = now_secs().saturating_sub(STALE_AFTER.as_secs());
    let stale: Vec<String> = names
        .into_iter()
        .map(|db| db.datname)
        .filter(|n| created_at(n).is_some_and(|t| t < cutoff))
        .take(3)
        .collect();
    if !stale.is_empty() {
        let _ =
            tokio::task::spawn_blocking(move || stale.into_iter().for_each(drop_database)).await;
    }
}

/// How long a test waits for its database's DROP to finish. PostgreSQL completes a DROP it has
/// received even when the client has gone, and a DROP can wait a minute for every server process
/// to acknowledge it (`ProcSignalBarrier`): past this, the test goes on without waiting.
const DROP_GRACE: Duration = Duration::from_secs(2);

enum Progress {
    Connected,
    Done(Result<(), String>),
}

/// Sends `DROP DATABASE name WITH (FORCE)` (FORCE ends the connections the gateway's pool still
/// holds) from a thread with its own runtime (the caller may be inside a one-thread runtime), and
/// waits for it at most `DROP_GRACE` once it has been sent.
fn drop_database(name: String) {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let outcome = (|| {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| e.to_string())?;
            rt.block_on(async {
                let mut admin = AsyncPgConnection::establish(&admin_url())
                    .await
                    .map_err(|e| e.to_string())?;
                let _ = tx.send(Progress::Connected);
                admin
                    .batch_execute(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
                    .await
                    .map_err(|e| format!("{name}: {e}"))
            })
        })();
        let _ = tx.send(Progress::Done(outcome));
    });
    let outcome = match rx.recv() {
        Ok(Progress::Connected) => match rx.recv_timeout(DROP_GRACE) {
            Ok(Progress::Done(outcome)) => outcome,
            // Sent; the server finishes it on its own.
            _ => Ok(()),
        },
        Ok(Progress::Done(outcome)) => outcome,
        Err(_) => Err("the dropping thread panicked".into()),
    };
    if let Err(e) = outcome {
        eprintln!("could not drop the test database: {e}");
    }
}

/// Drops its database when dropped (the last `TestDb` handle holds it).
pub struct DropGuard(pub String);

impl Drop for DropGuard {
    fn drop(&mut self) {
        drop_database(std::mem::take(&mut self.0));
    }
}

#[test]
fn only_names_of_this_harness_have_an_age() {
    let name = fresh_name();
    assert!(
        created_at(&name).is_some_and(|t| t + 5 >= now_secs()),
        "{name}"
    );
    assert_eq!(
        created_at("hg_test_1700000000_0123456789abcdef0123456789abcdef"),
        Some(1_700_000_000)
    );
    // The older shape (no time), the scripts' databases and other prefixes are never touched.
    assert_eq!(created_at("hg_test_0123456789abcdef0123456789abcdef"), None);
    assert_eq!(created_at("hg_test_gateways"), None);
    assert_eq!(created_at("hg_tpl_abcdef"), None);
    assert_eq!(created_at("hg_test_1700000000_x; DROP"), None);
}
