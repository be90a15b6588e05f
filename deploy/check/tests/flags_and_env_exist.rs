//! Every flag and environment variable that a manifest (all renderings), a systemd unit or a
//! Containerfile passes to steerd or steer-probe exists in that binary's real CLI: flags in the
//! subcommand's `--help`, environment variables as names the binary reads (in its help, or compiled
//! into it, like `STEER_LOG` and `NODE_NAME`).

use std::collections::BTreeMap;

use deploy_check::bins::{self, flags_of_help};
use deploy_check::invocation::{self, Invocation, STEER_PROBE, STEERD};

fn invocations() -> Vec<Invocation> {
    let mut out = Vec::new();
    for (name, objs) in deploy_check::renderings() {
        for (id, c) in deploy_check::kube::containers(&objs) {
            out.extend(invocation::of_container(&format!("{name} {id}"), c));
        }
    }
    for unit in ["steerd.service", "steer-probe.service"] {
        let rel = format!("deploy/systemd/{unit}");
        out.extend(invocation::of_unit(&rel, &deploy_check::read(&rel)));
    }
    for file in ["steerd.Containerfile", "steer-probe.Containerfile"] {
        let rel = format!("deploy/containers/{file}");
        out.extend(invocation::of_containerfile(&rel, &deploy_check::read(&rel)));
    }
    out
}

#[test]
fn every_binary_is_started_somewhere_we_check() {
    let inv = invocations();
    for (bin, at_least) in [(STEERD, 5), (STEER_PROBE, 4)] {
        let n = inv.iter().filter(|i| i.binary == bin).count();
        assert!(
            n >= at_least,
            "{bin} is started {n} times (3 renderings, a unit, a Containerfile)"
        );
    }
}

#[test]
fn every_flag_exists_in_the_real_cli() {
    let b = bins::bins();
    let mut helps: BTreeMap<(&str, String), Vec<String>> = BTreeMap::new();
    let mut missing = Vec::new();
    for i in invocations() {
        let path = if i.binary == STEERD {
            &b.steerd
        } else {
            &b.steer_probe
        };
        let sub = i.subcommand().to_owned();
        assert!(
            !sub.is_empty() && !sub.starts_with('-'),
            "{}: a subcommand comes first: {:?}",
            i.origin,
            i.args
        );
        let known = helps
            .entry((i.binary, sub.clone()))
            .or_insert_with(|| flags_of_help(&bins::help(path, &[&sub])));
        for f in i.flags() {
            if !known.contains(&f) {
                missing.push(format!("{}: `{} {sub} {f}`", i.origin, i.binary));
            }
        }
    }
    missing.sort();
    missing.dedup();
    assert!(
        missing.is_empty(),
        "flags the binaries do not have:\n{}",
        missing.join("\n")
    );
}

#[test]
fn every_environment_variable_is_read_by_the_binary() {
    let b = bins::bins();
    let mut missing = Vec::new();
    for i in invocations() {
        let path = if i.binary == STEERD {
            &b.steerd
        } else {
            &b.steer_probe
        };
        let kubelet_only = i.substituted_vars();
        for var in &i.env {
            if kubelet_only.contains(var) {
                continue;
            }
            if !bins::contains_word(path, var) {
                missing.push(format!("{}: {var} is not read by {}", i.origin, i.binary));
            }
        }
    }
    missing.sort();
    missing.dedup();
    assert!(
        missing.is_empty(),
        "environment the binaries ignore:\n{}",
        missing.join("\n")
    );
}

/// The check itself: flags that a binary lacks are found.
#[test]
fn an_unknown_flag_is_caught() {
    let help = bins::help(&bins::bins().steerd, &["serve"]);
    let known = flags_of_help(&help);
    assert!(known.contains(&"--policy".to_owned()), "{known:?}");
    assert!(!known.contains(&"--polcy".to_owned()));
    let inv = invocation::of_unit(
        "x",
        "Environment=STEER_LOG=info\nExecStart=/usr/bin/steerd serve --polcy=/p --dns 1\n",
    );
    assert_eq!(inv[0].flags(), ["--polcy", "--dns"]);
    assert_eq!(inv[0].env, ["STEER_LOG"]);
}
