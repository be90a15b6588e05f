//! Golden tests of the engine: policy + telemetry + query -> the explained trace.
//! Refresh with `UPDATE_EXPECT=1 cargo test -p steering-core --test engine_golden` and review the diff.

#![allow(
    clippy::needless_raw_string_hashes,
    reason = "expect-test writes r#\"...\"# literals on UPDATE_EXPECT=1"
)]

mod support;

use expect_test::{Expect, expect};

const POLICY: &str = "
zone: infer.example.com.
regions:
  us-east: { endpoints: [198.19.1.10, 198.19.1.11, \"2001:db8:1::10\"], location: { lat: 39.0, lon: -77.5 } }
  us-west: { endpoints: [198.19.3.10], location: { lat: 45.6, lon: -121.2 } }
  eu-west: { endpoints: [198.19.2.10, \"2001:db8:2::10\"], location: { lat: 53.3, lon: -6.2 } }
services:
  api:
    mode: latency
    regions: [us-east, us-west, eu-west]
    ttl: { normal: 20s, min: 5s }
    stabilize: { ms: 5, pct: 10 }
    explore: 0
    slow_start: 100s
    when_all_down: open
    fences: [{ countries: [DE, FR], allow: [eu-west], strict: true }, { countries: [CA], allow: [us-east], strict: false }]
    capacity: { queue_depth_high: 50, kv_cache_high: 0.9 }
  closed:
    mode: latency
    regions: [us-east, eu-west]
    when_all_down: closed
  fallback:
    mode: failover
    regions: [us-east, us-west, eu-west]
    when_all_down: { fallback: [eu-west] }
  order:
    mode: failover
    regions: [us-west, us-east]
  wrr:
    mode: weighted
    regions: [us-east, eu-west]
    answers: 2
  near:
    mode: geo
    regions: [us-east, us-west, eu-west]
";

fn check(facts_and_queries: &str, expect: &Expect) {
    let fixture = format!("{POLICY}\n---\n{facts_and_queries}");
    expect.assert_eq(&support::run_fixture(&fixture));
}

#[test]
fn measured_rtt_picks_lowest() {
    check(
        "
rtt us-east 198.18.1.0/24 20ms
rtt us-west 198.18.1.0/24 70ms
rtt eu-west 198.18.1.0/24 90ms
---
A api client=198.18.1.7/24
",
        &expect![[r#"
            > A api client=198.18.1.7/24
            query     api.infer.example.com. A mode=Latency
            client    198.18.1.7/24 (ECS) via 198.18.0.53
            1 candidates  us-east, us-west, eu-west
            2 admin       us-east, us-west, eu-west
            3 fence       us-east, us-west, eu-west  (no fence matches)
            4 health      us-east, us-west, eu-west
            5 capacity    us-east, us-west, eu-west
            6 latency     source=Measured prefix=198.18.1.0/24 band=5000us
                us-east           20.0ms  best tied
                us-west           70.0ms
                eu-west           90.0ms
            7 pick        the single best (epoch 90000000)
            8 answer      us-east: 198.19.1.10 ttl=20s (normal) scope=/24
        "#]],
    );
}

#[test]
fn covering_prefix_then_resolver_then_order() {
    check(
        "
rtt us-east 198.18.1.0/24 80ms
rtt eu-west 198.18.1.0/24 10ms
rtt us-west 198.18.200.0/24 15ms
rtt us-east 198.18.200.0/24 50ms
---
A api client=198.18.9.1/24
A api client=198.19.77.1/24 resolver=198.18.200.53
A api client=203.0.113.1/24 resolver=192.0.2.53
",
        &expect![[r#"
            > A api client=198.18.9.1/24
            query     api.infer.example.com. A mode=Latency
            client    198.18.9.1/24 (ECS) via 198.18.0.53
            1 candidates  us-east, us-west, eu-west
            2 admin       us-east, us-west, eu-west
            3 fence       us-east, us-west, eu-west  (no fence matches)
            4 health      us-east, us-west, eu-west
            5 capacity    us-east, us-west, eu-west
            6 latency     source=Covering prefix=198.18.0.0/16 band=5000us
                us-east           65.0ms
                us-west           15.0ms  tied
                eu-west           10.0ms  best tied
            7 pick        kept the previous choice (within the band) (epoch 90000000)
            8 answer      eu-west: 198.19.2.10 ttl=5s (min: thin margin) scope=/16
            > A api client=198.19.77.1/24 resolver=198.18.200.53
            query     api.infer.example.com. A mode=Latency
            client    198.19.77.1/24 (ECS) via 198.18.200.53
            1 candidates  us-east, us-west, eu-west
            2 admin       us-east, us-west, eu-west
            3 fence       us-east, us-west, eu-west  (no fence matches)
            4 health      us-east, us-west, eu-west
            5 capacity    us-east, us-west, eu-west
            6 latency     source=Resolver prefix=198.18.200.0/24 band=5000us
                us-east           50.0ms
                us-west           15.0ms  best tied
                eu-west                -
            7 pick        the single best (epoch 90000000)
            8 answer      us-west: 198.19.3.10 ttl=20s (normal) scope=/0
            > A api client=203.0.113.1/24 resolver=192.0.2.53
            query     api.infer.example.com. A mode=Latency
            client    203.0.113.1/24 (ECS) via 192.0.2.53
            1 candidates  us-east, us-west, eu-west
            2 admin       us-east, us-west, eu-west
            3 fence       us-east, us-west, eu-west  (no fence matches)
            4 health      us-east, us-west, eu-west
            5 capacity    us-east, us-west, eu-west
            6 latency     source=PolicyOrder
                us-east                -  best tied
                us-west                -
                eu-west                -
            7 pick        the single best (epoch 90000000)
            8 answer      us-east: 198.19.1.10 ttl=20s (normal) scope=/0
        "#]],
    );
}

#[test]
fn stabilize_band_ties_and_weights() {
    check(
        "
rtt us-east 198.18.1.0/24 20ms
rtt us-west 198.18.1.0/24 23ms
rtt eu-west 198.18.1.0/24 90ms
---
A api client=198.18.1.7/24
",
        &expect![[r#"
            > A api client=198.18.1.7/24
            query     api.infer.example.com. A mode=Latency
            client    198.18.1.7/24 (ECS) via 198.18.0.53
            1 candidates  us-east, us-west, eu-west
            2 admin       us-east, us-west, eu-west
            3 fence       us-east, us-west, eu-west  (no fence matches)
            4 health      us-east, us-west, eu-west
            5 capacity    us-east, us-west, eu-west
            6 latency     source=Measured prefix=198.18.1.0/24 band=5000us
                us-east           20.0ms  best tied
                us-west           23.0ms  tied
                eu-west           90.0ms
            7 pick        kept the previous choice (within the band) (epoch 90000000)
            8 answer      us-east: 198.19.1.10 ttl=5s (min: thin margin) scope=/24
        "#]],
    );
}

#[test]
fn strict_fence_is_never_left() {
    check(
        "
rtt us-east 198.18.1.0/24 5ms
rtt eu-west 198.18.1.0/24 90ms
down eu-west
---
A api client=198.18.1.7/24 country=DE
",
        &expect![[r#"
            > A api client=198.18.1.7/24 country=DE
            query     api.infer.example.com. A mode=Latency
            client    198.18.1.7/24 (ECS) via 198.18.0.53 country=DE
            1 candidates  us-east, us-west, eu-west
            2 admin       us-east, us-west, eu-west
            3 fence       eu-west  (fences[0] allow eu-west, strict)
            4 health      eu-west  [all down: fail open]
            5 capacity    eu-west
            6 latency     source=Measured prefix=198.18.1.0/24 band=9000us
                eu-west           90.0ms  best tied
            7 pick        the single best (epoch 90000000)
            8 answer      eu-west: 198.19.2.10 ttl=5s (min: all down) scope=/24
        "#]],
    );
}

#[test]
fn loose_fence_is_left_when_all_inside_are_down() {
    check(
        "
down us-east
---
A api client=198.18.1.7/24 country=CA
",
        &expect![[r#"
            > A api client=198.18.1.7/24 country=CA
            query     api.infer.example.com. A mode=Latency
            client    198.18.1.7/24 (ECS) via 198.18.0.53 country=CA
            1 candidates  us-east, us-west, eu-west
            2 admin       us-east, us-west, eu-west
            3 fence       us-east  (fences[1] allow us-east; left: every region inside is down)
            4 health      us-west, eu-west  (down: us-east)
            5 capacity    us-west, eu-west
            6 latency     source=PolicyOrder
                us-west                -  best tied
                eu-west                -
            7 pick        the single best (epoch 90000000)
            8 answer      us-west: 198.19.3.10 ttl=20s (normal) scope=/24
        "#]],
    );
}

#[test]
fn drained_region_is_out() {
    check(
        "
rtt us-east 198.18.1.0/24 5ms
rtt us-west 198.18.1.0/24 60ms
drain us-east
---
A api client=198.18.1.7/24
",
        &expect![[r#"
            > A api client=198.18.1.7/24
            query     api.infer.example.com. A mode=Latency
            client    198.18.1.7/24 (ECS) via 198.18.0.53
            1 candidates  us-east, us-west, eu-west
            2 admin       us-west, eu-west  (drained: us-east)
            3 fence       us-west, eu-west  (no fence matches)
            4 health      us-west, eu-west
            5 capacity    us-west, eu-west
            6 latency     source=Measured prefix=198.18.1.0/24 band=6000us
                us-west           60.0ms  best tied
                eu-west                -
            7 pick        the single best (epoch 90000000)
            8 answer      us-west: 198.19.3.10 ttl=20s (normal) scope=/24
        "#]],
    );
}

#[test]
fn all_down_open_closed_fallback() {
    check(
        "
down us-east
down us-west
down eu-west
---
A api client=198.18.1.7/24
A closed client=198.18.1.7/24
A fallback client=198.18.1.7/24
",
        &expect![[r#"
            > A api client=198.18.1.7/24
            query     api.infer.example.com. A mode=Latency
            client    198.18.1.7/24 (ECS) via 198.18.0.53
            1 candidates  us-east, us-west, eu-west
            2 admin       us-east, us-west, eu-west
            3 fence       us-east, us-west, eu-west  (no fence matches)
            4 health      us-east, us-west, eu-west  [all down: fail open]
            5 capacity    us-east, us-west, eu-west
            6 latency     source=PolicyOrder
                us-east                -  best tied
                us-west                -
                eu-west                -
            7 pick        the single best (epoch 90000000)
            8 answer      us-east: 198.19.1.10 ttl=5s (min: all down) scope=/0
            > A closed client=198.18.1.7/24
            query     closed.infer.example.com. A mode=Latency
            client    198.18.1.7/24 (ECS) via 198.18.0.53
            1 candidates  us-east, eu-west
            2 admin       us-east, eu-west
            3 fence       us-east, eu-west  (no fence matches)
            4 health      (none)  (down: us-east, eu-west)  [all down: closed]
            => no answer (NoHealthy), ttl 5s
            > A fallback client=198.18.1.7/24
            query     fallback.infer.example.com. A mode=Failover
            client    198.18.1.7/24 (ECS) via 198.18.0.53
            1 candidates  us-east, us-west, eu-west
            2 admin       us-east, us-west, eu-west
            3 fence       us-east, us-west, eu-west  (no fence matches)
            4 health      eu-west  (down: us-east, us-west)  [all down: fallback]
            5 capacity    eu-west
            6 latency     source=NotRanked
                eu-west                -  best tied
            7 pick        the single best (epoch 90000000)
            8 answer      eu-west: 198.19.2.10 ttl=5s (min: all down) scope=/0
        "#]],
    );
}

#[test]
fn capacity_sheds_hot_region() {
    check(
        "
rtt us-east 198.18.1.0/24 5ms
rtt us-west 198.18.1.0/24 60ms
load us-east q=80 kv=0.5
---
A api client=198.18.1.7/24
",
        &expect![[r#"
            > A api client=198.18.1.7/24
            query     api.infer.example.com. A mode=Latency
            client    198.18.1.7/24 (ECS) via 198.18.0.53
            1 candidates  us-east, us-west, eu-west
            2 admin       us-east, us-west, eu-west
            3 fence       us-east, us-west, eu-west  (no fence matches)
            4 health      us-east, us-west, eu-west
            5 capacity    us-west, eu-west  (shed: us-east)
            6 latency     source=Measured prefix=198.18.1.0/24 band=6000us
                us-west           60.0ms  best tied
                eu-west                -
            7 pick        the single best (epoch 90000000)
            8 answer      us-west: 198.19.3.10 ttl=20s (normal) scope=/24
        "#]],
    );
}

#[test]
fn ramping_region_gets_short_ttl() {
    check(
        "
rtt us-east 198.18.1.0/24 5ms
rtt us-west 198.18.1.0/24 60ms
ramp us-east 99%
---
A api client=198.18.1.7/24
",
        &expect![[r#"
            > A api client=198.18.1.7/24
            query     api.infer.example.com. A mode=Latency
            client    198.18.1.7/24 (ECS) via 198.18.0.53
            1 candidates  us-east, us-west, eu-west
            2 admin       us-east, us-west, eu-west
            3 fence       us-east, us-west, eu-west  (no fence matches)
            4 health      us-east, us-west, eu-west
            5 capacity    us-east, us-west, eu-west
            6 latency     source=Measured prefix=198.18.1.0/24 band=5000us
                us-east            5.0ms  best tied ramping 99%
                us-west           60.0ms
                eu-west                -
            7 pick        the single best (epoch 90000000)
            8 answer      us-east: 198.19.1.10 ttl=5s (min: ramping) scope=/24
        "#]],
    );
}

#[test]
fn failover_weighted_geo_and_aaaa() {
    check(
        "
down us-west
---
A order client=198.18.1.7/24
A wrr client=198.18.1.7/24
A near client=198.18.1.7/24 loc=51.5,-0.1
AAAA api client=2001:db8:ff:100::/56
A api resolver=198.18.0.53
",
        &expect![[r#"
            > A order client=198.18.1.7/24
            query     order.infer.example.com. A mode=Failover
            client    198.18.1.7/24 (ECS) via 198.18.0.53
            1 candidates  us-east, us-west
            2 admin       us-east, us-west
            3 fence       us-east, us-west  (no fence matches)
            4 health      us-east  (down: us-west)
            5 capacity    us-east
            6 latency     source=NotRanked
                us-east                -  best tied
            7 pick        the single best (epoch 90000000)
            8 answer      us-east: 198.19.1.10 ttl=20s (normal) scope=/0
            > A wrr client=198.18.1.7/24
            query     wrr.infer.example.com. A mode=Weighted
            client    198.18.1.7/24 (ECS) via 198.18.0.53
            1 candidates  us-east, eu-west
            2 admin       us-east, eu-west
            3 fence       us-east, eu-west  (no fence matches)
            4 health      us-east, eu-west
            5 capacity    us-east, eu-west
            6 latency     source=NotRanked
                us-east                -  tied
                eu-west                -  tied
            7 pick        by weight among us-east, eu-west (epoch 90000000)
            8 answer      eu-west: 198.19.2.10 198.19.1.10 ttl=20s (normal) scope=/24
            > A near client=198.18.1.7/24 loc=51.5,-0.1
            query     near.infer.example.com. A mode=Geo
            client    198.18.1.7/24 (ECS) via 198.18.0.53
            1 candidates  us-east, us-west, eu-west
            2 admin       us-east, us-west, eu-west
            3 fence       us-east, us-west, eu-west  (no fence matches)
            4 health      us-east, eu-west  (down: us-west)
            5 capacity    us-east, eu-west
            6 latency     source=Distance band=10000us
                us-east           61.2ms
                eu-west            6.6ms  best tied
            7 pick        the single best (epoch 90000000)
            8 answer      eu-west: 198.19.2.10 ttl=20s (normal) scope=/24
            > AAAA api client=2001:db8:ff:100::/56
            query     api.infer.example.com. AAAA mode=Latency
            client    2001:db8:ff:100::/56 (ECS) via 198.18.0.53
            1 candidates  us-east, eu-west
            2 admin       us-east, eu-west
            3 fence       us-east, eu-west  (no fence matches)
            4 health      us-east, eu-west
            5 capacity    us-east, eu-west
            6 latency     source=PolicyOrder
                us-east                -  best tied
                eu-west                -
            7 pick        the single best (epoch 90000000)
            8 answer      us-east: 2001:db8:1::10 ttl=20s (normal) scope=/0
            > A api resolver=198.18.0.53
            query     api.infer.example.com. A mode=Latency
            client    198.18.0.53/32 (resolver address) via 198.18.0.53
            1 candidates  us-east, us-west, eu-west
            2 admin       us-east, us-west, eu-west
            3 fence       us-east, us-west, eu-west  (no fence matches)
            4 health      us-east, eu-west  (down: us-west)
            5 capacity    us-east, eu-west
            6 latency     source=PolicyOrder
                us-east                -  best tied
                eu-west                -
            7 pick        the single best (epoch 90000000)
            8 answer      us-east: 198.19.1.10 ttl=20s (normal) scope=/0
        "#]],
    );
}
