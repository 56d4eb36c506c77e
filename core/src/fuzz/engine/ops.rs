//! The engine harness's operations ([`Op`]), and how each is drawn from the fuzzer's bytes:
//! mostly plausible traffic from a handful of nodes and endpoints, with now and then a wrong
//! cluster, a spoofed subject or key, an extreme sequence or timestamp, or garbage.

use arbitrary::{Arbitrary, Unstructured};
use bytes::Bytes;

use super::{CLUSTER, Harness, NODES, OWN_ID, endpoint_names};
use crate::Connectivity;
use crate::Policy;
use crate::codec::{
    self, Heartbeat, MAX_SEQ, MemberRecord, Message, ReportBatch, ReportChunk, ReportItem,
    ReportRecord, ReportState, SnapshotRef,
};
use crate::input::KvRead;
use crate::names::{Bucket, Names, SubjectKind};

/// One operation of the engine harness.
#[derive(Debug, Clone)]
pub(super) enum Op {
    /// Jump forward, running the timers due on the way.
    Advance { ns: u64 },
    /// Jump forward without running the timers on the way (a late driver).
    Skip { ns: u64 },
    /// Step the wall clock (NTP), forwards or backwards.
    WallStep { ms: i64 },
    /// Hand in a message as received on `subject`.
    Receive { subject: String, payload: Bytes },
    /// Hand in a KV entry.
    Kv {
        bucket: Bucket,
        key: String,
        value: Bytes,
    },
    /// A local observation.
    Local {
        endpoint: String,
        healthy: Option<bool>,
    },
    /// Replay a remembered input, possibly with one byte changed.
    Replay {
        index: usize,
        flip: Option<ByteFlip>,
    },
    /// Hand one of the node's own publishes back to it (NATS echo).
    Echo { index: usize },
    /// A config event.
    Config { version: u64, yaml: Bytes },
    /// NATS up or down.
    Connectivity(Connectivity),
    /// A KV read finished.
    ReadDone { read: KvRead, complete: bool },
    /// A KV write failed.
    PutFailed { bucket: Bucket, key: String },
    /// Acknowledge every KV write of the node so far (stored in the order handed out, each at
    /// the next KV revision; the acknowledgements handed in that order or its reverse).
    AckPuts { reverse: bool },
    /// Messages were lost (a slow consumer).
    Lost { count: u64 },
    /// The driver reports how applying a config version went.
    ConfigApplied { version: u64, ok: bool },
    /// The node leaves.
    Leave,
}

/// A corruption of one byte of a payload.
#[derive(Debug, Clone, Copy)]
pub(super) struct ByteFlip {
    /// Which byte, modulo the payload's length.
    pub(super) at: usize,
    /// What it is XORed with (never 0).
    pub(super) xor: u8,
}

impl Op {
    /// Draws the next operation from `u`; `h` makes some of them plausible (our own
    /// incarnation, our wall clock, the config version being applied).
    pub(super) fn arbitrary(u: &mut Unstructured<'_>, h: &Harness) -> arbitrary::Result<Op> {
        let names = &h.names;
        Ok(match u.int_in_range(0u8..=24)? {
            0..=2 => Op::Advance {
                ns: duration_ns(u)?,
            },
            3 => Op::Skip {
                ns: duration_ns(u)?,
            },
            4 => Op::WallStep {
                ms: u.int_in_range(-86_400_000i64..=86_400_000)?,
            },
            5..=7 => {
                let (node, subject_node) = sender(u)?;
                let msg = Message::Heartbeat(Heartbeat {
                    cluster: cluster(u)?,
                    node,
                    region: region(u)?,
                    incarnation: incarnation(u, h)?,
                    seq: seq(u)?,
                    sent_unix_ms: h.sent_unix_ms(u)?,
                    report_seq: seq(u)?,
                    kv_seq: seq(u)?,
                });
                Op::Receive {
                    subject: subject(u, names, SubjectKind::Heartbeat, subject_node)?,
                    payload: codec::encode(&msg),
                }
            }
            8..=10 => {
                let (node, subject_node) = sender(u)?;
                let mut items = Vec::new();
                let endpoints = endpoint_names();
                let mut names_held = Vec::new();
                while items.len() < 6 && u.ratio(3u8, 4u8)? {
                    names_held.push(endpoint(u, &endpoints)?);
                    items.push((seq(u)?, ReportState::arbitrary(u)?));
                }
                let first_seq = seq(u)?;
                let top = items.iter().map(|i| i.0).max().unwrap_or(0).max(first_seq);
                let last_seq = if u.ratio(1u8, 8u8)? { seq(u)? } else { top };
                let msg = Message::Reports(ReportBatch {
                    cluster: cluster(u)?,
                    node,
                    incarnation: incarnation(u, h)?,
                    sent_unix_ms: h.sent_unix_ms(u)?,
                    first_seq,
                    last_seq,
                    items: names_held
                        .iter()
                        .zip(&items)
                        .map(|(endpoint, &(seq, state))| ReportItem {
                            endpoint,
                            seq,
                            state,
                        })
                        .collect(),
                });
                Op::Receive {
                    subject: subject(u, names, SubjectKind::Health, subject_node)?,
                    payload: codec::encode(&msg),
                }
            }
            11 | 21 => {
                let (node, key_node) = sender(u)?;
                let incarnation = incarnation(u, h)?;
                let mut rec = MemberRecord {
                    cluster: cluster(u)?,
                    node,
                    region: region(u)?,
                    incarnation,
                    hb_seq: seq(u)?,
                    sent_unix_ms: h.sent_unix_ms(u)?,
                    report_seq: seq(u)?,
                    kv_seq: seq(u)?,
                    snapshot: None,
                };
                if u.arbitrary()? {
                    rec.snapshot = Some(SnapshotRef {
                        // Mostly of the record's incarnation.
                        incarnation: if u.ratio(7u8, 8u8)? {
                            incarnation
                        } else {
                            self::incarnation(u, h)?
                        },
                        generation: generation(u)?,
                        chunks: u.int_in_range(1u32..=3)?,
                        seq: seq(u)?,
                        revision: revision(u)?,
                    });
                }
                let msg = if u.ratio(1u8, 6u8)? {
                    Message::Leave(rec)
                } else {
                    Message::Member(rec)
                };
                let key = if u.ratio(1u8, 16u8)? {
                    String::arbitrary(u)?
                } else {
                    names.member_key(key_node)
                };
                let bucket = if u.ratio(1u8, 16u8)? {
                    Bucket::Health
                } else {
                    Bucket::Members
                };
                Op::Kv {
                    bucket,
                    key,
                    value: codec::encode(&msg),
                }
            }
            12 => {
                let (node, key_node) = sender(u)?;
                let endpoints = endpoint_names();
                let ep = endpoint(u, &endpoints)?;
                let key_ep = if u.ratio(1u8, 16u8)? {
                    endpoint(u, &endpoints)?
                } else {
                    ep.clone()
                };
                let msg = Message::Report(ReportRecord {
                    cluster: cluster(u)?,
                    node,
                    endpoint: &ep,
                    incarnation: incarnation(u, h)?,
                    seq: seq(u)?,
                    sent_unix_ms: h.sent_unix_ms(u)?,
                    state: ReportState::arbitrary(u)?,
                });
                let key = if u.ratio(1u8, 16u8)? {
                    String::arbitrary(u)?
                } else {
                    names.report_key(key_node, &key_ep)
                };
                let bucket = if u.ratio(1u8, 16u8)? {
                    Bucket::Members
                } else {
                    Bucket::Health
                };
                Op::Kv {
                    bucket,
                    key,
                    value: codec::encode(&msg),
                }
            }
            13..=14 => {
                let endpoints = endpoint_names();
                Op::Local {
                    endpoint: endpoint(u, &endpoints)?,
                    healthy: Option::<bool>::arbitrary(u)?,
                }
            }
            15 => Op::Replay {
                index: usize::arbitrary(u)?,
                flip: if u.ratio(1u8, 4u8)? {
                    Some(ByteFlip {
                        at: usize::arbitrary(u)?,
                        xor: u8::arbitrary(u)?.max(1),
                    })
                } else {
                    None
                },
            },
            16 => Op::Echo {
                index: usize::arbitrary(u)?,
            },
            17 => {
                let version = if u.ratio(7u8, 8u8)? {
                    u64::from(u.int_in_range(0u8..=12)?)
                } else {
                    u64::arbitrary(u)?
                };
                Op::Config {
                    version,
                    yaml: config_yaml(u)?,
                }
            }
            20 => match u.int_in_range(0u8..=5)? {
                0 => Op::Lost {
                    count: u64::from(u.int_in_range(1u8..=200)?),
                },
                1 | 2 => Op::ConfigApplied {
                    version: if u.ratio(3u8, 4u8)? {
                        h.seen.last_apply_version
                    } else {
                        u64::from(u.int_in_range(0u8..=12)?)
                    },
                    ok: u.ratio(2u8, 3u8)?,
                },
                3 => Op::Leave,
                _ => {
                    // A leave announcement on a heartbeat subject.
                    let (node, subject_node) = sender(u)?;
                    let msg = Message::Leave(MemberRecord {
                        cluster: cluster(u)?,
                        node,
                        region: region(u)?,
                        incarnation: incarnation(u, h)?,
                        hb_seq: seq(u)?,
                        sent_unix_ms: h.sent_unix_ms(u)?,
                        report_seq: seq(u)?,
                        kv_seq: seq(u)?,
                        snapshot: None,
                    });
                    Op::Receive {
                        subject: subject(u, names, SubjectKind::Heartbeat, subject_node)?,
                        payload: codec::encode(&msg),
                    }
                }
            },
            18 => match u.int_in_range(0u8..=2)? {
                0 => Op::Connectivity(Connectivity::arbitrary(u)?),
                1 => Op::ReadDone {
                    read: match u.int_in_range(0u8..=4)? {
                        0 => KvRead::Snapshot,
                        1 => KvRead::Members,
                        2 => KvRead::Reports {
                            node: sender(u)?.0.to_owned(),
                        },
                        // The region of every report read without region buckets, or another.
                        _ => KvRead::SnapshotReports {
                            region: if u.ratio(3u8, 4u8)? {
                                String::new()
                            } else {
                                region(u)?.to_owned()
                            },
                        },
                    },
                    // Mostly complete: an incomplete read starts the snapshot over.
                    complete: u.ratio(3u8, 4u8)?,
                },
                _ => {
                    let endpoints = endpoint_names();
                    let bucket = Bucket::arbitrary(u)?;
                    let key = match (bucket, u.int_in_range(0u8..=3)?) {
                        (Bucket::Health, 0 | 1) => {
                            names.report_key(OWN_ID, &endpoint(u, &endpoints)?)
                        }
                        (Bucket::Health, 2) => {
                            names.chunk_key(OWN_ID, generation(u)?, u.int_in_range(0u32..=2)?)
                        }
                        (Bucket::Members, 0..=2) => names.member_key(OWN_ID),
                        _ => String::arbitrary(u)?,
                    };
                    if u.arbitrary()? {
                        Op::PutFailed { bucket, key }
                    } else {
                        Op::AckPuts {
                            reverse: u.ratio(1u8, 4u8)?,
                        }
                    }
                }
            },
            22 | 24 => chunk(u, h)?,
            23 => {
                // The end of the start-up snapshot's part the node is reading (as far as the
                // model knows), mostly complete.
                let pending = h.model.snapshot_reports_pending();
                let read = if pending.is_empty() {
                    KvRead::Snapshot
                } else {
                    KvRead::SnapshotReports {
                        region: u.choose(&pending)?.clone(),
                    }
                };
                Op::ReadDone {
                    read,
                    complete: u.ratio(7u8, 8u8)?,
                }
            }
            _ => {
                // Garbage: random bytes, often behind a valid envelope header, on a valid or
                // random subject.
                let mut payload = Vec::new();
                if u.arbitrary()? {
                    payload.extend_from_slice(&codec::MAGIC);
                    payload.push(codec::FORMAT_VERSION);
                    payload.push(u.int_in_range(1u8..=5)?);
                }
                let len = u.int_in_range(0usize..=48)?;
                payload.extend_from_slice(u.bytes(len.min(u.len()))?);
                let subject = if u.ratio(1u8, 8u8)? {
                    String::arbitrary(u)?
                } else {
                    let kind = if u.arbitrary()? {
                        SubjectKind::Heartbeat
                    } else {
                        SubjectKind::Health
                    };
                    names.subject(kind, sender(u)?.0)
                };
                Op::Receive {
                    subject,
                    payload: Bytes::from(payload),
                }
            }
        })
    }
}

/// A chunk of a compacted snapshot in the health bucket: mostly one of a snapshot that a
/// record handed in named (as its writer would have written it), now and then with another
/// generation (same slot or not), under the key of another slot, index or node, claiming
/// another incarnation or chunk count, with its index out of range, or entirely made up.
fn chunk(u: &mut Unstructured<'_>, h: &Harness) -> arbitrary::Result<Op> {
    let names = &h.names;
    let expected: Vec<(&'static str, SnapshotRef)> = h
        .model
        .snapshot_chunks_expected()
        .into_iter()
        .filter_map(|(node, incarnation, generation, chunks)| {
            let node = *NODES.iter().find(|n| **n == node)?;
            let s = SnapshotRef {
                incarnation,
                generation,
                chunks,
                seq: 0,
                revision: 0,
            };
            Some((node, s))
        })
        .collect();
    let (node, key_node, mut snapshot) = if !expected.is_empty() && u.ratio(1u8, 2u8)? {
        let (node, s) = *u.choose(&expected)?;
        (node, node, s)
    } else if !h.snapshot_refs.is_empty() && u.ratio(3u8, 4u8)? {
        let (node, s) = *u.choose(&h.snapshot_refs)?;
        let key_node = if u.ratio(1u8, 16u8)? {
            *u.choose(&NODES)?
        } else {
            node
        };
        (node, key_node, s)
    } else {
        let (node, key_node) = sender(u)?;
        let s = SnapshotRef {
            incarnation: incarnation(u, h)?,
            generation: generation(u)?,
            chunks: u.int_in_range(1u32..=3)?,
            seq: 0,
            revision: 0,
        };
        (node, key_node, s)
    };
    let mut index = u.int_in_range(0..=snapshot.chunks - 1)?;
    let mut key_generation = snapshot.generation;
    let mut key_index = index;
    match u.int_in_range(0u8..=15)? {
        // Another compaction's chunk in the same slot (torn: overwritten, or stale).
        0 => snapshot.generation = snapshot.generation.saturating_add(2),
        1 => {
            snapshot.generation = snapshot.generation.saturating_sub(2).max(1);
            key_generation = snapshot.generation;
        }
        // Under the other slot's key.
        2 => key_generation = snapshot.generation.wrapping_add(1),
        // Under another index's key.
        3 => key_index = (index + 1) % snapshot.chunks.max(2),
        // Another count, or an index out of range (refused by the decoder).
        4 => snapshot.chunks = u.int_in_range(1u32..=4)?,
        5 => index = snapshot.chunks + u.int_in_range(0u32..=2)?,
        6 => snapshot.incarnation = incarnation(u, h)?,
        _ => {}
    }
    let endpoints = endpoint_names();
    let mut held = Vec::new();
    while held.len() < 6 && u.ratio(3u8, 4u8)? {
        // Sequence 0 (refused by the decoder) now and then only.
        let seq = if u.ratio(7u8, 8u8)? {
            seq(u)?.max(1)
        } else {
            seq(u)?
        };
        held.push((endpoint(u, &endpoints)?, seq, ReportState::arbitrary(u)?));
    }
    let items: Vec<ReportItem<'_>> = held
        .iter()
        .map(|(endpoint, seq, state)| ReportItem {
            endpoint,
            seq: *seq,
            state: *state,
        })
        .collect();
    let (reports, items_bytes, packed) = codec::pack_chunk_items(&items);
    let msg = Message::Chunk(ReportChunk {
        cluster: cluster(u)?,
        node,
        incarnation: snapshot.incarnation,
        generation: snapshot.generation,
        index,
        chunks: snapshot.chunks,
        reports,
        items_bytes,
        items: &packed,
    });
    let key = if u.ratio(1u8, 32u8)? {
        String::arbitrary(u)?
    } else {
        names.chunk_key(key_node, key_generation, key_index)
    };
    let bucket = if u.ratio(1u8, 32u8)? {
        Bucket::Members
    } else {
        Bucket::Health
    };
    Ok(Op::Kv {
        bucket,
        key,
        value: codec::encode(&msg),
    })
}

/// A compaction's generation: small (both slots, a few of each), or now and then any.
fn generation(u: &mut Unstructured<'_>) -> arbitrary::Result<u64> {
    Ok(if u.ratio(1u8, 32u8)? {
        u64::arbitrary(u)?.max(1)
    } else {
        u.int_in_range(1u64..=5)?
    })
}

/// A KV revision: small, or now and then any.
fn revision(u: &mut Unstructured<'_>) -> arbitrary::Result<u64> {
    Ok(if u.ratio(1u8, 16u8)? {
        u64::arbitrary(u)?
    } else {
        u.int_in_range(0u64..=40)?
    })
}

/// A time jump: mostly whole milliseconds up to 5 s, sometimes a few nanoseconds, seconds,
/// or days.
fn duration_ns(u: &mut Unstructured<'_>) -> arbitrary::Result<u64> {
    Ok(match u.int_in_range(0u8..=15)? {
        0 => u.int_in_range(0u64..=3)?,
        1 => u64::from(u.int_in_range(0u32..=4_000_000_000)?),
        2 => u.int_in_range(0u64..=400_000_000_000_000)?, // up to about 4.6 days
        _ => u64::from(u.int_in_range(0u16..=5_000)?) * 1_000_000,
    })
}

/// The node a message is from, and the node its subject or key names (usually the same).
fn sender(u: &mut Unstructured<'_>) -> arbitrary::Result<(&'static str, &'static str)> {
    let node = *u.choose(&NODES)?;
    let named = if u.ratio(1u8, 16u8)? {
        *u.choose(&NODES)?
    } else {
        node
    };
    Ok((node, named))
}

/// Our cluster, or now and then another.
fn cluster(u: &mut Unstructured<'_>) -> arbitrary::Result<&'static str> {
    Ok(if u.ratio(1u8, 32u8)? {
        "other"
    } else {
        CLUSTER
    })
}

/// One of a few regions (more than the engine keeps inline), the empty one among them.
pub(super) fn region(u: &mut Unstructured<'_>) -> arbitrary::Result<&'static str> {
    const REGIONS: [&str; 6] = ["", "eu", "us-east-1", "ap", "sa", "af"];
    u.choose(&REGIONS).copied()
}

/// An incarnation: small, any, or near our own (records of our own id can raise it).
fn incarnation(u: &mut Unstructured<'_>, h: &Harness) -> arbitrary::Result<u64> {
    Ok(match u.int_in_range(0u8..=31)? {
        0 => u64::arbitrary(u)?,
        1..=2 => h.node.incarnation() + u64::from(u.int_in_range(0u8..=2)?),
        _ => u64::from(u.int_in_range(1u8..=3)?),
    })
}

/// A sequence number: small, the largest allowed, or any.
fn seq(u: &mut Unstructured<'_>) -> arbitrary::Result<u64> {
    Ok(match u.int_in_range(0u8..=31)? {
        0 => u64::arbitrary(u)?,
        1 => MAX_SEQ,
        _ => u64::from(u.int_in_range(0u8..=14)?),
    })
}

/// One of the `known` endpoint names, or now and then an overlong or arbitrary one.
fn endpoint(u: &mut Unstructured<'_>, known: &[String]) -> arbitrary::Result<String> {
    Ok(if u.ratio(1u8, 16u8)? {
        let len = u.int_in_range(0usize..=300)?;
        "x".repeat(len)
    } else if u.ratio(1u8, 16u8)? {
        String::arbitrary(u)?
    } else {
        u.choose(known)?.clone()
    })
}

/// The `kind` subject of `node`, or now and then the other kind's, another cluster's, or
/// an arbitrary one.
fn subject(
    u: &mut Unstructured<'_>,
    names: &Names,
    kind: SubjectKind,
    node: &str,
) -> arbitrary::Result<String> {
    Ok(match u.int_in_range(0u8..=31)? {
        0 => String::arbitrary(u)?,
        1 => {
            let other = if kind == SubjectKind::Heartbeat {
                SubjectKind::Health
            } else {
                SubjectKind::Heartbeat
            };
            names.subject(other, node)
        }
        2 => Names::new("other").subject(kind, node),
        _ => names.subject(kind, node),
    })
}

/// A pushed configuration: mostly valid YAML with a random policy, threshold and timing
/// (some of it out of range, some for another cluster), sometimes arbitrary bytes.
fn config_yaml(u: &mut Unstructured<'_>) -> arbitrary::Result<Bytes> {
    if u.ratio(1u8, 8u8)? {
        let len = u.int_in_range(0usize..=200)?;
        return Ok(Bytes::copy_from_slice(u.bytes(len.min(u.len()))?));
    }
    let policy = u.choose(&Policy::ALL)?.as_str();
    let q = match u.int_in_range(0u8..=15)? {
        0 => u.int_in_range(0u8..=101)?,
        n => [1, 18, 33, 50, 51, 66, 67, 100][usize::from(n % 8)],
    };
    let interval_ms = u.int_in_range(5u64..=3_000)?;
    let ttl_ms = if u.ratio(1u8, 16u8)? {
        u.int_in_range(0u64..=100_000)?
    } else {
        interval_ms + u.int_in_range(1u64..=10_000)?
    };
    let cluster = if u.ratio(1u8, 16u8)? {
        "other"
    } else {
        CLUSTER
    };
    let scope = match u.int_in_range(0u8..=15)? {
        0 => "nearest",
        1..=7 => "members",
        _ => "regions",
    };
    let hold_up = hold_yaml(u)?;
    let hold_down = hold_yaml(u)?;
    Ok(Bytes::from(format!(
        "cluster: {{id: {cluster}}}\nstate: {{healthPolicy: {policy}, quorumMinPercent: {q}, heartbeatInterval: {interval_ms}ms, heartbeatTTL: {ttl_ms}ms, quorumScope: {scope}, holdUp: {hold_up}, holdDown: {hold_down}}}\n"
    )))
}

/// A hold in YAML: none, some milliseconds, or now and then a negative or malformed one.
fn hold_yaml(u: &mut Unstructured<'_>) -> arbitrary::Result<String> {
    Ok(match u.int_in_range(0u8..=31)? {
        0 => "-1s".to_owned(),
        1 => "soon".to_owned(),
        2..=13 => "0s".to_owned(),
        _ => format!("{}ms", u.int_in_range(1u64..=10_000)?),
    })
}

impl Harness {
    /// A sender timestamp: near our wall clock, skewed, or anything at all.
    fn sent_unix_ms(&self, u: &mut Unstructured<'_>) -> arbitrary::Result<u64> {
        let wall = self.now().wall.as_unix_ms();
        Ok(match u.int_in_range(0u8..=15)? {
            0 => u64::arbitrary(u)?,
            1 => wall.saturating_add_signed(i64::from(u.arbitrary::<i32>()?)),
            _ => wall.saturating_add_signed(i64::from(u.int_in_range(-20_000i32..=20_000)?)),
        })
    }
}
