//! Core benchmarks at 100 nodes × 100,000 endpoints (`cargo bench -p gslb-state-core`).
//!
//! * `ingest`: health-report inputs per second into a node that already holds 99 members ×
//!   100,000 reports (batches of 4,096 flips from one member).
//! * `member_expiry`: one member with 100,000 reports expires and every endpoint is re-decided
//!   (all 100,000 verdicts flip, and their decision outputs are drained).
//! * `member_rejoin`: the same member's heartbeat returns and its 100,000 reports count again.
//! * memory: heap bytes per (node, endpoint) report, measured by a counting allocator, printed
//!   before the benchmarks run.

// A benchmark measures wall time; the core itself never reads a clock.
#![allow(clippy::disallowed_methods)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant as WallInstant};

use bytes::Bytes;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use gslb_state_core::codec::{self, Heartbeat, Message, ReportBatch, ReportItem, ReportState};
use gslb_state_core::names::SubjectKind;
use gslb_state_core::{
    Config, Input, Instant, Limits, Names, Node, NodeConfig, Now, Policy, WallTime,
};

struct Counting;

static ALLOCATED: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATED.fetch_add(layout.size(), Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        ALLOCATED.fetch_sub(layout.size(), Ordering::Relaxed);
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATED.fetch_add(new_size, Ordering::Relaxed);
        ALLOCATED.fetch_sub(layout.size(), Ordering::Relaxed);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

const NODES: usize = 100;
const ENDPOINTS: usize = 100_000;
const BATCH: usize = 4096;
const TTL_MS: u64 = 30_000;
const CLUSTER: &str = "bench";

fn now(ms: u64) -> Now {
    Now::new(
        Instant::from_millis(ms),
        WallTime::from_unix_ms(1_700_000_000_000 + ms),
    )
}

fn endpoint(i: usize) -> String {
    format!("svc-{i:06}.eu-west.example.com")
}

/// A node of 100 (us + 99 peers), each peer reporting every endpoint.
struct World {
    node: Node,
    names: Names,
    endpoints: Vec<String>,
    t_ms: u64,
    hb_seq: u64,
    /// Next report sequence per peer.
    report_seq: Vec<u64>,
}

impl World {
    fn peer(i: usize) -> String {
        format!("node-{i:03}")
    }

    fn heartbeat(&self, peer: usize) -> Input {
        let id = Self::peer(peer);
        let payload = codec::encode(&Message::Heartbeat(Heartbeat {
            cluster: CLUSTER,
            node: &id,
            region: "eu",
            incarnation: 1,
            seq: self.hb_seq,
            sent_unix_ms: 0,
            report_seq: self.report_seq[peer] - 1,
            kv_seq: self.report_seq[peer] - 1,
        }));
        Input::Received {
            subject: self.names.subject(SubjectKind::Heartbeat, &id),
            payload,
        }
    }

    /// Encoded batches of `peer` covering endpoints `range`, all with `state`.
    fn batches(
        &mut self,
        peer: usize,
        range: std::ops::Range<usize>,
        state: impl Fn(usize) -> ReportState,
    ) -> Vec<Input> {
        let id = Self::peer(peer);
        let subject = self.names.subject(SubjectKind::Health, &id);
        let mut out = Vec::new();
        let idx: Vec<usize> = range.collect();
        for chunk in idx.chunks(BATCH) {
            let first = self.report_seq[peer];
            let items: Vec<ReportItem<'_>> = chunk
                .iter()
                .enumerate()
                .map(|(k, &e)| ReportItem {
                    endpoint: &self.endpoints[e],
                    seq: first + k as u64,
                    state: state(e),
                })
                .collect();
            let last = first + chunk.len() as u64 - 1;
            let payload: Bytes = codec::encode(&Message::Reports(ReportBatch {
                cluster: CLUSTER,
                node: &id,
                incarnation: 1,
                sent_unix_ms: 0,
                first_seq: first,
                last_seq: last,
                items,
            }));
            self.report_seq[peer] = last + 1;
            out.push(Input::Received {
                subject: subject.clone(),
                payload,
            });
        }
        out
    }

    fn drain(&mut self) -> usize {
        std::iter::from_fn(|| self.node.poll_output()).count()
    }

    fn build() -> World {
        let mut config = Config::with_defaults(CLUSTER);
        config.state.policy = Policy::GlobalQuorum;
        config.state.quorum_min_percent = 100;
        config.state.heartbeat_ttl = Duration::from_millis(TTL_MS);
        let node_config = NodeConfig {
            limits: Limits {
                forget_after_ttls: 0,
                ..Limits::default()
            },
            ..NodeConfig::from_config(&config, "me")
        };
        let before = ALLOCATED.load(Ordering::Relaxed);
        let mut w = World {
            node: Node::new(node_config, now(0)).unwrap(),
            names: Names::new(CLUSTER),
            endpoints: (0..ENDPOINTS).map(endpoint).collect(),
            t_ms: 0,
            hb_seq: 1,
            report_seq: vec![1; NODES],
        };
        let names_bytes = ALLOCATED.load(Ordering::Relaxed) - before;
        let start = WallInstant::now();
        let mut inputs = 0usize;
        // Our own observations, then 99 peers: peer 1 says unhealthy everywhere, others healthy.
        for e in 0..ENDPOINTS {
            w.node.handle(
                now(0),
                Input::LocalHealth {
                    endpoint: w.endpoints[e].clone(),
                    healthy: Some(true),
                },
            );
        }
        w.drain();
        for peer in 1..NODES {
            let hb = w.heartbeat(peer);
            w.node.handle(now(0), hb);
            let batches = w.batches(peer, 0..ENDPOINTS, |_| {
                if peer == 1 {
                    ReportState::Unhealthy
                } else {
                    ReportState::Healthy
                }
            });
            for b in batches {
                w.node.handle(now(0), b);
                inputs += BATCH;
            }
            w.drain();
        }
        let elapsed = start.elapsed();
        let heap = ALLOCATED.load(Ordering::Relaxed) - before - names_bytes;
        let reports = NODES * ENDPOINTS;
        println!(
            "world: {NODES} nodes x {ENDPOINTS} endpoints built in {:.2?} ({:.2} M report inputs/s incl. decisions)",
            elapsed,
            inputs as f64 / elapsed.as_secs_f64() / 1e6
        );
        println!(
            "memory: {heap} heap bytes for {reports} (node, endpoint) reports = {:.1} bytes/report",
            heap as f64 / reports as f64
        );
        assert_eq!(w.node.active_members(), NODES);
        w
    }

    /// Every peer but `except` heartbeats at the current time.
    fn heartbeat_all(&mut self, except: Option<usize>) {
        self.hb_seq += 1;
        for peer in 1..NODES {
            if Some(peer) != except {
                let hb = self.heartbeat(peer);
                self.node.handle(now(self.t_ms), hb);
            }
        }
    }
}

fn benches(c: &mut Criterion) {
    let mut w = World::build();

    let mut g = c.benchmark_group("core");
    g.sample_size(20);
    g.throughput(Throughput::Elements(BATCH as u64));
    let mut flip = 0usize;
    g.bench_function("ingest/batch_of_4096_reports", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                flip += 1;
                let peer = 2 + flip % (NODES - 2);
                let start_ep = (flip * BATCH) % (ENDPOINTS - BATCH);
                let state = if (flip / (NODES - 2)).is_multiple_of(2) {
                    ReportState::Unhealthy
                } else {
                    ReportState::Healthy
                };
                let batch = w
                    .batches(peer, start_ep..start_ep + BATCH, |_| state)
                    .pop()
                    .unwrap();
                let t = WallInstant::now();
                w.node.handle(now(w.t_ms), batch);
                w.drain();
                total += t.elapsed();
            }
            total
        })
    });

    g.throughput(Throughput::Elements(ENDPOINTS as u64));
    // Restore: every peer healthy except peer 1 (unhealthy everywhere).
    for peer in 2..NODES {
        for b in w.batches(peer, 0..ENDPOINTS, |_| ReportState::Healthy) {
            w.node.handle(now(w.t_ms), b);
        }
    }
    w.drain();
    g.bench_function("member_expiry/100k_reports_all_flip", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                // Everyone heartbeats; then peer 1 falls silent and the others keep going.
                w.t_ms += 1_000;
                w.heartbeat_all(None);
                w.t_ms += TTL_MS - 1_000;
                w.heartbeat_all(Some(1));
                w.drain();
                let t = WallInstant::now();
                w.node.handle_timeout(Now::new(
                    Instant::from_millis(w.t_ms + 1_001),
                    now(w.t_ms + 1_001).wall,
                ));
                let changed = w.drain();
                total += t.elapsed();
                assert!(changed >= ENDPOINTS, "every verdict flips: {changed}");
                assert_eq!(w.node.active_members(), NODES - 1);
                w.t_ms += 1_001;
            }
            total
        })
    });

    g.bench_function("member_rejoin/100k_reports_all_flip", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                w.t_ms += 1_000;
                w.heartbeat_all(Some(1));
                w.drain();
                w.hb_seq += 1;
                let hb = w.heartbeat(1);
                let t = WallInstant::now();
                w.node.handle(now(w.t_ms), hb);
                let changed = w.drain();
                total += t.elapsed();
                assert!(changed >= ENDPOINTS, "every verdict flips back: {changed}");
                // Let it expire again (outside the timing).
                w.t_ms += TTL_MS + 1;
                w.heartbeat_all(Some(1));
                w.node.handle_timeout(now(w.t_ms));
                w.drain();
            }
            total
        })
    });
    g.finish();
}

criterion_group!(core, benches);
criterion_main!(core);
