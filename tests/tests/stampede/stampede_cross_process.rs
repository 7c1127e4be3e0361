//! Stampede protection across processes: 4 OS processes x 25 concurrent calls on one cold key
//! run the loader exactly once in total (the lease in Redis), counted with Redis `INCR`.

use std::process::Stdio;

use cache_tests::{HelperReport, RedisServer, guard, unix_ms};

const PROCESSES: usize = 4;
const CALLS_PER_PROCESS: usize = 25;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn stampede_across_4_processes_runs_loader_once() {
    let server = RedisServer::start();
    let raw = server.raw().await;
    let counter_key = "test:stampede:loader-runs";
    // Start together: every helper sleeps until this wall-clock time (after its own start-up).
    let start_at = unix_ms() + 1_500;

    let children: Vec<_> = (0..PROCESSES)
        .map(|_| {
            tokio::process::Command::new(env!("CARGO_BIN_EXE_stampede-helper"))
                .args([
                    server.url(),
                    "xproc".to_owned(),
                    "42".to_owned(),
                    counter_key.to_owned(),
                    start_at.to_string(),
                    CALLS_PER_PROCESS.to_string(),
                ])
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .kill_on_drop(true)
                .spawn()
                .expect("spawn stampede-helper")
        })
        .collect();

    let mut reports = Vec::new();
    for child in children {
        let out = guard("a stampede-helper process", child.wait_with_output())
            .await
            .expect("wait for helper");
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success(),
            "helper failed ({}):\nstdout: {stdout}\nstderr: {stderr}",
            out.status
        );
        let line = stdout
            .lines()
            .rev()
            .find(|l| l.starts_with('{'))
            .unwrap_or_else(|| {
                panic!("helper printed no report:\nstdout: {stdout}\nstderr: {stderr}")
            });
        let report: HelperReport = serde_json::from_str(line).expect("parse helper report");
        reports.push(report);
    }

    for report in &reports {
        assert_eq!(
            report.values.len(),
            CALLS_PER_PROCESS,
            "process {} made all its calls",
            report.pid
        );
        for value in &report.values {
            assert_eq!(
                value.as_deref(),
                Some("value-42"),
                "process {} got the value: {:?}",
                report.pid,
                report.values
            );
        }
    }
    let total = raw.get_i64(counter_key).await.unwrap_or(0);
    let local: usize = reports.iter().map(|r| r.local_loads).sum();
    assert_eq!(
        total,
        1,
        "{PROCESSES} processes x {CALLS_PER_PROCESS} calls on one cold key: loader ran {total} times in total \
         (per process: {:?})",
        reports.iter().map(|r| r.local_loads).collect::<Vec<_>>()
    );
    assert_eq!(local, 1);
    assert!(
        raw.exists("xproc:stampede:42").await,
        "the value is cached afterwards"
    );
}
