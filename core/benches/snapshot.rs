//! The core's side of the start-up snapshot (`cargo bench -p gslb-state-core --bench snapshot`):
//!
//! * `load/chunks`: a starting node reads 20 members × 10,000 reports from their compacted
//!   snapshots (records naming them, then the chunks), until the snapshot is loaded;
//! * `load/keys`: the same reports as one KV entry per report (members without a compacted
//!   snapshot), for comparison;
//! * `compaction/encode`: encoding 100,000 reports into the chunks of one compaction.

// A benchmark measures wall time; the core itself never reads a clock.
#![allow(clippy::disallowed_methods)]

use bytes::Bytes;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use gslb_state_core::codec::{
    self, MemberRecord, Message, ReportItem, ReportRecord, ReportState, SnapshotRef,
};
use gslb_state_core::compaction::encode_chunks;
use gslb_state_core::{
    Bucket, Config, Connectivity, Input, Instant, KvRead, Names, Node, NodeConfig, Now, Output,
    WallTime,
};

const MEMBERS: usize = 20;
const REPORTS: usize = 10_000;
const CLUSTER: &str = "bench";
const WALL_MS: u64 = 1_700_000_000_000;

fn now() -> Now {
    Now::new(Instant::from_millis(1), WallTime::from_unix_ms(WALL_MS))
}

fn endpoint(i: usize) -> String {
    format!("svc-{i:06}.eu-west.example.com")
}

fn state(i: usize, m: usize) -> ReportState {
    if (i + m).is_multiple_of(3) {
        ReportState::Unhealthy
    } else {
        ReportState::Healthy
    }
}

/// What a starting node reads: members' records, and their reports as chunks or as keys.
struct Data {
    records: Vec<(String, Bytes)>,
    reports: Vec<(String, Bytes)>,
}

fn data(chunked: bool) -> Data {
    let names = Names::new(CLUSTER);
    let endpoints: Vec<String> = (0..REPORTS).map(endpoint).collect();
    let mut records = Vec::new();
    let mut reports = Vec::new();
    for m in 0..MEMBERS {
        let node = format!("node-{m:03}");
        let mut snapshot = None;
        if chunked {
            let items: Vec<ReportItem<'_>> = endpoints
                .iter()
                .enumerate()
                .map(|(i, e)| ReportItem {
                    endpoint: e,
                    seq: i as u64 + 1,
                    state: state(i, m),
                })
                .collect();
            let chunks = encode_chunks(CLUSTER, &node, 1, 1, &items).expect("fits");
            snapshot = Some(SnapshotRef {
                incarnation: 1,
                generation: 1,
                chunks: chunks.len() as u32,
                seq: REPORTS as u64,
                revision: 1,
            });
            for (i, value) in chunks.into_iter().enumerate() {
                reports.push((names.chunk_key(&node, 1, i as u32), value));
            }
        } else {
            for (i, e) in endpoints.iter().enumerate() {
                let value = codec::encode(&Message::Report(ReportRecord {
                    cluster: CLUSTER,
                    node: &node,
                    endpoint: e,
                    incarnation: 1,
                    seq: i as u64 + 1,
                    sent_unix_ms: WALL_MS,
                    state: state(i, m),
                }));
                reports.push((names.report_key(&node, e), value));
            }
        }
        let record = codec::encode(&Message::Member(MemberRecord {
            cluster: CLUSTER,
            node: &node,
            region: "",
            incarnation: 1,
            hb_seq: 1,
            sent_unix_ms: WALL_MS,
            report_seq: REPORTS as u64,
            kv_seq: REPORTS as u64,
            snapshot,
        }));
        records.push((names.member_key(&node), record));
    }
    Data { records, reports }
}

/// A node started and connected, fed `data` as its snapshot; returns it loaded.
fn load(data: &Data) -> Node {
    let config = Config::with_defaults(CLUSTER);
    let mut node = Node::new(NodeConfig::from_config(&config, "me"), now()).expect("valid");
    node.handle(now(), Input::Connectivity(Connectivity::Connected));
    for (key, value) in &data.records {
        let (key, value) = (key.clone(), value.clone());
        let bucket = Bucket::Members;
        node.handle(now(), Input::KvEntry { bucket, key, value });
    }
    let read = KvRead::Snapshot;
    node.handle(
        now(),
        Input::KvReadDone {
            read,
            complete: true,
        },
    );
    while let Some(out) = node.poll_output() {
        std::hint::black_box(out);
    }
    for (key, value) in &data.reports {
        let (key, value) = (key.clone(), value.clone());
        let bucket = Bucket::Health;
        node.handle(now(), Input::KvEntry { bucket, key, value });
    }
    let read = KvRead::SnapshotReports {
        region: String::new(),
    };
    node.handle(
        now(),
        Input::KvReadDone {
            read,
            complete: true,
        },
    );
    while let Some(out) = node.poll_output() {
        if matches!(out, Output::Decision { .. }) {
            std::hint::black_box(out);
        }
    }
    assert!(node.snapshot_loaded());
    assert_eq!(node.stats().reports_applied, (MEMBERS * REPORTS) as u64);
    node
}

fn benches(c: &mut Criterion) {
    let mut g = c.benchmark_group("snapshot");
    g.sample_size(10);
    g.throughput(Throughput::Elements((MEMBERS * REPORTS) as u64));
    for (name, chunked) in [("load/chunks", true), ("load/keys", false)] {
        let data = data(chunked);
        g.bench_function(name, |b| b.iter(|| drop(load(&data))));
    }
    let endpoints: Vec<String> = (0..100_000).map(endpoint).collect();
    let items: Vec<ReportItem<'_>> = endpoints
        .iter()
        .enumerate()
        .map(|(i, e)| ReportItem {
            endpoint: e,
            seq: i as u64 + 1,
            state: state(i, 0),
        })
        .collect();
    g.throughput(Throughput::Elements(items.len() as u64));
    g.bench_function("compaction/encode_100k", |b| {
        b.iter(|| encode_chunks(CLUSTER, "me", 1, 1, &items).expect("fits"))
    });
    g.finish();
}

criterion_group!(snapshot, benches);
criterion_main!(snapshot);
