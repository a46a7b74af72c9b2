//! Backlog phase (`BENCH_BACKLOG=N`): N events accepted while the sink is paused, then RSS, disk,
//! and the time from a restart to ready with that backlog.

use std::time::{Duration, Instant};

use crate::daemon::{start_daemon, stop, write_config};
use crate::load::{Load, dir_size, free_port, portal, rss_kib, wait_port};
use crate::report::{Report, out};

pub fn run(rt: &tokio::runtime::Runtime, report: &mut Report, n: u64, clients: usize) {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let config = write_config(dir.path(), port);
    let mut daemon = start_daemon(&config, dir.path());
    wait_port(port);
    let base = format!("http://127.0.0.1:{port}");
    rt.block_on(crate::load::admin_post(port, "/admin/sinks/log/pause"));
    let started = Instant::now();
    let r = rt.block_on(
        Load::new(
            &format!("{base}/hooks/portal"),
            clients,
            24 * 3600,
            portal(9),
        )
        .limit(n)
        .run(),
    );
    let fill = started.elapsed();
    std::thread::sleep(Duration::from_secs(2));
    let rss_backlog = rss_kib(daemon.id());
    let disk = dir_size(&dir.path().join("data"));
    stop(&mut daemon);
    let started = Instant::now();
    let mut daemon = start_daemon(&config, dir.path());
    let ready = loop {
        let up = rt.block_on(async {
            reqwest::get(format!("{base}/readyz"))
                .await
                .is_ok_and(|r| r.status().is_success())
        });
        if up {
            break started.elapsed();
        }
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "not ready after 120 s"
        );
        std::thread::sleep(Duration::from_millis(10));
    };
    let rss_ready = rss_kib(daemon.id());
    std::thread::sleep(Duration::from_secs(5));
    let rss_draining = rss_kib(daemon.id());
    stop(&mut daemon);
    out!(report);
    out!(report, "## Backlog of {} events (sink paused)", r.ok);
    out!(report);
    out!(
        report,
        "- filled in {:.0} s ({:.0} accepts/s, {} errors)",
        fill.as_secs_f64(),
        r.rate,
        r.errors
    );
    out!(
        report,
        "- RSS with the backlog: {:.1} MiB",
        rss_backlog as f64 / 1024.0
    );
    out!(
        report,
        "- disk: {:.0} MiB ({:.0} bytes/event)",
        disk as f64 / 1048576.0,
        disk as f64 / r.ok.max(1) as f64
    );
    out!(
        report,
        "- restart to ready: {:.2} s; RSS at ready {:.1} MiB, 5 s into draining {:.1} MiB",
        ready.as_secs_f64(),
        rss_ready as f64 / 1024.0,
        rss_draining as f64 / 1024.0
    );
    report.target(
        &format!("RSS with {} queued events", r.ok),
        format!("**{:.1} MiB**", rss_backlog as f64 / 1024.0),
        "≤ 128 MiB",
        rss_backlog <= 128 * 1024,
    );
    report.target(
        "restart to ready with that backlog",
        format!("**{:.2} s**", ready.as_secs_f64()),
        "≤ 2 s",
        ready <= Duration::from_secs(2),
    );
    let per_event = disk as f64 / r.ok.max(1) as f64;
    report.target(
        "disk per queued 1 KB event (the backlog's store)",
        format!("**{per_event:.0} B** ({:.2} KiB)", per_event / 1024.0),
        "≤ 1.5 KiB (1536 B)",
        per_event <= 1536.0,
    );
}
