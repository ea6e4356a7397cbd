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

/// Drops the databases earlier runs of this harness left behind (older than `STALE_AFTER`).
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
    for db in names {
        if created_at(&db.datname).is_some_and(|t| t < cutoff) {
            let _ = admin
                .batch_execute(&format!(
                    "DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)",
                    db.datname
                ))
                .await;
        }
    }
}

/// Drops its database when dropped (the last `TestDb` handle holds it).
pub struct DropGuard(pub String);

impl Drop for DropGuard {
    fn drop(&mut self) {
        let name = std::mem::take(&mut self.0);
        // Drop runs inside the test's runtime, which may have one thread: a thread of its own
        // with its own runtime, joined so the process does not exit first. FORCE ends the
        // connections the gateway's pool still holds.
        let outcome = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| e.to_string())?;
            rt.block_on(async {
                let mut admin = AsyncPgConnection::establish(&admin_url())
                    .await
                    .map_err(|e| e.to_string())?;
                admin
                    .batch_execute(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
                    .await
                    .map_err(|e| format!("{name}: {e}"))
            })
        })
        .join();
        match outcome {
            Ok(Ok(())) => {}
            Ok(Err(e)) => eprintln!("could not drop the test database: {e}"),
            Err(_) => eprintln!("could not drop the test database (the dropping thread panicked)"),
        }
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
