//! Setup and reads: the buckets are opened (created when absent) from the first connection on,
//! with one retry-with-backoff shared with config sync; the reads the core asks for — the
//! snapshot, one member's reports, the members bucket — run in the background and report
//! their entries and their end to the loop.

use std::time::Duration;

use async_nats::Client;
use gslb_state_core::names::encode_token;
use gslb_state_core::{Bucket, KvRead};
use tokio::sync::mpsc;

use super::{Driver, ReadEvent};
use crate::connect::jetstream_context;
use crate::kv::{self, ReadEntry, Stores};
use crate::metrics::Metrics;
use crate::retry::retry_with_backoff;

/// How long a snapshot read waits for the buckets to be opened before it reports itself
/// incomplete (the core asks again at its next maintenance tick).
const STORES_WAIT: Duration = Duration::from_secs(10);

impl Driver {
    /// Opens (or creates) the buckets, retried until it succeeds (reads wait for them), and
    /// starts config sync when it is on.
    pub(super) fn start_setup(&mut self) {
        let js = jetstream_context(&self.client, &self.config);
        let names = self.node.names().clone();
        let stores_tx = self.stores_tx.clone();
        tokio::spawn(async move {
            let stores = retry_with_backoff("KV bucket creation error", || async {
                let members = kv::ensure_bucket(&js, names.bucket(Bucket::Members)).await;
                let health = kv::ensure_bucket(&js, names.bucket(Bucket::Health)).await;
                match (members, health) {
                    (Ok(members), Ok(health)) => Ok(Stores { members, health }),
                    (Err(e), _) => Err(format!("{}: {e}", names.bucket(Bucket::Members))),
                    (_, Err(e)) => Err(format!("{}: {e}", names.bucket(Bucket::Health))),
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

    /// Reads the start-up snapshot once the buckets are open (waiting a while for them);
    /// reports an incomplete read otherwise, and the core asks again.
    pub(super) fn spawn_read_snapshot(&self) {
        let mut stores = self.stores.clone();
        let (client, reads, metrics) = (
            self.client.clone(),
            self.reads_tx.clone(),
            self.metrics.clone(),
        );
        tokio::spawn(async move {
            let ready = tokio::time::timeout(STORES_WAIT, async {
                stores
                    .wait_for(Option::is_some)
                    .await
                    .ok()
                    .and_then(|r| r.clone())
            })
            .await
            .ok()
            .flatten();
            let complete = match ready {
                Some(stores) => {
                    // Members first: what a record says is durable is in the health bucket by
                    // the time that is read.
                    let members = read_into(
                        &client,
                        &stores.members,
                        Bucket::Members,
                        ">",
                        &reads,
                        &metrics,
                    )
                    .await;
                    let health = read_into(
                        &client,
                        &stores.health,
                        Bucket::Health,
                        ">",
                        &reads,
                        &metrics,
                    )
                    .await;
                    members && health
                }
                None => false,
            };
            let read = KvRead::Snapshot;
            let _ = reads.send(ReadEvent::Done { read, complete }).await;
        });
    }

    /// Re-reads `node`'s reports (`key_filter`); reports an incomplete read when the buckets
    /// are not open yet, and the core asks again later if still needed.
    pub(super) fn spawn_resync(&self, node: String, key_filter: String) {
        let stores = self.stores.borrow().clone();
        let (client, reads, metrics) = (
            self.client.clone(),
            self.reads_tx.clone(),
            self.metrics.clone(),
        );
        tokio::spawn(async move {
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

    /// Anti-entropy: reads the members bucket (nothing when it is not open yet).
    pub(super) fn spawn_read_members(&self) {
        let Some(stores) = self.stores.borrow().clone() else {
            return;
        };
        let (client, reads, metrics) = (
            self.client.clone(),
            self.reads_tx.clone(),
            self.metrics.clone(),
        );
        tokio::spawn(async move {
            let members = &stores.members;
            let complete =
                read_into(&client, members, Bucket::Members, ">", &reads, &metrics).await;
            let read = KvRead::Members;
            let _ = reads.send(ReadEvent::Done { read, complete }).await;
        });
    }
}

/// Reads every entry of `store` matching `key_filter` into the driver loop; true when the read
/// completed. Counts one `kv_get` per entry read, or one `error` when the read failed.
async fn read_into(
    client: &Client,
    store: &async_nats::jetstream::kv::Store,
    bucket: Bucket,
    key_filter: &str,
    out: &mpsc::Sender<ReadEvent>,
    metrics: &Metrics,
) -> bool {
    let (tx, mut rx) = mpsc::channel::<Vec<ReadEntry>>(2);
    let forward = async {
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
    };
    let read = async {
        let result = kv::read_prefix(client, store, key_filter, &tx).await;
        drop(tx);
        result
    };
    let (result, forwarded) = tokio::join!(read, forward);
    if forwarded > 0 {
        metrics
            .kv_get
            .get_or_create(&crate::metrics::BucketResult {
                bucket: store.name.clone(),
                result: "ok",
            })
            .inc_by(forwarded);
    }
    match result {
        Ok(_) => true,
        Err(e) => {
            Metrics::count_kv(&metrics.kv_get, &store.name, false);
            tracing::warn!(bucket = %store.name, filter = key_filter, error = %e, "KV read failed; will be retried");
            false
        }
    }
}
