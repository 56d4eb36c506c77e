//! Config sync: the desired configuration (YAML) is the value of key `<cluster>` in bucket
//! `config.kvBucket`; its KV revision is its version. Events about it go to the stream
//! `config.stream` on subjects `<config.subjectPrefix>.<cluster>`.
//!
//! New versions arrive three ways, so none of them is a single point of failure: a watcher
//! (fast; a named ordered consumer filtered to `$KV.<kvBucket>.<cluster>`, so a node needs no
//! permission beyond its own cluster's key), an event on `<subjectPrefix>.<cluster>` (a nudge to
//! read the key now), and a watchdog that reads the key every few seconds and rebuilds the
//! watcher when it has fallen behind (a KV watcher can stall silently after a failover).

use std::time::Duration;

use async_nats::Client;
use async_nats::jetstream::consumer::push;
use async_nats::jetstream::consumer::{DeliverPolicy, ReplayPolicy};
use async_nats::jetstream::{self, kv};
use bytes::Bytes;
use futures::StreamExt;
use gslb_state_core::config::ConfigSyncSettings;
use tokio::sync::mpsc;

use crate::config_store::{latest, open_bucket, open_event_stream};
use crate::error::StoreError;
use crate::metrics::Metrics;
use crate::retry::retry_with_backoff;

/// How often the watchdog reads the key.
const WATCHDOG_INTERVAL: Duration = Duration::from_secs(3);

/// A version of the desired configuration.
#[derive(Debug)]
pub(crate) struct ConfigUpdate {
    pub(crate) version: u64,
    pub(crate) yaml: Bytes,
    /// Read at start-up.
    pub(crate) snapshot: bool,
}

/// Runs config sync for key `key` until the driver goes away.
pub(crate) async fn run(
    client: Client,
    js: jetstream::Context,
    settings: ConfigSyncSettings,
    key: String,
    out: mpsc::Sender<ConfigUpdate>,
    metrics: std::sync::Arc<crate::metrics::Metrics>,
) {
    let store = retry_with_backoff("KV bucket creation error (config sync)", || {
        open_bucket(&js, &settings)
    })
    .await;
    // In the background: where nodes may not create streams and the stream is missing, each
    // refused request costs a request timeout, which must not delay the snapshot.
    let (event_js, event_settings) = (js.clone(), settings.clone());
    tokio::spawn(async move {
        if let Err(e) = open_event_stream(&event_js, &event_settings).await {
            tracing::error!(stream = %event_settings.stream_name(), error = %e, "config event stream creation error; config sync continues on the KV alone");
        }
    });
    let nudge_subject = format!("{}.{}", settings.subject_prefix, key);
    let mut nudges = client.subscribe(nudge_subject).await.ok();

    // The snapshot.
    let mut last_seen = 0u64;
    // The last version seen that was older than `last_seen`, reported once.
    let mut last_older: Option<u64> = None;
    let counted_latest = |result: Result<Option<(u64, Bytes)>, StoreError>| {
        // One unit per key read, as for every bucket: a read that found the key (or found it
        // deleted) is `ok`, a failed one `error`.
        Metrics::count_kv(&metrics.kv_get, &settings.kv_bucket, result.is_ok());
        result
    };
    match counted_latest(latest(&store, &key).await) {
        Ok(Some((version, yaml))) => {
            last_seen = version;
            if out
                .send(ConfigUpdate {
                    version,
                    yaml,
                    snapshot: true,
                })
                .await
                .is_err()
            {
                return;
            }
        }
        Ok(None) => {
            tracing::info!(bucket = %settings.kv_bucket, key = %key, "config snapshot loaded: no desired config yet")
        }
        Err(e) => {
            tracing::warn!(bucket = %settings.kv_bucket, error = %e, "config snapshot read failed; the watchdog retries")
        }
    }

    let mut watcher = watch(&client, &store, &key, last_seen + 1).await;
    let mut watchdog = tokio::time::interval(WATCHDOG_INTERVAL);
    watchdog.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let update = tokio::select! {
            entry = next_entry(&mut watcher) => match entry {
                Some(Some(version)) => {
                    Metrics::count_kv(&metrics.kv_get, &settings.kv_bucket, true);
                    Some(version)
                }
                Some(None) => None,
                None => {
                    watcher = None;
                    None
                }
            },
            Some(_) = next_nudge(&mut nudges) => counted_latest(latest(&store, &key).await).ok().flatten(),
            _ = watchdog.tick() => {
                match counted_latest(latest(&store, &key).await) {
                    Ok(Some((version, yaml))) if version > last_seen => {
                        tracing::warn!(key = %key, version, last_seen, "config watcher fell behind; rebuilding it");
                        watcher = watch(&client, &store, &key, version + 1).await;
                        Some((version, yaml))
                    }
                    Ok(_) => {
                        if watcher.is_none() {
                            watcher = watch(&client, &store, &key, last_seen + 1).await;
                        }
                        None
                    }
                    Err(_) => None,
                }
            }
        };
        let Some((version, yaml)) = update else {
            continue;
        };
        if version > last_seen {
            last_seen = version;
        } else if version < last_seen && last_older != Some(version) {
            // The key's revision went backwards (the bucket was deleted and created again):
            // hand it to the core once, which ignores it and says so (logged and counted as
            // `ignored`), rather than dropping it silently at every watchdog round.
            last_older = Some(version);
        } else {
            // The version in force (a nudge or the watchdog reading it again), or an older
            // one already reported.
            continue;
        }
        if out
            .send(ConfigUpdate {
                version,
                yaml,
                snapshot: false,
            })
            .await
            .is_err()
        {
            return;
        }
    }
}

/// Watches `key` of `store` from `revision` on: a named ordered push consumer filtered to the
/// key (see [`crate::kv::consumer_name`] for why named). `None` (logged) when it cannot be
/// made; the watchdog tries again.
async fn watch(
    client: &Client,
    store: &kv::Store,
    key: &str,
    revision: u64,
) -> Option<push::Ordered> {
    let deliver_subject = client.new_inbox();
    let made = async {
        store
            .stream
            .create_consumer(push::OrderedConfig {
                name: Some(crate::kv::consumer_name(&deliver_subject)),
                deliver_subject: deliver_subject.clone(),
                filter_subject: format!("$KV.{}.{key}", store.name),
                deliver_policy: DeliverPolicy::ByStartSequence {
                    start_sequence: revision.max(1),
                },
                replay_policy: ReplayPolicy::Instant,
                ..Default::default()
            })
            .await
            .map_err(|e| e.to_string())?
            .messages()
            .await
            .map_err(|e| e.to_string())
    };
    match made.await {
        Ok(messages) => Some(messages),
        Err(e) => {
            tracing::warn!(bucket = %store.name, key, error = %e, "config watcher not started; the nudge and the watchdog still bring new versions");
            None
        }
    }
}

/// The next message of the watcher: `Some(Some((revision, value)))` for a new value,
/// `Some(None)` for a deletion, `None` when the watcher ended or failed.
async fn next_entry(watcher: &mut Option<push::Ordered>) -> Option<Option<(u64, Bytes)>> {
    match watcher {
        Some(w) => match w.next().await {
            Some(Ok(message)) => {
                let deleted = message
                    .headers
                    .as_ref()
                    .and_then(|h| h.get("KV-Operation"))
                    .is_some_and(|op| op.as_str() != "PUT");
                let revision = message.info().ok()?.stream_sequence;
                Some((!deleted).then(|| (revision, message.payload.clone())))
            }
            _ => None,
        },
        None => futures::future::pending().await,
    }
}

async fn next_nudge(nudges: &mut Option<async_nats::Subscriber>) -> Option<async_nats::Message> {
    match nudges {
        Some(s) => s.next().await,
        None => futures::future::pending().await,
    }
}
