//! The desired configuration's storage, for the writing side of config sync: the config
//! bucket (`config.kvBucket`, key `<cluster.id>`, its KV revision the version) and the event
//! stream (`config.stream` on `<config.subjectPrefix>.<cluster>`). [`ConfigStore`] is what
//! `gslb-state config push|get|history` use; any NATS client may write the key the same way.

use async_nats::Client;
use async_nats::jetstream::{self, kv, stream};
use bytes::Bytes;
use futures::StreamExt;
use gslb_state_core::Config;
use gslb_state_core::config::ConfigSyncSettings;
use gslb_state_core::names::encode_token;

use crate::error::StoreError;

/// History kept per cluster key (`gslb-state config history`).
pub const CONFIG_HISTORY: i64 = 64;
/// Events kept in the config event stream.
const EVENT_STREAM_MAX_MSGS: i64 = 10_000;

fn bucket_of(settings: &ConfigSyncSettings) -> String {
    format!("config.kvBucket {}", settings.kv_bucket)
}

/// Opens (creating when absent) the config bucket.
pub(crate) async fn open_bucket(
    js: &jetstream::Context,
    settings: &ConfigSyncSettings,
) -> Result<kv::Store, StoreError> {
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
        // Another node may have created it meanwhile.
        if let Ok(store) = js.get_key_value(&settings.kv_bucket).await {
            return Ok(store);
        }
    }
    Err(StoreError::new(bucket_of(settings), "creating", last))
}

/// Opens (creating when absent) the config event stream, under the mapped name.
pub(crate) async fn open_event_stream(
    js: &jetstream::Context,
    settings: &ConfigSyncSettings,
) -> Result<stream::Stream, StoreError> {
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
    Err(StoreError::new(
        format!("config.stream {name}"),
        "creating",
        last,
    ))
}

/// The newest version of `key`, if any (deleted keys have none).
pub(crate) async fn latest(
    store: &kv::Store,
    key: &str,
) -> Result<Option<(u64, Bytes)>, StoreError> {
    match store.entry(key).await {
        Ok(Some(entry)) if entry.operation == kv::Operation::Put => {
            Ok(Some((entry.revision, entry.value)))
        }
        Ok(_) => Ok(None),
        Err(e) => Err(StoreError::new(
            format!("key {key} of {}", store.name),
            "reading",
            e,
        )),
    }
}

/// One version of the desired configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigVersion {
    /// The version (KV revision).
    pub version: u64,
    /// When it was written, ms since the Unix epoch (the server's clock).
    pub created_unix_ms: u64,
    /// The YAML (empty for a deletion).
    pub yaml: Bytes,
    /// Whether this version deleted or purged the key instead of writing it.
    pub deleted: bool,
}

/// Why a [`ConfigStore`] could not be opened.
#[derive(Debug)]
pub enum ConfigStoreError {
    /// The configuration has no `config` section (`config.kvBucket`, ...).
    NotConfigured,
    /// The bucket could not be opened or created.
    Store(StoreError),
}

impl std::fmt::Display for ConfigStoreError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ConfigStoreError::NotConfigured => f.write_str(
                "config: the config section (config.kvBucket, ...) is needed for config sync",
            ),
            ConfigStoreError::Store(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for ConfigStoreError {}

/// The cluster's desired configuration in its bucket: push a new version, read the newest or
/// the history.
pub struct ConfigStore {
    client: Client,
    js: jetstream::Context,
    settings: ConfigSyncSettings,
    cluster_id: String,
    key: String,
    store: kv::Store,
}

impl ConfigStore {
    /// Opens (creating when absent) the config bucket of `config`'s cluster.
    pub async fn open(client: &Client, config: &Config) -> Result<ConfigStore, ConfigStoreError> {
        let settings = config
            .config_sync
            .clone()
            .ok_or(ConfigStoreError::NotConfigured)?;
        let js = crate::connect::jetstream_context(client, config);
        let store = open_bucket(&js, &settings)
            .await
            .map_err(ConfigStoreError::Store)?;
        Ok(ConfigStore {
            client: client.clone(),
            js,
            cluster_id: config.cluster_id.clone(),
            key: encode_token(&config.cluster_id),
            settings,
            store,
        })
    }

    /// Writes `yaml` as the cluster's new desired configuration (unchecked: validate it
    /// first) and tells the nodes at once with an event on `<subjectPrefix>.<cluster>`
    /// (recorded in the event stream when it can be opened); returns its version.
    pub async fn push(&self, yaml: Bytes) -> Result<u64, StoreError> {
        let version = self
            .store
            .put(&self.key, yaml)
            .await
            .map_err(|e| StoreError::new(bucket_of(&self.settings), "writing to", e))?;
        let event =
            serde_json::json!({ "cluster": self.cluster_id, "version": version }).to_string();
        let subject = format!("{}.{}", self.settings.subject_prefix, self.key);
        // The nodes would find the version anyway (watcher, watchdog): the event is a nudge.
        if open_event_stream(&self.js, &self.settings).await.is_ok() {
            if let Ok(ack) = self.js.publish(subject, event.into()).await {
                let _ = ack.await;
            }
        } else {
            let _ = self.client.publish(subject, event.into()).await;
        }
        let _ = self.client.flush().await;
        Ok(version)
    }

    /// The newest version, if any.
    pub async fn latest(&self) -> Result<Option<(u64, Bytes)>, StoreError> {
        latest(&self.store, &self.key).await
    }

    /// Every version kept (up to [`CONFIG_HISTORY`]), oldest first.
    pub async fn history(&self) -> Result<Vec<ConfigVersion>, StoreError> {
        let failed = |e: &dyn std::fmt::Display| {
            StoreError::new(bucket_of(&self.settings), "reading the history of", e)
        };
        let mut entries = self
            .store
            .history(&self.key)
            .await
            .map_err(|e| failed(&e))?;
        let mut out = Vec::new();
        while let Some(entry) = entries.next().await {
            let entry = entry.map_err(|e| failed(&e))?;
            let created_ns = entry.created.unix_timestamp_nanos().max(0);
            out.push(ConfigVersion {
                version: entry.revision,
                created_unix_ms: u64::try_from(created_ns / 1_000_000).unwrap_or(u64::MAX),
                deleted: entry.operation != kv::Operation::Put,
                yaml: entry.value,
            });
        }
        Ok(out)
    }
}
