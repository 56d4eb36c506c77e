//! The KV side: bucket creation, prefix reads (snapshot, re-sync, anti-entropy) and a writer
//! that coalesces writes per key and pipelines them.
//!
//! Nothing here is on the liveness path: heartbeats and health changes travel on core subjects.
//! The KV is read at start-up, when a heartbeat shows a gap, and periodically for anti-entropy.

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::consumer::push;
use async_nats::jetstream::consumer::{DeliverPolicy, ReplayPolicy};
use async_nats::jetstream::{self, kv};
use bytes::Bytes;
use futures::stream::FuturesUnordered;
use futures::{FutureExt, StreamExt};
use gslb_state_core::Bucket;
use gslb_state_core::names::RECORD_MAX_AGE;
use indexmap::IndexMap;
use tokio::sync::{mpsc, watch};

use crate::metrics::Metrics;

/// Largest value accepted in our buckets.
const MAX_VALUE_BYTES: i32 = 1024 * 1024;
/// KV writes in flight at once.
const MAX_WRITES_IN_FLIGHT: usize = 256;
/// A prefix read gives up when no entry arrives for this long.
const READ_IDLE_TIMEOUT: Duration = Duration::from_secs(5);
/// Most entries handed on at once by a prefix read. Entries travel in batches so that a
/// snapshot of millions costs a channel hop and a clock read per batch, not per entry.
pub(crate) const READ_BATCH: usize = 1024;
/// A prefix read that lasts longer than this logs its progress, and then again this often.
const PROGRESS_EVERY: Duration = Duration::from_secs(3);

/// Opens bucket `name`, creating it when absent: three replicas when the cluster allows, one
/// otherwise; history 1 (only the newest value of a key matters); records older than
/// [`RECORD_MAX_AGE`] age out (live nodes rewrite theirs well before that, so only the records
/// of nodes gone for good do).
///
/// A region's bucket (`region` not empty) is placed in the NATS cluster named like the region
/// (`placement.cluster`), so that the region keeps writing it while cut off from the others.
/// Where no cluster has that name (one cluster serving every region, or a single server), the
/// server places it, and a warning says so.
pub(crate) async fn ensure_bucket(
    js: &jetstream::Context,
    name: &str,
    region: &str,
) -> Result<kv::Store, String> {
    if let Ok(store) = js.get_key_value(name).await {
        return Ok(store);
    }
    let mut tries = Vec::new();
    if !region.is_empty() {
        let placed = jetstream::stream::Placement {
            cluster: Some(region.to_owned()),
            ..Default::default()
        };
        tries.extend([(Some(placed.clone()), 3), (Some(placed), 1)]);
    }
    tries.extend([(None, 3), (None, 1)]);
    let mut last_error = String::new();
    for (placement, replicas) in tries {
        let config = kv::Config {
            bucket: name.to_owned(),
            description: "gslb-state".to_owned(),
            history: 1,
            max_value_size: MAX_VALUE_BYTES,
            max_age: RECORD_MAX_AGE,
            num_replicas: replicas,
            placement: placement.clone(),
            ..Default::default()
        };
        match js.create_key_value(config).await {
            Ok(store) => {
                if placement.is_none() && !region.is_empty() {
                    tracing::warn!(
                        bucket = name,
                        region,
                        error = %last_error,
                        "no NATS cluster named like the region takes the bucket: the server placed it"
                    );
                }
                return Ok(store);
            }
            Err(e) => last_error = e.to_string(),
        }
        // Another node may have created it meanwhile.
        if let Ok(store) = js.get_key_value(name).await {
            return Ok(store);
        }
    }
    Err(last_error)
}

/// How long opening another region's buckets may take: a region cut off (or blackholed)
/// costs a start-up no more than this.
pub(crate) const FOREIGN_OPEN_TIMEOUT: Duration = Duration::from_secs(2);

/// Other regions' buckets, opened (never created: each region creates its own) when first
/// read, and kept open.
#[derive(Clone, Debug, Default)]
pub(crate) struct ForeignStores {
    open: Arc<std::sync::Mutex<std::collections::HashMap<String, Stores>>>,
}

impl ForeignStores {
    /// The buckets of `region`, opened within [`FOREIGN_OPEN_TIMEOUT`].
    pub(crate) async fn get(
        &self,
        js: &jetstream::Context,
        names: &gslb_state_core::Names,
        region: &str,
    ) -> Result<Stores, String> {
        if let Some(s) = self.lock().get(region) {
            return Ok(s.clone());
        }
        let open = |bucket: Bucket| {
            let name = names.region_bucket(bucket, region);
            async move {
                match tokio::time::timeout(FOREIGN_OPEN_TIMEOUT, js.get_key_value(&name)).await {
                    Ok(Ok(store)) => Ok(store),
                    Ok(Err(e)) => Err(format!("opening {name}: {e}")),
                    Err(_) => Err(format!(
                        "opening {name}: no answer in {FOREIGN_OPEN_TIMEOUT:?}"
                    )),
                }
            }
        };
        let (members, health) = futures::join!(open(Bucket::Members), open(Bucket::Health));
        let stores = Stores {
            members: members?,
            health: health?,
        };
        self.lock().insert(region.to_owned(), stores.clone());
        Ok(stores)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, std::collections::HashMap<String, Stores>> {
        self.open.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// An entry read from a bucket.
#[derive(Debug)]
pub(crate) struct ReadEntry {
    pub(crate) key: String,
    pub(crate) value: Bytes,
}

/// What a KV read needs: the connection and the JetStream API prefix it uses
/// (`$JS.<domain>.API` or `$JS.API`).
#[derive(Clone, Debug)]
pub(crate) struct KvReader {
    pub(crate) client: async_nats::Client,
    pub(crate) api: String,
}

/// Why a read stopped.
enum Left {
    /// The consumer could not be created (no JetStream meta leader: a cut region).
    NoConsumer(String),
    /// The read failed part-way.
    Failed(String),
}

/// Reads the newest value of every key of `store` matching `key_filter` (`>` for all), sending
/// them to `out` in batches of at most [`READ_BATCH`]. Deleted and purged keys are skipped.
/// Returns how many entries were read.
///
/// First by an ordered consumer (the fast way: 2,000,000 entries in seconds); when the consumer
/// cannot be created, which is the case inside a region cut off from the JetStream meta leader
/// (measured), by batched direct gets, which need no meta leader (slower: a page of 1,000 per
/// round trip).
pub(crate) async fn read_prefix(
    reader: &KvReader,
    store: &kv::Store,
    key_filter: &str,
    out: &mpsc::Sender<Vec<ReadEntry>>,
) -> Result<u64, String> {
    read_since(reader, store, key_filter, None, out).await
}

/// [`read_prefix`], of only the keys whose newest value was written at or after revision
/// `from_revision` (`None`: all). Our buckets keep one value per key (history 1), so the
/// stream from that revision on holds exactly those keys' newest values.
pub(crate) async fn read_since(
    reader: &KvReader,
    store: &kv::Store,
    key_filter: &str,
    from_revision: Option<u64>,
    out: &mpsc::Sender<Vec<ReadEntry>>,
) -> Result<u64, String> {
    // The keys written since a revision are few (a member's changes since its compaction):
    // batched direct gets need no consumer, and so no round through the meta leader.
    if from_revision.is_some_and(|from| from > 1) {
        return read_by_direct_get(reader, store, key_filter, from_revision, out).await;
    }
    match read_by_consumer(&reader.client, store, key_filter, from_revision, out).await {
        Ok(n) => Ok(n),
        Err(Left::Failed(e)) => Err(e),
        Err(Left::NoConsumer(e)) => {
            tracing::debug!(bucket = %store.name, error = %e, "no consumer: reading by direct gets");
            read_by_direct_get(reader, store, key_filter, from_revision, out).await
        }
    }
}

/// The newest values of `keys` (absent and deleted keys are skipped), by batched direct gets
/// (`multi_last`, [`MULTI_GET_KEYS`] keys a request, [`MULTI_GETS_IN_FLIGHT`] requests at
/// once; nats-server 2.11+, ADR-31), sent to `out` as they arrive. Returns how many were read.
pub(crate) async fn get_keys(
    reader: &KvReader,
    store: &kv::Store,
    keys: Vec<String>,
    out: &mpsc::Sender<Vec<ReadEntry>>,
) -> Result<u64, String> {
    let groups: Vec<&[String]> = keys.chunks(MULTI_GET_KEYS).collect();
    let mut read = 0;
    for wave in groups.chunks(MULTI_GETS_IN_FLIGHT) {
        let mut gets = Vec::with_capacity(wave.len());
        for group in wave {
            gets.push(multi_get(reader, store, group, out));
        }
        for result in futures::future::join_all(gets).await {
            read += result?;
        }
    }
    Ok(read)
}

/// Keys asked for in one batched direct get of [`get_keys`] (chunks of up to 256 KiB: about
/// 8 MiB a reply, under the server's default limit of a reply's bytes).
const MULTI_GET_KEYS: usize = 32;
/// Batched direct gets of [`get_keys`] in flight at once.
const MULTI_GETS_IN_FLIGHT: usize = 4;

/// One batched direct get of the newest values of `keys`.
async fn multi_get(
    reader: &KvReader,
    store: &kv::Store,
    keys: &[String],
    out: &mpsc::Sender<Vec<ReadEntry>>,
) -> Result<u64, String> {
    let (client, api) = (&reader.client, &reader.api);
    let subject_prefix = format!("$KV.{}.", store.name);
    let subjects: Vec<String> = keys
        .iter()
        .map(|k| format!("{subject_prefix}{k}"))
        .collect();
    let request = serde_json::json!({ "multi_last": subjects, "batch": keys.len() }).to_string();
    let inbox = client.new_inbox();
    let mut replies = client
        .subscribe(inbox.clone())
        .await
        .map_err(|e| format!("reading {}: {e}", store.stream_name))?;
    client
        .publish_with_reply(
            format!("{api}.DIRECT.GET.{}", store.stream_name),
            inbox,
            request.into(),
        )
        .await
        .map_err(|e| format!("reading {}: {e}", store.stream_name))?;
    let mut read = 0;
    loop {
        let message = next_reply(&mut replies, store).await?;
        let header = |name: &str| header_of(&message, name);
        match message.status.map(|s| s.as_u16()) {
            // The end of the batch, or none of the keys exists.
            Some(204) | Some(404) => return Ok(read),
            Some(code) => {
                return Err(format!(
                    "reading {}: {code} {}",
                    store.stream_name,
                    message.description.as_deref().unwrap_or("")
                ));
            }
            None => {}
        }
        let deleted = header("KV-Operation").is_some_and(|op| op != "PUT");
        let subject = header("Nats-Subject").unwrap_or_default();
        if !deleted && let Some(key) = subject.strip_prefix(subject_prefix.as_str()) {
            read += 1;
            let entry = ReadEntry {
                key: key.to_owned(),
                value: message.payload.clone(),
            };
            if out.send(vec![entry]).await.is_err() {
                return Ok(read);
            }
        }
    }
}

/// [`read_since`] by an ordered consumer (`LastPerSubject`, or from a start sequence): the
/// fast way, which needs a JetStream meta leader to create the consumer.
/// `Err(Left::NoConsumer)` when it cannot be created.
async fn read_by_consumer(
    client: &async_nats::Client,
    store: &kv::Store,
    key_filter: &str,
    from_revision: Option<u64>,
    out: &mpsc::Sender<Vec<ReadEntry>>,
) -> Result<u64, Left> {
    let subject_prefix = format!("$KV.{}.", store.name);
    let deliver_subject = client.new_inbox();
    let consumer = store
        .stream
        .create_consumer(push::OrderedConfig {
            name: Some(consumer_name(&deliver_subject)),
            deliver_subject,
            filter_subject: format!("{subject_prefix}{key_filter}"),
            deliver_policy: match from_revision {
                None => DeliverPolicy::LastPerSubject,
                Some(start_sequence) => DeliverPolicy::ByStartSequence {
                    start_sequence: start_sequence.max(1),
                },
            },
            replay_policy: ReplayPolicy::Instant,
            ..Default::default()
        })
        .await
        .map_err(|e| {
            Left::NoConsumer(format!("creating a consumer on {}: {e}", store.stream_name))
        })?;
    let pending = consumer.cached_info().num_pending;
    if pending == 0 {
        return Ok(0);
    }
    let mut messages = consumer
        .messages()
        .await
        .map_err(|e| Left::Failed(format!("reading {}: {e}", store.stream_name)))?;
    let mut read = 0u64;
    let mut batch = Vec::with_capacity(READ_BATCH.min(usize::try_from(pending).unwrap_or(0)));
    let mut progress = ReadProgress::new(&store.name, key_filter);
    let mut remaining = pending;
    loop {
        let next = match messages.next().now_or_never() {
            Some(next) => next,
            None => {
                if !batch.is_empty() && out.send(std::mem::take(&mut batch)).await.is_err() {
                    return Ok(read);
                }
                progress.batch(pending - remaining.min(pending), Some(pending));
                tokio::time::timeout(READ_IDLE_TIMEOUT, messages.next())
                    .await
                    .map_err(|_| {
                        Left::Failed(format!(
                            "reading {}: no entry for {READ_IDLE_TIMEOUT:?}",
                            store.stream_name
                        ))
                    })?
            }
        };
        let message = match next {
            Some(Ok(m)) => m,
            Some(Err(e)) => {
                return Err(Left::Failed(format!("reading {}: {e}", store.stream_name)));
            }
            None => {
                return Err(Left::Failed(format!(
                    "reading {}: consumer ended",
                    store.stream_name
                )));
            }
        };
        remaining = pending_of(&message);
        let deleted = message
            .headers
            .as_ref()
            .and_then(|h| h.get("KV-Operation"))
            .is_some_and(|op| op.as_str() != "PUT");
        if !deleted && let Some(key) = message.subject.strip_prefix(subject_prefix.as_str()) {
            batch.push(ReadEntry {
                key: key.to_owned(),
                value: message.payload.clone(),
            });
            read += 1;
        }
        if remaining == 0 || batch.len() >= READ_BATCH {
            if !batch.is_empty() && out.send(std::mem::take(&mut batch)).await.is_err() {
                return Ok(read);
            }
            if remaining == 0 {
                progress.done(pending);
                return Ok(read);
            }
            progress.batch(pending - remaining.min(pending), Some(pending));
        }
    }
}

/// The next reply of a direct get on `replies`, waiting at most [`READ_IDLE_TIMEOUT`].
async fn next_reply(
    replies: &mut async_nats::Subscriber,
    store: &kv::Store,
) -> Result<async_nats::Message, String> {
    tokio::time::timeout(READ_IDLE_TIMEOUT, replies.next())
        .await
        .map_err(|_| {
            format!(
                "reading {}: no answer for {READ_IDLE_TIMEOUT:?}",
                store.stream_name
            )
        })?
        .ok_or_else(|| format!("reading {}: subscription ended", store.stream_name))
}

/// Header `name` of a direct get's reply.
fn header_of(message: &async_nats::Message, name: &str) -> Option<String> {
    message
        .headers
        .as_ref()
        .and_then(|h| h.get(name))
        .map(|v| v.as_str().to_owned())
}

/// Most messages the server returns for one batched direct get (nats-server's limit).
const DIRECT_GET_BATCH: usize = 1000;

/// [`read_prefix`] by batched direct gets (`<api>.DIRECT.GET.<stream>`, `next_by_subj` from a start
/// sequence, at most [`DIRECT_GET_BATCH`] a page, nats-server 2.11+; ADR-31): no consumer is
/// made, so it needs no JetStream meta leader and works inside a region cut off from the
/// others (measured: a consumer cannot be created there). Our buckets keep one value per key
/// (history 1), so the stream holds exactly the newest value of every key, and a key written
/// again during the read moves to a later sequence the scan still reaches: the read holds
/// every value that was durable when it began. Any replica may answer a page; one that lags
/// gives an older value, which the core notices (a read must hold the newest report its member
/// said was durable) and reads again.
async fn read_by_direct_get(
    reader: &KvReader,
    store: &kv::Store,
    key_filter: &str,
    from_revision: Option<u64>,
    out: &mpsc::Sender<Vec<ReadEntry>>,
) -> Result<u64, String> {
    let (client, api) = (&reader.client, &reader.api);
    let subject_prefix = format!("$KV.{}.", store.name);
    let filter = format!("{subject_prefix}{key_filter}");
    let request_subject = format!("{api}.DIRECT.GET.{}", store.stream_name);
    let inbox = client.new_inbox();
    let mut replies = client
        .subscribe(inbox.clone())
        .await
        .map_err(|e| format!("reading {}: {e}", store.stream_name))?;
    let mut read = 0u64;
    let mut from_seq = from_revision.unwrap_or(1).max(1);
    if from_seq > 1 {
        // Keys written since a revision are usually none: one plain direct get (which, unlike
        // a page, does not make the server count every matching key left) says so.
        let request = format!("{{\"seq\":{from_seq},\"next_by_subj\":\"{filter}\"}}");
        let reply = client
            .request(request_subject.clone(), request.into())
            .await
            .map_err(|e| format!("reading {}: {e}", store.stream_name))?;
        match reply.status.map(|s| s.as_u16()) {
            Some(404) => return Ok(0),
            Some(code) => {
                return Err(format!(
                    "reading {}: {code} {}",
                    store.stream_name,
                    reply.description.as_deref().unwrap_or("")
                ));
            }
            None => {
                let seq = header_of(&reply, "Nats-Sequence").and_then(|v| v.parse::<u64>().ok());
                from_seq = seq.unwrap_or(from_seq);
            }
        }
    }
    let mut progress = ReadProgress::new(&store.name, key_filter);
    loop {
        let request = format!(
            "{{\"seq\":{from_seq},\"batch\":{DIRECT_GET_BATCH},\"next_by_subj\":\"{filter}\"}}"
        );
        client
            .publish_with_reply(request_subject.clone(), inbox.clone(), request.into())
            .await
            .map_err(|e| format!("reading {}: {e}", store.stream_name))?;
        let mut batch = Vec::with_capacity(READ_BATCH);
        let mut last_seq = None;
        let pending = loop {
            let message = next_reply(&mut replies, store).await?;
            let header = |name: &str| header_of(&message, name);
            match message.status.map(|s| s.as_u16()) {
                // The end of this page: how many more match after it.
                Some(204) => {
                    let pending: u64 = header("Nats-Num-Pending")
                        .and_then(|v| v.parse().ok())
                        .ok_or_else(|| {
                            format!("reading {}: a page end without Nats-Num-Pending (nats-server 2.11+ is needed)", store.stream_name)
                        })?;
                    if let Some(seq) = header("Nats-Last-Sequence").and_then(|v| v.parse().ok()) {
                        last_seq = last_seq.max(Some(seq));
                    }
                    break pending;
                }
                // Nothing (more) matches.
                Some(404) => break 0,
                Some(code) => {
                    return Err(format!(
                        "reading {}: {code} {}",
                        store.stream_name,
                        message.description.as_deref().unwrap_or("")
                    ));
                }
                None => {}
            }
            let seq: u64 = header("Nats-Sequence")
                .and_then(|v| v.parse().ok())
                .ok_or_else(|| {
                    format!(
                        "reading {}: a reply without Nats-Sequence",
                        store.stream_name
                    )
                })?;
            last_seq = last_seq.max(Some(seq));
            let deleted = header("KV-Operation").is_some_and(|op| op != "PUT");
            let subject = header("Nats-Subject").unwrap_or_default();
            if !deleted && let Some(key) = subject.strip_prefix(subject_prefix.as_str()) {
                batch.push(ReadEntry {
                    key: key.to_owned(),
                    value: message.payload.clone(),
                });
                read += 1;
                if batch.len() >= READ_BATCH && out.send(std::mem::take(&mut batch)).await.is_err()
                {
                    return Ok(read);
                }
            }
        };
        if !batch.is_empty() && out.send(batch).await.is_err() {
            return Ok(read);
        }
        match last_seq {
            Some(seq) if pending > 0 => {
                from_seq = seq + 1;
                progress.batch(read, Some(read + pending));
            }
            _ => {
                progress.done(read);
                return Ok(read);
            }
        }
    }
}

/// The progress of one prefix read, for the log: a read that lasts longer than
/// [`PROGRESS_EVERY`] (a start-up snapshot of hundreds of thousands of entries, a slow link)
/// logs `reading a KV bucket` with the entries received so far, the total expected (the
/// consumer's `num_pending` when it was created; by direct gets, the server's count of those
/// left) and the rate, every [`PROGRESS_EVERY`], and `KV bucket read` once it is done. A
/// quick read logs nothing. One clock read per batch.
struct ReadProgress<'a> {
    bucket: &'a str,
    filter: &'a str,
    started: std::time::Instant,
    next_log: std::time::Instant,
    logged: bool,
}

impl<'a> ReadProgress<'a> {
    fn new(bucket: &'a str, filter: &'a str) -> Self {
        let started = std::time::Instant::now();
        ReadProgress {
            bucket,
            filter,
            started,
            next_log: started + PROGRESS_EVERY,
            logged: false,
        }
    }

    /// After a batch: `done` entries received of `total`.
    fn batch(&mut self, done: u64, total: Option<u64>) {
        let now = std::time::Instant::now();
        if now < self.next_log {
            return;
        }
        self.next_log = now + PROGRESS_EVERY;
        self.logged = true;
        let rate = per_second(done, now - self.started);
        let percent = total.filter(|t| *t > 0).map(|t| done.min(t) * 100 / t);
        tracing::info!(
            bucket = self.bucket,
            filter = self.filter,
            loaded = done,
            total,
            percent,
            rate_per_s = rate,
            "reading a KV bucket: {done} of {} entries, {rate}/s",
            total.map_or_else(|| "?".to_owned(), |t| t.to_string())
        );
    }

    /// The read ended with `done` entries received (logged only if progress was).
    fn done(&self, done: u64) {
        if self.logged {
            let took = self.started.elapsed();
            let rate = per_second(done, took);
            tracing::info!(
                bucket = self.bucket,
                filter = self.filter,
                loaded = done,
                seconds = took.as_secs_f64(),
                rate_per_s = rate,
                "KV bucket read: {done} entries in {took:.1?}, {rate}/s"
            );
        }
    }
}

/// `n` per `took`, per second (0 for no time).
fn per_second(n: u64, took: Duration) -> u64 {
    let secs = took.as_secs_f64();
    if secs > 0.0 {
        (n as f64 / secs) as u64
    } else {
        0
    }
}

/// A unique name for a consumer delivering to `inbox` (`gslb_` and the inbox's unique last
/// token).
///
/// Only a named consumer is created on `$JS.API.CONSUMER.CREATE.<stream>.<name>.<filter>`,
/// a subject that carries the filter, so the server's permissions can hold a node to its own
/// cluster's keys (SECURITY.md); an unnamed one is created on `…CREATE.<stream>`, which
/// cannot be restricted by filter.
pub(crate) fn consumer_name(inbox: &str) -> String {
    let unique = inbox.rsplit('.').next().unwrap_or(inbox);
    let mut name = String::with_capacity(5 + unique.len());
    name.push_str("gslb_");
    name.extend(unique.chars().map(|c| {
        if c.is_ascii_alphanumeric() || c == '-' {
            c
        } else {
            '_'
        }
    }));
    name
}

/// How many messages the consumer has left after `message`: a token of its reply subject,
/// `$JS.ACK.[<domain>.<account hash>.]<stream>.<consumer>.<delivered>.<stream seq>.<consumer
/// seq>.<timestamp>.<pending>[.<token>]` (ADR-15), read without parsing the others as
/// [`jetstream::Message::info`] does (timestamps included, a cost that shows in a snapshot of
/// millions of entries).
fn pending_of(message: &jetstream::Message) -> u64 {
    message
        .reply
        .as_deref()
        .and_then(pending_in_reply)
        .unwrap_or_else(|| message.info().map(|i| i.pending).unwrap_or(0))
}

/// The `pending` token of a `$JS.ACK.` reply subject (see [`pending_of`]).
fn pending_in_reply(reply: &str) -> Option<u64> {
    let index = match reply.split('.').count() {
        9 => 8,
        n if n >= 11 => 10,
        _ => return None,
    };
    reply.split('.').nth(index)?.parse().ok()
}

#[cfg(test)]
mod tests {
    #[test]
    fn pending_is_read_from_both_reply_subject_forms() {
        for (reply, pending) in [
            (
                "$JS.ACK.KV_b.cons.1.42.7.1700000000000000000.1234",
                Some(1234),
            ),
            (
                "$JS.ACK.gslb.ACCHASH.KV_b.cons.1.42.7.1700000000000000000.0",
                Some(0),
            ),
            (
                "$JS.ACK.gslb.ACCHASH.KV_b.cons.1.42.7.1700000000000000000.99.tok",
                Some(99),
            ),
            ("$JS.ACK.too.short", None),
        ] {
            assert_eq!(super::pending_in_reply(reply), pending, "{reply}");
        }
    }

    #[test]
    fn consumer_names_are_legal_and_unique_per_inbox() {
        assert_eq!(
            super::consumer_name("_INBOX_n1.AbC123xyz"),
            "gslb_AbC123xyz"
        );
        assert_eq!(super::consumer_name("odd*.a.b>"), "gslb_b_");
    }
}

/// The buckets once they are open.
#[derive(Clone, Debug)]
pub(crate) struct Stores {
    pub(crate) members: kv::Store,
    pub(crate) health: kv::Store,
}

impl Stores {
    pub(crate) fn get(&self, bucket: Bucket) -> &kv::Store {
        match bucket {
            Bucket::Members => &self.members,
            Bucket::Health => &self.health,
        }
    }
}

/// A KV write to carry out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum WriteOp {
    /// Put a value; the `u64` is the core's `seq` of the write, echoed in [`WriteDone`].
    Put(Bytes, u64),
    Delete,
}

/// How a put ended, reported back to the driver (and from there to the core).
#[derive(Debug)]
pub(crate) struct WriteDone {
    pub(crate) bucket: Bucket,
    pub(crate) key: String,
    pub(crate) seq: u64,
    /// The KV revision it was stored at (0 when it failed).
    pub(crate) revision: u64,
    pub(crate) ok: bool,
}

/// Coalesces writes per key (only the newest value of a key is written) and pipelines them.
/// Memory is bounded by the number of distinct keys this node writes.
pub(crate) async fn run_writer(
    mut ops: mpsc::UnboundedReceiver<(Bucket, String, WriteOp)>,
    mut stores: watch::Receiver<Option<Stores>>,
    done: mpsc::UnboundedSender<WriteDone>,
    metrics: Arc<Metrics>,
) {
    let mut pending: IndexMap<(Bucket, String), WriteOp> = IndexMap::new();
    let mut in_flight = FuturesUnordered::new();
    let mut open = true;
    loop {
        let ready = stores.borrow().clone();
        if let Some(stores) = &ready {
            while in_flight.len() < MAX_WRITES_IN_FLIGHT {
                let Some(((bucket, key), op)) = pending.shift_remove_index(0) else {
                    break;
                };
                let store = stores.get(bucket).clone();
                in_flight.push(async move {
                    let (result, seq) = match &op {
                        WriteOp::Put(value, seq) => (
                            store
                                .put(&key, value.clone())
                                .await
                                .map_err(|e| e.to_string()),
                            Some(*seq),
                        ),
                        WriteOp::Delete => (
                            store
                                .delete(&key)
                                .await
                                .map(|()| 0)
                                .map_err(|e| e.to_string()),
                            None,
                        ),
                    };
                    (bucket, key, store.name.clone(), seq, result)
                });
            }
        }
        if !open && pending.is_empty() && in_flight.is_empty() {
            return;
        }
        tokio::select! {
            op = ops.recv(), if open => match op {
                Some((bucket, key, op)) => {
                    pending.insert((bucket, key), op);
                }
                None => open = false,
            },
            Some((bucket, key, name, seq, result)) = in_flight.next(), if !in_flight.is_empty() => {
                Metrics::count_kv(&metrics.kv_put, &name, result.is_ok());
                if let Err(e) = &result {
                    tracing::debug!(bucket = %name, key = %key, error = %e, "KV write failed; will retry");
                }
                if let Some(seq) = seq {
                    let revision = *result.as_ref().unwrap_or(&0);
                    let _ = done.send(WriteDone { bucket, key, seq, revision, ok: result.is_ok() });
                }
            }
            changed = stores.changed(), if ready.is_none() => {
                if changed.is_err() {
                    return;
                }
            }
        }
    }
}
