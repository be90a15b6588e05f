//! Policy reloads (file change and SIGHUP), good and bad, while a query loop runs: no query fails,
//! a bad file is rejected with its located error and a metric, and the old policy keeps serving.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use common::{POLICY, Steerd, query, udp_raw, wait_until};
use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::RecordType;
use hickory_proto::serialize::binary::BinEncodable as _;

/// Queries the loop sends at most.
const QUERIES_MAX: u64 = 200_000;

fn write_atomically(path: &std::path::Path, text: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).expect("write policy");
    std::fs::rename(&tmp, path).expect("rename policy");
}

fn first_answer(s: &Steerd) -> String {
    let q = query("api.infer.example.com.", RecordType::A, false, None);
    common::addrs(&common::udp(s.dns, &q)).join(",")
}

#[test]
fn reloads_good_and_bad_policies_without_failing_a_query() {
    let s = Steerd::start();
    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let dns = s.dns;
    let looper = {
        let (stop, ok, failed) = (stop.clone(), ok.clone(), failed.clone());
        std::thread::spawn(move || {
            let bytes = query("api.infer.example.com.", RecordType::A, true, None)
                .to_bytes()
                .expect("encode");
            let started = std::time::SystemTime::now();
            for _ in 0..QUERIES_MAX {
                if stop.load(Ordering::Relaxed)
                    || started.elapsed().unwrap_or_default() > Duration::from_mins(1)
                {
                    break;
                }
                let good = udp_raw(dns, &bytes)
                    .and_then(|r| Message::from_vec(&r).ok())
                    .is_some_and(|m| {
                        m.metadata.response_code == ResponseCode::NoError && m.answers.len() == 1
                    });
                if good {
                    ok.fetch_add(1, Ordering::Relaxed)
                } else {
                    failed.fetch_add(1, Ordering::Relaxed)
                };
            }
        })
    };
    let path = s.policy_path();
    // us-east is first in policy order: it answers while nothing is measured.
    wait_until(Duration::from_secs(5), "the first answer", || {
        first_answer(&s) == "198.19.1.10"
    });

    // 1. A good change by file: us-east's endpoint moves.
    write_atomically(&path, &POLICY.replace("198.19.1.10", "198.19.1.99"));
    wait_until(Duration::from_secs(5), "the reloaded endpoint", || {
        first_answer(&s) == "198.19.1.99"
    });

    // 2. A bad file: rejected, the old policy keeps serving.
    write_atomically(
        &path,
        &POLICY
            .replace("198.19.1.10", "198.19.1.99")
            .replace("regions: [us-east, eu-west]", "regions: [us-east, eu-wset]"),
    );
    wait_until(Duration::from_secs(5), "the rejection in the metrics", || {
        s.get("/metrics", None)
            .1
            .contains("steerd_policy_reloads_total{result=\"failed\"} 1")
    });
    assert_eq!(first_answer(&s), "198.19.1.99", "the old policy keeps serving");
    let log = s.stderr();
    assert!(
        log.contains("policy rejected") && log.contains("eu-wset"),
        "{log}"
    );
    assert!(log.contains("policy.yaml:"), "the error is located: {log}");

    // 3. SIGHUP after a good edit.
    write_atomically(&path, &POLICY.replace("198.19.1.10", "198.19.1.77"));
    let st = std::process::Command::new("kill")
        .args(["-HUP", &s.child.id().to_string()])
        .status()
        .expect("kill");
    assert!(st.success());
    wait_until(Duration::from_secs(5), "the SIGHUP reload", || {
        first_answer(&s) == "198.19.1.77"
    });
    std::thread::sleep(Duration::from_millis(300));

    stop.store(true, Ordering::Relaxed);
    looper.join().expect("query loop");
    let (ok, failed) = (ok.load(Ordering::Relaxed), failed.load(Ordering::Relaxed));
    assert!(ok > 100, "the loop ran: {ok}");
    assert_eq!(
        failed,
        0,
        "{failed} of {} queries failed during reloads",
        ok + failed
    );
    let metrics = s.get("/metrics", None).1;
    assert!(
        metrics.contains("steerd_policy_reloads_total{result=\"failed\"} 1"),
        "{metrics}"
    );
    let reloads_ok: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("steerd_policy_reloads_total{result=\"ok\"} "))
        .and_then(|v| v.parse().ok())
        .expect("reload metric");
    assert!(reloads_ok >= 2, "{metrics}");
}
