//! `cargo xtask demo`: brings the lab up and tells the story act by act, with tables; writes
//! `target/demo/summary.json`. Also `steer-demo lab up|down|status` for exploring by hand.

#![allow(clippy::print_stdout, reason = "the demo's output is the story")]
#![allow(
    clippy::disallowed_types,
    reason = "the demo times real processes on the real monotonic clock"
)]

use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use steer_lab::lab::{Lab, SERVICE};
use steer_lab::story::{self, Summary};

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let keep = args.iter().any(|a| a == "--keep");
    let words: Vec<&str> = args
        .iter()
        .map(String::as_str)
        .filter(|a| !a.starts_with("--"))
        .collect();
    match words.as_slice() {
        [] | ["story"] => run_story(keep),
        ["lab", "up"] => lab_up(),
        ["lab", "down"] => {
            let done = steer_lab::lab::cleanup(steer_lab::netns::PREFIX)?;
            println!(
                "removed {} namespaces, {} links, {} cgroups, {} mounts; killed {} processes",
                done.netns.namespaces.len(),
                done.netns.links.len(),
                done.cgroups.len(),
                done.mounts.len(),
                done.netns.pids_killed.len()
            );
            Ok(())
        }
        ["lab", "status"] => {
            let ns = steer_lab::netns::list_namespaces()?;
            let ours: Vec<&String> = ns
                .iter()
                .filter(|n| n.starts_with(steer_lab::netns::PREFIX))
                .collect();
            println!("{} lab namespaces", ours.len());
            for n in ours {
                println!("  {n}");
            }
            Ok(())
        }
        other => bail!("unknown command {other:?}: expected story [--keep] | lab up | lab down | lab status"),
    }
}

fn progress(started: Instant) -> impl FnMut(&str) {
    move |step: &str| println!("  [{:>5.1}s] {step}", started.elapsed().as_secs_f64())
}

fn act(n: u32, title: &str) {
    println!("\n=== Act {n}: {title} ===\n");
}

fn how_to_query(lab: &Lab) {
    let site = lab.topo.site(0).name();
    let dns = lab.topo.dns_addr();
    println!("\nThe lab is up. Query it by hand, for example:");
    println!("  ip netns exec {site} dig @{dns} {SERVICE} A +subnet=198.18.100.0/24");
    println!(
        "  ip netns exec {site} dig @{} {SERVICE} A",
        lab.topo.site_resolver(0)
    );
    println!(
        "  ip netns exec {} curl -s -H 'Authorization: Bearer <admin token in the lab dir>' http://{dns}:8053/v1/state",
        lab.topo.dns().name()
    );
    println!("Press Enter to tear it down.");
    let mut line = String::new();
    let _ = std::io::stdin().read_line(&mut line);
}

fn lab_up() -> Result<()> {
    steer_lab::require_root();
    teardown_on_signal()?;
    let started = Instant::now();
    println!("bringing the lab up");
    let lab = Lab::up(story::story_spec(), &mut progress(started)).context("lab up")?;
    how_to_query(&lab);
    Ok(())
}

/// Ctrl-C (and SIGTERM) tear the lab down: signals are blocked in every thread (set before any is spawned)
/// and one thread waits for them, removes what this run created, and exits.
fn teardown_on_signal() -> Result<()> {
    use nix::sys::signal::{SigSet, Signal};
    let mut set = SigSet::empty();
    set.add(Signal::SIGINT);
    set.add(Signal::SIGTERM);
    set.thread_block().context("block SIGINT/SIGTERM")?;
    std::thread::spawn(move || {
        let sig = set.wait();
        eprintln!("\n{sig:?}: tearing the lab down");
        let prefix = format!("{}{}-", steer_lab::netns::PREFIX, std::process::id());
        match steer_lab::lab::cleanup(&prefix) {
            Ok(d) => eprintln!(
                "removed {} namespaces, {} mounts",
                d.netns.namespaces.len(),
                d.mounts.len()
            ),
            Err(e) => eprintln!("cleanup: {e} (run `cargo xtask lab down`)"),
        }
        std::process::exit(130);
    });
    Ok(())
}

fn run_story(keep: bool) -> Result<()> {
    steer_lab::require_root();
    teardown_on_signal()?;
    let started = Instant::now();
    let spec = story::story_spec();
    println!(
        "steer lab: {} regions, {} client sites, delays from a site x region matrix (steerd is not told it)",
        spec.topology.regions.len(),
        spec.topology.sites.len()
    );
    let mut lab = Lab::up(spec, &mut progress(started)).context("lab up")?;

    act(1, "steering by RTT measured in the kernel");
    println!("  warming up: every site streams to every region; the probes measure the real traffic");
    let steering = story::act_steering(&lab, 10).context("steering")?;
    println!("{}", steering.render(&lab.spec));

    act(
        2,
        "drain eu-west while streams run (and kill its probe mid-drain)",
    );
    let drain = story::act_drain(&mut lab, 1, 1, 4).context("drain")?;
    println!("{}", drain.render());

    act(3, "us-east's inference server dies");
    let failover = story::act_failover(&mut lab, 0).context("failover")?;
    println!("{}", failover.render());

    act(4, "us-east recovers: slow start in DNS and at the gate");
    let watch = Duration::from_secs(u64::from(lab.spec.slow_start_s) * 3 / 4);
    let surge = story::act_surge(&mut lab, 0, 0, watch).context("surge")?;
    println!("{}", surge.render());

    act(5, "data residency: Frankfurt (DE) is fenced to eu-west, strictly");
    let residency = story::act_residency(&mut lab).context("residency")?;
    println!("{}", residency.render());

    let summary = Summary {
        steering_accuracy_pct: steering.accuracy_pct,
        failover_s: failover.fault_to_last_answer_s,
        failover_client_s: failover.clients.iter().map(|c| c.1).fold(0.0, f64::max),
        drain_broken_streams: drain.broken_streams,
        drain_new_refused_pct: 100.0 * drain.new_refused as f64 / drain.new_attempted.max(1) as f64,
        probe_restart_gate_held: drain.probe_down_refused == drain.probe_down_attempted,
        surge_max_over_ramp_pct: surge.max_over_ramp_pct,
        surge_dns_share_max_dev_pp: surge.dns_share_max_dev_pp,
        fence_violations: residency.violations,
    };
    println!("\n=== Summary ===\n");
    let rows = vec![
        vec![
            "steering accuracy (sessions in the oracle-best region)".into(),
            format!("{:.1}%", summary.steering_accuracy_pct),
            ">= 95%".into(),
        ],
        vec![
            "failover: fault -> last answer naming the dead region".into(),
            format!("{:.2} s", summary.failover_s),
            "<= 2 s".into(),
        ],
        vec![
            "failover: clients' new sessions succeed elsewhere".into(),
            format!("{:.2} s", summary.failover_client_s),
            format!("<= {:.0} s", failover.client_bound_s),
        ],
        vec![
            "drain: broken streams".into(),
            summary.drain_broken_streams.to_string(),
            "0".into(),
        ],
        vec![
            "drain: new flows refused by the gate".into(),
            format!("{:.0}%", summary.drain_new_refused_pct),
            "100%".into(),
        ],
        vec![
            "probe killed mid-drain: the gate held".into(),
            summary.probe_restart_gate_held.to_string(),
            "true".into(),
        ],
        vec![
            "surge: gate admitted over the ramp".into(),
            format!("{:.1}%", summary.surge_max_over_ramp_pct),
            "<= 10%".into(),
        ],
        vec![
            "surge: DNS share deviation from the ramp".into(),
            format!("{:.1} pp", summary.surge_dns_share_max_dev_pp),
            "ramps, no jump".into(),
        ],
        vec![
            "residency: answers outside the fence".into(),
            summary.fence_violations.to_string(),
            "0".into(),
        ],
    ];
    println!("{}", story::table(&["measure", "value", "goal"], &rows));
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/demo");
    std::fs::create_dir_all(&dir).context("create target/demo")?;
    let json = serde_json::json!({
        "summary": summary,
        "steering": steering,
        "drain": drain,
        "failover": failover,
        "surge": surge,
        "residency": residency,
    });
    std::fs::write(dir.join("summary.json"), serde_json::to_string_pretty(&json)?)
        .context("write summary.json")?;
    // The summary file carries the headline numbers at the top level too.
    let mut flat = serde_json::to_value(&summary)?;
    flat["details"] = json;
    std::fs::write(dir.join("summary.json"), serde_json::to_string_pretty(&flat)?)
        .context("write summary.json")?;
    println!(
        "wrote target/demo/summary.json ({:.0} s in all)",
        started.elapsed().as_secs_f64()
    );
    if keep {
        how_to_query(&lab);
    }
    Ok(())
}
