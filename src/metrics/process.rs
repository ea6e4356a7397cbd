//! The process's own metrics (the `process_*` names every Prometheus client library exports),
//! read from `/proc/self` at each scrape, and the database pool's state.

use std::sync::atomic::AtomicU64;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// Linux reports CPU times in `/proc` in units of USER_HZ, which is 100 on every platform.
const TICKS_PER_SECOND: f64 = 100.0;

/// Gauges refreshed before each encoding.
#[derive(Clone, Default)]
pub struct ProcessGauges {
    resident: Gauge,
    cpu: Counter<f64, AtomicU64>,
    open_fds: Gauge,
    max_fds: Gauge,
    start_time: Gauge,
}

impl ProcessGauges {
    /// Registers the gauges in `root` (no prefix).
    pub fn register(&self, root: &mut Registry) {
        let p = self;
        root.register(
            "process_resident_memory_bytes",
            "Resident memory size in bytes",
            p.resident.clone(),
        );
        root.register(
            "process_cpu_seconds",
            "Total user and system CPU time spent in seconds",
            p.cpu.clone(),
        );
        root.register(
            "process_open_fds",
            "Number of open file descriptors",
            p.open_fds.clone(),
        );
        root.register(
            "process_max_fds",
            "Maximum number of open file descriptors",
            p.max_fds.clone(),
        );
        root.register(
            "process_start_time_seconds",
            "Start time of the process since the Unix epoch in seconds",
            p.start_time.clone(),
        );
    }

    /// Reads `/proc/self` (values that cannot be read keep their last value).
    pub fn refresh(&self) {
        if let Some(stat) = read_stat() {
            let cpu = (stat.utime + stat.stime) as f64 / TICKS_PER_SECOND;
            // A counter only goes up: add what is new since the last scrape.
            let delta = cpu - self.cpu.get();
            if delta > 0.0 {
                self.cpu.inc_by(delta);
            }
            if let Some(boot) = boot_time() {
                self.start_time
                    .set(boot + (stat.start_ticks as f64 / TICKS_PER_SECOND) as i64);
            }
        }
        if let Some(kb) = status_kb("VmRSS:") {
            self.resident.set(kb * 1024);
        }
        if let Ok(dir) = std::fs::read_dir("/proc/self/fd") {
            self.open_fds.set(dir.count() as i64);
        }
        if let Some(max) = max_open_files() {
            self.max_fds.set(max);
        }
    }
}

struct Stat {
    utime: u64,
    stime: u64,
    start_ticks: u64,
}

/// Fields 14, 15 and 22 of `/proc/self/stat` (after the command name, which may hold spaces).
fn read_stat() -> Option<Stat> {
    let text = std::fs::read_to_string("/proc/self/stat").ok()?;
    let rest = &text[text.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // `rest` starts at field 3 (state).
    let field = |n: usize| fields.get(n - 3)?.parse::<u64>().ok();
    Some(Stat {
        utime: field(14)?,
        stime: field(15)?,
        start_ticks: field(22)?,
    })
}

fn boot_time() -> Option<i64> {
    let text = std::fs::read_to_string("/proc/stat").ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix("btime "))
        .and_then(|v| v.trim().parse().ok())
}

fn status_kb(key: &str) -> Option<i64> {
    let text = std::fs::read_to_string("/proc/self/status").ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
}

fn max_open_files() -> Option<i64> {
    let text = std::fs::read_to_string("/proc/self/limits").ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix("Max open files"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
}

/// The database pool's state.
#[derive(Clone, Default)]
pub struct PoolGauges {
    size: Gauge,
    open: Gauge,
    in_use: Gauge,
    waiting: Gauge,
    wait_timeouts: Counter,
}

impl PoolGauges {
    /// Registers the gauges in `r` (the `hivegraph_` sub-registry).
    pub fn register(&self, r: &mut Registry) {
        let p = self;
        r.register(
            "db_pool_size",
            "Most connections the database pool may open",
            p.size.clone(),
        );
        r.register(
            "db_pool_connections",
            "Connections the database pool holds open",
            p.open.clone(),
        );
        r.register(
            "db_pool_in_use",
            "Database connections lent out now",
            p.in_use.clone(),
        );
        r.register(
            "db_pool_waiting",
            "Tasks waiting for a database connection",
            p.waiting.clone(),
        );
        r.register(
            "db_pool_wait_timeouts",
            "Waits for a database connection that timed out",
            p.wait_timeouts.clone(),
        );
    }

    /// Reads the pool's state.
    pub fn refresh(&self, pool: &dataloaders::DbPool) {
        let s = pool.status();
        self.size.set(s.max_size as i64);
        self.open.set(s.size as i64);
        self.in_use.set(s.size.saturating_sub(s.available) as i64);
        self.waiting.set(s.waiting as i64);
        let timeouts = dataloaders::pool::wait_timeouts();
        let delta = timeouts.saturating_sub(self.wait_timeouts.get());
        self.wait_timeouts.inc_by(delta);
    }
}
