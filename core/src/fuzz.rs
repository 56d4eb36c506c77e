//! Fuzz entry points, behind the `fuzzing` feature.
//!
//! The targets in `fuzz/fuzz_targets/` are one-line wrappers over these functions, and
//! `core/tests/fuzz_corpus.rs` replays the committed corpora through them, so the fuzzer and
//! the test suite run exactly the same code and normal builds keep it compiling.
//!
//! Each function takes arbitrary bytes, returns normally on any input the core handles
//! correctly, and panics on a bug: a panic inside the core, a broken round trip, an accepted
//! configuration the engine refuses, or a decision of the engine that differs from the
//! [reference model](crate::reference).

use std::borrow::Cow;
use std::collections::BTreeSet;

use arbitrary::{Arbitrary, Unstructured};
use bytes::Bytes;

use crate::codec::{
    self, DecodeError, Heartbeat, MAX_BATCH_ITEMS, MAX_CHUNK_ITEMS, MAX_REGION_BYTES, MAX_SEQ,
    MAX_SNAPSHOT_CHUNKS, MemberRecord, Message, ReportBatch, ReportChunk, ReportItem, ReportRecord,
    ReportState, SnapshotRef,
};
use crate::config::{Config, MAX_CONFIG_BYTES, MAX_CONFIG_ENDPOINTS, ProbeTarget};
use crate::names::{
    MAX_ENDPOINT_NAME_BYTES, MAX_ID_BYTES, Names, check_endpoint_name, check_id, decode_token,
    encode_token,
};
use crate::{Input, Instant, Node, NodeConfig, Now, Output, WallTime};

mod engine;

pub use engine::{engine, engine_traced};

/// The wall clock at the start of every fuzzed node, ms since the Unix epoch.
const WALL_BASE_MS: u64 = 1_700_000_000_000;

// ---- codec ----

/// Wire decoding and the name layout.
///
/// * [`codec::decode`] never panics, and whatever it accepts re-encodes to bytes that decode to
///   an equal message and are no longer than the input;
/// * a message built from the bytes (via [`Unstructured`]) round-trips through
///   [`codec::encode`] and [`codec::decode`] when it keeps the format's rules, and is refused
///   as [`DecodeError::Invalid`] when it breaks one;
/// * every name token, subject and KV key that parses prints back to the same text, so each
///   node and endpoint has exactly one name on the wire.
pub fn codec(data: &[u8]) {
    if let Ok(msg) = codec::decode(data) {
        // A chunk's reports unpack or are refused, never panic.
        if let Message::Chunk(c) = &msg {
            let _ = codec::unpack_chunk_items(c, &mut Vec::new());
        }
        let again = codec::encode(&msg);
        assert_eq!(
            codec::decode(&again).as_ref(),
            Ok(&msg),
            "re-encoded message decodes differently"
        );
        assert!(
            again.len() <= data.len(),
            "re-encoding grew the message from {} to {} bytes",
            data.len(),
            again.len()
        );
    }
    if data.len() <= 64 * 1024
        && let Ok(msg) = arbitrary_message(&mut Unstructured::new(data))
    {
        round_trip(&msg);
    }
    if let Ok(text) = std::str::from_utf8(data) {
        names(text);
    }
}

fn round_trip(msg: &Message<'_>) {
    let bytes = codec::encode(msg);
    match codec::decode(&bytes) {
        Ok(back) => {
            assert_eq!(&back, msg, "round trip changed the message");
            assert!(
                keeps_the_rules(msg),
                "decoder accepted a message that breaks a rule: {msg:?}"
            );
        }
        Err(DecodeError::Invalid(why)) => {
            assert!(
                !keeps_the_rules(msg),
                "decoder refused a valid message ({why}): {msg:?}"
            );
        }
        Err(e) => panic!("the encoder's own output does not decode ({e}): {msg:?}"),
    }
}

/// The format's rules, restated plainly (see the docs of [`codec`]'s message types).
fn keeps_the_rules(msg: &Message<'_>) -> bool {
    let id_ok = |s: &str| !s.is_empty() && s.len() <= MAX_ID_BYTES;
    let ep_ok = |s: &str| !s.is_empty() && s.len() <= MAX_ENDPOINT_NAME_BYTES;
    let region_ok = |s: &str| s.len() <= MAX_REGION_BYTES;
    id_ok(msg.cluster())
        && id_ok(msg.node())
        && match msg {
            Message::Heartbeat(m) => {
                region_ok(m.region)
                    && m.seq <= MAX_SEQ
                    && m.report_seq <= MAX_SEQ
                    && m.kv_seq <= MAX_SEQ
            }
            Message::Reports(m) => {
                m.items.len() <= MAX_BATCH_ITEMS
                    && m.first_seq <= m.last_seq
                    && m.last_seq <= MAX_SEQ
                    && m.items
                        .iter()
                        .all(|i| ep_ok(i.endpoint) && i.seq >= 1 && i.seq <= m.last_seq)
            }
            Message::Member(m) | Message::Leave(m) => {
                region_ok(m.region)
                    && m.hb_seq <= MAX_SEQ
                    && m.report_seq <= MAX_SEQ
                    && m.kv_seq <= MAX_SEQ
                    && m.snapshot.is_none_or(|s| {
                        s.seq <= MAX_SEQ
                            && s.generation >= 1
                            && (1..=MAX_SNAPSHOT_CHUNKS).contains(&s.chunks)
                    })
            }
            Message::Report(m) => ep_ok(m.endpoint) && m.seq >= 1 && m.seq <= MAX_SEQ,
            // The packed reports are checked when unpacked (`unpack_chunk_items`).
            Message::Chunk(m) => {
                m.reports as usize <= MAX_CHUNK_ITEMS
                    && m.items_bytes as usize <= codec::MAX_CHUNK_ITEMS_BYTES
                    && m.generation >= 1
                    && (1..=MAX_SNAPSHOT_CHUNKS).contains(&m.chunks)
                    && m.index < m.chunks
            }
        }
}

/// A chunk count or index: small most of the time, near or past [`MAX_SNAPSHOT_CHUNKS`] or
/// any `u32` sometimes.
fn chunk_number(u: &mut Unstructured<'_>) -> arbitrary::Result<u32> {
    Ok(match u.int_in_range(0u8..=7)? {
        0 => u32::arbitrary(u)?,
        1 => MAX_SNAPSHOT_CHUNKS + u32::from(u.int_in_range(0u8..=2)?) - 1,
        _ => u32::from(u.int_in_range(0u8..=4)?),
    })
}

fn arbitrary_items<'a>(u: &mut Unstructured<'a>) -> arbitrary::Result<Vec<ReportItem<'a>>> {
    let mut items = Vec::new();
    while items.len() < 64 && u.arbitrary::<bool>()? {
        items.push(ReportItem {
            endpoint: <&str>::arbitrary(u)?,
            seq: number(u)?,
            state: ReportState::arbitrary(u)?,
        });
    }
    Ok(items)
}

/// A small-ish integer most of the time, any `u64` sometimes.
fn number(u: &mut Unstructured<'_>) -> arbitrary::Result<u64> {
    Ok(match u.int_in_range(0u8..=7)? {
        0 => u64::arbitrary(u)?,
        1 => MAX_SEQ + u64::from(u.int_in_range(0u8..=2)?) - 1,
        _ => u64::from(u.int_in_range(0u8..=16)?),
    })
}

fn arbitrary_message<'a>(u: &mut Unstructured<'a>) -> arbitrary::Result<Message<'a>> {
    let cluster = <&str>::arbitrary(u)?;
    let node = <&str>::arbitrary(u)?;
    Ok(match u.int_in_range(0u8..=6)? {
        0 => Message::Heartbeat(Heartbeat {
            cluster,
            node,
            region: <&str>::arbitrary(u)?,
            incarnation: number(u)?,
            seq: number(u)?,
            sent_unix_ms: u64::arbitrary(u)?,
            report_seq: number(u)?,
            kv_seq: number(u)?,
        }),
        1 => {
            let (incarnation, sent_unix_ms) = (number(u)?, u64::arbitrary(u)?);
            let (first_seq, last_seq) = (number(u)?, number(u)?);
            let items = arbitrary_items(u)?;
            Message::Reports(ReportBatch {
                cluster,
                node,
                incarnation,
                sent_unix_ms,
                first_seq,
                last_seq,
                items,
            })
        }
        kind @ (2 | 4) => {
            let mut rec = MemberRecord {
                cluster,
                node,
                region: <&str>::arbitrary(u)?,
                incarnation: number(u)?,
                hb_seq: number(u)?,
                sent_unix_ms: u64::arbitrary(u)?,
                report_seq: number(u)?,
                kv_seq: number(u)?,
                snapshot: None,
            };
            if kind == 4 {
                // A leave never carries a snapshot (kind 5 has no room for one).
                Message::Leave(rec)
            } else {
                if u.arbitrary()? {
                    // Kind 6.
                    rec.snapshot = Some(SnapshotRef {
                        incarnation: number(u)?,
                        generation: number(u)?,
                        chunks: chunk_number(u)?,
                        seq: number(u)?,
                        revision: u64::arbitrary(u)?,
                    });
                }
                Message::Member(rec)
            }
        }
        5 => {
            let (incarnation, generation) = (number(u)?, number(u)?);
            let (index, chunks) = (chunk_number(u)?, chunk_number(u)?);
            Message::Chunk(ReportChunk {
                cluster,
                node,
                incarnation,
                generation,
                index,
                chunks,
                reports: u32::arbitrary(u)? % (2 * MAX_CHUNK_ITEMS as u32),
                items_bytes: u32::arbitrary(u)? % (2 * codec::MAX_CHUNK_ITEMS_BYTES as u32),
                items: <&[u8]>::arbitrary(u)?,
            })
        }
        _ => Message::Report(ReportRecord {
            cluster,
            node,
            endpoint: <&str>::arbitrary(u)?,
            incarnation: number(u)?,
            seq: number(u)?,
            sent_unix_ms: u64::arbitrary(u)?,
            state: ReportState::arbitrary(u)?,
        }),
    })
}

fn names(text: &str) {
    if let Ok(name) = decode_token(text) {
        assert_eq!(encode_token(&name), text, "token is not canonical");
    }
    let names = Names::new("c");
    if let Ok((kind, node)) = names.parse_subject(text) {
        assert_eq!(names.subject(kind, &node), text, "subject is not canonical");
    }
    if let Ok((node, endpoint)) = names.parse_report_key(text) {
        assert_eq!(
            names.report_key(&node, &endpoint),
            text,
            "report key is not canonical"
        );
    }
    if let Ok(node) = names.parse_member_key(text) {
        assert_eq!(names.member_key(&node), text, "member key is not canonical");
    }
    if let Ok((node, slot, index)) = names.parse_chunk_key(text) {
        assert!(slot < 2, "chunk slot {slot}");
        assert_eq!(
            names.chunk_key(&node, slot, index),
            text,
            "chunk key is not canonical"
        );
        assert!(
            names.parse_report_key(text).is_err(),
            "a chunk key is also a report key"
        );
    }
}

// ---- config ----

/// The header of a config fuzz input that asks for repetition; see [`expand_config_input`].
pub const REPEAT_HEADER: &[u8] = b"#!repeat ";

/// Most bytes an expanded config input may have: a little over [`MAX_CONFIG_BYTES`], so the
/// size bound itself is exercised.
pub const MAX_EXPANDED_CONFIG_BYTES: usize = MAX_CONFIG_BYTES + 4096;

/// Turns a config fuzz input into the YAML to parse.
///
/// Plain inputs are used as they are. An input `#!repeat N\nHEAD%%UNIT%%TAIL` stands for
/// `HEAD`, then `UNIT` `N` times, then `TAIL`, cut at [`MAX_EXPANDED_CONFIG_BYTES`]: that is how
/// a committed seed of a few bytes describes a huge scalar, a deep nesting or a file over the
/// size bound.
pub fn expand_config_input(data: &[u8]) -> Cow<'_, [u8]> {
    let Some(rest) = data.strip_prefix(REPEAT_HEADER) else {
        return Cow::Borrowed(data);
    };
    let Some(newline) = rest.iter().position(|&b| b == b'\n') else {
        return Cow::Borrowed(data);
    };
    let Some(count) = std::str::from_utf8(&rest[..newline])
        .ok()
        .and_then(|n| n.trim().parse::<usize>().ok())
    else {
        return Cow::Borrowed(data);
    };
    let body = &rest[newline + 1..];
    let Some((head, rest)) = split_at_marker(body) else {
        return Cow::Borrowed(data);
    };
    let Some((unit, tail)) = split_at_marker(rest) else {
        return Cow::Borrowed(data);
    };
    let mut out = head.to_vec();
    if !unit.is_empty() {
        let room = MAX_EXPANDED_CONFIG_BYTES.saturating_sub(out.len());
        let repeats = count.min(room / unit.len());
        out.reserve(repeats * unit.len() + tail.len());
        for _ in 0..repeats {
            out.extend_from_slice(unit);
        }
    }
    let room = MAX_EXPANDED_CONFIG_BYTES.saturating_sub(out.len());
    out.extend_from_slice(&tail[..tail.len().min(room)]);
    Cow::Owned(out)
}

/// Splits `bytes` at the first `%%`.
fn split_at_marker(bytes: &[u8]) -> Option<(&[u8], &[u8])> {
    let at = bytes.windows(2).position(|w| w == b"%%")?;
    Some((&bytes[..at], &bytes[at + 2..]))
}

/// The configuration parser.
///
/// Never panics; hostile YAML is refused by the parser's budgets (time and memory are bounded
/// by libFuzzer's `-timeout` and `-rss_limit_mb` in `scripts/fuzz`). A configuration it accepts
/// keeps every documented rule, and a node built from it starts and accepts it as a config
/// event. Returns whether the configuration was accepted.
pub fn config(data: &[u8]) -> bool {
    let yaml = expand_config_input(data);
    let Ok(config) = Config::from_yaml_bytes(&yaml) else {
        return false;
    };
    assert!(
        yaml.len() <= MAX_CONFIG_BYTES,
        "accepted a file over the size bound"
    );
    check_id(&config.cluster_id).expect("accepted an invalid cluster id");
    if let Some(id) = &config.node_id {
        check_id(id).expect("accepted an invalid node id");
    }
    assert!(
        config.region.len() <= MAX_REGION_BYTES,
        "accepted a long region"
    );
    config
        .state
        .validate()
        .expect("accepted invalid state settings");
    assert!(
        !config.nats.servers.is_empty(),
        "accepted an empty server list"
    );
    assert!(
        config.endpoints.len() <= MAX_CONFIG_ENDPOINTS,
        "accepted too many endpoints"
    );
    let mut seen = BTreeSet::new();
    for e in &config.endpoints {
        check_endpoint_name(&e.name).expect("accepted an invalid endpoint name");
        assert!(
            seen.insert(&e.name),
            "accepted a duplicate endpoint {:?}",
            e.name
        );
        if let Some(p) = &e.probe {
            assert!(
                p.timeout <= p.interval && !p.timeout.is_zero(),
                "bad probe timing"
            );
            assert!((1..=100).contains(&p.rise) && (1..=100).contains(&p.fall));
            if let ProbeTarget::Http { expect_status, .. } = p.target {
                assert!((100..=599).contains(&expect_status));
            }
        }
    }
    if let Some(sync) = &config.config_sync {
        let stream = sync.stream_name();
        assert!(
            !stream.contains(['.', '*', '>', '/', '\\']) && !stream.contains(char::is_whitespace),
            "stream name {stream:?} is not valid for NATS"
        );
    }
    // What the parser accepts, the engine must accept too.
    let node_config = NodeConfig::from_config(&config, "fuzz-node");
    let now = Now::new(Instant::ZERO, WallTime::from_unix_ms(WALL_BASE_MS));
    let mut node = Node::new(node_config, now).expect("a parsed config must start a node");
    node.handle(
        now,
        Input::ConfigEntry {
            version: 1,
            yaml: Bytes::copy_from_slice(&yaml),
        },
    );
    match node.poll_output() {
        Some(Output::ApplyConfig {
            version: 1,
            config: applied,
        }) => {
            assert_eq!(*applied, config, "the engine parsed the config differently");
        }
        other => panic!("a parsed config was not applied as a config event: {other:?}"),
    }
    assert_eq!(node.state_settings().policy, config.state.policy);
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_naming_snapshots_and_chunks_round_trip_and_keep_the_rules() {
        let snapshot = SnapshotRef {
            incarnation: 3,
            generation: 2,
            chunks: 2,
            seq: 9,
            revision: 77,
        };
        let record = MemberRecord {
            cluster: "c",
            node: "n",
            region: "eu",
            incarnation: 3,
            hb_seq: 4,
            sent_unix_ms: 5,
            report_seq: 9,
            kv_seq: 9,
            snapshot: Some(snapshot),
        };
        let item = ReportItem {
            endpoint: "web",
            seq: 9,
            state: ReportState::Healthy,
        };
        let (reports, items_bytes, packed) = codec::pack_chunk_items(&[item]);
        let chunk = ReportChunk {
            cluster: "c",
            node: "n",
            incarnation: 3,
            generation: 2,
            index: 1,
            chunks: 2,
            reports,
            items_bytes,
            items: &packed,
        };
        let mut buf = Vec::new();
        assert_eq!(
            codec::unpack_chunk_items(&chunk, &mut buf),
            Ok(vec![ReportItem {
                endpoint: "web",
                seq: 9,
                state: ReportState::Healthy,
            }])
        );
        for msg in [
            Message::Member(record.clone()),
            Message::Chunk(chunk.clone()),
        ] {
            assert!(keeps_the_rules(&msg));
            round_trip(&msg);
            codec(&codec::encode(&msg));
        }
        // Broken ones are refused, and the restated rules agree.
        let bad_ref = Message::Member(MemberRecord {
            snapshot: Some(SnapshotRef {
                chunks: 0,
                ..snapshot
            }),
            ..record
        });
        let bad_index = Message::Chunk(ReportChunk { index: 2, ..chunk });
        for msg in [bad_ref, bad_index] {
            assert!(!keeps_the_rules(&msg));
            round_trip(&msg);
        }
        names("n._SNAP.0.1");
    }

    #[test]
    fn arbitrary_messages_include_kinds_6_and_7() {
        let mut kinds = BTreeSet::new();
        for seed in 0u32..4_000 {
            let bytes: Vec<u8> = (0..64u32)
                .map(|i| (seed.wrapping_mul(2_654_435_761).wrapping_add(i * 40_503) >> 13) as u8)
                .collect();
            if let Ok(msg) = arbitrary_message(&mut Unstructured::new(&bytes)) {
                kinds.insert(codec::encode(&msg)[3]);
            }
        }
        assert_eq!(kinds, (1..=7).collect::<BTreeSet<u8>>());
    }

    #[test]
    fn repeat_inputs_expand_within_the_bound() {
        assert_eq!(&*expand_config_input(b"a: b\n"), b"a: b\n");
        assert_eq!(
            &*expand_config_input(b"#!repeat 3\nx: %%ab%%!\n"),
            b"x: ababab!\n"
        );
        // Found by the scenario target: a huge count overflowed the size computation.
        let huge = format!("#!repeat {}\n%%xy%%z", usize::MAX);
        let out = expand_config_input(huge.as_bytes());
        assert_eq!(out.len(), MAX_EXPANDED_CONFIG_BYTES);
        assert!(out.starts_with(b"xyxy"));
        assert_eq!(
            &*expand_config_input(b"#!repeat 9\nno markers"),
            b"#!repeat 9\nno markers"
        );
    }
}
