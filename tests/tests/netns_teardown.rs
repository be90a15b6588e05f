//! The lab's guards remove namespaces and links on drop, also while a panic unwinds, and `cleanup_leftovers`
//! removes what a crashed run left behind.

use std::panic::{AssertUnwindSafe, catch_unwind};

use steer_lab::netns::{Cleanup, NetNs, Veth, VethEnd, cleanup_leftovers, list_links, list_namespaces};
use steer_lab::topology::{Topology, TopologySpec};

fn exists(ns: &str) -> bool {
    list_namespaces().unwrap().iter().any(|n| n == ns)
}

fn veth(a: &NetNs, b: &NetNs) -> Veth {
    Veth::new(
        VethEnd {
            ns: Some(a.name().into()),
            dev: "left0".into(),
            mac: None,
        },
        VethEnd {
            ns: Some(b.name().into()),
            dev: "right0".into(),
            mac: None,
        },
    )
    .unwrap()
}

#[test]
fn drop_removes_namespaces_and_links() {
    steer_lab::require_root();
    let a = NetNs::new("td-a").unwrap();
    let b = NetNs::new("td-b").unwrap();
    let (na, nb) = (a.name().to_owned(), b.name().to_owned());
    assert!(exists(&na) && exists(&nb));
    let link = veth(&a, &b);
    assert!(list_links(Some(&na)).unwrap().contains(&"left0".to_owned()));
    drop(link);
    assert!(
        !list_links(Some(&na)).unwrap().contains(&"left0".to_owned()),
        "veth survived its guard"
    );
    assert!(
        !list_links(Some(&nb)).unwrap().contains(&"right0".to_owned()),
        "peer survived its guard"
    );
    drop(a);
    drop(b);
    assert!(!exists(&na) && !exists(&nb), "namespaces survived their guards");
}

#[test]
fn panic_unwinding_tears_down_a_whole_topology() {
    steer_lab::require_root();
    let mut names = Vec::new();
    let result = catch_unwind(AssertUnwindSafe(|| {
        let spec = TopologySpec {
            regions: vec!["a".into(), "b".into()],
            sites: vec!["x".into()],
            delay_ms: vec![vec![1.0, 2.0]],
            ..Default::default()
        };
        let topo = Topology::up(&spec).unwrap();
        names.extend(topo.namespaces().into_iter().map(|(_, ns)| ns));
        assert!(names.iter().all(|n| exists(n)));
        panic!("deliberate panic with the lab up");
    }));
    assert!(result.is_err());
    assert_eq!(names.len(), 5, "core, dns, 2 regions, 1 site: {names:?}");
    let left: Vec<_> = names.iter().filter(|n| exists(n)).collect();
    assert!(left.is_empty(), "left after the panic: {left:?}");
}

#[test]
fn cleanup_leftovers_removes_leaked_namespaces_and_root_links() {
    steer_lab::require_root();
    // A prefix of this test alone, so it never touches another lab that runs at the same time.
    let prefix = format!("steer-{}x", std::process::id());
    let leaked_a = NetNs::with_name(&format!("{prefix}-a")).unwrap().leak();
    let leaked_b = NetNs::with_name(&format!("{prefix}-b")).unwrap();
    // One end in the root namespace (named with the prefix), as a crashed older lab might leave it.
    let root_dev = format!("{prefix}r");
    let link = Veth::new(
        VethEnd {
            ns: None,
            dev: root_dev.clone(),
            mac: None,
        },
        VethEnd {
            ns: Some(leaked_b.name().into()),
            dev: "wan0".into(),
            mac: None,
        },
    )
    .unwrap();
    std::mem::forget(link);
    let leaked_b = leaked_b.leak();
    assert!(exists(&leaked_a) && exists(&leaked_b));
    assert!(list_links(None).unwrap().contains(&root_dev));

    let done = cleanup_leftovers(&prefix).unwrap();
    let mut removed = done.namespaces.clone();
    removed.sort();
    assert_eq!(removed, [leaked_a.clone(), leaked_b.clone()]);
    assert!(!exists(&leaked_a) && !exists(&leaked_b));
    assert!(
        !list_links(None).unwrap().contains(&root_dev),
        "root link left: {done:?}"
    );
    assert_eq!(
        cleanup_leftovers(&prefix).unwrap(),
        Cleanup::default(),
        "second cleanup found more"
    );
}
