//! The wire codec: postcard inside a small versioned envelope.
//!
//! ```text
//! +------+------+---------+------+------------------+
//! | 'G'  | 'S'  | version | kind | postcard body    |
//! +------+------+---------+------+------------------+
//! ```
//!
//! A change of format bumps [`FORMAT_VERSION`], so an old node drops a new message as
//! `unsupported-version` instead of misreading it. Decoding any byte string returns a message or
//! a [`DecodeError`]; it never panics, borrows strings from the input instead of copying them,
//! and refuses anything over [`MAX_PAYLOAD_BYTES`] or [`MAX_BATCH_ITEMS`].

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::names::{MAX_ENDPOINT_NAME_BYTES, MAX_ID_BYTES};

/// First two bytes of every message.
pub const MAGIC: [u8; 2] = *b"GS";
/// The envelope format this build writes and reads.
pub const FORMAT_VERSION: u8 = 1;
/// Largest message accepted or produced, in bytes (NATS's default `max_payload` is 1 MiB).
pub const MAX_PAYLOAD_BYTES: usize = 1024 * 1024;
/// Most reports in one batch.
pub const MAX_BATCH_ITEMS: usize = 4096;
/// Largest sequence number; larger ones are refused so that a sequence and a report state fit
/// in one `u64` in memory.
pub const MAX_SEQ: u64 = (1 << 62) - 1;
/// Longest region name, in bytes.
pub const MAX_REGION_BYTES: usize = 64;

const HEADER_BYTES: usize = 4;

/// A node's report on one endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "fuzzing", derive(arbitrary::Arbitrary))]
pub enum ReportState {
    /// The node sees the endpoint up.
    Healthy,
    /// The node sees the endpoint down.
    Unhealthy,
    /// The node withdrew its observation (a tombstone that keeps its sequence number).
    Withdrawn,
}

impl ReportState {
    /// The state for a local observation (`None` = withdrawn).
    pub const fn from_observation(healthy: Option<bool>) -> Self {
        match healthy {
            Some(true) => ReportState::Healthy,
            Some(false) => ReportState::Unhealthy,
            None => ReportState::Withdrawn,
        }
    }

    /// The observation this state carries (`None` = withdrawn).
    pub const fn observation(self) -> Option<bool> {
        match self {
            ReportState::Healthy => Some(true),
            ReportState::Unhealthy => Some(false),
            ReportState::Withdrawn => None,
        }
    }
}

/// A heartbeat: "I am alive; my latest health report has sequence `report_seq`".
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Heartbeat<'a> {
    /// Cluster id of the sender.
    pub cluster: &'a str,
    /// Node id of the sender.
    pub node: &'a str,
    /// Region of the sender (may be empty).
    pub region: &'a str,
    /// Changes every time the sender restarts; newer incarnations are larger.
    pub incarnation: u64,
    /// Heartbeat sequence within the incarnation, from 1.
    pub seq: u64,
    /// Sender's wall clock, ms since the Unix epoch.
    pub sent_unix_ms: u64,
    /// Sequence of the sender's latest health report change (0 = none yet).
    pub report_seq: u64,
    /// Every report change up to this sequence is stored in the KV (its writes were
    /// acknowledged), so a reader of the KV may trust a complete read up to here.
    pub kv_seq: u64,
}

/// One report inside a [`ReportBatch`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReportItem<'a> {
    /// The endpoint name.
    pub endpoint: &'a str,
    /// The sender's report sequence at which this report was made.
    pub seq: u64,
    /// What the sender sees.
    pub state: ReportState,
}

/// A batch of health report changes from one node.
///
/// The batch holds every change of the sender whose sequence lies in
/// `first_seq..=last_seq` and was not superseded by a later one, so a receiver that has seen
/// everything before `first_seq` has seen everything up to `last_seq` afterwards.
/// A batch with `first_seq` 0 claims no range: it repeats some reports (a repair after a
/// failed KV write) and says nothing about the others. Every item's sequence lies in
/// `1..=last_seq` either way.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReportBatch<'a> {
    /// Cluster id of the sender.
    pub cluster: &'a str,
    /// Node id of the sender.
    pub node: &'a str,
    /// The sender's incarnation.
    pub incarnation: u64,
    /// Sender's wall clock, ms since the Unix epoch.
    pub sent_unix_ms: u64,
    /// First report sequence covered (0 = no claim).
    pub first_seq: u64,
    /// Last report sequence covered.
    pub last_seq: u64,
    /// The reports.
    #[serde(borrow)]
    pub items: Vec<ReportItem<'a>>,
}

/// A node's membership record, the value under its key in the members bucket.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberRecord<'a> {
    /// Cluster id.
    pub cluster: &'a str,
    /// Node id.
    pub node: &'a str,
    /// Region (may be empty).
    pub region: &'a str,
    /// Incarnation of the node when it wrote the record.
    pub incarnation: u64,
    /// Sequence of the heartbeat this record accompanies.
    pub hb_seq: u64,
    /// Writer's wall clock, ms since the Unix epoch.
    pub sent_unix_ms: u64,
    /// Sequence of the node's latest health report change.
    pub report_seq: u64,
    /// Every report change up to this sequence is stored in the KV.
    pub kv_seq: u64,
    /// The node's compacted snapshot of its reports, if it has written one (kind 6 on the
    /// wire; a record without one keeps kind 3, which every build reads). Never in a
    /// [`Message::Leave`].
    #[serde(skip)]
    pub snapshot: Option<SnapshotRef>,
}

/// Names a node's compacted snapshot of its own reports: `chunks` values of
/// [`ReportChunk`] under the keys [`Names::chunk_key`](crate::Names::chunk_key)`(node, gen, i)`
/// in its health bucket, holding every report of incarnation `incarnation` as of report
/// sequence `seq`. Every report key the node wrote after them has a KV revision above
/// `revision`, so a reader that has the chunks needs only the report keys written after
/// `revision`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct SnapshotRef {
    /// The incarnation whose reports the chunks hold.
    pub incarnation: u64,
    /// The compaction's number (from 1), stored in every chunk.
    pub generation: u64,
    /// How many chunks, at most [`MAX_SNAPSHOT_CHUNKS`].
    pub chunks: u32,
    /// The highest report sequence in the chunks.
    pub seq: u64,
    /// The highest KV revision of the node's report writes acknowledged before the
    /// compaction began.
    pub revision: u64,
}

/// One piece of a node's compacted snapshot ([`SnapshotRef`]): `reports` reports, each the
/// node's newest of its endpoint as of the compaction, packed ([`pack_chunk_items`]: a postcard
/// list of [`ReportItem`], LZ4-compressed, as endpoint names repeat much of each other) and
/// read with [`unpack_chunk_items`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReportChunk<'a> {
    /// Cluster id.
    pub cluster: &'a str,
    /// Node id.
    pub node: &'a str,
    /// The incarnation whose reports these are.
    pub incarnation: u64,
    /// The compaction's number ([`SnapshotRef::generation`]).
    pub generation: u64,
    /// This chunk's place, from 0.
    pub index: u32,
    /// How many chunks the compaction wrote.
    pub chunks: u32,
    /// How many reports `items` holds, at most [`MAX_CHUNK_ITEMS`].
    pub reports: u32,
    /// The size of `items` unpacked, at most [`MAX_CHUNK_ITEMS_BYTES`].
    pub items_bytes: u32,
    /// The reports, packed.
    #[serde(borrow)]
    pub items: &'a [u8],
}

/// Most chunks in one compacted snapshot (at [`CHUNK_TARGET_BYTES`] each: 512 MiB unpacked).
pub const MAX_SNAPSHOT_CHUNKS: u32 = 1024;
/// Most reports in one chunk.
pub const MAX_CHUNK_ITEMS: usize = 1 << 16;
/// A chunk is closed once its reports reach this many bytes (unpacked).
pub const CHUNK_TARGET_BYTES: usize = 512 * 1024;
/// Most bytes of a chunk's reports unpacked.
pub const MAX_CHUNK_ITEMS_BYTES: usize = 1024 * 1024;

/// Packs `items` for a [`ReportChunk`]: (`reports`, `items_bytes`, `items`).
pub fn pack_chunk_items(items: &[ReportItem<'_>]) -> (u32, u32, Vec<u8>) {
    // Serializing into a Vec only fails on a custom Serialize impl error; ours are derived.
    let raw = postcard::to_allocvec(items).expect("postcard serialization into a Vec");
    let reports = u32::try_from(items.len()).unwrap_or(u32::MAX);
    let bytes = u32::try_from(raw.len()).unwrap_or(u32::MAX);
    (reports, bytes, lz4_flex::block::compress(&raw))
}

/// The reports of `chunk`, unpacked into `buf` (reused between chunks) and checked as those
/// of a batch are: exactly `reports` of them, valid names, sequences from 1.
pub fn unpack_chunk_items<'b>(
    chunk: &ReportChunk<'_>,
    buf: &'b mut Vec<u8>,
) -> Result<Vec<ReportItem<'b>>, DecodeError> {
    let size = chunk.items_bytes as usize;
    if size > MAX_CHUNK_ITEMS_BYTES {
        return Err(DecodeError::Invalid("chunk too large unpacked"));
    }
    buf.clear();
    buf.resize(size, 0);
    match lz4_flex::block::decompress_into(chunk.items, buf) {
        Ok(n) if n == size => {}
        _ => return Err(DecodeError::Malformed),
    }
    let (items, rest): (Vec<ReportItem<'b>>, _) =
        postcard::take_from_bytes(buf.as_slice()).map_err(|_| DecodeError::Malformed)?;
    if !rest.is_empty() || items.len() != chunk.reports as usize {
        return Err(DecodeError::Malformed);
    }
    for item in &items {
        check_str(
            item.endpoint,
            MAX_ENDPOINT_NAME_BYTES,
            false,
            "bad endpoint name",
        )?;
        if item.seq == 0 {
            return Err(DecodeError::Invalid("report sequence 0"));
        }
        check_seq(item.seq)?;
    }
    Ok(items)
}

/// A node's report on one endpoint, the value under `<node>.<endpoint>` in the health bucket.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReportRecord<'a> {
    /// Cluster id.
    pub cluster: &'a str,
    /// Node id.
    pub node: &'a str,
    /// Endpoint name.
    pub endpoint: &'a str,
    /// Incarnation of the node when it made the report.
    pub incarnation: u64,
    /// Report sequence.
    pub seq: u64,
    /// Writer's wall clock, ms since the Unix epoch.
    pub sent_unix_ms: u64,
    /// What the node sees.
    pub state: ReportState,
}

/// Every message the core reads or writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message<'a> {
    /// A heartbeat (subject `hb`).
    Heartbeat(Heartbeat<'a>),
    /// A batch of report changes (subject `health`).
    Reports(ReportBatch<'a>),
    /// A membership record (members bucket).
    Member(MemberRecord<'a>),
    /// A single report (health bucket).
    Report(ReportRecord<'a>),
    /// The node leaves the cluster for good (this incarnation): published on its heartbeat
    /// subject and written as its membership record, so peers drop it at once and a later
    /// snapshot knows it left.
    Leave(MemberRecord<'a>),
    /// A piece of a node's compacted snapshot (health bucket).
    Chunk(ReportChunk<'a>),
}

impl Message<'_> {
    fn kind(&self) -> u8 {
        match self {
            Message::Heartbeat(_) => 1,
            Message::Reports(_) => 2,
            Message::Member(m) if m.snapshot.is_some() => 6,
            Message::Member(_) => 3,
            Message::Report(_) => 4,
            Message::Leave(_) => 5,
            Message::Chunk(_) => 7,
        }
    }

    /// The cluster the message claims to come from.
    pub fn cluster(&self) -> &str {
        match self {
            Message::Heartbeat(m) => m.cluster,
            Message::Reports(m) => m.cluster,
            Message::Member(m) => m.cluster,
            Message::Report(m) => m.cluster,
            Message::Leave(m) => m.cluster,
            Message::Chunk(m) => m.cluster,
        }
    }

    /// The node the message claims to come from.
    pub fn node(&self) -> &str {
        match self {
            Message::Heartbeat(m) => m.node,
            Message::Reports(m) => m.node,
            Message::Member(m) => m.node,
            Message::Report(m) => m.node,
            Message::Leave(m) => m.node,
            Message::Chunk(m) => m.node,
        }
    }
}

/// Why bytes did not decode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DecodeError {
    /// Larger than [`MAX_PAYLOAD_BYTES`].
    TooLarge,
    /// Shorter than the envelope or without the magic bytes: not ours.
    BadMagic,
    /// Written by a format version this build does not read.
    UnsupportedVersion(u8),
    /// An unknown message kind.
    UnknownKind(u8),
    /// The body is not valid postcard for the kind, or has trailing bytes.
    Malformed,
    /// The body decoded but breaks a bound or a rule (the reason says which).
    Invalid(&'static str),
}

impl std::fmt::Display for DecodeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DecodeError::TooLarge => write!(f, "message larger than {MAX_PAYLOAD_BYTES} bytes"),
            DecodeError::BadMagic => f.write_str("not a gslb-state message (bad magic)"),
            DecodeError::UnsupportedVersion(v) => {
                write!(
                    f,
                    "unsupported format version {v} (this build reads {FORMAT_VERSION})"
                )
            }
            DecodeError::UnknownKind(k) => write!(f, "unknown message kind {k}"),
            DecodeError::Malformed => f.write_str("malformed message body"),
            DecodeError::Invalid(why) => write!(f, "invalid message: {why}"),
        }
    }
}

impl std::error::Error for DecodeError {}

/// Encodes a message into its envelope.
///
/// Panics only on a broken internal invariant: the core never builds a message over
/// [`MAX_PAYLOAD_BYTES`] (batches are split before that).
pub fn encode(msg: &Message<'_>) -> Bytes {
    let mut out = Vec::with_capacity(64);
    out.extend_from_slice(&MAGIC);
    out.push(FORMAT_VERSION);
    out.push(msg.kind());
    // Serializing into a Vec only fails on a custom Serialize impl error; ours are derived.
    let out = match msg {
        Message::Heartbeat(m) => postcard::to_extend(m, out),
        Message::Reports(m) => postcard::to_extend(m, out),
        Message::Member(m) => match &m.snapshot {
            Some(snapshot) => postcard::to_extend(&(m, snapshot), out),
            None => postcard::to_extend(m, out),
        },
        Message::Report(m) => postcard::to_extend(m, out),
        Message::Leave(m) => postcard::to_extend(m, out),
        Message::Chunk(m) => postcard::to_extend(m, out),
    }
    .expect("postcard serialization into a Vec cannot fail for derived types");
    assert!(
        out.len() <= MAX_PAYLOAD_BYTES,
        "encoded message of {} bytes exceeds MAX_PAYLOAD_BYTES",
        out.len()
    );
    Bytes::from(out)
}

/// Decodes a message, borrowing its strings from `bytes`.
pub fn decode(bytes: &[u8]) -> Result<Message<'_>, DecodeError> {
    if bytes.len() > MAX_PAYLOAD_BYTES {
        return Err(DecodeError::TooLarge);
    }
    if bytes.len() < HEADER_BYTES || bytes[..2] != MAGIC {
        return Err(DecodeError::BadMagic);
    }
    if bytes[2] != FORMAT_VERSION {
        return Err(DecodeError::UnsupportedVersion(bytes[2]));
    }
    let body = &bytes[HEADER_BYTES..];
    let msg = match bytes[3] {
        1 => Message::Heartbeat(body_of(body)?),
        2 => Message::Reports(body_of(body)?),
        3 => Message::Member(body_of(body)?),
        4 => Message::Report(body_of(body)?),
        5 => Message::Leave(body_of(body)?),
        6 => {
            let (mut record, snapshot): (MemberRecord<'_>, SnapshotRef) = body_of(body)?;
            record.snapshot = Some(snapshot);
            Message::Member(record)
        }
        7 => Message::Chunk(body_of(body)?),
        k => return Err(DecodeError::UnknownKind(k)),
    };
    validate(&msg)?;
    Ok(msg)
}

fn body_of<'a, T: Deserialize<'a>>(body: &'a [u8]) -> Result<T, DecodeError> {
    let (value, rest) = postcard::take_from_bytes(body).map_err(|_| DecodeError::Malformed)?;
    if !rest.is_empty() {
        return Err(DecodeError::Malformed);
    }
    Ok(value)
}

fn check_str(
    s: &str,
    max_bytes: usize,
    empty_ok: bool,
    what: &'static str,
) -> Result<(), DecodeError> {
    if (s.is_empty() && !empty_ok) || s.len() > max_bytes {
        return Err(DecodeError::Invalid(what));
    }
    Ok(())
}

fn check_seq(seq: u64) -> Result<(), DecodeError> {
    if seq > MAX_SEQ {
        return Err(DecodeError::Invalid("sequence out of range"));
    }
    Ok(())
}

fn validate(msg: &Message<'_>) -> Result<(), DecodeError> {
    check_str(msg.cluster(), MAX_ID_BYTES, false, "bad cluster id")?;
    check_str(msg.node(), MAX_ID_BYTES, false, "bad node id")?;
    match msg {
        Message::Heartbeat(m) => {
            check_str(m.region, MAX_REGION_BYTES, true, "bad region")?;
            check_seq(m.seq)?;
            check_seq(m.report_seq)?;
            check_seq(m.kv_seq)?;
        }
        Message::Reports(m) => {
            if m.items.len() > MAX_BATCH_ITEMS {
                return Err(DecodeError::Invalid("too many reports in batch"));
            }
            if m.first_seq > m.last_seq {
                return Err(DecodeError::Invalid("batch range reversed"));
            }
            check_seq(m.last_seq)?;
            for item in &m.items {
                check_str(
                    item.endpoint,
                    MAX_ENDPOINT_NAME_BYTES,
                    false,
                    "bad endpoint name",
                )?;
                if item.seq > m.last_seq || item.seq == 0 {
                    return Err(DecodeError::Invalid("report sequence outside batch range"));
                }
            }
        }
        Message::Member(m) | Message::Leave(m) => {
            check_str(m.region, MAX_REGION_BYTES, true, "bad region")?;
            check_seq(m.hb_seq)?;
            check_seq(m.report_seq)?;
            check_seq(m.kv_seq)?;
            if let Some(s) = &m.snapshot {
                check_seq(s.seq)?;
                if s.chunks == 0 || s.chunks > MAX_SNAPSHOT_CHUNKS || s.generation == 0 {
                    return Err(DecodeError::Invalid("bad snapshot reference"));
                }
            }
        }
        Message::Chunk(m) => {
            if m.reports as usize > MAX_CHUNK_ITEMS {
                return Err(DecodeError::Invalid("too many reports in chunk"));
            }
            if m.items_bytes as usize > MAX_CHUNK_ITEMS_BYTES {
                return Err(DecodeError::Invalid("chunk too large unpacked"));
            }
            if m.chunks == 0 || m.chunks > MAX_SNAPSHOT_CHUNKS || m.index >= m.chunks {
                return Err(DecodeError::Invalid("chunk index out of range"));
            }
            if m.generation == 0 {
                return Err(DecodeError::Invalid("chunk generation 0"));
            }
        }
        Message::Report(m) => {
            check_str(
                m.endpoint,
                MAX_ENDPOINT_NAME_BYTES,
                false,
                "bad endpoint name",
            )?;
            if m.seq == 0 {
                return Err(DecodeError::Invalid("report sequence 0"));
            }
            check_seq(m.seq)?;
        }
    }
    Ok(())
}

/// Encoded size of a batch item, for splitting batches under [`MAX_PAYLOAD_BYTES`]: an upper
/// bound (varint length prefix, name, varint seq, state).
pub(crate) const fn item_size_bound(endpoint_len: usize) -> usize {
    3 + endpoint_len + 10 + 1
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn hb() -> Message<'static> {
        Message::Heartbeat(Heartbeat {
            cluster: "c",
            node: "n1",
            region: "eu",
            incarnation: 7,
            seq: 3,
            sent_unix_ms: 1_700_000_000_000,
            report_seq: 9,
            kv_seq: 8,
        })
    }

    #[test]
    fn round_trip_every_kind() {
        let batch = Message::Reports(ReportBatch {
            cluster: "c",
            node: "n1",
            incarnation: 7,
            sent_unix_ms: 5,
            first_seq: 1,
            last_seq: 3,
            items: vec![
                ReportItem {
                    endpoint: "web",
                    seq: 1,
                    state: ReportState::Healthy,
                },
                ReportItem {
                    endpoint: "db ☃",
                    seq: 3,
                    state: ReportState::Withdrawn,
                },
            ],
        });
        let member = Message::Member(MemberRecord {
            cluster: "c",
            node: "n1",
            region: "",
            incarnation: 1,
            hb_seq: 2,
            sent_unix_ms: 3,
            report_seq: 4,
            kv_seq: 4,
            snapshot: None,
        });
        let report = Message::Report(ReportRecord {
            cluster: "c",
            node: "n1",
            endpoint: "web",
            incarnation: 1,
            seq: 2,
            sent_unix_ms: 3,
            state: ReportState::Unhealthy,
        });
        let leave = match &member {
            Message::Member(r) => Message::Leave(r.clone()),
            _ => unreachable!(),
        };
        for m in [hb(), batch, member, report, leave] {
            let bytes = encode(&m);
            assert_eq!(decode(&bytes).unwrap(), m);
        }
    }

    fn snapshot_ref() -> SnapshotRef {
        SnapshotRef {
            incarnation: 7,
            generation: 3,
            chunks: 2,
            seq: 41,
            revision: 1_000_000,
        }
    }

    fn member(snapshot: Option<SnapshotRef>) -> MemberRecord<'static> {
        MemberRecord {
            cluster: "c",
            node: "n1",
            region: "eu",
            incarnation: 7,
            hb_seq: 2,
            sent_unix_ms: 3,
            report_seq: 41,
            kv_seq: 40,
            snapshot,
        }
    }

    fn chunk(items: Vec<ReportItem<'static>>) -> ReportChunk<'static> {
        let (reports, items_bytes, packed) = pack_chunk_items(&items);
        ReportChunk {
            cluster: "c",
            node: "n1",
            incarnation: 7,
            generation: 3,
            index: 1,
            chunks: 2,
            reports,
            items_bytes,
            // A test's: kept for its whole run.
            items: Box::leak(packed.into_boxed_slice()),
        }
    }

    #[test]
    fn a_record_naming_a_snapshot_is_kind_6_and_round_trips() {
        let named = Message::Member(member(Some(snapshot_ref())));
        let bytes = encode(&named);
        assert_eq!(bytes[3], 6);
        assert_eq!(decode(&bytes).unwrap(), named);
        // Without one, it stays kind 3, byte for byte what earlier builds wrote and read.
        let plain = encode(&Message::Member(member(None)));
        assert_eq!(plain[3], 3);
        assert_eq!(decode(&plain).unwrap(), Message::Member(member(None)));
        assert!(plain.len() < bytes.len());
        // Kind 6 is the kind-3 body followed by the reference.
        assert_eq!(bytes[HEADER_BYTES..plain.len()], plain[HEADER_BYTES..]);
        // Cut anywhere in the reference, or with a byte more, it is malformed.
        for len in plain.len()..bytes.len() {
            assert_eq!(decode(&bytes[..len]), Err(DecodeError::Malformed), "{len}");
        }
        let mut longer = bytes.to_vec();
        longer.push(0);
        assert_eq!(decode(&longer), Err(DecodeError::Malformed));
        // A kind-3 body under kind 6 lacks the reference.
        let mut relabelled = plain.to_vec();
        relabelled[3] = 6;
        assert_eq!(decode(&relabelled), Err(DecodeError::Malformed));
    }

    #[test]
    fn a_leave_never_carries_a_snapshot() {
        let bytes = encode(&Message::Leave(member(Some(snapshot_ref()))));
        assert_eq!(bytes[3], 5);
        assert_eq!(decode(&bytes).unwrap(), Message::Leave(member(None)));
    }

    #[test]
    fn a_chunk_is_kind_7_and_round_trips() {
        let c = Message::Chunk(chunk(vec![
            ReportItem {
                endpoint: "web",
                seq: 40,
                state: ReportState::Healthy,
            },
            ReportItem {
                endpoint: "db ☃",
                seq: MAX_SEQ,
                state: ReportState::Withdrawn,
            },
        ]));
        let bytes = encode(&c);
        assert_eq!(bytes[3], 7);
        assert_eq!(decode(&bytes).unwrap(), c);
        assert_eq!((c.cluster(), c.node()), ("c", "n1"));
        let Message::Chunk(decoded) = decode(&bytes).unwrap() else {
            unreachable!()
        };
        let mut buf = Vec::new();
        let items = unpack_chunk_items(&decoded, &mut buf).unwrap();
        assert_eq!(items.len(), 2);
        assert_eq!((items[1].endpoint, items[1].seq), ("db ☃", MAX_SEQ));
        // A snapshot of no reports is one empty chunk.
        let empty = Message::Chunk(chunk(Vec::new()));
        assert_eq!(decode(&encode(&empty)).unwrap(), empty);
    }

    #[test]
    fn snapshot_references_and_chunks_keep_their_bounds() {
        let invalid = |m: Message<'_>| match decode(&encode(&m)) {
            Err(DecodeError::Invalid(why)) => why,
            other => panic!("{m:?} decoded to {other:?}"),
        };
        for bad in [
            SnapshotRef {
                chunks: 0,
                ..snapshot_ref()
            },
            SnapshotRef {
                chunks: MAX_SNAPSHOT_CHUNKS + 1,
                ..snapshot_ref()
            },
            SnapshotRef {
                generation: 0,
                ..snapshot_ref()
            },
        ] {
            assert_eq!(
                invalid(Message::Member(member(Some(bad)))),
                "bad snapshot reference"
            );
        }
        let bad_seq = SnapshotRef {
            seq: MAX_SEQ + 1,
            ..snapshot_ref()
        };
        assert_eq!(
            invalid(Message::Member(member(Some(bad_seq)))),
            "sequence out of range"
        );
        // The largest of each is fine; the revision may be anything.
        let largest = SnapshotRef {
            chunks: MAX_SNAPSHOT_CHUNKS,
            seq: MAX_SEQ,
            revision: u64::MAX,
            generation: u64::MAX,
            incarnation: u64::MAX,
        };
        assert!(decode(&encode(&Message::Member(member(Some(largest))))).is_ok());

        let item = |endpoint, seq| ReportItem {
            endpoint,
            seq,
            state: ReportState::Healthy,
        };
        let with = |f: &dyn Fn(&mut ReportChunk<'static>)| {
            let mut c = chunk(vec![item("web", 1)]);
            f(&mut c);
            Message::Chunk(c)
        };
        assert_eq!(
            invalid(with(&|c| c.index = c.chunks)),
            "chunk index out of range"
        );
        assert_eq!(
            invalid(with(&|c| {
                c.chunks = 0;
                c.index = 0;
            })),
            "chunk index out of range"
        );
        assert_eq!(
            invalid(with(&|c| {
                c.chunks = MAX_SNAPSHOT_CHUNKS + 1;
                c.index = 0;
            })),
            "chunk index out of range"
        );
        assert_eq!(invalid(with(&|c| c.generation = 0)), "chunk generation 0");
        assert_eq!(
            invalid(with(&|c| c.items_bytes = MAX_CHUNK_ITEMS_BYTES as u32 + 1)),
            "chunk too large unpacked"
        );
        assert_eq!(
            invalid(with(&|c| c.reports = MAX_CHUNK_ITEMS as u32 + 1)),
            "too many reports in chunk"
        );
        // The packed reports are checked when unpacked, as a batch's are when decoded.
        let unpacked = |items: Vec<ReportItem<'static>>| {
            unpack_chunk_items(&chunk(items), &mut Vec::new()).map(|i| i.len())
        };
        let refused = |items| match unpacked(items) {
            Err(DecodeError::Invalid(why)) => why,
            other => panic!("unpacked to {other:?}"),
        };
        assert_eq!(refused(vec![item("web", 0)]), "report sequence 0");
        assert_eq!(
            refused(vec![item("web", MAX_SEQ + 1)]),
            "sequence out of range"
        );
        assert_eq!(refused(vec![item("", 1)]), "bad endpoint name");
        let long = "x".repeat(MAX_ENDPOINT_NAME_BYTES + 1);
        let long: &'static str = Box::leak(long.into_boxed_str());
        assert_eq!(refused(vec![item(long, 1)]), "bad endpoint name");
        // Packed bytes that are not what they claim: malformed, not a panic.
        let good = chunk(vec![item("web", 1), item("api", 2)]);
        for c in [
            ReportChunk {
                reports: 1,
                ..good.clone()
            },
            ReportChunk {
                items_bytes: good.items_bytes + 1,
                ..good.clone()
            },
            ReportChunk {
                items_bytes: good.items_bytes - 1,
                ..good.clone()
            },
            ReportChunk {
                items: &good.items[..good.items.len() - 1],
                ..good.clone()
            },
            ReportChunk {
                items: b"\xff\x00garbage",
                ..good.clone()
            },
        ] {
            assert_eq!(
                unpack_chunk_items(&c, &mut Vec::new()),
                Err(DecodeError::Malformed)
            );
        }
        assert_eq!(unpacked(Vec::new()), Ok(0));
        assert_eq!(invalid(with(&|c| c.node = "")), "bad node id");
        // The last index of the largest snapshot is fine.
        assert!(
            decode(&encode(&with(&|c| {
                c.chunks = MAX_SNAPSHOT_CHUNKS;
                c.index = MAX_SNAPSHOT_CHUNKS - 1;
            })))
            .is_ok()
        );
    }

    #[test]
    fn envelope_errors_are_typed() {
        let bytes = encode(&hb());
        assert_eq!(decode(b""), Err(DecodeError::BadMagic));
        assert_eq!(decode(b"{\"json\":1}"), Err(DecodeError::BadMagic));
        let mut v = bytes.to_vec();
        v[2] = 2;
        assert_eq!(decode(&v), Err(DecodeError::UnsupportedVersion(2)));
        let mut v = bytes.to_vec();
        v[3] = 99;
        assert_eq!(decode(&v), Err(DecodeError::UnknownKind(99)));
        let mut v = bytes.to_vec();
        v.push(0);
        assert_eq!(decode(&v), Err(DecodeError::Malformed), "trailing byte");
        assert_eq!(
            decode(&bytes[..bytes.len() - 1]),
            Err(DecodeError::Malformed)
        );
        assert_eq!(
            decode(&vec![0; MAX_PAYLOAD_BYTES + 1]),
            Err(DecodeError::TooLarge)
        );
    }

    #[test]
    fn bounds_are_enforced() {
        let long = "x".repeat(MAX_ENDPOINT_NAME_BYTES + 1);
        let m = Message::Report(ReportRecord {
            cluster: "c",
            node: "n",
            endpoint: &long,
            incarnation: 1,
            seq: 1,
            sent_unix_ms: 0,
            state: ReportState::Healthy,
        });
        assert_eq!(
            decode(&encode(&m)),
            Err(DecodeError::Invalid("bad endpoint name"))
        );
        let items: Vec<_> = (0..=MAX_BATCH_ITEMS)
            .map(|_| ReportItem {
                endpoint: "e",
                seq: 1,
                state: ReportState::Healthy,
            })
            .collect();
        let m = Message::Reports(ReportBatch {
            cluster: "c",
            node: "n",
            incarnation: 1,
            sent_unix_ms: 0,
            first_seq: 1,
            last_seq: 1,
            items,
        });
        assert_eq!(
            decode(&encode(&m)),
            Err(DecodeError::Invalid("too many reports in batch"))
        );
    }

    #[test]
    fn item_size_bound_holds() {
        let name = "é".repeat(127);
        let m = ReportItem {
            endpoint: &name,
            seq: MAX_SEQ,
            state: ReportState::Withdrawn,
        };
        let len = postcard::to_allocvec(&m).unwrap().len();
        assert!(len <= item_size_bound(name.len()), "{len}");
    }

    proptest! {
        #[test]
        fn decode_never_panics_and_reencodes(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            if let Ok(m) = decode(&bytes) {
                let again = encode(&m);
                prop_assert_eq!(decode(&again).unwrap(), m);
            }
        }

        #[test]
        fn mutated_messages_never_panic(flip in 0usize..64, bit in 0u8..8) {
            let mut v = encode(&hb()).to_vec();
            let i = flip % v.len();
            v[i] ^= 1 << bit;
            let _ = decode(&v);
        }

        #[test]
        fn mutated_records_and_chunks_never_panic_and_reencode(
            which in 0usize..2,
            flip in 0usize..128,
            bit in 0u8..8,
        ) {
            let msg = if which == 0 {
                Message::Member(member(Some(snapshot_ref())))
            } else {
                Message::Chunk(chunk(vec![ReportItem {
                    endpoint: "web",
                    seq: 9,
                    state: ReportState::Unhealthy,
                }]))
            };
            let mut v = encode(&msg).to_vec();
            let i = flip % v.len();
            v[i] ^= 1 << bit;
            if let Ok(m) = decode(&v) {
                let again = encode(&m);
                prop_assert_eq!(decode(&again).unwrap(), m);
                prop_assert!(again.len() <= v.len());
            }
        }
    }
}
