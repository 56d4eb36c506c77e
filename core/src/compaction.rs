//! The compacted snapshot of this node's own reports: a few chunks in its health bucket that
//! hold every report as of one moment, named by its membership record, so that a node starting
//! up reads a few values per member (and the report keys written since) instead of one key per
//! endpoint.
//!
//! A compaction is begun by the core ([`Compaction::due`]) at most once per
//! [`Limits::compact_interval`](crate::node::Limits::compact_interval) and only after changes to
//! half as many reports as it writes, so it adds at most about two reports' bytes per change.
//! Its chunks go to the slot its record does not name (`generation` mod 2); only when every
//! chunk is acknowledged does the record name it, so a crash part-way leaves the named
//! snapshot whole, and a reader checks every chunk's generation against the record's.

use bytes::Bytes;

use crate::codec::{
    self, CHUNK_TARGET_BYTES, MAX_CHUNK_ITEMS, MAX_SNAPSHOT_CHUNKS, Message, ReportChunk,
    ReportItem, SnapshotRef,
};
use crate::names::RECORD_MAX_AGE;
use crate::time::Instant;

/// Encodes `items` (a node's reports, incarnation `incarnation`) as the chunks of compaction
/// `generation`: each at most [`CHUNK_TARGET_BYTES`] unpacked and [`MAX_CHUNK_ITEMS`] reports.
/// `None` when they need more than [`MAX_SNAPSHOT_CHUNKS`] chunks.
pub fn encode_chunks(
    cluster: &str,
    node: &str,
    incarnation: u64,
    generation: u64,
    items: &[ReportItem<'_>],
) -> Option<Vec<Bytes>> {
    let mut bounds = Vec::new();
    let (mut start, mut bytes) = (0, 0);
    for (i, item) in items.iter().enumerate() {
        let size = codec::item_size_bound(item.endpoint.len());
        if i > start && (bytes + size > CHUNK_TARGET_BYTES || i - start >= MAX_CHUNK_ITEMS) {
            bounds.push(start..i);
            (start, bytes) = (i, 0);
        }
        bytes += size;
    }
    bounds.push(start..items.len());
    let chunks = u32::try_from(bounds.len())
        .ok()
        .filter(|&n| n <= MAX_SNAPSHOT_CHUNKS)?;
    let encoded = bounds
        .into_iter()
        .enumerate()
        .map(|(index, range)| {
            let (reports, items_bytes, packed) = codec::pack_chunk_items(&items[range]);
            codec::encode(&Message::Chunk(ReportChunk {
                cluster,
                node,
                incarnation,
                generation,
                // At most MAX_SNAPSHOT_CHUNKS, checked above.
                index: index as u32,
                chunks,
                reports,
                items_bytes,
                items: &packed,
            }))
        })
        .collect();
    Some(encoded)
}

/// The named snapshot is rewritten at least this often even when nothing changed: as often as
/// the refresh rewrites every report key, well within the buckets' `max_age`
/// ([`RECORD_MAX_AGE`]).
pub const REWRITE_EVERY: std::time::Duration =
    std::time::Duration::from_secs(RECORD_MAX_AGE.as_secs() / 4);

/// A compaction whose chunks are being written.
#[derive(Debug, Clone)]
struct Writing {
    snapshot: SnapshotRef,
    /// Whether chunk `i` was acknowledged.
    acked: Vec<bool>,
    left: u32,
}

/// This node's compacted snapshot: the one its record names, the one being written, and when
/// the next is due.
#[derive(Debug, Clone)]
pub(crate) struct Compaction {
    /// The highest KV revision of our report writes acknowledged so far.
    acked_revision: u64,
    /// Report changes since the last compaction began.
    changes: u64,
    /// When the last compaction began (or the node started).
    last_started: Instant,
    /// The last compaction was abandoned (a chunk write failed): the next is due after the
    /// interval whatever changed.
    retry: bool,
    writing: Option<Writing>,
    /// The snapshot our membership record names.
    current: Option<SnapshotRef>,
    next_generation: u64,
    /// The most chunks a compaction of this life began writing to each slot: the chunk keys
    /// that may exist, deleted when the node leaves.
    written: [u32; 2],
}

impl Compaction {
    /// No snapshot yet; the first is due `interval` after `now` at the earliest.
    pub(crate) fn new(now: Instant) -> Self {
        Compaction {
            acked_revision: 0,
            changes: 0,
            last_started: now,
            retry: false,
            writing: None,
            current: None,
            next_generation: 1,
            written: [0; 2],
        }
    }

    /// The most chunks a compaction of this life began writing to slot 0 and to slot 1.
    pub(crate) fn written_chunks(&self) -> [u32; 2] {
        self.written
    }

    /// The snapshot the membership record names.
    pub(crate) fn current(&self) -> Option<SnapshotRef> {
        self.current
    }

    /// A report of ours changed.
    pub(crate) fn changed(&mut self) {
        self.changes += 1;
    }

    /// A write of one of our report keys was stored at `revision`.
    pub(crate) fn report_acked(&mut self, revision: u64) {
        self.acked_revision = self.acked_revision.max(revision);
    }

    /// Every report was renumbered (a new incarnation): the named snapshot is of the old one.
    pub(crate) fn renumbered(&mut self, reports: usize) {
        self.current = None;
        self.writing = None;
        self.changes = self.changes.max(reports as u64);
    }

    /// Whether a compaction of `reports` reports is due at `now`: none in flight, `interval`
    /// since the last began, and changes to at least half as many reports since (or the last
    /// was abandoned). Whatever changed, the chunks are rewritten every [`REWRITE_EVERY`], so
    /// that they never age out of the bucket (`max_age`) while the record names them.
    pub(crate) fn due(&self, now: Instant, interval: std::time::Duration, reports: usize) -> bool {
        let since = now.saturating_since(self.last_started);
        self.writing.is_none()
            && reports > 0
            && since >= interval
            && (self.changes >= (reports as u64).div_ceil(2)
                || self.retry
                || (self.current.is_some() && since >= REWRITE_EVERY))
    }

    /// Begins compaction of reports up to sequence `seq` of `incarnation` in `chunks`
    /// chunks; returns its reference (its generation for the chunk keys and writes).
    pub(crate) fn begin(
        &mut self,
        now: Instant,
        incarnation: u64,
        seq: u64,
        chunks: u32,
    ) -> SnapshotRef {
        let generation = self.next_generation();
        self.next_generation = generation;
        let snapshot = SnapshotRef {
            incarnation,
            generation,
            chunks,
            seq,
            revision: self.acked_revision,
        };
        self.next_generation += 1;
        self.changes = 0;
        self.retry = false;
        self.last_started = now;
        let slot = &mut self.written[(generation % 2) as usize];
        *slot = (*slot).max(chunks);
        self.writing = Some(Writing {
            snapshot,
            acked: vec![false; chunks as usize],
            left: chunks,
        });
        snapshot
    }

    /// The generation the next compaction takes: in the slot the named snapshot does not use
    /// (after an abandoned one, a number is skipped).
    pub(crate) fn next_generation(&self) -> u64 {
        match self.current {
            Some(current) if current.generation % 2 == self.next_generation % 2 => {
                self.next_generation + 1
            }
            _ => self.next_generation,
        }
    }

    /// The generation of the compaction in flight.
    pub(crate) fn writing_generation(&self) -> Option<u64> {
        self.writing.as_ref().map(|w| w.snapshot.generation)
    }

    /// Chunk `index` of compaction `generation` was acknowledged. Returns true when that
    /// completed it: the record names it from now on.
    pub(crate) fn chunk_acked(&mut self, generation: u64, index: u32) -> bool {
        let Some(w) = self.writing.as_mut() else {
            return false;
        };
        if w.snapshot.generation != generation {
            return false;
        }
        if let Some(acked) = w.acked.get_mut(index as usize)
            && !*acked
        {
            *acked = true;
            w.left -= 1;
        }
        if w.left > 0 {
            return false;
        }
        self.current = Some(w.snapshot);
        self.writing = None;
        true
    }

    /// A chunk write of compaction `generation` failed: it is abandoned (the named snapshot
    /// stays), and the next is due after the interval.
    pub(crate) fn chunk_failed(&mut self, generation: u64) {
        if self.writing_generation() == Some(generation) {
            self.writing = None;
            self.retry = true;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::ReportState;
    use std::time::Duration;

    fn t(s: u64) -> Instant {
        Instant::from_nanos(s * 1_000_000_000)
    }

    #[test]
    fn chunks_split_by_size_and_decode_back() {
        let names: Vec<String> = (0..50_000).map(|i| format!("endpoint-{i:08}")).collect();
        let items: Vec<ReportItem<'_>> = names
            .iter()
            .enumerate()
            .map(|(i, e)| ReportItem {
                endpoint: e,
                seq: i as u64 + 1,
                state: ReportState::Healthy,
            })
            .collect();
        let chunks = encode_chunks("c", "n", 3, 7, &items).unwrap();
        assert!(chunks.len() > 1, "{} chunks", chunks.len());
        let mut back = 0;
        for (i, bytes) in chunks.iter().enumerate() {
            let Ok(Message::Chunk(c)) = codec::decode(bytes) else {
                panic!("chunk {i} does not decode");
            };
            assert!(
                c.items_bytes as usize <= CHUNK_TARGET_BYTES,
                "{}",
                c.items_bytes
            );
            // Names that repeat much of each other pack well.
            assert!(bytes.len() * 3 < c.items_bytes as usize, "{}", bytes.len());
            assert_eq!(
                (c.index, c.chunks, c.generation),
                (i as u32, chunks.len() as u32, 7)
            );
            let mut buf = Vec::new();
            let unpacked = codec::unpack_chunk_items(&c, &mut buf).unwrap();
            assert_eq!(unpacked, items[back..back + unpacked.len()]);
            back += unpacked.len();
        }
        assert_eq!(back, items.len());
        // No reports: one empty chunk (the snapshot of a node that withdrew everything).
        assert_eq!(encode_chunks("c", "n", 3, 7, &[]).unwrap().len(), 1);
    }

    #[test]
    fn due_only_after_the_interval_and_enough_changes() {
        let interval = Duration::from_secs(30);
        let mut c = Compaction::new(t(0));
        for _ in 0..5 {
            c.changed();
        }
        assert!(!c.due(t(10), interval, 10), "before the interval");
        assert!(c.due(t(30), interval, 10));
        assert!(!c.due(t(30), interval, 11), "5 changes of 11 reports");
        let s = c.begin(t(30), 1, 5, 2);
        assert!(!c.due(t(100), interval, 1), "one in flight");
        assert!(!c.chunk_acked(s.generation, 1));
        assert!(!c.chunk_acked(s.generation, 1), "an ack counted once");
        assert_eq!(c.current(), None, "named only when whole");
        assert!(c.chunk_acked(s.generation, 0));
        assert_eq!(c.current(), Some(s));
        c.changed();
        assert!(!c.due(t(100), interval, 10), "1 change of 10");
    }

    #[test]
    fn a_failed_chunk_abandons_the_compaction_and_keeps_the_named_one() {
        let interval = Duration::from_secs(1);
        let mut c = Compaction::new(t(0));
        c.report_acked(41);
        c.changed();
        let first = c.begin(t(1), 1, 1, 1);
        assert_eq!(first.revision, 41);
        assert!(c.chunk_acked(first.generation, 0));
        c.changed();
        let second = c.begin(t(2), 1, 2, 1);
        assert_ne!(
            second.generation % 2,
            first.generation % 2,
            "the other slot"
        );
        c.chunk_failed(second.generation);
        assert_eq!(c.current(), Some(first));
        assert!(c.due(t(3), interval, 1), "retried after the interval");
        assert!(
            !c.chunk_acked(second.generation, 0),
            "a late ack of the abandoned one"
        );
        assert_eq!(c.current(), Some(first));
        let third = c.begin(t(3), 1, 2, 1);
        assert_ne!(
            third.generation % 2,
            first.generation % 2,
            "never the named one's slot"
        );
    }
}
