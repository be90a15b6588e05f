//! The end-to-end proof, in one lab (3 regions, 4 client sites with distinct delays): steering learned from the
//! probes' RTT alone, a drain that breaks no stream (with the probe killed in the middle), failover of a dead
//! region, a recovery held to its slow-start ramp, and a strict residency fence. The oracle is the configured
//! delay matrix, which steerd never sees.

use std::time::Duration;

use steer_lab::lab::Lab;
use steer_lab::story;

#[test]
fn e2e_story() {
    steer_lab::require_root();
    let spec = story::story_spec();
    let mut lab =
        Lab::up(spec, &mut |step| eprintln!("lab: {step}")).unwrap_or_else(|e| panic!("lab up: {e}"));

    let steering = story::act_steering(&lab, 10).unwrap_or_else(|e| panic!("steering: {e}"));
    eprintln!("{}", steering.render(&lab.spec));
    assert!(
        steering.accuracy_pct >= 95.0,
        "steering accuracy {:.1}% < 95%",
        steering.accuracy_pct
    );
    for (j, row) in steering.measured_rtt_ms.iter().enumerate() {
        let best = lab.spec.best_region(j, &[]);
        let measured = row[best].unwrap_or_else(|| panic!("no RTT learned for site {j} to its best region"));
        let configured = steering.configured_rtt_ms[j][best];
        assert!(
            (measured - configured).abs() <= (configured * 0.25).max(2.0),
            "site {j}: learned {measured:.1} ms for a configured {configured:.1} ms"
        );
    }

    let drain = story::act_drain(&mut lab, 1, 1, 4).unwrap_or_else(|e| panic!("drain: {e}"));
    eprintln!("{}", drain.render());
    assert_eq!(
        drain.broken_streams, 0,
        "streams open at the drain must finish: {drain:?}"
    );
    assert_eq!(
        drain.new_refused, drain.new_attempted,
        "the gate refuses new flows during a drain"
    );
    assert_eq!(
        drain.probe_down_refused, drain.probe_down_attempted,
        "the pinned gate holds while the probe is down"
    );
    assert_eq!(
        drain.answers_naming_drained, 0,
        "steerd stops naming a drained region"
    );
    assert!(
        drain.drain_complete_s.is_some(),
        "the drain completes when active connections reach zero"
    );

    let failover = story::act_failover(&mut lab, 0).unwrap_or_else(|e| panic!("failover: {e}"));
    eprintln!("{}", failover.render());
    assert!(
        failover.fault_to_last_answer_s <= 2.0,
        "fault to last answer {:.2} s > 2 s",
        failover.fault_to_last_answer_s
    );
    assert!(
        !failover.clients.is_empty(),
        "some site was steered to the killed region"
    );
    for (site, s, region) in &failover.clients {
        assert!(
            *s <= failover.client_bound_s,
            "{site}: recovered after {s:.1} s > {} s",
            failover.client_bound_s
        );
        assert!(
            !region.starts_with("failed") && region != "us-east",
            "{site}: session landed in {region}"
        );
    }

    let watch = Duration::from_secs(u64::from(lab.spec.slow_start_s) * 3 / 4);
    let surge = story::act_surge(&mut lab, 0, 0, watch).unwrap_or_else(|e| panic!("surge: {e}"));
    eprintln!("{}", surge.render());
    assert!(
        surge.max_over_ramp_pct <= 10.0,
        "gate admitted {:.1}% over the ramp",
        surge.max_over_ramp_pct
    );
    assert!(
        surge.max_under_ramp_pct <= 25.0,
        "gate admitted {:.1}% under the ramp",
        surge.max_under_ramp_pct
    );
    let early = surge
        .dns_share
        .iter()
        .find(|(t, _, _)| *t >= 1.0)
        .map_or(100.0, |s| s.1);
    let late = surge.dns_share.last().map_or(0.0, |s| s.1);
    assert!(
        early <= 30.0,
        "the DNS share jumped to {early:.0}% in the first seconds of the ramp"
    );
    assert!(
        late >= early + 30.0,
        "the DNS share did not ramp: {early:.0}% -> {late:.0}%"
    );
    assert!(
        surge.dns_share_max_dev_pp <= 25.0,
        "DNS share strayed {:.0} pp from the ramp",
        surge.dns_share_max_dev_pp
    );

    let residency = story::act_residency(&mut lab).unwrap_or_else(|e| panic!("residency: {e}"));
    eprintln!("{}", residency.render());
    assert!(
        residency.with_region_down,
        "the fenced region went down during the check"
    );
    assert!(residency.answers >= 10);
    assert_eq!(residency.violations, 0, "answers outside the strict fence");
}
