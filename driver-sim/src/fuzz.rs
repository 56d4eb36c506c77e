//! Fuzz entry point of the scenario parser, behind the `fuzzing` feature.
//!
//! The `scenario` target in `fuzz/` is a one-line wrapper over [`scenario`], and the test at
//! the end of this file replays the committed corpus (`fuzz/corpus/scenario/*`) through it, so
//! the fuzzer and `cargo test` run the same code.

use std::collections::BTreeSet;

use gslb_state_core::fuzz::expand_config_input;
use gslb_state_core::names::check_id;

use crate::scenario::{EventKind, LinkParams, NetworkSpec, Scenario};
use crate::world::{RunOptions, run};
use crate::yaml::{self, MAX_DURATION_NS, MAX_NODES};

/// Scenarios at most this large are also simulated (twice, to check determinism).
const RUN_NODES_MAX: usize = 5;
/// Longest simulated duration of a fuzzed run.
const RUN_DURATION_NS_MAX: u64 = 20_000_000_000;
/// Most events and expectations of a fuzzed run.
const RUN_EVENTS_MAX: usize = 40;
/// Shortest heartbeat interval of a fuzzed run.
const RUN_INTERVAL_NS_MIN: u128 = 50_000_000;
/// Longest delivery delay of a fuzzed run.
const RUN_DELAY_NS_MAX: u64 = 5_000_000_000;

/// The scenario YAML parser (`gslb-sim`'s input).
///
/// The bytes are YAML, expanded like a config fuzz input (see
/// [`expand_config_input`]: `#!repeat N` seeds describe huge inputs in a few bytes). Parsing
/// never panics; a scenario it accepts keeps every rule the simulation relies on (indices in
/// range, times within the duration and sorted, probabilities in `0..=1`, valid ids and
/// state settings); and a small accepted scenario runs to its end without a panic, giving the
/// same outcome twice. Returns whether the scenario was accepted.
pub fn scenario(data: &[u8]) -> bool {
    let text = expand_config_input(data);
    let Ok(text) = std::str::from_utf8(&text) else {
        return false;
    };
    let Ok(file) = yaml::parse(text) else {
        return false;
    };
    let s = &file.scenario;
    check(s);
    if small(s) {
        let a = run(s, RunOptions::default());
        assert_eq!(
            a.expects.len(),
            s.expects.len(),
            "an expectation went unchecked"
        );
        let b = run(s, RunOptions::default());
        assert!(
            a.trace == b.trace && a.expects == b.expects,
            "the same scenario ran differently twice"
        );
    }
    true
}

/// The rules of an accepted scenario.
fn check(s: &Scenario) {
    assert!(
        (1..=MAX_DURATION_NS).contains(&s.duration_ns),
        "duration {} ns out of range",
        s.duration_ns
    );
    s.state.validate().expect("accepted invalid state settings");
    let n = s.nodes.len();
    assert!((1..=MAX_NODES).contains(&n), "{n} nodes");
    let mut ids = BTreeSet::new();
    for node in &s.nodes {
        check_id(&node.id).expect("accepted an invalid node id");
        assert!(ids.insert(&node.id), "duplicate node {:?}", node.id);
        assert!(node.region.len() <= 64, "long region");
        assert!(node.start_ns <= s.duration_ns, "starts after the end");
    }
    check_network(&s.network, n);
    let mut last_ns = 0;
    for e in &s.events {
        assert!(e.at_ns >= last_ns, "events out of order");
        assert!(e.at_ns <= s.duration_ns, "event after the end");
        last_ns = e.at_ns;
        match &e.kind {
            EventKind::Observe { node, endpoint, .. } => {
                assert!(*node < n);
                gslb_state_core::names::check_endpoint_name(endpoint)
                    .expect("accepted an invalid endpoint name");
            }
            EventKind::Partition { groups } => {
                let mut seen = BTreeSet::new();
                for &i in groups.iter().flatten() {
                    assert!(i < n, "partition names node {i} of {n}");
                    assert!(seen.insert(i), "node {i} in two partition groups");
                }
            }
            EventKind::Crash(i)
            | EventKind::Leave(i)
            | EventKind::Restart { node: i, .. }
            | EventKind::Isolate(i)
            | EventKind::Rejoin(i)
            | EventKind::Clock { node: i, .. } => assert!(*i < n),
            EventKind::Network(net) => check_network(net, n),
            EventKind::Heal | EventKind::Broker(_) => {}
        }
    }
    let mut last_ns = 0;
    for x in &s.expects {
        assert!(x.at_ns >= last_ns, "expectations out of order");
        assert!(x.at_ns <= s.duration_ns, "expectation after the end");
        assert!(x.node < n);
        last_ns = x.at_ns;
    }
}

fn check_network(net: &NetworkSpec, n: usize) {
    check_link(&net.default);
    for link in &net.links {
        let (a, b) = (link.a, link.b);
        assert!(a <= b && b < n, "link ({a}, {b}) of {n} nodes");
        check_link(&link.params);
    }
    let r = &net.region_latency;
    if !r.regions().is_empty() {
        assert_eq!(r.node_regions().len(), n, "a region for every node");
        assert!(r.node_regions().iter().all(|&i| i < r.regions().len()));
        assert!(
            r.max_extra_ns() <= MAX_DURATION_NS,
            "region delay beyond any duration"
        );
    }
}

fn check_link(link: &LinkParams) {
    for p in [link.loss, link.duplicate, link.reorder] {
        assert!((0.0..=1.0).contains(&p), "probability {p} out of range");
    }
    assert!(
        link.latency_ns <= MAX_DURATION_NS && link.jitter_ns <= MAX_DURATION_NS,
        "delay beyond any duration"
    );
}

/// Whether `s` is small enough to simulate on every fuzz input.
fn small(s: &Scenario) -> bool {
    s.nodes.len() <= RUN_NODES_MAX
        && s.duration_ns <= RUN_DURATION_NS_MAX
        && s.events.len() + s.expects.len() <= RUN_EVENTS_MAX
        && s.state.heartbeat_interval.as_nanos() >= RUN_INTERVAL_NS_MIN
        && s.max_delay_ns() <= RUN_DELAY_NS_MAX
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    /// Replays every committed seed of the `scenario` target (the crate's tests build it with
    /// `fuzzing`, through a dev-dependency on itself).
    #[test]
    fn scenario_corpus_replays() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus/scenario");
        let mut files: Vec<_> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
            .map(|entry| entry.expect("a directory entry").path())
            .collect();
        files.sort();
        assert!(!files.is_empty(), "{} holds no seeds", dir.display());
        for path in files {
            let data = std::fs::read(&path).expect("a readable seed");
            let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
            eprintln!("replaying fuzz/corpus/scenario/{name}");
            let accepted = super::scenario(&data);
            assert!(
                !(accepted && name.starts_with("hostile-")),
                "{name} was accepted"
            );
        }
    }
}
