//! The start-up snapshot's second part: once the members buckets are read, which reports to
//! read where — each member's compacted snapshot (its chunks), the report keys written since
//! the oldest of them, and whole the members without a usable one — and which members a
//! read vouches for once it is over.

use std::collections::BTreeMap;

use rustc_hash::FxHashMap;

use crate::codec::{self, ReportChunk};
use crate::membership::MemberIdx;
use crate::names::Names;
use crate::output::Output;
use crate::stats::{DropReason, MessageKind};

use super::Node;

/// More members than this in one region, and their region's report keys are read in one go
/// (from the oldest compacted snapshot's revision, or whole) instead of one read each.
const MAX_MEMBER_READS: usize = 32;

/// The chunks of one member's compacted snapshot still expected.
#[derive(Debug)]
struct ChunkWait {
    incarnation: u64,
    generation: u64,
    seen: Vec<bool>,
    left: u32,
}

/// The reads of the snapshot's second part.
#[derive(Debug, Default)]
pub(super) struct SnapshotReads {
    /// The members buckets are read; the report reads are out.
    pub(super) started: bool,
    /// The regions whose report read is still out.
    pending: Vec<String>,
    /// This node's region's read failed: the snapshot is read again.
    own_failed: bool,
    /// The regions whose report read failed.
    failed: Vec<String>,
    /// The chunks expected, per member.
    chunks: FxHashMap<MemberIdx, ChunkWait>,
    /// Each member's region (of the reads).
    regions: FxHashMap<MemberIdx, String>,
}

/// What to read in one region.
#[derive(Debug, Default)]
struct Plan {
    chunks: Vec<String>,
    key_filters: Vec<(String, u64)>,
}

impl Node {
    /// The region whose buckets hold the records and reports of a member of `region`.
    pub(super) fn bucket_region(&self, region: &str) -> String {
        if self.region_buckets {
            region.to_owned()
        } else {
            String::new()
        }
    }

    /// The members buckets are read in full: asks for every region's reports. Each member
    /// whose newest record names a compacted snapshot of its current incarnation is read from
    /// its chunks and, if the record says it changed reports since, the report keys written
    /// after it; the others (and this node, whose keys of an earlier life are found and
    /// deleted) whole. A change after the record comes live or by a re-sync, as always.
    pub(super) fn request_snapshot_reports(&mut self) {
        let mut reads = SnapshotReads {
            started: true,
            ..SnapshotReads::default()
        };
        let mut plans: BTreeMap<String, Plan> = BTreeMap::new();
        let own_region = self.bucket_region(&self.region);
        plans.entry(own_region.clone()).or_default();
        for idx in self.members.indices() {
            let m = self.members.get(idx);
            let Some(rec) = &m.snapshot_record else {
                continue;
            };
            if rec.left || m.left {
                continue;
            }
            let region = self.bucket_region(&rec.region);
            let plan = plans.entry(region.clone()).or_default();
            reads.regions.insert(idx, region);
            let filter = self.names.report_key_filter(&m.id);
            match rec.snapshot.filter(|s| s.incarnation == m.incarnation) {
                Some(s) => {
                    plan.chunks.extend(
                        (0..s.chunks).map(|i| self.names.chunk_key(&m.id, s.generation, i)),
                    );
                    // Report keys written since the compaction, if its record says there
                    // were changes after it (a read from a revision costs the servers a scan
                    // of the bucket from there).
                    if rec.report_seq > s.seq {
                        plan.key_filters
                            .push((filter, s.revision.saturating_add(1)));
                    }
                    reads.chunks.insert(
                        idx,
                        ChunkWait {
                            incarnation: s.incarnation,
                            generation: s.generation,
                            seen: vec![false; s.chunks as usize],
                            left: s.chunks,
                        },
                    );
                }
                None => plan.key_filters.push((filter, 0)),
            }
        }
        for (region, mut plan) in plans {
            if plan.key_filters.len() > MAX_MEMBER_READS {
                let from = plan.key_filters.iter().map(|(_, from)| *from).min();
                plan.key_filters = vec![(Names::REPORTS_FILTER.to_owned(), from.unwrap_or(0))];
            }
            if region == own_region {
                // Our own keys whole: leftovers of an earlier life are found and deleted.
                let own = self.names.report_key_filter(&self.node_id);
                plan.key_filters.push((own, 0));
            }
            reads.pending.push(region.clone());
            self.push(Output::ReadSnapshotReports {
                region,
                chunks: plan.chunks,
                key_filters: plan.key_filters,
            });
        }
        self.snapshot_reads = reads;
    }

    /// A chunk of `node`'s compacted snapshot read under a key of slot `slot`, index `index`.
    pub(super) fn on_chunk(&mut self, slot: u64, index: u32, chunk: &ReportChunk<'_>) {
        let Some(idx) = self.members.find(chunk.node) else {
            self.stats.drop(DropReason::Duplicate);
            return;
        };
        // Only a chunk of the snapshot the member's record names, and each once. `ahead`: its
        // chunks still to come, the last (the short one) not counted.
        let mut ahead = 0;
        let wanted = self.snapshot_reads.chunks.get_mut(&idx).is_some_and(|w| {
            let fresh = w.incarnation == chunk.incarnation
                && w.generation == chunk.generation
                && chunk.generation % 2 == slot
                && chunk.index == index
                && w.seen.len() == chunk.chunks as usize
                && !w.seen[index as usize];
            if fresh {
                w.seen[index as usize] = true;
                w.left -= 1;
                ahead = w.left as usize - usize::from(!w.seen[w.seen.len() - 1]);
            }
            fresh
        });
        if !wanted || self.members.get(idx).incarnation != chunk.incarnation {
            self.stats.drop(DropReason::Duplicate);
            return;
        }
        if self.members.get(idx).left {
            self.stats.drop(DropReason::LeftMember);
            return;
        }
        let mut buf = Vec::new();
        let items = match codec::unpack_chunk_items(chunk, &mut buf) {
            Ok(items) => items,
            Err(e) => {
                // Not counted as read: the member is re-synced from its report keys.
                if let Some(w) = self.snapshot_reads.chunks.get_mut(&idx) {
                    w.seen[index as usize] = false;
                    w.left += 1;
                }
                self.stats.drop(e.into());
                return;
            }
        };
        self.stats.count_received(MessageKind::Chunk);
        // Room for this chunk and the full ones still to come, in one step: growing by
        // doubling would copy the map at each step and touch twice the memory.
        let expected = items.len().saturating_mul(ahead + 1);
        self.members.reserve_reports(idx, expected);
        for item in &items {
            self.members.get_mut(idx).sync.read_report(item.seq);
            self.apply_report(idx, item.endpoint, item.seq, item.state);
        }
    }

    /// The report read of `region` ended.
    pub(super) fn on_snapshot_reports_done(&mut self, region: &str, complete: bool) {
        let reads = &mut self.snapshot_reads;
        let Some(at) = reads.pending.iter().position(|r| r == region) else {
            return;
        };
        let region = reads.pending.swap_remove(at);
        if !complete {
            if region == self.bucket_region(&self.region) {
                self.snapshot_reads.own_failed = true;
            }
            self.snapshot_reads.failed.push(region);
        }
        if !self.snapshot_reads.pending.is_empty() {
            return;
        }
        // A member whose chunks did not all arrive (a newer compaction overwrote them during
        // the read, or they are gone), or whose region could not be read, was not read up to
        // its record: it is re-synced when it next announces.
        let reads = std::mem::take(&mut self.snapshot_reads);
        for (idx, region) in &reads.regions {
            let whole = reads.chunks.get(idx).is_none_or(|w| w.left == 0);
            if !whole || reads.failed.contains(region) {
                self.members.get_mut(*idx).sync.snapshot_unread();
            }
        }
        self.finish_snapshot(!reads.own_failed);
    }
}
