//! Config sync: the desired configuration (YAML) is the value of key `<cluster>` in bucket
//! `config.kvBucket`; its KV revision is its version. Events about it go to the stream
//! `config.stream` on subjects `<config.subjectPrefix>.<cluster>`.
//!
//! New versions arrive three ways, so none of them is a single point of failure: a KV watcher
//! (fast), an event on `<subjectPrefix>.<cluster>` (a nudge to read the key now), and a watchdog
//! that reads the key every few seconds and rebuilds the watcher when it has fallen behind
//! (a KV watcher can stall silently after a failover).

use std::time::Duration;

use async_nats::Client;
use async_nats::jetstream::{self, kv, stream};
use bytes::Bytes;
use futures::StreamExt;
use gslb_state_core::config::ConfigSyncSettings;
use tokio::sync::mpsc;

use crate::driver::Internal;

/// How often the watchdog reads the key.
const WATCHDOG_INTERVAL: Duration = Duration::from_secs(3);
/// History kept per cluster key (`gslb-state config history`).
pub const CONFIG_HISTORY: i64 = 64;
/// Events kept in the config event stream.
const EVENT_STREAM_MAX_MSGS: i64 = 10_000;

/// A version of the desired configuration.
#[derive(Debug)]
pub(crate) struct ConfigUpdate {
    pub(crate) version: u64,
    pub(crate) yaml: Bytes,
    /// Read at start-up.
    pub(crate) snapshot: bool,
}

/// Opens (creating when absent) the config bucket.
pub async fn open_bucket(
    js: &jetstream::Context,
    settings: &ConfigSyncSettings,
) -> Result<kv::Store, String> {
    if let Ok(store) = js.get_key_value(&settings.kv_bucket).await {
        return Ok(store);
    }
    let mut last = String::new();
    for replicas in [3, 1] {
        match js
            .create_key_value(kv::Config {
                bucket: settings.kv_bucket.clone(),
                description: "gslb-state desired configuration".into(),
                history: CONFIG_HISTORY,
                max_value_size: gslb_state_core::config::MAX_CONFIG_BYTES as i32,
                num_replicas: replicas,
                ..Default::default()
            })
            .await
        {
            Ok(store) => return Ok(store),
            Err(e) => last = e.to_string(),
        }
        if let Ok(store) = js.get_key_value(&settings.kv_bucket).await {
            return Ok(store);
        }
    }
    Err(last)
}

/// Opens (creating when absent) the config event stream, under the mapped name.
pub async fn open_event_stream(
    js: &jetstream::Context,
    settings: &ConfigSyncSettings,
) -> Result<stream::Stream, String> {
    let name = settings.stream_name();
    if settings.stream_name_was_mapped() {
        tracing::warn!(
            configured = %settings.stream,
            used = %name,
            "config.stream: NATS forbids '.', '*', '>', '/', '\\' and whitespace in stream names; using the mapped name"
        );
    }
    if let Ok(s) = js.get_stream(&name).await {
        return Ok(s);
    }
    let mut last = String::new();
    for replicas in [3, 1] {
        match js
            .create_stream(stream::Config {
                name: name.clone(),
                subjects: vec![format!("{}.>", settings.subject_prefix)],
                max_messages: EVENT_STREAM_MAX_MSGS,
                num_replicas: replicas,
                ..Default::default()
            })
            .await
        {
            Ok(s) => return Ok(s),
            Err(e) => last = e.to_string(),
        }
        if let Ok(s) = js.get_stream(&name).await {
            return Ok(s);
        }
    }
    Err(last)
}

/// Runs config sync for key `key` until the driver goes away.
pub(crate) async fn run(
    client: Client,
    js: jetstream::Context,
    settings: ConfigSyncSettings,
    key: String,
    out: mpsc::Sender<Internal>,
) {
    let mut delay = Duration::from_millis(250);
    let store = loop {
        match open_bucket(&js, &settings).await {
            Ok(store) => break store,
            Err(e) => {
                tracing::error!(bucket = %settings.kv_bucket, error = %e, retry_in = ?delay, "KV bucket creation error (config sync)");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(10));
            }
        }
    };
    if let Err(e) = open_event_stream(&js, &settings).await {
        tracing::error!(stream = %settings.stream_name(), error = %e, "config event stream creation error; config sync continues on the KV alone");
    }
    let nudge_subject = format!("{}.{}", settings.subject_prefix, key);
    let mut nudges = client.subscribe(nudge_subject).await.ok();

    // The snapshot.
    let mut last_seen = 0u64;
    // The last version seen that was older than `last_seen`, reported once.
    let mut last_older: Option<u64> = None;
    match latest(&store, &key).await {
        Ok(Some((version, yaml))) => {
            last_seen = version;
            if out
                .send(Internal::Config(ConfigUpdate {
                    version,
                    yaml,
                    snapshot: true,
                }))
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

    let mut watcher = store.watch_from_revision(&key, last_seen + 1).await.ok();
    let mut watchdog = tokio::time::interval(WATCHDOG_INTERVAL);
    watchdog.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let update = tokio::select! {
            entry = next_entry(&mut watcher) => match entry {
                Some(entry) if entry.operation == kv::Operation::Put => Some((entry.revision, entry.value)),
                Some(_) => None,
                None => {
                    watcher = None;
                    None
                }
            },
            Some(_) = next_nudge(&mut nudges) => latest(&store, &key).await.ok().flatten(),
            _ = watchdog.tick() => {
                match latest(&store, &key).await {
                    Ok(Some((version, yaml))) if version > last_seen => {
                        tracing::warn!(key = %key, version, last_seen, "config watcher fell behind; rebuilding it");
                        watcher = store.watch_from_revision(&key, version + 1).await.ok();
                        Some((version, yaml))
                    }
                    Ok(_) => {
                        if watcher.is_none() {
                            watcher = store.watch_from_revision(&key, last_seen + 1).await.ok();
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
            .send(Internal::Config(ConfigUpdate {
                version,
                yaml,
                snapshot: false,
            }))
            .await
            .is_err()
        {
            return;
        }
    }
}

async fn next_entry(watcher: &mut Option<kv::Watch>) -> Option<kv::Entry> {
    match watcher {
        Some(w) => match w.next().await {
            Some(Ok(entry)) => Some(entry),
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

/// The newest version of `key`, if any (deleted keys have none).
pub async fn latest(store: &kv::Store, key: &str) -> Result<Option<(u64, Bytes)>, String> {
    match store.entry(key).await {
        Ok(Some(entry)) if entry.operation == kv::Operation::Put => {
            Ok(Some((entry.revision, entry.value)))
        }
        Ok(_) => Ok(None),
        Err(e) => Err(e.to_string()),
    }
}
