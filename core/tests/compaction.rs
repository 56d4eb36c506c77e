//! The compacted snapshot of a node's reports, end to end through the core: the writer
//! (when it compacts, the chunk writes, the record that names them only once every chunk is
//! acknowledged, the slots), the reader (the start-up snapshot's report read: which chunks and
//! key filters it asks for, and that chunks plus the report keys written since load exactly
//! what the report keys alone would), torn and stale snapshots (a member whose chunks are not
//! all there, or not of the snapshot its record names, is re-synced and the odd chunk's
//! reports are ignored), and random report histories read back both ways.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::kv::{Kv, Order, filter_matches};
use common::*;
use gslb_state_core::codec::ReportState::{Healthy, Unhealthy, Withdrawn};
use gslb_state_core::codec::{self, Message, ReportState, SnapshotRef};
use gslb_state_core::{
    Bucket, Connectivity, Decision, DropReason, Input, MessageKind, Node, NodeConfig, Now, Output,
    Policy,
};
use proptest::prelude::*;

const CONNECT: Input = Input::Connectivity(Connectivity::Connected);

fn local(endpoint: &str, healthy: Option<bool>) -> Input {
    Input::LocalHealth {
        endpoint: endpoint.into(),
        healthy,
    }
}

/// A prefer-local node (a reader's decisions are then its peers' reports) that compacts at
/// most every `interval`.
fn config(id: &str, interval: Duration) -> NodeConfig {
    let mut cfg = node_config(id, Policy::PreferLocal, 51);
    cfg.limits.compact_interval = interval;
    cfg
}

/// A node started at 0 ms, connected at `t`, its start-up snapshot read from `kv` (every write
/// carried out and acknowledged); returns it with the outputs.
fn started(cfg: NodeConfig, kv: &mut Kv, t: u64) -> (Node, Vec<Output>) {
    let mut n = Node::new(cfg, at(0)).unwrap();
    n.handle(at(t), CONNECT);
    let outs = kv.serve(&mut n, at(t), true);
    assert!(n.snapshot_loaded());
    (n, outs)
}

/// The chunk writes among `outs`: (key, seq, chunk's generation, index, count).
fn chunk_puts(outs: &[Output]) -> Vec<(String, u64, u64, u32, u32)> {
    outs.iter()
        .filter_map(|o| match o {
            Output::KvPut {
                bucket,
                key,
                value,
                kind: MessageKind::Chunk,
                seq,
            } => {
                assert_eq!(*bucket, Bucket::Health);
                let Ok(Message::Chunk(c)) = codec::decode(value) else {
                    panic!("a chunk write that is no chunk");
                };
                Some((key.clone(), *seq, c.generation, c.index, c.chunks))
            }
            _ => None,
        })
        .collect()
}

/// The snapshot named by each membership record written among `outs`.
fn records(outs: &[Output]) -> Vec<Option<SnapshotRef>> {
    outs.iter()
        .filter_map(|o| match o {
            Output::KvPut {
                bucket: Bucket::Members,
                value,
                kind: MessageKind::Member,
                ..
            } => match codec::decode(value) {
                Ok(Message::Member(rec)) => Some(rec.snapshot),
                other => panic!("a member record that is none: {other:?}"),
            },
            _ => None,
        })
        .collect()
}

/// A report read: its chunk keys, and its key filters (sorted) with the revisions to read
/// from.
type ReportRead = (Vec<String>, Vec<(String, u64)>);

/// The report reads `outs` asks for.
fn report_reads(outs: &[Output]) -> Vec<ReportRead> {
    outs.iter()
        .filter_map(|o| match o {
            Output::ReadSnapshotReports {
                region,
                chunks,
                key_filters,
            } => {
                assert_eq!(region, "", "no region buckets");
                let mut filters = key_filters.clone();
                filters.sort();
                Some((chunks.clone(), filters))
            }
            _ => None,
        })
        .collect()
}

fn resyncs(outs: &[Output]) -> Vec<String> {
    outs.iter()
        .filter_map(|o| match o {
            Output::Resync {
                node, key_filter, ..
            } => {
                assert_eq!(*key_filter, format!("{node}.*"));
                Some(node.clone())
            }
            _ => None,
        })
        .collect()
}

/// The highest revision among the report keys (two tokens) of `node` in `kv`.
fn report_revision(kv: &Kv, node: &str) -> u64 {
    kv.health
        .entries
        .iter()
        .filter(|(k, _)| filter_matches(&format!("{node}.*"), k))
        .map(|(_, (rev, _))| *rev)
        .max()
        .unwrap_or(0)
}

/// Ticks `n` every second from `from` to `to` ms, answering its reads and, when `writes`,
/// carrying out its writes; returns the outputs.
fn ticks(n: &mut Node, kv: &mut Kv, from: u64, to: u64, writes: bool) -> Vec<Output> {
    let mut outs = Vec::new();
    for t in (from..=to).step_by(1_000) {
        n.handle_timeout(at(t));
        outs.extend(kv.serve(n, at(t), writes));
    }
    outs
}

/// Stores and acknowledges the writes among `outs` for which `which` holds.
fn carry(n: &mut Node, kv: &mut Kv, now: Now, outs: &[Output], which: impl Fn(&Output) -> bool) {
    for out in outs.iter().filter(|o| which(o)) {
        if let Some(ack) = kv.store(out) {
            n.handle(now, ack);
        }
    }
}

fn is_chunk(o: &Output) -> bool {
    matches!(
        o,
        Output::KvPut {
            kind: MessageKind::Chunk,
            ..
        }
    )
}

fn is_report(o: &Output) -> bool {
    matches!(
        o,
        Output::KvPut {
            kind: MessageKind::Report,
            ..
        }
    )
}

/// An endpoint name (255 bytes, the longest) long enough that 2,500 of them take two chunks.
fn long_name(i: usize) -> String {
    format!("{i:04}-{}", "e".repeat(250))
}

// ---- the writer ----

#[test]
fn a_writer_names_its_compaction_once_every_chunk_is_acked_and_alternates_slots() {
    const N: usize = 2_500;
    let mut kv = Kv::default();
    let (mut w, _) = started(config("w", Duration::from_secs(2)), &mut kv, 0);
    for i in 0..N {
        w.handle(at(100), local(&long_name(i), Some(true)));
    }
    let outs = kv.serve(&mut w, at(100), true);
    assert!(chunk_puts(&outs).is_empty(), "not before the interval");
    let acked_before = report_revision(&kv, "w");
    assert_eq!(acked_before, N as u64);
    assert!(chunk_puts(&ticks(&mut w, &mut kv, 1_000, 1_000, true)).is_empty());
    // Ten changes whose writes are still out when the compaction begins.
    for i in 0..10 {
        w.handle(at(1_900), local(&long_name(i), Some(false)));
    }
    let in_flight: Vec<Output> = drain(&mut w).into_iter().filter(is_report).collect();
    assert_eq!(in_flight.len(), 10);

    // 2 s after the start: every report (the ten changes included) in two chunks of slot 1.
    let outs = ticks(&mut w, &mut kv, 2_000, 2_000, false);
    let chunks = chunk_puts(&outs);
    assert_eq!(
        chunks,
        [
            ("w._SNAP.1.0".to_owned(), 1, 1, 0, 2),
            ("w._SNAP.1.1".to_owned(), 1, 1, 1, 2)
        ]
    );
    assert_eq!(w.stats().published(MessageKind::Chunk), 2);
    let mut items = BTreeMap::new();
    for out in outs.iter().filter(|o| is_chunk(o)) {
        let Output::KvPut { value, .. } = out else {
            unreachable!()
        };
        let Ok(Message::Chunk(c)) = codec::decode(value) else {
            unreachable!()
        };
        assert_eq!(c.incarnation, w.incarnation());
        let mut buf = Vec::new();
        for item in codec::unpack_chunk_items(&c, &mut buf).unwrap() {
            assert!(items.insert(item.endpoint.to_owned(), item.state).is_none());
        }
    }
    assert_eq!(items.len(), N);
    assert_eq!(items[&long_name(3)], Unhealthy, "as of the compaction");
    assert_eq!(items[&long_name(10)], Healthy);
    // The writes that were out are stored after it began: above its revision.
    carry(&mut w, &mut kv, at(2_010), &in_flight, |_| true);
    assert!(report_revision(&kv, "w") > acked_before);
    // One chunk acknowledged: the record does not name the compaction yet.
    carry(&mut w, &mut kv, at(2_020), &outs[..], |o| {
        is_chunk(o) && matches!(o, Output::KvPut { key, .. } if key.ends_with(".0"))
    });
    assert!(records(&kv.serve(&mut w, at(2_020), true)).is_empty());
    assert_eq!(records(&ticks(&mut w, &mut kv, 3_000, 3_000, true)), [None]);
    // Both: the next record, written at once, names it.
    carry(&mut w, &mut kv, at(3_010), &outs[..], |o| {
        is_chunk(o) && matches!(o, Output::KvPut { key, .. } if key.ends_with(".1"))
    });
    let first = SnapshotRef {
        incarnation: w.incarnation(),
        generation: 1,
        chunks: 2,
        seq: N as u64 + 10,
        revision: acked_before,
    };
    assert_eq!(records(&kv.serve(&mut w, at(3_010), true)), [Some(first)]);
    assert_eq!(
        records(&ticks(&mut w, &mut kv, 4_000, 4_000, true)),
        [Some(first)]
    );

    // Changes to half the reports: the next compaction, in slot 0. A chunk write fails:
    // it is abandoned, and the records go on naming the first.
    for i in 10..10 + N / 2 {
        w.handle(at(4_100), local(&long_name(i), Some(false)));
    }
    kv.serve(&mut w, at(4_100), true);
    let outs = ticks(&mut w, &mut kv, 5_000, 5_000, false);
    let chunks = chunk_puts(&outs);
    assert_eq!(chunks.len(), 2);
    assert!(
        chunks
            .iter()
            .all(|(key, seq, generation, _, _)| key.starts_with("w._SNAP.0.")
                && *seq == 2
                && *generation == 2)
    );
    carry(&mut w, &mut kv, at(5_010), &outs, |o| !is_chunk(o));
    w.handle(
        at(5_020),
        Input::KvPutFailed {
            bucket: Bucket::Health,
            key: chunks[1].0.clone(),
            seq: chunks[1].1,
        },
    );
    // A late acknowledgement of the other chunk changes nothing.
    carry(&mut w, &mut kv, at(5_030), &outs, |o| {
        is_chunk(o) && matches!(o, Output::KvPut { key, .. } if key.ends_with(".0"))
    });
    // The abandoned compaction is retried after the interval, skipping a number to stay off
    // the named one's slot 1; the records name the first until its chunks are acknowledged.
    let after = ticks(&mut w, &mut kv, 6_000, 9_000, true);
    let retried = chunk_puts(&after);
    assert_eq!(retried.len(), 2);
    assert!(
        retried
            .iter()
            .all(|(key, seq, _, _, _)| key.starts_with("w._SNAP.0.") && *seq == 4)
    );
    let named: Vec<u64> = records(&after)
        .iter()
        .map(|r| r.map_or(0, |s| s.generation))
        .collect();
    assert_eq!(named.first(), Some(&1), "{named:?}");
    assert_eq!(named.last(), Some(&4), "{named:?}");

    // Enough changes again: the next compaction in slot 1.
    for i in 10..10 + N / 2 {
        w.handle(at(9_100), local(&long_name(i), Some(true)));
    }
    kv.serve(&mut w, at(9_100), true);
    let acked = report_revision(&kv, "w");
    let outs = ticks(&mut w, &mut kv, 10_000, 10_000, true);
    let chunks = chunk_puts(&outs);
    assert_eq!(chunks.len(), 2);
    assert!(
        chunks
            .iter()
            .all(|(key, seq, _, _, _)| key.starts_with("w._SNAP.1.") && *seq == 5)
    );
    let fourth = SnapshotRef {
        generation: 5,
        seq: N as u64 + 10 + 2 * (N as u64 / 2),
        revision: acked,
        ..first
    };
    assert_eq!(
        records(&outs).last(),
        Some(&Some(fourth)),
        "acked at once, named at once"
    );

    // And the one after it in slot 0 again.
    for i in 0..N / 2 {
        w.handle(at(10_100), local(&long_name(i), None));
    }
    kv.serve(&mut w, at(10_100), true);
    let outs = ticks(&mut w, &mut kv, 12_000, 12_000, false);
    let chunks = chunk_puts(&outs);
    assert!(!chunks.is_empty());
    assert!(
        chunks
            .iter()
            .all(|(key, seq, _, _, _)| key.starts_with("w._SNAP.0.") && *seq == 6)
    );
    carry(&mut w, &mut kv, at(12_010), &outs, |o| !is_chunk(o));
    // The failure of the previous compaction of this slot's write of the same key (generation
    // 4) comes back late: it does not abandon this one.
    w.handle(
        at(12_020),
        Input::KvPutFailed {
            bucket: Bucket::Health,
            key: chunks[0].0.clone(),
            seq: 4,
        },
    );
    carry(&mut w, &mut kv, at(12_030), &outs, is_chunk);
    let outs = ticks(&mut w, &mut kv, 13_000, 13_000, true);
    assert_eq!(records(&outs).last().unwrap().unwrap().generation, 6);
}

#[test]
fn a_compaction_waits_for_changes_to_half_the_reports() {
    let mut kv = Kv::default();
    let (mut w, _) = started(config("w", Duration::from_secs(1)), &mut kv, 0);
    for i in 0..10 {
        w.handle(at(100), local(&format!("e{i}"), Some(true)));
    }
    kv.serve(&mut w, at(100), true);
    let outs = ticks(&mut w, &mut kv, 1_000, 1_000, true);
    assert_eq!(chunk_puts(&outs).len(), 1);
    assert_eq!(records(&outs).last().unwrap().unwrap().generation, 1);
    // Four changes of ten: none; the fifth: one.
    for i in 0..4 {
        w.handle(at(1_100), local(&format!("e{i}"), Some(false)));
    }
    assert!(chunk_puts(&ticks(&mut w, &mut kv, 2_000, 5_000, true)).is_empty());
    w.handle(at(5_100), local("e9", Some(false)));
    let outs = ticks(&mut w, &mut kv, 6_000, 6_000, true);
    assert_eq!(chunk_puts(&outs)[0].0, "w._SNAP.0.0");
    assert_eq!(records(&outs).last().unwrap().unwrap().generation, 2);
}

/// Found writing these tests: an abandoned compaction (a chunk write failed) gives back only
/// as many changes as it had chunks (`Compaction::chunk_failed`), not the changes it was begun
/// for. With more than two reports per chunk that is below half the reports, so the node
/// does not compact again after the interval, as `chunk_failed`'s documentation says, but only
/// after changes to half its reports again (possibly never): its record goes on naming an
/// ever older snapshot, and readers read ever more of its report keys.
#[test]
fn an_abandoned_compaction_is_retried_after_the_interval() {
    let mut kv = Kv::default();
    let (mut w, _) = started(config("w", Duration::from_secs(1)), &mut kv, 0);
    for i in 0..10 {
        w.handle(at(100), local(&format!("e{i}"), Some(true)));
    }
    kv.serve(&mut w, at(100), true);
    let outs = ticks(&mut w, &mut kv, 1_000, 1_000, false);
    let chunks = chunk_puts(&outs);
    assert_eq!(chunks.len(), 1);
    carry(&mut w, &mut kv, at(1_010), &outs, |o| !is_chunk(o));
    w.handle(
        at(1_020),
        Input::KvPutFailed {
            bucket: Bucket::Health,
            key: chunks[0].0.clone(),
            seq: chunks[0].1,
        },
    );
    let outs = ticks(&mut w, &mut kv, 2_000, 10_000, true);
    assert!(
        !chunk_puts(&outs).is_empty(),
        "not retried within 8 intervals without further changes"
    );
}

/// Found writing these tests: a node whose reports stay as they are never compacts again, so
/// its record names the same chunks for ever. The buckets keep a value for at most
/// `RECORD_MAX_AGE`; the node rewrites its report keys well before that (the refresh), but not
/// its chunks: once they age out, every reader takes the member for torn (its chunks are
/// missing) and re-syncs it, and long before that the refresh has rewritten every report key
/// after the snapshot's revision, so the read of the keys written since reads them all.
#[test]
fn the_named_snapshot_is_rewritten_before_it_ages_out_of_the_bucket() {
    let interval = Duration::from_secs(3_600);
    let mut cfg = config("w", Duration::from_secs(1));
    cfg.state.heartbeat_interval = interval;
    cfg.state.heartbeat_ttl = interval * 2;
    let mut kv = Kv::default();
    let (mut w, _) = started(cfg, &mut kv, 0);
    for i in 0..10 {
        w.handle(at(100), local(&format!("e{i}"), Some(true)));
    }
    kv.serve(&mut w, at(100), true);
    let hour = 3_600_000;
    let first = ticks(&mut w, &mut kv, hour, hour, true);
    assert_eq!(chunk_puts(&first).len(), 1);
    let max_age_hours = gslb_state_core::names::RECORD_MAX_AGE.as_secs() / 3_600;
    let mut rewritten = false;
    for h in 2..max_age_hours {
        let outs = ticks(&mut w, &mut kv, h * hour, h * hour, true);
        rewritten |= !chunk_puts(&outs).is_empty();
    }
    assert!(
        rewritten,
        "the chunks of the snapshot the record names are {max_age_hours} hours old"
    );
}

#[test]
fn a_new_incarnation_stops_naming_the_old_snapshot_and_compacts_anew() {
    let mut kv = Kv::default();
    let (mut w, _) = started(config("w", Duration::from_secs(1)), &mut kv, 0);
    for i in 0..4 {
        w.handle(at(100), local(&format!("e{i}"), Some(true)));
    }
    kv.serve(&mut w, at(100), true);
    let outs = ticks(&mut w, &mut kv, 1_000, 1_000, true);
    let old = records(&outs).last().unwrap().unwrap();
    assert_eq!(old.incarnation, w.incarnation());
    // A restart: the new life reads the KV, with the record and chunks of the earlier one.
    let mut again = Node::new(config("w", Duration::from_secs(1)), at(2_000)).unwrap();
    for i in 0..4 {
        again.handle(at(2_000), local(&format!("e{i}"), Some(false)));
    }
    again.handle(at(2_000), CONNECT);
    let outs = kv.serve(&mut again, at(2_000), true);
    assert!(again.snapshot_loaded());
    // Its own earlier chunks are not its peers' (nor deleted as report leftovers).
    let reads = report_reads(&outs);
    assert_eq!(reads, [(vec![], vec![("w.*".to_owned(), 0)])]);
    assert!(
        records(&outs).iter().all(|r| r.is_none()),
        "nothing of the old life is named"
    );
    let outs = ticks(&mut again, &mut kv, 3_000, 3_000, true);
    let named = records(&outs).last().unwrap().unwrap();
    assert_eq!(named.incarnation, again.incarnation());
    assert!(named.incarnation > old.incarnation);
}

// ---- the reader ----

/// A writer `w` with 40 reports compacted at 1 s, then changes, withdrawals and new
/// endpoints written after the compaction, every write carried out; and a member `x` that
/// never compacted, with reports of its own. Returns the KV and the snapshot `w`'s record
/// names.
fn written() -> (Kv, SnapshotRef) {
    let mut kv = Kv::default();
    let (mut w, _) = started(config("w", Duration::from_secs(1)), &mut kv, 0);
    for i in 0..40 {
        w.handle(at(100), local(&format!("e{i}"), Some(i % 3 != 0)));
    }
    kv.serve(&mut w, at(100), true);
    let outs = ticks(&mut w, &mut kv, 1_000, 1_000, true);
    let s = records(&outs).last().unwrap().unwrap();
    for i in 0..10 {
        w.handle(at(1_100), local(&format!("e{i}"), Some(i % 2 == 0)));
    }
    for i in 10..15 {
        w.handle(at(1_100), local(&format!("e{i}"), None));
    }
    for i in 40..45 {
        w.handle(at(1_100), local(&format!("e{i}"), Some(true)));
    }
    kv.serve(&mut w, at(1_100), true);
    let outs = ticks(&mut w, &mut kv, 2_000, 2_000, true);
    assert_eq!(records(&outs), [Some(s)], "the same snapshot named");
    assert!(
        chunk_puts(&outs).is_empty(),
        "20 changes of 45: no compaction"
    );
    let x = Peer::new("x", 7);
    for input in [
        x.member_record(3, 2, WALL_BASE_MS + 2_000),
        x.report_record("e0", 1, Unhealthy),
        x.report_record("x-only", 2, Healthy),
    ] {
        let Input::KvEntry { bucket, key, value } = input else {
            unreachable!()
        };
        kv.bucket(bucket).put(&key, value);
    }
    (kv, s)
}

/// `kv` with `node`'s record naming no compacted snapshot (as a build without them wrote it).
fn uncompacted(kv: &Kv, node: &str) -> Kv {
    let mut kv = kv.clone();
    let value = kv.members.get(node).unwrap().clone();
    let Ok(Message::Member(mut rec)) = codec::decode(&value) else {
        panic!("no record of {node}");
    };
    rec.snapshot = None;
    let value = codec::encode(&Message::Member(rec));
    kv.members.put(node, value);
    kv
}

/// A reader started at 2 s on `kv`, its entries in `order`; returns it with its outputs.
fn reader(kv: &Kv, order: Order) -> (Node, Vec<Output>) {
    let mut kv = Kv {
        order,
        ..kv.clone()
    };
    let mut r = Node::new(config("r", Duration::from_secs(30)), at(0)).unwrap();
    r.handle(at(2_000), CONNECT);
    let outs = kv.serve(&mut r, at(2_000), false);
    assert!(r.snapshot_loaded());
    (r, outs)
}

fn decisions(n: &Node) -> BTreeMap<String, Decision> {
    n.decisions().map(|(e, d)| (e.to_owned(), d)).collect()
}

#[test]
fn chunks_and_the_keys_written_since_load_what_the_keys_alone_would() {
    let (kv, s) = written();
    let w_keys = kv.health.matching("w.*", 0).len();
    let tail = kv.health.matching("w.*", s.revision + 1).len();
    assert_eq!(w_keys, 45);
    assert!(
        tail > 0 && tail < w_keys,
        "{tail} of {w_keys} keys written since"
    );

    let (a, outs_a) = reader(&kv, Order::FiltersFirst);
    let outs = &outs_a;
    // The read asks for w's chunks, w's keys written since, x and itself whole.
    let chunks: Vec<String> = (0..s.chunks)
        .map(|i| format!("w._SNAP.{}.{i}", s.generation % 2))
        .collect();
    assert_eq!(
        report_reads(outs),
        [(
            chunks,
            vec![
                ("r.*".to_owned(), 0),
                ("w.*".to_owned(), s.revision + 1),
                ("x.*".to_owned(), 0)
            ]
        )]
    );
    let (b, outs_b) = reader(&uncompacted(&kv, "w"), Order::FiltersFirst);
    assert_eq!(
        report_reads(&outs_b),
        [(
            vec![],
            vec![
                ("r.*".to_owned(), 0),
                ("w.*".to_owned(), 0),
                ("x.*".to_owned(), 0)
            ]
        )]
    );
    let (c, outs_c) = reader(&kv, Order::ChunksFirst);

    assert_eq!(a.active_member_ids(), ["r", "w", "x"]);
    assert_eq!(decisions(&a), decisions(&b));
    assert_eq!(decisions(&c), decisions(&b), "in any order");
    assert_eq!(decisions(&a).len(), 46);
    assert_eq!(a.decision("e12").unwrap().healthy, None, "withdrawn since");
    assert_eq!(a.decision("e41").unwrap().healthy, Some(true), "new since");
    assert_eq!(
        a.decision("e1").unwrap().healthy,
        Some(false),
        "changed since"
    );
    assert_eq!(
        a.decision("e20").unwrap().healthy,
        Some(true),
        "as compacted"
    );
    // Keys read after their chunk's report count once; so every report is applied once.
    assert_eq!(a.stats().reports_applied, b.stats().reports_applied);
    assert_eq!(a.stats().reports_applied, 47);
    assert_eq!(a.stats().received(MessageKind::Chunk), u64::from(s.chunks));
    let held = |n: &Node| -> Vec<(String, usize)> {
        n.members()
            .into_iter()
            .map(|m| (m.node, m.reports))
            .collect()
    };
    assert_eq!(held(&a), held(&b));
    assert_eq!(held(&a), held(&c));
    // Each trusts w as synced up to its record: neither the end of the snapshot nor w's next
    // heartbeat asks for a re-sync.
    let Ok(Message::Member(rec)) = codec::decode(kv.members.get("w").unwrap()) else {
        panic!("no record of w")
    };
    let heartbeat = Peer::new("w", rec.incarnation).heartbeat_kv(
        rec.hb_seq + 1,
        rec.report_seq,
        rec.kv_seq,
        WALL_BASE_MS + 2_500,
    );
    for (mut n, outs) in [(a, outs_a), (b, outs_b), (c, outs_c)] {
        assert!(resyncs(&outs).is_empty(), "{outs:?}");
        n.handle(at(2_500), heartbeat.clone());
        let outs = drain(&mut n);
        assert!(resyncs(&outs).is_empty(), "{outs:?}");
    }
}

#[test]
fn more_than_32_members_in_a_region_are_read_with_one_filter() {
    // The node itself is read whole: the one filter reads every report key from revision 0.
    // (Members read with a compacted snapshot then gain nothing but their chunks' reads; see
    // the report.)
    let mut r = node("r", Policy::PreferLocal, 51);
    r.handle(at(0), CONNECT);
    drain(&mut r);
    let mut chunks = Vec::new();
    for i in 0..33u64 {
        let s = SnapshotRef {
            incarnation: 1,
            generation: 1 + i % 2,
            chunks: 1,
            seq: 1,
            revision: 100 + i,
        };
        chunks.push(format!("p{i}._SNAP.{}.0", s.generation % 2));
        r.handle(
            at(0),
            Peer::new(&format!("p{i}"), 1).member_record_naming(2, 2, 2, WALL_BASE_MS, Some(s)),
        );
    }
    // 33 members: one more than 32 reads (this node's own keys are read apart).
    r.handle(at(0), MEMBERS_READ);
    let reads = report_reads(&drain(&mut r));
    chunks.sort();
    let mut asked = reads[0].0.clone();
    asked.sort();
    assert_eq!(asked, chunks);
    // The members' keys from the oldest snapshot's revision on, and this node's whole.
    assert_eq!(reads[0].1, [("*.*".to_owned(), 101), ("r.*".to_owned(), 0)]);

    // 32 members: one filter each.
    let mut r = node("r", Policy::PreferLocal, 51);
    r.handle(at(0), CONNECT);
    drain(&mut r);
    for i in 0..32u64 {
        let s = SnapshotRef {
            incarnation: 1,
            generation: 1,
            chunks: 1,
            seq: 1,
            revision: 100 + i,
        };
        r.handle(
            at(0),
            Peer::new(&format!("p{i}"), 1).member_record_naming(2, 2, 2, WALL_BASE_MS, Some(s)),
        );
    }
    r.handle(at(0), MEMBERS_READ);
    let reads = report_reads(&drain(&mut r));
    assert_eq!(reads[0].1.len(), 33);
    assert!(reads[0].1.contains(&("p7.*".to_owned(), 108)));
    assert!(reads[0].1.contains(&("r.*".to_owned(), 0)));
}

#[test]
fn the_snapshot_is_loaded_only_once_its_reports_are_read() {
    let mut r = node("r", Policy::PreferLocal, 51);
    r.handle(at(0), CONNECT);
    assert!(drain(&mut r).contains(&Output::ReadSnapshot));
    let a = Peer::new("a", 1);
    r.handle(at(10), a.member_record(2, 1, WALL_BASE_MS));
    r.handle(at(10), MEMBERS_READ);
    assert!(!r.snapshot_loaded());
    assert_eq!(
        report_reads(&drain(&mut r)),
        [(vec![], vec![("a.*".to_owned(), 0), ("r.*".to_owned(), 0)])]
    );
    assert!(
        !r.is_member_active_for_test("a"),
        "records are judged at the end"
    );
    // A second end of the first part, or the end of another region's read, changes nothing.
    r.handle(at(20), MEMBERS_READ);
    r.handle(at(20), reports_read("eu", true));
    assert!(!r.snapshot_loaded());
    assert!(drain(&mut r).is_empty());
    r.handle(at(30), a.report_record("web", 1, Healthy));
    r.handle(at(30), reports_read("", true));
    assert!(r.snapshot_loaded());
    assert!(r.is_member_active_for_test("a"));
    assert_eq!(r.decision("web").unwrap().healthy, Some(true));
    // Its records may be written now: the first heartbeat carries one.
    let outs = drain(&mut r);
    assert_eq!(records(&outs), [None]);

    // An incomplete report read: not loaded, asked for again (both parts) at the next tick.
    let mut r = node("r", Policy::PreferLocal, 51);
    r.handle(at(0), CONNECT);
    drain(&mut r);
    r.handle(at(10), MEMBERS_READ);
    drain(&mut r);
    r.handle(at(20), reports_read("", false));
    assert!(!r.snapshot_loaded());
    r.handle_timeout(at(1_000));
    assert!(drain(&mut r).contains(&Output::ReadSnapshot));
    r.handle(at(1_010), MEMBERS_READ);
    assert_eq!(report_reads(&drain(&mut r)).len(), 1);
    r.handle(at(1_020), reports_read("", true));
    assert!(r.snapshot_loaded());
}

trait ActiveForTest {
    fn is_member_active_for_test(&self, id: &str) -> bool;
}

impl ActiveForTest for Node {
    fn is_member_active_for_test(&self, id: &str) -> bool {
        self.active_member_ids().iter().any(|m| m == id)
    }
}

// ---- torn and stale snapshots ----

/// Member `a`'s record names this snapshot: two chunks of generation 3 (slot 1), reports up
/// to sequence 4, all durable.
const S: SnapshotRef = SnapshotRef {
    incarnation: 1,
    generation: 3,
    chunks: 2,
    seq: 4,
    revision: 10,
};

/// A reader that reads `a`'s record naming [`S`], then `chunks` as the report read's
/// entries; returns it, with the outputs of the snapshot's end and of `a`'s next heartbeat.
fn read_chunks(chunks: &[Input]) -> (Node, Vec<Output>) {
    let a = Peer::new("a", 1);
    let mut r = node("r", Policy::PreferLocal, 51);
    r.handle(at(0), CONNECT);
    drain(&mut r);
    r.handle(
        at(0),
        a.member_record_naming(5, 4, 4, WALL_BASE_MS, Some(S)),
    );
    r.handle(at(0), MEMBERS_READ);
    let reads = report_reads(&drain(&mut r));
    // No change since the compaction (the record's report sequence is its): only the chunks.
    assert_eq!(
        reads,
        [(
            vec!["a._SNAP.1.0".to_owned(), "a._SNAP.1.1".to_owned()],
            vec![("r.*".to_owned(), 0)]
        )]
    );
    for c in chunks {
        r.handle(at(10), c.clone());
    }
    r.handle(at(20), reports_read("", true));
    assert!(r.snapshot_loaded());
    let mut outs = drain(&mut r);
    r.handle(at(500), a.heartbeat_kv(6, 4, 4, WALL_BASE_MS + 500));
    outs.extend(drain(&mut r));
    (r, outs)
}

fn first_chunk() -> Input {
    Peer::new("a", 1).chunk(&S, 0, &[("web", 1, Healthy), ("db", 2, Unhealthy)])
}

fn second_items() -> [(&'static str, u64, ReportState); 2] {
    [("dns", 3, Healthy), ("api", 4, Withdrawn)]
}

#[test]
fn a_whole_snapshot_makes_its_member_synced() {
    let a = Peer::new("a", 1);
    let (r, outs) = read_chunks(&[first_chunk(), a.chunk(&S, 1, &second_items())]);
    assert!(resyncs(&outs).is_empty(), "{outs:?}");
    assert_eq!(r.decision("web").unwrap().healthy, Some(true));
    assert_eq!(r.decision("db").unwrap().healthy, Some(false));
    assert_eq!(r.decision("dns").unwrap().healthy, Some(true));
    assert_eq!(r.decision("api").unwrap().healthy, None);
    assert_eq!(r.stats().received(MessageKind::Chunk), 2);
    assert_eq!(r.stats().reports_applied, 4);
}

/// The chunks of `a` but the second, replaced by `second`: `a`'s first chunk counts, the odd
/// one not, and `a` is not taken for synced up to its record: it is re-synced (at the
/// snapshot's end already, as the record it is judged by announces what is durable; else its
/// next heartbeat would ask).
fn assert_torn(second: Option<Input>, dropped: DropReason) {
    let mut chunks = vec![first_chunk()];
    chunks.extend(second.clone());
    let (r, outs) = read_chunks(&chunks);
    assert_eq!(resyncs(&outs), ["a"], "{second:?}: {outs:?}");
    assert_eq!(r.decision("web").unwrap().healthy, Some(true), "{second:?}");
    for ep in ["dns", "new"] {
        assert!(
            r.decision(ep).is_none_or(|d| d.healthy.is_none()),
            "{second:?}: {ep} counted"
        );
    }
    assert_eq!(r.stats().reports_applied, 2, "{second:?}");
    if second.is_some() {
        assert_eq!(r.stats().dropped(dropped), 1, "{second:?}");
    }
}

#[test]
fn a_missing_chunk_leaves_its_member_to_be_resynced() {
    assert_torn(None, DropReason::Duplicate);
}

#[test]
fn a_chunk_of_another_compaction_is_ignored_and_its_member_resynced() {
    let a = Peer::new("a", 1);
    let items = [("dns", 9, Healthy), ("new", 8, Healthy)];
    // Overwritten by a later compaction in the same slot (5), or left by an earlier one (1).
    for generation in [5, 1] {
        let other = SnapshotRef { generation, ..S };
        assert_torn(Some(a.chunk(&other, 1, &items)), DropReason::Duplicate);
    }
    // Of another incarnation, or of a snapshot of another size.
    let other = SnapshotRef {
        incarnation: 2,
        ..S
    };
    assert_torn(Some(a.chunk(&other, 1, &items)), DropReason::Duplicate);
    let other = SnapshotRef { chunks: 3, ..S };
    assert_torn(Some(a.chunk(&other, 1, &items)), DropReason::Duplicate);
}

#[test]
fn a_chunk_under_another_key_is_ignored_and_its_member_resynced() {
    let a = Peer::new("a", 1);
    let names = gslb_state_core::Names::new(CLUSTER);
    let under = |key: String| {
        let Input::KvEntry { bucket, value, .. } = a.chunk(&S, 1, &second_items()) else {
            unreachable!()
        };
        Input::KvEntry { bucket, key, value }
    };
    // The right chunk under the other slot's key, another index's key (the first's: taken
    // already), and another node's key (spoofed).
    assert_torn(
        Some(under(names.chunk_key("a", S.generation + 1, 1))),
        DropReason::Duplicate,
    );
    assert_torn(
        Some(under(names.chunk_key("a", S.generation, 0))),
        DropReason::Duplicate,
    );
    assert_torn(
        Some(under(names.chunk_key("b", S.generation, 1))),
        DropReason::Spoofed,
    );
    assert_torn(Some(under("a.dns".to_owned())), DropReason::BadName);
    // A chunk whose index is out of its own range does not decode.
    let bad = SnapshotRef { chunks: 1, ..S };
    assert_torn(Some(a.chunk(&bad, 1, &second_items())), DropReason::Invalid);
}

#[test]
fn a_chunk_read_twice_or_outside_the_snapshot_counts_once_or_not_at_all() {
    let a = Peer::new("a", 1);
    let (mut r, outs) = read_chunks(&[
        first_chunk(),
        first_chunk(),
        a.chunk(&S, 1, &second_items()),
    ]);
    assert!(resyncs(&outs).is_empty());
    assert_eq!(r.stats().received(MessageKind::Chunk), 2);
    assert_eq!(r.stats().dropped(DropReason::Duplicate), 1);
    // After the snapshot, a chunk is no news.
    let newer = SnapshotRef {
        generation: 4,
        seq: 9,
        ..S
    };
    r.handle(at(600), a.chunk(&newer, 0, &[("web", 9, Unhealthy)]));
    assert_eq!(r.decision("web").unwrap().healthy, Some(true));
    assert_eq!(r.stats().dropped(DropReason::Duplicate), 2);
}

#[test]
fn the_keys_written_since_the_snapshot_are_read_only_if_the_record_says_reports_changed() {
    let a = Peer::new("a", 1);
    let mut r = node("r", Policy::PreferLocal, 51);
    r.handle(at(0), CONNECT);
    drain(&mut r);
    // Reports up to 5 published, the snapshot holds up to 4.
    r.handle(
        at(0),
        a.member_record_naming(5, 5, 5, WALL_BASE_MS, Some(S)),
    );
    r.handle(at(0), MEMBERS_READ);
    assert_eq!(
        report_reads(&drain(&mut r)),
        [(
            vec!["a._SNAP.1.0".to_owned(), "a._SNAP.1.1".to_owned()],
            vec![("a.*".to_owned(), S.revision + 1), ("r.*".to_owned(), 0)]
        )]
    );
    r.handle(at(10), first_chunk());
    r.handle(at(10), a.chunk(&S, 1, &second_items()));
    r.handle(at(10), a.report_record("web", 5, Unhealthy));
    r.handle(at(20), reports_read("", true));
    assert!(resyncs(&drain(&mut r)).is_empty());
    assert_eq!(r.decision("web").unwrap().healthy, Some(false));
}

#[test]
fn a_record_naming_a_snapshot_of_another_incarnation_is_read_whole() {
    let a = Peer::new("a", 2);
    let mut r = node("r", Policy::PreferLocal, 51);
    r.handle(at(0), CONNECT);
    drain(&mut r);
    r.handle(
        at(0),
        a.member_record_naming(5, 4, 4, WALL_BASE_MS, Some(S)),
    );
    r.handle(at(0), MEMBERS_READ);
    assert_eq!(
        report_reads(&drain(&mut r)),
        [(vec![], vec![("a.*".to_owned(), 0), ("r.*".to_owned(), 0)])]
    );
}

// ---- random report histories ----

#[derive(Debug, Clone)]
enum Step {
    /// Endpoint `e<n>` observed healthy, unhealthy, or withdrawn.
    Observe(usize, Option<bool>),
    /// Time passes (the writer's timers run; compactions are begun).
    Tick(u64),
    /// Every write handed out so far is stored and acknowledged, in order.
    Carry,
    /// The oldest write handed out, a report or a chunk, fails.
    Fail(bool),
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        6 => (0..8usize, proptest::option::of(any::<bool>())).prop_map(|(e, h)| Step::Observe(e, h)),
        3 => (0u64..2_500).prop_map(Step::Tick),
        3 => Just(Step::Carry),
        1 => any::<bool>().prop_map(Step::Fail),
    ]
}

/// Runs a writer through `steps`, then until every write is stored; returns the KV, the
/// time, and the writer's own observations.
fn history(interval_ms: u64, steps: &[Step]) -> (Kv, u64, BTreeMap<String, bool>) {
    let mut kv = Kv::default();
    let (mut w, _) = started(config("w", Duration::from_millis(interval_ms)), &mut kv, 0);
    let mut t = 0;
    let mut out_queue: Vec<Output> = Vec::new();
    let mut observed = BTreeMap::new();
    /// Answers `w`'s reads and queues its writes.
    fn take(w: &mut Node, kv: &mut Kv, t: u64, queue: &mut Vec<Output>) {
        for out in kv.serve(w, at(t), false) {
            if matches!(out, Output::KvPut { .. } | Output::KvDelete { .. }) {
                queue.push(out);
            }
        }
    }
    for s in steps {
        match s {
            Step::Observe(e, h) => {
                let ep = format!("e{e}");
                match h {
                    Some(h) => observed.insert(ep.clone(), *h),
                    None => observed.remove(&ep),
                };
                w.handle(at(t), local(&ep, *h));
            }
            Step::Tick(ms) => {
                t += ms;
                w.handle_timeout(at(t));
            }
            Step::Carry => {
                for out in std::mem::take(&mut out_queue) {
                    if let Some(ack) = kv.store(&out) {
                        w.handle(at(t), ack);
                    }
                }
            }
            Step::Fail(chunk) => {
                let at_ = out_queue.iter().position(|o| match o {
                    Output::KvPut { kind, .. } => (*kind == MessageKind::Chunk) == *chunk,
                    _ => false,
                });
                if let Some(i) = at_ {
                    let Output::KvPut {
                        bucket, key, seq, ..
                    } = out_queue.remove(i)
                    else {
                        unreachable!()
                    };
                    w.handle(at(t), Input::KvPutFailed { bucket, key, seq });
                }
            }
        }
        take(&mut w, &mut kv, t, &mut out_queue);
    }
    // Settle: every write carried out, failed ones retried, until nothing is left.
    for _ in 0..5 {
        t += 1_000;
        w.handle_timeout(at(t));
        take(&mut w, &mut kv, t, &mut out_queue);
        for out in std::mem::take(&mut out_queue) {
            if let Some(ack) = kv.store(&out) {
                w.handle(at(t), ack);
            }
        }
        take(&mut w, &mut kv, t, &mut out_queue);
        for out in std::mem::take(&mut out_queue) {
            if let Some(ack) = kv.store(&out) {
                w.handle(at(t), ack);
            }
        }
    }
    (kv, t, observed)
}

/// A reader started at `t` on `kv`.
fn read_back(kv: &Kv, t: u64, order: Order) -> Node {
    let mut kv = Kv {
        order,
        ..kv.clone()
    };
    let mut r = Node::new(config("r", Duration::from_secs(30)), at(0)).unwrap();
    r.handle(at(t), CONNECT);
    kv.serve(&mut r, at(t), false);
    assert!(r.snapshot_loaded());
    r
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn chunks_and_the_keys_written_since_read_back_as_the_keys_alone(
        interval_ms in 0u64..2_000,
        steps in proptest::collection::vec(step(), 1..120),
    ) {
        let (kv, t, observed) = history(interval_ms, &steps);
        // The per-key state of the KV: w's newest report per endpoint.
        let mut per_key: BTreeMap<String, Option<bool>> = BTreeMap::new();
        for (key, (_, value)) in &kv.health.entries {
            if let Ok(Message::Report(rec)) = codec::decode(value) {
                prop_assert!(filter_matches("w.*", key));
                per_key.insert(rec.endpoint.to_owned(), rec.state.observation());
            }
        }
        // Settled, the KV holds the writer's observations.
        let want: BTreeMap<String, Option<bool>> = per_key
            .keys()
            .map(|e| (e.clone(), observed.get(e).copied()))
            .collect();
        prop_assert_eq!(&per_key, &want);
        prop_assert!(observed.keys().all(|e| per_key.contains_key(e)));

        let a = read_back(&kv, t, Order::ChunksFirst);
        let a2 = read_back(&kv, t, Order::FiltersFirst);
        let b = read_back(&uncompacted(&kv, "w"), t, Order::ChunksFirst);
        prop_assert!(a.is_member_active_for_test("w"));
        for (ep, healthy) in &per_key {
            let got = a.decision(ep).map(|d| d.healthy);
            prop_assert_eq!(got, Some(*healthy), "{} via chunks", ep);
            prop_assert_eq!(a2.decision(ep).map(|d| d.healthy), Some(*healthy));
            prop_assert_eq!(b.decision(ep).map(|d| d.healthy), Some(*healthy));
        }
        prop_assert_eq!(decisions(&a), decisions(&b));
        prop_assert_eq!(decisions(&a2), decisions(&b));
        prop_assert_eq!(a2.stats().reports_applied, b.stats().reports_applied);
    }
}

#[test]
fn key_filters_follow_nats() {
    assert!(filter_matches("a.*", "a.web"));
    assert!(!filter_matches("a.*", "a._SNAP.0.1"));
    assert!(!filter_matches("a.*", "ab.web"));
    assert!(filter_matches("*.*", "b.web"));
    assert!(!filter_matches("*.*", "b"));
    assert!(!filter_matches("*.*", "b._SNAP.1.0"));
    assert!(filter_matches("a.>", "a._SNAP.0.1"));
    assert!(!filter_matches("a.>", "a"));
    assert!(filter_matches("a", "a"));
}

#[test]
fn a_chunk_gone_from_the_kv_leaves_its_member_to_be_resynced_from_its_keys() {
    let (mut kv, s) = written();
    kv.health.delete(&format!("w._SNAP.{}.0", s.generation % 2));
    // The test KV answers the re-sync the reader asks for at the snapshot's end.
    let (r, outs) = reader(&kv, Order::ChunksFirst);
    assert_eq!(resyncs(&outs), ["w"], "torn: its chunk is gone");
    assert_eq!(r.stats().received(MessageKind::Chunk), 0);
    let (b, _) = reader(&uncompacted(&kv, "w"), Order::ChunksFirst);
    assert_eq!(decisions(&r), decisions(&b));
}

#[test]
fn a_node_that_leaves_deletes_the_chunks_of_both_slots_after_its_reports() {
    const N: usize = 2_500;
    let mut kv = Kv::default();
    let (mut w, _) = started(config("w", Duration::from_secs(2)), &mut kv, 0);
    for i in 0..N {
        w.handle(at(100), local(&long_name(i), Some(true)));
    }
    kv.serve(&mut w, at(100), true);
    // The first compaction (slot 1), then changes to half the reports and the second (slot 0).
    assert_eq!(
        chunk_puts(&ticks(&mut w, &mut kv, 1_000, 2_000, true)).len(),
        2
    );
    for i in 0..N / 2 {
        w.handle(at(2_100), local(&long_name(i), Some(false)));
    }
    kv.serve(&mut w, at(2_100), true);
    let second = chunk_puts(&ticks(&mut w, &mut kv, 3_000, 5_000, true));
    assert_eq!(second.len(), 2);
    assert!(second.iter().all(|(key, ..)| key.starts_with("w._SNAP.0.")));
    assert_eq!(kv.health.matching("w._SNAP.>", 0).len(), 4);

    w.handle(at(6_000), Input::Leave);
    let deletes: Vec<String> = drain(&mut w)
        .into_iter()
        .filter_map(|o| match o {
            Output::KvDelete {
                bucket: Bucket::Health,
                key,
            } => Some(key),
            _ => None,
        })
        .collect();
    assert_eq!(
        deletes.len(),
        N + 4,
        "every report key, then every chunk key"
    );
    let (reports, chunks) = deletes.split_at(N);
    assert!(reports.iter().all(|k| !k.contains("._SNAP.")));
    let mut chunks = chunks.to_vec();
    chunks.sort();
    assert_eq!(
        chunks,
        ["w._SNAP.0.0", "w._SNAP.0.1", "w._SNAP.1.0", "w._SNAP.1.1"]
    );
}
