//! Setup and reads: the buckets are opened (created when absent) from the first connection on,
//! with one retry-with-backoff shared with config sync; the reads the core asks for — the
//! snapshot, one member's reports, the members bucket — run in the background and report
//! their entries and their end to the loop.

use std::time::Duration;

use gslb_state_core::names::encode_token;
use gslb_state_core::{Bucket, KvRead};
use tokio::sync::mpsc;

use super::{Driver, ReadEvent};
use crate::connect::jetstream_context;
use crate::kv::{self, ReadEntry, Stores};
use crate::metrics::Metrics;
use crate::retry::retry_with_backoff;

/// Most report-key reads of [`Driver::spawn_read_snapshot_reports`] in flight at once.
const TAIL_READS_IN_FLIGHT: usize = 8;

/// How long a snapshot read waits for the buckets to be opened before it reports itself
/// incomplete (the core asks again at its next maintenance tick).
const STORES_WAIT: Duration = Duration::from_secs(10);

impl Driver {
    /// Opens (or creates) the buckets, retried until it succeeds (reads wait for them), and
    /// starts config sync when it is on.
    pub(super) fn start_setup(&mut self) {
        let js = jetstream_context(&self.client, &self.config);
        let names = self.node.names().clone();
        let region = self.config.storage_region().to_owned();
        let stores_tx = self.stores_tx.clone();
        tokio::spawn(async move {
            let stores = retry_with_backoff("KV bucket creation error", || async {
                let name = |bucket| names.region_bucket(bucket, &region);
                let (members, health) = (name(Bucket::Members), name(Bucket::Health));
                let members_store = kv::ensure_bucket(&js, &members, &region).await;
                let health_store = kv::ensure_bucket(&js, &health, &region).await;
                match (members_store, health_store) {
                    (Ok(members), Ok(health)) => Ok(Stores { members, health }),
                    (Err(e), _) => Err(format!("{members}: {e}")),
                    (_, Err(e)) => Err(format!("{health}: {e}")),
                }
            })
            .await;
            let _ = stores_tx.send(Some(stores));
        });
        if self.config.state.enable_config_sync
            && let Some(settings) = self.config.config_sync.clone()
        {
            let js = jetstream_context(&self.client, &self.config);
            tokio::spawn(crate::config_sync::run(
                self.client.clone(),
                js,
                settings,
                encode_token(&self.config.cluster_id),
                self.config_tx.clone(),
                self.metrics.clone(),
            ));
        }
    }

    /// Reads the start-up snapshot's first part, the members buckets, once the buckets are
    /// open (waiting a while for them); reports an incomplete read otherwise, and the core
    /// asks again.
    ///
    /// This node's region's members bucket is streamed, then every other region's of
    /// `nats.jetStream.regions`, all at once, each read whole before any of it is handed in:
    /// a region that cannot be opened within [`kv::FOREIGN_OPEN_TIMEOUT`] or read to the end
    /// gives nothing, so none of its members is asked for (its members are re-synced from
    /// their region when first heard). Only this node's region decides whether the read is
    /// complete.
    pub(super) fn spawn_read_snapshot(&self) {
        let others = self.other_regions();
        let (client, reads, metrics) = (
            self.kv_reader(),
            self.reads_tx.clone(),
            self.metrics.clone(),
        );
        let (js, names, foreign) = (
            jetstream_context(&self.client, &self.config),
            self.node.names().clone(),
            self.foreign.clone(),
        );
        let ready = self.stores_ready();
        tokio::spawn(async move {
            let complete = match ready.await {
                Some(stores) => {
                    read_into(
                        &client,
                        &stores.members,
                        Bucket::Members,
                        ">",
                        &reads,
                        &metrics,
                    )
                    .await
                }
                None => false,
            };
            if complete {
                let whole = others.iter().map(|region| {
                    read_region_members(&client, &js, &names, &foreign, region, &metrics)
                });
                for entries in futures::future::join_all(whole).await.into_iter().flatten() {
                    for chunk in chunks(entries) {
                        let event = ReadEvent::Entries {
                            bucket: Bucket::Members,
                            entries: chunk,
                        };
                        if reads.send(event).await.is_err() {
                            return;
                        }
                    }
                }
            }
            let read = KvRead::Snapshot;
            let _ = reads.send(ReadEvent::Done { read, complete }).await;
        });
    }

    /// Reads the start-up snapshot's reports in `region`'s health bucket as the core asked:
    /// the compacted snapshots' `chunks` (direct gets, several at once) and, for each of
    /// `key_filters`, the matching keys written at or after its revision (one ordered
    /// consumer each, a few at once), streamed to the core; then reports whether all of it
    /// was read.
    pub(super) fn spawn_read_snapshot_reports(
        &self,
        region: String,
        chunks: Vec<String>,
        key_filters: Vec<(String, u64)>,
    ) {
        let (client, reads, metrics) = (
            self.kv_reader(),
            self.reads_tx.clone(),
            self.metrics.clone(),
        );
        let foreign = (region != self.config.storage_region()).then(|| {
            (
                jetstream_context(&self.client, &self.config),
                self.node.names().clone(),
                self.foreign.clone(),
            )
        });
        let ready = self.stores_ready();
        tokio::spawn(async move {
            let stores = match foreign {
                None => ready.await,
                Some((js, names, foreign)) => match foreign.get(&js, &names, &region).await {
                    Ok(stores) => Some(stores),
                    Err(e) => {
                        tracing::warn!(region = %region, error = %e, "snapshot: region not read (its members are re-synced when first heard)");
                        None
                    }
                },
            };
            let complete = match stores {
                Some(stores) => {
                    let health = &stores.health;
                    let (tx, rx) = mpsc::channel::<Vec<ReadEntry>>(2);
                    let forward = forward_entries(rx, Bucket::Health, &reads);
                    let read = async {
                        let gets = kv::get_keys(&client, health, chunks, &tx);
                        let tails = read_key_filters(&client, health, &key_filters, &tx);
                        let (gets, tails) = tokio::join!(gets, tails);
                        drop(tx);
                        Ok::<_, String>(gets? + tails?)
                    };
                    let (result, forwarded) = tokio::join!(read, forward);
                    count_read(&metrics, &health.name, forwarded, &result);
                    if let Err(e) = &result {
                        tracing::warn!(region = %region, bucket = %health.name, error = %e, "snapshot: KV read failed; will be retried");
                    }
                    result.is_ok()
                }
                None => false,
            };
            let read = KvRead::SnapshotReports { region };
            let _ = reads.send(ReadEvent::Done { read, complete }).await;
        });
    }

    /// Re-reads `node`'s reports (`key_filter`) from its region's health bucket; reports an
    /// incomplete read when the bucket cannot be opened, and the core asks again later if
    /// still needed.
    pub(super) fn spawn_resync(&self, node: String, region: String, key_filter: String) {
        let own = self.stores.borrow().clone();
        let (client, reads, metrics) = (
            self.kv_reader(),
            self.reads_tx.clone(),
            self.metrics.clone(),
        );
        // Without region-local storage every member's reports are in the shared bucket.
        let region = if self.config.nats.jetstream_regions.is_empty() {
            String::new()
        } else {
            region
        };
        let foreign = (region != self.config.storage_region()).then(|| {
            (
                jetstream_context(&self.client, &self.config),
                self.node.names().clone(),
                self.foreign.clone(),
            )
        });
        tokio::spawn(async move {
            let stores = match foreign {
                None => own,
                Some((js, names, foreign)) => match foreign.get(&js, &names, &region).await {
                    Ok(stores) => Some(stores),
                    Err(e) => {
                        tracing::warn!(node = %node, region = %region, error = %e, "re-sync: the member's region cannot be read; will be retried");
                        None
                    }
                },
            };
            let complete = match stores {
                Some(stores) => {
                    let health = &stores.health;
                    read_into(
                        &client,
                        health,
                        Bucket::Health,
                        &key_filter,
                        &reads,
                        &metrics,
                    )
                    .await
                }
                None => false,
            };
            let read = KvRead::Reports { node };
            let _ = reads.send(ReadEvent::Done { read, complete }).await;
        });
    }

    /// Anti-entropy: reads the members bucket of this node's region, then those of the other
    /// regions of `nats.jetStream.regions` that can be opened (nothing when this node's are
    /// not open yet).
    pub(super) fn spawn_read_members(&self) {
        let Some(stores) = self.stores.borrow().clone() else {
            return;
        };
        let others = self.other_regions();
        let (client, reads, metrics) = (
            self.kv_reader(),
            self.reads_tx.clone(),
            self.metrics.clone(),
        );
        let (js, names, foreign) = (
            jetstream_context(&self.client, &self.config),
            self.node.names().clone(),
            self.foreign.clone(),
        );
        tokio::spawn(async move {
            let members = &stores.members;
            let complete =
                read_into(&client, members, Bucket::Members, ">", &reads, &metrics).await;
            for region in &others {
                match foreign.get(&js, &names, region).await {
                    Ok(stores) => {
                        let members = &stores.members;
                        read_into(&client, members, Bucket::Members, ">", &reads, &metrics).await;
                    }
                    Err(e) => {
                        tracing::debug!(region = %region, error = %e, "anti-entropy: region not read");
                    }
                }
            }
            let read = KvRead::Members;
            let _ = reads.send(ReadEvent::Done { read, complete }).await;
        });
    }
}

impl Driver {
    /// This node's buckets once open, waiting at most [`STORES_WAIT`] for them.
    fn stores_ready(&self) -> impl std::future::Future<Output = Option<Stores>> + use<> {
        let mut stores = self.stores.clone();
        async move {
            tokio::time::timeout(STORES_WAIT, async {
                stores
                    .wait_for(Option::is_some)
                    .await
                    .ok()
                    .and_then(|r| r.clone())
            })
            .await
            .ok()
            .flatten()
        }
    }

    /// What a KV read needs.
    fn kv_reader(&self) -> kv::KvReader {
        kv::KvReader {
            client: self.client.clone(),
            api: crate::connect::api_prefix(&self.config),
        }
    }

    /// The regions of `nats.jetStream.regions` other than this node's.
    fn other_regions(&self) -> Vec<String> {
        let mut regions = self.config.storage_regions();
        regions.retain(|r| r != self.config.storage_region());
        regions
    }
}

/// `entries` in batches of at most [`kv::READ_BATCH`].
fn chunks(mut entries: Vec<ReadEntry>) -> Vec<Vec<ReadEntry>> {
    let mut out = Vec::new();
    while entries.len() > kv::READ_BATCH {
        let rest = entries.split_off(kv::READ_BATCH);
        out.push(std::mem::replace(&mut entries, rest));
    }
    if !entries.is_empty() {
        out.push(entries);
    }
    out
}

/// Reads region `region`'s members bucket whole: its entries, or `None` (logged and counted)
/// when it cannot be opened or read to the end.
async fn read_region_members(
    client: &kv::KvReader,
    js: &async_nats::jetstream::Context,
    names: &gslb_state_core::Names,
    foreign: &kv::ForeignStores,
    region: &str,
    metrics: &Metrics,
) -> Option<Vec<ReadEntry>> {
    let stores = match foreign.get(js, names, region).await {
        Ok(stores) => stores,
        Err(e) => {
            tracing::warn!(region, error = %e, "snapshot: region not read (its members are re-synced when first heard)");
            return None;
        }
    };
    let store = &stores.members;
    let (tx, mut rx) = mpsc::channel::<Vec<ReadEntry>>(2);
    let collect = async {
        let mut all = Vec::new();
        while let Some(mut entries) = rx.recv().await {
            all.append(&mut entries);
        }
        all
    };
    let read = async {
        let result = kv::read_prefix(client, store, ">", &tx).await;
        drop(tx);
        result
    };
    let (result, entries) = tokio::join!(read, collect);
    count_read(metrics, &store.name, entries.len() as u64, &result);
    match result {
        Ok(_) => Some(entries),
        Err(e) => {
            tracing::warn!(region, bucket = %store.name, error = %e, "snapshot: region not read (its members are re-synced when first heard)");
            None
        }
    }
}

/// Reads each of `key_filters` from its revision (0 or 1: whole) into `out`, a few at once;
/// returns how many entries were read, or the first error.
async fn read_key_filters(
    client: &kv::KvReader,
    store: &async_nats::jetstream::kv::Store,
    key_filters: &[(String, u64)],
    out: &mpsc::Sender<Vec<ReadEntry>>,
) -> Result<u64, String> {
    let mut read = 0;
    for group in key_filters.chunks(TAIL_READS_IN_FLIGHT) {
        let mut reads = Vec::with_capacity(group.len());
        for (filter, from) in group {
            let from = (*from > 1).then_some(*from);
            reads.push(kv::read_since(client, store, filter, from, out));
        }
        for result in futures::future::join_all(reads).await {
            read += result?;
        }
    }
    Ok(read)
}

/// Counts a read's entries as `kv_get` results `ok`, and one `error` if it failed.
fn count_read(metrics: &Metrics, bucket: &str, entries: u64, result: &Result<u64, String>) {
    if entries > 0 {
        metrics
            .kv_get
            .get_or_create(&crate::metrics::BucketResult {
                bucket: bucket.to_owned(),
                result: "ok",
            })
            .inc_by(entries);
    }
    if result.is_err() {
        Metrics::count_kv(&metrics.kv_get, bucket, false);
    }
}

/// Forwards the batches of a read to the driver loop as entries of `bucket`; returns how
/// many entries it forwarded.
async fn forward_entries(
    mut rx: mpsc::Receiver<Vec<ReadEntry>>,
    bucket: Bucket,
    out: &mpsc::Sender<ReadEvent>,
) -> u64 {
    let mut n = 0u64;
    while let Some(entries) = rx.recv().await {
        n += entries.len() as u64;
        if out
            .send(ReadEvent::Entries { bucket, entries })
            .await
            .is_err()
        {
            break;
        }
    }
    n
}

/// Reads every entry of `store` matching `key_filter` into the driver loop; true when the read
/// completed. Counts one `kv_get` per entry read, or one `error` when the read failed.
async fn read_into(
    client: &kv::KvReader,
    store: &async_nats::jetstream::kv::Store,
    bucket: Bucket,
    key_filter: &str,
    out: &mpsc::Sender<ReadEvent>,
    metrics: &Metrics,
) -> bool {
    let (tx, rx) = mpsc::channel::<Vec<ReadEntry>>(2);
    let forward = forward_entries(rx, bucket, out);
    let read = async {
        let result = kv::read_prefix(client, store, key_filter, &tx).await;
        drop(tx);
        result
    };
    let (result, forwarded) = tokio::join!(read, forward);
    count_read(metrics, &store.name, forwarded, &result);
    match result {
        Ok(_) => true,
        Err(e) => {
            tracing::warn!(bucket = %store.name, filter = key_filter, error = %e, "KV read failed; will be retried");
            false
        }
    }
}
