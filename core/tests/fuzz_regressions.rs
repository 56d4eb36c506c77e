//! Bugs the fuzz targets found (or led to), one test each. The crashing inputs themselves are
//! in `fuzz/corpus/<target>/crash-*` and replay in `fuzz_corpus.rs`.

mod common;

use common::*;
use gslb_state_core::codec::{self, MAX_PAYLOAD_BYTES, Message};
use gslb_state_core::names::MAX_ENDPOINT_NAME_BYTES;
use gslb_state_core::{Bucket, Connectivity, Input, MessageKind, Node, Output, Policy};

/// A node connected, with its (empty) start-up snapshot read.
fn connected(id: &str) -> Node {
    let mut n = node(id, Policy::PreferLocal, 51);
    n.handle(at(0), Input::Connectivity(Connectivity::Connected));
    snapshot_done(&mut n, at(0));
    n.handle_timeout(at(0));
    drain(&mut n);
    n
}

fn local(endpoint: &str, healthy: bool) -> Input {
    Input::LocalHealth {
        endpoint: endpoint.into(),
        healthy: Some(healthy),
    }
}

/// Fails every KV write of reports among `outs`; returns how many.
fn fail_report_puts(n: &mut Node, outs: &[Output], ms: u64) -> usize {
    let keys: Vec<(String, u64)> = outs
        .iter()
        .filter_map(|o| match o {
            Output::KvPut {
                bucket: Bucket::Health,
                key,
                seq,
                ..
            } => Some((key.clone(), *seq)),
            _ => None,
        })
        .collect();
    for (key, seq) in &keys {
        n.handle(
            at(ms),
            Input::KvPutFailed {
                bucket: Bucket::Health,
                key: key.clone(),
                seq: *seq,
            },
        );
    }
    keys.len()
}

fn health_publishes(outs: &[Output]) -> Vec<(String, bytes::Bytes)> {
    outs.iter()
        .filter_map(|o| match o {
            Output::Publish {
                subject,
                payload,
                kind: MessageKind::Health,
            } => Some((subject.clone(), payload.clone())),
            _ => None,
        })
        .collect()
}

/// Found by the `engine` target: the repair batch republished after a failed KV write claimed
/// `last_seq` 0 while its reports carried real sequences, so every receiver refused it as
/// invalid and the repair never reached anyone.
#[test]
fn a_republish_after_a_failed_kv_write_is_accepted_by_peers() {
    let mut me = connected("me");
    let mut peer = connected("peer");
    me.handle(at(10), local("web", true));
    let outs = drain(&mut me);
    assert_eq!(fail_report_puts(&mut me, &outs, 20), 1);
    me.handle_timeout(at(1_000));
    let repairs = health_publishes(&drain(&mut me));
    assert_eq!(repairs.len(), 1, "one repair batch");
    let (subject, payload) = repairs[0].clone();
    let Ok(Message::Reports(batch)) = codec::decode(&payload) else {
        panic!(
            "the repair batch does not decode: {:?}",
            codec::decode(&payload)
        );
    };
    assert_eq!(batch.first_seq, 0, "a repair claims no range");
    assert_eq!(batch.items.len(), 1);
    let applied = peer.stats().reports_applied;
    peer.handle(at(1_000), Input::Received { subject, payload });
    assert_eq!(peer.stats().dropped_total(), 0);
    assert_eq!(peer.stats().reports_applied, applied + 1);
}

/// Found while fixing the above: the repair split its reports by count only, so a few thousand
/// failed writes of long endpoint names made a batch over the payload bound and `encode`
/// panicked.
#[test]
fn a_repair_of_thousands_of_long_names_stays_under_the_payload_bound() {
    let mut me = connected("me");
    let names: Vec<String> = (0..4_200)
        .map(|i| {
            let name = format!("{i:05}-");
            let pad = "x".repeat(MAX_ENDPOINT_NAME_BYTES - name.len());
            name + &pad
        })
        .collect();
    for name in &names {
        me.handle(at(10), local(name, true));
    }
    let outs = drain(&mut me);
    assert_eq!(fail_report_puts(&mut me, &outs, 20), names.len());
    me.handle_timeout(at(1_000));
    let repairs = health_publishes(&drain(&mut me));
    assert!(repairs.len() >= 3, "split into {} batches", repairs.len());
    let mut items = 0;
    for (_, payload) in &repairs {
        assert!(payload.len() <= MAX_PAYLOAD_BYTES);
        let Ok(Message::Reports(batch)) = codec::decode(payload) else {
            panic!("a repair batch does not decode");
        };
        items += batch.items.len();
    }
    assert_eq!(items, names.len());
}

/// Found by the `engine` target: a heartbeat or membership record stamped just past 2^63 ms
/// overflowed the clock-offset subtraction, a panic in builds with overflow checks (and a
/// wrapped offset otherwise).
#[test]
fn absurd_sender_timestamps_saturate_the_clock_offset() {
    // Connected, the snapshot being read (b's record is part of it).
    let mut me = node("me", Policy::PreferLocal, 51);
    me.handle(at(0), Input::Connectivity(Connectivity::Connected));
    let far_future = (1u64 << 63) + 5;
    me.handle(at(10), Peer::new("a", 1).heartbeat(1, 0, far_future));
    me.handle(at(10), Peer::new("b", 1).member_record(1, 0, far_future));
    snapshot_done(&mut me, at(10));
    me.handle(at(10), Peer::new("c", 1).heartbeat(1, 0, u64::MAX));
    let offsets: Vec<(String, i64)> = me
        .members()
        .into_iter()
        .filter(|m| !m.local)
        .map(|m| (m.node, m.clock_offset_ms))
        .collect();
    let near = i64::try_from(i128::from(WALL_BASE_MS + 10) - i128::from(far_future)).unwrap();
    assert_eq!(
        offsets,
        [
            ("a".to_owned(), near),
            ("b".to_owned(), near),
            ("c".to_owned(), i64::MIN)
        ]
    );
    assert_eq!(me.active_members(), 4, "the timestamps change no liveness");
}
