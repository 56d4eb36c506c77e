//! The synchronisation protocol that every driver runs through the core, one behaviour per
//! test: the start-up snapshot (when it is asked for, how its records are judged),
//! incarnations (taken from the wall clock, raised above an earlier life of our own, a
//! member's restart with its clock behind), leaving (received, read from the KV, sent), lost
//! messages, two-phase configuration apply, `poll_updated`, and the periodic refresh of our
//! KV records.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;
use common::*;
use gslb_state_core::codec::ReportState::{Healthy, Unhealthy};
use gslb_state_core::codec::{self, Message};
use gslb_state_core::names::{RECORD_MAX_AGE, SubjectKind};
use gslb_state_core::{
    Bucket, Connectivity, DropReason, Input, Instant, KvRead, Node, Now, Output, Policy, Source,
    TimerReason, WallTime,
};

// ---- helpers ----

fn local(endpoint: &str, healthy: Option<bool>) -> Input {
    Input::LocalHealth {
        endpoint: endpoint.into(),
        healthy,
    }
}

const CONNECT: Input = Input::Connectivity(Connectivity::Connected);
const DISCONNECT: Input = Input::Connectivity(Connectivity::Disconnected);
const SNAPSHOT_FAILED: Input = snapshot_read(false);

const fn snapshot_read(complete: bool) -> Input {
    let read = KvRead::Snapshot;
    Input::KvReadDone { read, complete }
}

/// A node that is connected and reading its start-up snapshot (outputs drained).
fn reading(policy: Policy) -> Node {
    let mut n = node("me", policy, 51);
    n.handle(at(0), CONNECT);
    assert!(drain(&mut n).contains(&Output::ReadSnapshot));
    n
}

/// A node that is connected and has read its start-up snapshot (outputs drained).
fn synced(policy: Policy, q: u8) -> Node {
    synced_with(node_config("me", policy, q))
}

fn synced_with(config: gslb_state_core::NodeConfig) -> Node {
    let mut n = Node::new(config, at(0)).unwrap();
    n.handle(at(0), CONNECT);
    snapshot_done(&mut n, at(0));
    n.handle_timeout(at(0));
    drain(&mut n);
    n
}

fn is_active(n: &Node, id: &str) -> bool {
    n.active_member_ids().iter().any(|m| m == id)
}

fn incarnation_of(n: &Node, id: &str) -> u64 {
    n.members()
        .into_iter()
        .find(|m| m.node == id)
        .unwrap()
        .incarnation
}

fn verdict(n: &Node, endpoint: &str) -> (Option<bool>, Source) {
    let d = n.decision(endpoint).unwrap();
    (d.healthy, d.source)
}

/// The verdict with the counts behind it.
fn counts(n: &Node, endpoint: &str) -> (Option<bool>, u32, u32) {
    let d = n.decision(endpoint).unwrap();
    (d.healthy, d.healthy_reports, d.total_reports)
}

/// A short, comparable name for an output.
fn tag(out: &Output) -> String {
    match out {
        Output::Publish { kind, .. } => format!("publish {}", kind.as_str()),
        Output::KvPut {
            bucket, key, kind, ..
        } => format!("put {bucket:?} {key} {}", kind.as_str()),
        Output::KvDelete { bucket, key } => format!("delete {bucket:?} {key}"),
        Output::ReadSnapshot => "read snapshot".into(),
        Output::ReadSnapshotReports { region, .. } => format!("read reports {region:?}"),
        Output::Resync { node, .. } => format!("resync {node}"),
        Output::ReadMembers => "read members".into(),
        Output::Decision { endpoint, .. } => format!("decision {endpoint}"),
        Output::MemberUp {
            node, incarnation, ..
        } => format!("up {node}@{incarnation}"),
        Output::MemberDown { node, reason } => format!("down {node} {}", reason.as_str()),
        Output::IncarnationRaised { from, to } => format!("raised {from}->{to}"),
        Output::ApplyConfig { version, .. } => format!("apply {version}"),
        Output::ConfigCommitted { version } => format!("committed {version}"),
        Output::ConfigFailed { version, .. } => format!("failed {version}"),
        Output::ConfigRejected { version, .. } => format!("rejected {version}"),
        Output::ConfigIgnored { version, .. } => format!("ignored {version}"),
    }
}

fn tags(outs: &[Output]) -> Vec<String> {
    outs.iter().map(tag).collect()
}

/// How many of `outs` have the tag `t`.
fn count(outs: &[Output], t: &str) -> usize {
    outs.iter().filter(|o| tag(o) == t).count()
}

/// How many of the outputs `n` has now have the tag `t`.
fn drained(n: &mut Node, t: &str) -> usize {
    count(&drain(n), t)
}

/// Runs `handle_timeout` every second from `from_ms` to `to_ms` and collects the outputs.
fn ticks(n: &mut Node, from_ms: u64, to_ms: u64) -> Vec<Output> {
    let mut outs = Vec::new();
    for t in (from_ms..=to_ms).step_by(1_000) {
        n.handle_timeout(at(t));
        outs.extend(drain(n));
    }
    outs
}

/// What a published or written output says on the wire, in short.
fn wire(out: &Output) -> String {
    let (Output::Publish { payload, .. } | Output::KvPut { value: payload, .. }) = out else {
        panic!("no payload in {out:?}")
    };
    match codec::decode(payload).unwrap() {
        Message::Heartbeat(h) => format!("hb @{} #{} of {}", h.incarnation, h.seq, h.report_seq),
        Message::Member(m) => format!("member @{} #{}", m.incarnation, m.hb_seq),
        Message::Report(r) => format!("report @{} {}:{}", r.incarnation, r.endpoint, r.seq),
        Message::Leave(m) => format!("leave {} @{}", m.node, m.incarnation),
        Message::Chunk(c) => format!(
            "chunk @{} #{} {}/{}",
            c.incarnation, c.generation, c.index, c.chunks
        ),
        Message::Reports(b) => {
            let (inc, first, last) = (b.incarnation, b.first_seq, b.last_seq);
            let items = b.items.iter().map(|i| format!(" {}:{}", i.endpoint, i.seq));
            format!("batch @{inc} {first}..{last}{}", items.collect::<String>())
        }
    }
}

// ---- the start-up snapshot ----

#[test]
fn a_snapshot_record_vouches_until_ttl_after_it_was_sent_wherever_the_readers_clock_started() {
    for origin in [0, 7_000, 86_400_000] {
        let now = |ms: u64| {
            Now::new(
                Instant::from_millis(origin + ms),
                WallTime::from_unix_ms(WALL_BASE_MS + ms),
            )
        };
        let cfg = node_config("me", Policy::GlobalAnyHealthy, 51);
        let mut me = Node::new(cfg, now(0)).unwrap();
        me.handle(now(0), CONNECT);
        assert!(drain(&mut me).contains(&Output::ReadSnapshot));
        let a = Peer::new("a", 1);
        me.handle(now(0), a.member_record(4, 1, WALL_BASE_MS - 2_000));
        me.handle(now(0), a.report_record("web", 1, Healthy));
        snapshot_done(&mut me, now(0));
        assert!(is_active(&me, "a"), "origin {origin}");
        assert_eq!(verdict(&me, "web"), (Some(true), Source::Global));
        me.handle_timeout(now(1_000));
        assert!(
            is_active(&me, "a"),
            "origin {origin}: TTL after it was sent"
        );
        me.handle_timeout(now(1_001));
        // Not TTL after the reader's clock started, nor TTL after the read.
        assert!(!is_active(&me, "a"), "origin {origin}");
        assert_eq!(drained(&mut me, "down a expired"), 1);
    }
}

#[test]
fn a_snapshot_record_older_than_ttl_vouches_for_nothing() {
    let mut me = reading(Policy::GlobalAnyHealthy);
    let b = Peer::new("b", 1);
    me.handle(at(0), b.member_record(4, 1, WALL_BASE_MS - 3_001));
    me.handle(at(0), b.report_record("web", 1, Healthy));
    snapshot_done(&mut me, at(0));
    assert!(!is_active(&me, "b"));
    assert_eq!(verdict(&me, "web"), (None, Source::Unknown));
    // The live heartbeat that record stood for is not taken for a duplicate.
    me.handle(at(10), b.heartbeat(4, 1, WALL_BASE_MS));
    assert!(is_active(&me, "b"));
    assert_eq!(verdict(&me, "web"), (Some(true), Source::Global));
}

#[test]
fn the_snapshot_is_asked_for_once_connected_and_its_records_are_judged_when_it_is_done() {
    let mut me = node("me", Policy::GlobalAnyHealthy, 51);
    me.handle_timeout(at(0));
    me.handle(at(10), local("web", Some(false)));
    assert_eq!(drained(&mut me, "read snapshot"), 0, "not before connected");
    me.handle(at(100), CONNECT);
    assert_eq!(drained(&mut me, "read snapshot"), 1);
    let a = Peer::new("a", 1);
    me.handle(at(200), a.member_record(3, 1, WALL_BASE_MS + 100));
    me.handle(at(200), a.report_record("web", 1, Healthy));
    assert!(!is_active(&me, "a"), "not judged during the read");
    assert_eq!(verdict(&me, "web"), (Some(false), Source::FallbackLocal));
    snapshot_done(&mut me, at(300));
    assert!(me.snapshot_loaded());
    assert!(is_active(&me, "a"));
    assert_eq!(verdict(&me, "web"), (Some(true), Source::Global));
}

#[test]
fn an_incomplete_snapshot_is_asked_for_again_at_the_next_tick_and_a_complete_one_never() {
    let mut me = node("me", Policy::GlobalAnyHealthy, 51);
    me.handle_timeout(at(0));
    me.handle(at(100), CONNECT);
    assert_eq!(drained(&mut me, "read snapshot"), 1);
    me.handle(at(200), SNAPSHOT_FAILED);
    assert!(!me.snapshot_loaded());
    assert_eq!(drained(&mut me, "read snapshot"), 0, "not at once");
    me.handle_timeout(at(999));
    assert_eq!(drained(&mut me, "read snapshot"), 0);
    me.handle_timeout(at(1_000));
    assert_eq!(drained(&mut me, "read snapshot"), 1, "the next tick");
    let outs = ticks(&mut me, 2_000, 3_000);
    assert_eq!(count(&outs, "read snapshot"), 0, "while reading");
    // Incomplete while disconnected: asked for again only once connected.
    me.handle(at(3_100), DISCONNECT);
    me.handle(at(3_100), SNAPSHOT_FAILED);
    assert_eq!(count(&ticks(&mut me, 4_000, 6_000), "read snapshot"), 0);
    me.handle(at(6_500), CONNECT);
    assert_eq!(drained(&mut me, "read snapshot"), 1);
    snapshot_done(&mut me, at(6_600));
    assert!(me.snapshot_loaded());
    let mut outs = ticks(&mut me, 7_000, 40_000);
    me.handle(at(40_100), DISCONNECT);
    me.handle(at(40_200), CONNECT);
    outs.extend(ticks(&mut me, 41_000, 45_000));
    assert_eq!(count(&outs, "read snapshot"), 0, "never again");
}

#[test]
fn resyncs_are_asked_for_only_after_the_snapshot_is_done() {
    let mut me = reading(Policy::GlobalAnyHealthy);
    let a = Peer::new("a", 1);
    // a says it made 3 reports; the snapshot holds only the first.
    me.handle(at(100), a.heartbeat(1, 3, WALL_BASE_MS + 100));
    me.handle(at(200), a.member_record(1, 1, WALL_BASE_MS + 100));
    me.handle(at(200), a.report_record("web", 1, Healthy));
    me.handle(at(1_100), a.heartbeat(2, 3, WALL_BASE_MS + 1_100));
    assert_eq!(drained(&mut me, "resync a"), 0, "the snapshot brings them");
    snapshot_done(&mut me, at(1_200));
    drain(&mut me);
    me.handle(at(2_100), a.heartbeat(3, 3, WALL_BASE_MS + 2_100));
    assert_eq!(drained(&mut me, "resync a"), 1);
    assert_eq!(me.stats().resyncs_requested, 1);
}

// ---- incarnations ----

#[test]
fn a_node_takes_its_wall_clock_as_incarnation_or_min_incarnation_if_larger() {
    let incarnation = |min| {
        let mut cfg = node_config("me", Policy::PreferLocal, 51);
        cfg.min_incarnation = min;
        Node::new(cfg, at(0)).unwrap().incarnation()
    };
    assert_eq!(incarnation(0), WALL_BASE_MS);
    assert_eq!(incarnation(7), WALL_BASE_MS);
    assert_eq!(incarnation(WALL_BASE_MS + 42), WALL_BASE_MS + 42);
}

#[test]
fn an_earlier_life_of_its_own_with_a_larger_incarnation_raises_it_and_republishes_every_report() {
    let mut me = node("me", Policy::PreferLocal, 51);
    me.handle(at(0), local("web", Some(true))); // seq 1
    me.handle(at(0), local("db", Some(false))); // seq 2
    me.handle(at(0), CONNECT);
    drain(&mut me);
    let from = me.incarnation();
    let earlier = Peer::new("me", from + 5_000);
    me.handle(at(10), earlier.member_record(40, 9, WALL_BASE_MS + 4_000));
    let to = from + 5_001;
    assert_eq!(me.incarnation(), to);
    assert_eq!(me.stats().incarnation_raises, 1);
    assert_eq!(me.stats().dropped(DropReason::DuplicateNodeId), 0);
    let outs = drain(&mut me);
    // Published at once; nothing is written to the KV before the snapshot is read.
    assert_eq!(
        tags(&outs),
        [
            format!("raised {from}->{to}"),
            "publish health".into(),
            "publish heartbeat".into(),
        ]
    );
    assert_eq!(outs[0], Output::IncarnationRaised { from, to });
    // Sequences start over at 1 for the batch, each above every old one.
    let wires: Vec<_> = outs[1..].iter().map(wire).collect();
    assert_eq!(
        wires,
        [
            format!("batch @{to} 1..4 web:3 db:4"),
            format!("hb @{to} #1 of 4"),
        ]
    );
    // Its earlier life's report records: the one it reports again is overwritten, the other
    // one deleted.
    me.handle(at(20), earlier.report_record("web", 8, Unhealthy));
    me.handle(at(20), earlier.report_record("old", 9, Healthy));
    assert_eq!(tags(&drain(&mut me)), ["delete Health me.old"]);
    // The snapshot read: now its own records are written, with a heartbeat at once.
    snapshot_done(&mut me, at(30));
    let outs = drain(&mut me);
    let wires: Vec<_> = outs
        .iter()
        .filter(|o| matches!(o, Output::Publish { .. } | Output::KvPut { .. }))
        .map(wire)
        .collect();
    assert_eq!(
        wires,
        [
            format!("hb @{to} #2 of 4"),
            format!("member @{to} #2"),
            format!("report @{to} web:3"),
            format!("report @{to} db:4"),
        ]
    );
    // After the snapshot, a larger incarnation of our id is another process using it.
    let other = Peer::new("me", to + 100);
    me.handle(at(40), other.member_record(1, 0, WALL_BASE_MS));
    assert_eq!(me.incarnation(), to);
    assert_eq!(me.stats().incarnation_raises, 1);
    assert_eq!(me.stats().dropped(DropReason::DuplicateNodeId), 1);
    assert!(drain(&mut me).is_empty());
}

#[test]
fn an_earlier_life_of_its_own_with_an_equal_incarnation_raises_it_too() {
    // The driver kept the last incarnation and passes it as the minimum (or the wall clock
    // stepped back to the very millisecond): the node starts with exactly the earlier life's
    // incarnation. That life's record (heartbeat 50; this life has sent one) is not ours.
    let mut cfg = node_config("me", Policy::PreferLocal, 51);
    cfg.min_incarnation = WALL_BASE_MS + 60_000;
    let mut me = Node::new(cfg, at(0)).unwrap();
    me.handle(at(0), CONNECT);
    drain(&mut me);
    let earlier = Peer::new("me", WALL_BASE_MS + 60_000);
    me.handle(at(10), earlier.member_record(50, 0, WALL_BASE_MS - 1_000));
    assert_eq!(me.incarnation(), WALL_BASE_MS + 60_001);
    assert_eq!(me.stats().incarnation_raises, 1);
}

#[test]
fn own_report_records_of_an_earlier_life_are_deleted_unless_reported_again() {
    let mut me = node("me", Policy::PreferLocal, 51);
    me.handle(at(0), local("web", Some(true)));
    me.handle(at(0), CONNECT);
    drain(&mut me);
    let earlier = Peer::new("me", me.incarnation() - 1_000);
    me.handle(at(10), earlier.report_record("web", 5, Unhealthy));
    me.handle(at(10), earlier.report_record("gone", 6, Healthy));
    assert_eq!(tags(&drain(&mut me)), ["delete Health me.gone"]);
    assert_eq!(me.stats().incarnation_raises, 0);
    assert_eq!(verdict(&me, "web"), (Some(true), Source::Local));
}

#[test]
fn a_member_that_restarted_with_its_clock_behind_is_accepted_once_its_earlier_life_expired() {
    let mut me = synced(Policy::GlobalAnyHealthy, 51);
    let (five, three) = (Peer::new("a", 5), Peer::new("a", 3));
    me.handle(at(0), five.heartbeat(1, 1, 0));
    me.handle(at(0), five.batch(1, 1, &[("web", 1, Healthy)]));
    me.handle(at(1_000), three.heartbeat(1, 0, 0));
    let stale = |me: &Node| me.stats().dropped(DropReason::StaleIncarnation);
    assert_eq!(stale(&me), 1, "5 is active");
    assert_eq!(incarnation_of(&me, "a"), 5);
    assert_eq!(verdict(&me, "web"), (Some(true), Source::Global));
    me.handle_timeout(at(3_001));
    assert!(!is_active(&me, "a"));
    drain(&mut me);
    me.handle(at(3_500), three.heartbeat(1, 1, 0));
    assert_eq!(drained(&mut me, "up a@3"), 1);
    assert_eq!(incarnation_of(&me, "a"), 3);
    assert_eq!(verdict(&me, "web"), (None, Source::Unknown), "5's reports");
    me.handle(at(3_500), three.batch(1, 1, &[("web", 1, Unhealthy)]));
    assert_eq!(verdict(&me, "web"), (Some(false), Source::Global));
    // The retired life 5, read from the KV, is stale.
    me.handle(at(3_600), five.report_record("web", 2, Healthy));
    me.handle(at(3_600), five.member_record(9, 2, WALL_BASE_MS + 3_600));
    assert_eq!(stale(&me), 3);
    assert_eq!(incarnation_of(&me, "a"), 3);
    assert_eq!(verdict(&me, "web"), (Some(false), Source::Global));
    // A later life above it is newer.
    me.handle(at(3_700), Peer::new("a", 6).heartbeat(1, 0, 0));
    let outs = drain(&mut me);
    assert_eq!(tags(&outs), ["down a restarted", "up a@6"]);
}

#[test]
fn a_late_heartbeat_of_the_life_a_member_raised_from_does_not_replace_it() {
    // "a" restarted with its clock behind (life 3 below its earlier life 5), read the KV and
    // raised to 6. Its batch of life 6 arrives before a duplicated heartbeat of life 3 that
    // was sent before the raise: life 6 is running (it just published), not expired, so the
    // late heartbeat is stale, and life 6's first heartbeat makes it active. Before, life 3
    // took over and life 6 was retired for good: "a" was not counted until it restarted.
    let mut me = synced(Policy::GlobalAnyHealthy, 51);
    let (three, six) = (Peer::new("a", 3), Peer::new("a", 6));
    me.handle(at(0), Peer::new("a", 5).heartbeat(1, 0, 0));
    me.handle_timeout(at(3_001));
    me.handle(at(3_500), three.heartbeat(1, 0, 0));
    assert_eq!(incarnation_of(&me, "a"), 3);
    me.handle(at(3_510), six.batch(1, 1, &[("web", 1, Healthy)]));
    assert_eq!(incarnation_of(&me, "a"), 6);
    let stale = |me: &Node| me.stats().dropped(DropReason::StaleIncarnation);
    let before = stale(&me);
    me.handle(at(3_520), three.heartbeat(2, 0, 0));
    assert_eq!(stale(&me), before + 1, "life 3's late heartbeat is stale");
    assert_eq!(incarnation_of(&me, "a"), 6);
    drain(&mut me);
    me.handle(at(3_530), six.heartbeat(1, 1, 0));
    assert_eq!(drained(&mut me, "up a@6"), 1);
    assert_eq!(verdict(&me, "web"), (Some(true), Source::Global));
    // Once heard and then expired, life 6 is replaced by a live restart as any life is.
    me.handle_timeout(at(6_600));
    assert!(!is_active(&me, "a"));
    me.handle(at(7_000), Peer::new("a", 4).heartbeat(1, 0, 0));
    assert_eq!(incarnation_of(&me, "a"), 4);
}

#[test]
fn a_life_known_only_from_its_batch_and_never_heard_is_taken_for_expired_after_a_ttl() {
    // Life 6 published a batch and died before its first heartbeat; the member restarts with
    // its clock behind (life 4) and no record of life 6 to raise above. Within a TTL of the
    // batch, life 4's heartbeat is taken for a late one of an earlier life; after it, life 4
    // is the member's life.
    let mut me = synced(Policy::GlobalAnyHealthy, 51);
    let four = Peer::new("a", 4);
    me.handle(at(0), Peer::new("a", 6).batch(1, 1, &[("web", 1, Healthy)]));
    assert_eq!(incarnation_of(&me, "a"), 6);
    me.handle(at(2_999), four.heartbeat(1, 0, 0));
    assert_eq!(incarnation_of(&me, "a"), 6, "within the TTL (3 s)");
    me.handle(at(3_000), four.heartbeat(2, 0, 0));
    assert_eq!(incarnation_of(&me, "a"), 4, "a TTL after life 6's batch");
    assert!(is_active(&me, "a"));
}

#[test]
fn a_member_whose_clock_stepped_back_twice_is_accepted_once_its_earlier_life_expired() {
    // Lives 5, then 3, then 4 (a second restart, the clock still behind the first life's).
    let mut me = synced(Policy::GlobalAnyHealthy, 51);
    me.handle(at(0), Peer::new("a", 5).heartbeat(1, 0, 0));
    me.handle_timeout(at(3_001));
    me.handle(at(3_500), Peer::new("a", 3).heartbeat(1, 0, 0));
    assert_eq!(incarnation_of(&me, "a"), 3);
    me.handle_timeout(at(6_501));
    assert!(!is_active(&me, "a"));
    me.handle(at(7_000), Peer::new("a", 4).heartbeat(1, 0, 0));
    // A live heartbeat of a member that is not active is a restart, as a lower one is.
    assert_eq!(me.stats().dropped(DropReason::StaleIncarnation), 0);
    assert!(is_active(&me, "a"));
}

// ---- leaving ----

#[test]
fn a_member_that_leaves_is_down_at_once_until_a_new_incarnation() {
    let mut me = synced(Policy::GlobalAnyHealthy, 51);
    let a = Peer::new("a", 1);
    me.handle(at(0), a.heartbeat(1, 1, 0));
    me.handle(at(0), a.batch(1, 1, &[("web", 1, Healthy)]));
    assert_eq!(verdict(&me, "web"), (Some(true), Source::Global));
    drain(&mut me);
    me.handle(at(100), a.leave(WALL_BASE_MS + 100));
    assert_eq!(drained(&mut me, "down a left"), 1);
    assert!(!is_active(&me, "a"));
    assert_eq!(verdict(&me, "web"), (None, Source::Unknown));
    me.handle(at(200), a.heartbeat(2, 2, 0));
    me.handle(at(200), a.batch(2, 2, &[("web", 2, Healthy)]));
    assert_eq!(me.stats().dropped(DropReason::LeftMember), 2);
    assert!(!is_active(&me, "a"));
    assert_eq!(verdict(&me, "web"), (None, Source::Unknown));
    me.handle(at(300), Peer::new("a", 2).heartbeat(1, 0, 0));
    assert_eq!(drained(&mut me, "up a@2"), 1);
    assert!(is_active(&me, "a"));
}

#[test]
fn a_leave_record_in_the_snapshot_makes_a_fresh_member_inactive_and_its_reports_void() {
    let mut me = reading(Policy::GlobalAnyHealthy);
    let (a, b) = (Peer::new("a", 1), Peer::new("b", 1));
    me.handle(at(0), a.leave_record(7, WALL_BASE_MS - 100));
    me.handle(at(0), b.member_record(7, 1, WALL_BASE_MS - 100));
    me.handle(at(0), a.report_record("web", 1, Healthy));
    me.handle(at(0), b.report_record("web", 1, Unhealthy));
    snapshot_done(&mut me, at(0));
    assert_eq!(me.active_member_ids(), ["b", "me"]);
    assert_eq!(counts(&me, "web"), (Some(false), 0, 1));
    assert!(me.members().iter().any(|m| m.node == "a" && m.left));
    me.handle(at(10), a.heartbeat(8, 1, 0));
    assert!(!is_active(&me, "a"));
    assert_eq!(me.stats().dropped(DropReason::LeftMember), 1);
}

fn reporting_node() -> Node {
    let mut me = synced(Policy::GlobalAnyHealthy, 51);
    me.handle(at(10), local("web", Some(true)));
    me.handle(at(10), local("db", Some(false)));
    drain(&mut me);
    me
}

/// Checks that the outputs of `me` are its leave announcement, then its report deletions.
fn assert_leave_announced(me: &mut Node) {
    let outs = drain(me);
    let t = tags(&outs);
    assert_eq!(t[..2], ["publish leave", "put Members me leave"], "{t:?}");
    let mut deletes = t[2..].to_vec();
    deletes.sort();
    assert_eq!(deletes, ["delete Health me.db", "delete Health me.web"]);
    let hb_subject = me.names().subject(SubjectKind::Heartbeat, "me");
    assert!(matches!(&outs[0], Output::Publish { subject, .. } if *subject == hb_subject));
    for out in &outs[..2] {
        assert_eq!(wire(out), format!("leave me @{}", me.incarnation()));
    }
}

#[test]
fn a_node_that_leaves_announces_it_deletes_its_reports_and_sends_nothing_more() {
    let mut me = reporting_node();
    me.handle(at(100), Input::Leave);
    assert!(me.is_leaving());
    assert_leave_announced(&mut me);
    me.handle(at(200), local("web", Some(false)));
    let mut after = drain(&mut me);
    after.extend(ticks(&mut me, 1_000, 40_000));
    // Reads of the members bucket go on; nothing is published, written or deleted.
    let sent = tags(&after);
    let sent: Vec<_> = sent.iter().filter(|t| *t != "read members").collect();
    assert_eq!(sent, ["decision web"], "only its own decision changes");
    assert_eq!(verdict(&me, "web"), (Some(false), Source::FallbackLocal));
}

#[test]
fn a_node_asked_to_leave_while_disconnected_announces_it_once_connected() {
    let mut me = reporting_node();
    me.handle(at(100), DISCONNECT);
    me.handle(at(200), Input::Leave);
    assert!(me.is_leaving());
    assert!(drain(&mut me).is_empty());
    assert!(ticks(&mut me, 1_000, 3_000).is_empty());
    me.handle(at(3_500), CONNECT);
    assert_leave_announced(&mut me);
}

// ---- lost messages ----

#[test]
fn lost_messages_bring_the_members_bucket_read_forward_once_synced_and_connected() {
    let mut me = node("me", Policy::GlobalAnyHealthy, 51);
    me.handle(at(0), CONNECT);
    drain(&mut me);
    let reads_at = |me: &mut Node, from: u64, to: u64| count(&ticks(me, from, to), "read members");
    me.handle(at(10), Input::MessagesLost { count: 3 });
    assert_eq!(me.stats().messages_lost, 3);
    assert_eq!(reads_at(&mut me, 1_000, 1_000), 0, "no snapshot yet");
    snapshot_done(&mut me, at(1_500));
    assert_eq!(reads_at(&mut me, 2_000, 2_000), 1);
    assert_eq!(reads_at(&mut me, 3_000, 3_000), 0, "once");
    me.handle(at(3_100), DISCONNECT);
    me.handle(at(3_200), Input::MessagesLost { count: 2 });
    assert_eq!(me.stats().messages_lost, 5);
    assert_eq!(reads_at(&mut me, 4_000, 4_000), 0, "disconnected");
    me.handle(at(4_500), CONNECT);
    assert_eq!(drained(&mut me, "read members"), 0, "at the tick");
    assert_eq!(reads_at(&mut me, 5_000, 5_000), 1);
    // Otherwise only every 30 ticks (the first tick was at 1 s, the 30th is at 30 s).
    assert_eq!(reads_at(&mut me, 6_000, 29_000), 0);
    assert_eq!(reads_at(&mut me, 30_000, 30_000), 1);
}

// ---- configuration apply ----

fn config_yaml(policy: &str) -> Bytes {
    Bytes::from(format!(
        "cluster: {{id: {CLUSTER}}}\nstate:\n  healthPolicy: {policy}\n  heartbeatInterval: 1s\n  heartbeatTTL: 3s\nendpoints:\n  - name: web\n"
    ))
}

fn config_entry(version: u64, policy: &str) -> Input {
    Input::ConfigEntry {
        version,
        yaml: config_yaml(policy),
    }
}

fn applied(version: u64, result: Result<(), String>) -> Input {
    Input::ConfigApplied { version, result }
}

fn applied_failed(n: &Node) -> (u64, u64) {
    (n.stats().config_applied, n.stats().config_failed)
}

/// A confirming node (applyTimeout 5 s) under prefer-local: web is down locally, up at a.
fn confirming_node() -> Node {
    let mut cfg = node_config("me", Policy::PreferLocal, 51);
    cfg.confirm_apply = true;
    cfg.apply_timeout = Duration::from_secs(5);
    let mut me = synced_with(cfg);
    let a = Peer::new("a", 1);
    me.handle(at(0), a.heartbeat(1, 1, 0));
    me.handle(at(0), a.batch(1, 1, &[("web", 1, Healthy)]));
    me.handle(at(0), local("web", Some(false)));
    drain(&mut me);
    assert_eq!(verdict(&me, "web"), (Some(false), Source::Local));
    me
}

#[test]
fn a_confirmed_config_is_in_force_at_once_and_committed_when_applied() {
    let mut me = confirming_node();
    me.handle(at(100), config_entry(5, "global-any-healthy"));
    assert_eq!(verdict(&me, "web"), (Some(true), Source::Global), "at once");
    assert_eq!(tags(&drain(&mut me)), ["apply 5", "decision web"]);
    assert_eq!(me.config_version(), 0);
    me.handle(at(200), applied(5, Ok(())));
    assert_eq!(tags(&drain(&mut me)), ["committed 5"]);
    assert_eq!(me.config_version(), 5);
    assert_eq!(applied_failed(&me), (1, 0));
}

#[test]
fn a_config_that_fails_to_apply_is_rolled_back_whole() {
    let mut me = confirming_node();
    me.handle(at(100), config_entry(5, "global-any-healthy"));
    drain(&mut me);
    me.handle(at(200), applied(5, Err("probe web: bad url".into())));
    let outs = drain(&mut me);
    assert_eq!(tags(&outs), ["failed 5", "decision web"]);
    assert!(matches!(
        &outs[0],
        Output::ConfigFailed { version: 5, error, restore: None } if error.contains("bad url")
    ));
    assert_eq!(me.policy().0, Policy::PreferLocal);
    assert_eq!(verdict(&me, "web"), (Some(false), Source::Local));
    me.handle(at(300), applied(5, Ok(())));
    assert!(drain(&mut me).is_empty(), "a late confirmation is ignored");
    assert_eq!(me.config_version(), 0);
    assert_eq!(applied_failed(&me), (0, 1));
}

#[test]
fn a_config_not_confirmed_within_the_apply_timeout_fails() {
    let mut me = confirming_node();
    me.handle(at(500), config_entry(5, "global-any-healthy"));
    drain(&mut me);
    me.handle_timeout(at(5_000));
    drain(&mut me);
    let deadline = (Instant::from_millis(5_500), TimerReason::ConfigApply);
    assert_eq!(me.poll_timeout_reason(), deadline);
    me.handle_timeout(at(5_499));
    assert_eq!(drained(&mut me, "failed 5"), 0);
    me.handle_timeout(at(5_500));
    let outs = drain(&mut me);
    let Some(Output::ConfigFailed {
        version: 5, error, ..
    }) = outs.first()
    else {
        panic!("{outs:?}")
    };
    assert!(error.contains("config.applyTimeout"), "{error}");
    assert_eq!(me.policy().0, Policy::PreferLocal);
    assert_ne!(me.poll_timeout_reason().1, TimerReason::ConfigApply);
    me.handle(at(5_600), applied(5, Ok(())));
    assert_eq!(drained(&mut me, "committed 5"), 0);
    assert_eq!(applied_failed(&me), (0, 1));
}

#[test]
fn a_config_arriving_while_another_is_applied_waits_and_older_ones_are_ignored() {
    let mut me = confirming_node();
    me.handle(at(100), config_entry(5, "global-any-healthy"));
    me.handle(at(100), config_entry(6, "local-only"));
    assert_eq!(tags(&drain(&mut me)), ["apply 5", "decision web"]);
    assert_eq!(me.policy().0, Policy::GlobalAnyHealthy, "6 waits");
    me.handle(at(150), config_entry(5, "global-quorum"));
    me.handle(at(150), config_entry(4, "global-quorum"));
    assert_eq!(tags(&drain(&mut me)), ["ignored 5", "ignored 4"]);
    assert_eq!(me.stats().config_ignored, 2);
    me.handle(at(200), applied(5, Ok(())));
    let outs = drain(&mut me);
    assert_eq!(tags(&outs), ["committed 5", "apply 6", "decision web"]);
    assert_eq!(me.policy().0, Policy::LocalOnly);
    me.handle(at(300), applied(6, Err("no".into())));
    let outs = drain(&mut me);
    let Some(Output::ConfigFailed {
        version: 6,
        restore: Some(restore),
        ..
    }) = outs.first()
    else {
        panic!("{outs:?}")
    };
    assert_eq!(restore.state.policy, Policy::GlobalAnyHealthy, "committed");
    assert_eq!(me.policy().0, Policy::GlobalAnyHealthy);
    assert_eq!(me.config_version(), 5);
}

#[test]
fn without_confirmation_a_config_is_committed_at_once() {
    let mut me = synced(Policy::PreferLocal, 51);
    me.handle(at(100), config_entry(3, "global-quorum"));
    assert_eq!(tags(&drain(&mut me)), ["apply 3", "committed 3"]);
    assert_eq!(me.config_version(), 3);
    assert_eq!(me.policy().0, Policy::GlobalQuorum);
    assert_eq!(me.stats().config_applied, 1);
}

// ---- poll_updated ----

#[test]
fn poll_updated_hands_out_count_changes_that_change_no_verdict_once_per_endpoint() {
    let mut me = synced(Policy::GlobalQuorum, 51);
    let (a, b) = (Peer::new("a", 1), Peer::new("b", 1));
    me.handle(at(0), local("web", Some(true)));
    for p in [&a, &b] {
        me.handle(at(0), p.heartbeat(1, 1, 0));
    }
    me.handle(at(0), a.batch(1, 1, &[("web", 1, Healthy)]));
    me.handle(at(0), b.batch(1, 1, &[("web", 1, Unhealthy)]));
    drain(&mut me);
    while me.poll_updated().is_some() {}
    assert_eq!(counts(&me, "web"), (Some(true), 2, 3));
    // 2 of 3 -> 3 of 3 -> 2 of 3 -> 3 of 3: healthy throughout.
    me.handle(at(10), b.batch(2, 2, &[("web", 2, Healthy)]));
    me.handle(at(10), a.batch(2, 2, &[("web", 2, Unhealthy)]));
    me.handle(at(10), a.batch(3, 3, &[("web", 3, Healthy)]));
    assert!(drain(&mut me).is_empty(), "no verdict changed");
    let (endpoint, d) = me.poll_updated().expect("the counts changed");
    assert_eq!(
        (endpoint, d.healthy_reports, d.total_reports),
        ("web", 3, 3)
    );
    assert!(me.poll_updated().is_none(), "once until drained");
}

// ---- refreshing our KV records ----

/// The health-bucket writes among `outs` as (key, seq).
/// The (key, seq) of every report write among `outs` (not the chunks of a compaction).
fn health_puts(outs: &[Output]) -> Vec<(String, u64)> {
    let put = |o: &Output| match o {
        Output::KvPut {
            bucket,
            key,
            seq,
            kind: gslb_state_core::MessageKind::Report,
            ..
        } if *bucket == Bucket::Health => Some((key.clone(), *seq)),
        _ => None,
    };
    outs.iter().filter_map(put).collect()
}

/// A synced node with `reports` reports, heartbeat interval `interval` (TTL twice that);
/// returns it with the (key, seq) of each report's first write.
fn node_with_reports(reports: usize, interval: Duration) -> (Node, BTreeMap<String, u64>) {
    let mut cfg = node_config("me", Policy::PreferLocal, 51);
    cfg.state.heartbeat_interval = interval;
    cfg.state.heartbeat_ttl = interval * 2;
    let mut me = synced_with(cfg);
    for i in 0..reports {
        me.handle(at(1), local(&format!("ep{i}"), Some(i % 2 == 0)));
    }
    let first: BTreeMap<String, u64> = health_puts(&drain(&mut me)).into_iter().collect();
    assert_eq!(first.len(), reports);
    (me, first)
}

#[test]
fn reports_are_rewritten_to_the_kv_at_a_bounded_rate() {
    const REPORTS: u64 = 1_000;
    let period_s = (RECORD_MAX_AGE / 4).as_secs();
    let (mut me, first) = node_with_reports(REPORTS as usize, Duration::from_secs(1));
    let mut rewritten = Vec::new();
    for tick in 1..=1_512u64 {
        me.handle_timeout(at(tick * 1_000));
        let outs = drain(&mut me);
        assert_eq!(
            count(&outs, "publish health"),
            0,
            "a refresh publishes nothing"
        );
        let puts = health_puts(&outs);
        assert!(puts.len() <= 1, "tick {tick}: {puts:?}");
        rewritten.extend(puts);
        // reports × interval / (RECORD_MAX_AGE / 4) per tick.
        let expected = tick * REPORTS / period_s;
        let done = rewritten.len() as u64;
        assert!(
            done.abs_diff(expected) <= 1,
            "tick {tick}: {done}, not ~{expected}"
        );
    }
    assert_eq!(rewritten.len(), 10);
    for (key, seq) in &rewritten {
        assert_eq!(first.get(key), Some(seq), "{key}: rewritten unchanged");
    }
    let keys: std::collections::BTreeSet<_> = rewritten.iter().map(|(k, _)| k).collect();
    assert_eq!(keys.len(), 10, "a different report each time");
}

#[test]
fn every_report_is_rewritten_within_a_quarter_of_the_record_max_age() {
    // One-hour ticks: a quarter of RECORD_MAX_AGE is 42 of them.
    let interval = Duration::from_secs(3_600);
    let (mut me, first) = node_with_reports(100, interval);
    let ticks_per_period = (RECORD_MAX_AGE / 4).as_secs() / interval.as_secs();
    let mut seen: BTreeMap<String, u32> = BTreeMap::new();
    for tick in 1..=ticks_per_period {
        me.handle_timeout(at(tick * 3_600_000));
        let puts = health_puts(&drain(&mut me));
        assert!(puts.len() <= 3, "spread evenly: {puts:?} in tick {tick}");
        for (key, seq) in puts {
            assert_eq!(first.get(&key), Some(&seq));
            *seen.entry(key).or_default() += 1;
        }
    }
    assert_eq!(seen.len(), 100, "every report once");
    assert!(seen.values().all(|&n| n == 1));
}

// ---- the KV writes trail the publishes ----

#[test]
fn changed_reports_are_published_at_once_and_written_after_the_kv_write_delay_once_each() {
    let mut cfg = node_config("me", Policy::PreferLocal, 51);
    cfg.limits.kv_write_delay = Duration::from_millis(20);
    let mut me = synced_with(cfg);
    let t0 = 5;
    me.handle(at(t0), local("web", Some(true)));
    me.handle(at(t0), local("db", Some(true)));
    let outs = drain(&mut me);
    assert_eq!(count(&outs, "publish health"), 1, "{:?}", tags(&outs));
    assert!(health_puts(&outs).is_empty(), "no write before the delay");
    assert_eq!(
        me.poll_timeout_reason(),
        (Instant::from_millis(t0 + 20), TimerReason::KvWrite)
    );
    // web changes again within the delay: published again, and written once, as it is now.
    me.handle(at(t0 + 10), local("web", Some(false)));
    let outs = drain(&mut me);
    assert_eq!(count(&outs, "publish health"), 1);
    assert!(health_puts(&outs).is_empty(), "still waiting");
    me.handle_timeout(at(t0 + 19));
    assert!(health_puts(&drain(&mut me)).is_empty(), "1 ms early");
    me.handle_timeout(at(t0 + 20));
    let puts = health_puts(&drain(&mut me));
    let keys: Vec<&str> = puts.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(keys.len(), 2, "one write each: {puts:?}");
    let web_seq = puts.iter().find(|(k, _)| k.ends_with("web")).unwrap().1;
    let db_seq = puts.iter().find(|(k, _)| k.ends_with("db")).unwrap().1;
    assert!(web_seq > db_seq, "web's newer report is written: {puts:?}");
    assert_ne!(
        me.poll_timeout_reason().1,
        TimerReason::KvWrite,
        "none waits"
    );
}

#[test]
fn no_kv_write_timer_while_writes_are_not_allowed() {
    let mut cfg = node_config("me", Policy::PreferLocal, 51);
    cfg.limits.kv_write_delay = Duration::from_millis(20);
    let mut me = synced_with(cfg);
    me.handle(at(5), local("web", Some(true)));
    let _ = drain(&mut me);
    me.handle(at(6), Input::Connectivity(Connectivity::Disconnected));
    let _ = drain(&mut me);
    // Disconnected: the writes wait for the connection, not for a timer that would spin.
    assert_ne!(me.poll_timeout_reason().1, TimerReason::KvWrite);
    me.handle(at(100), Input::Connectivity(Connectivity::Connected));
    let puts = health_puts(&drain(&mut me));
    assert!(
        puts.iter().any(|(k, _)| k.ends_with("web")),
        "written once connected again (the delay passed long ago): {puts:?}"
    );
}

#[test]
fn a_kv_write_delay_above_one_second_is_refused() {
    let mut cfg = node_config("me", Policy::PreferLocal, 51);
    cfg.limits.kv_write_delay = Duration::from_millis(1_001);
    let e = Node::new(cfg, at(0)).unwrap_err();
    assert!(e.to_string().contains("kv_write_delay"), "{e}");
}
