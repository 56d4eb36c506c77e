//! Connection options from `nats.*`: servers, TLS and mTLS, credentials, ping tuning.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_nats::{Client, ConnectOptions, Event, jetstream};
use gslb_state_core::config::Config;
use gslb_state_core::config::NatsSettings;
use tokio::sync::mpsc;

use crate::error::ConnectSetupError;

/// Installs rustls's `ring` provider once: async-nats enables only `ring`, but if anything else
/// in the embedding program enables `aws-lc-rs` too, rustls would panic at the first TLS connect
/// without an explicit choice.
pub(crate) fn install_crypto_provider() {
    let _ = async_nats::rustls::crypto::ring::default_provider().install_default();
}

/// How long a request (and a JetStream API call or KV write) may wait for its answer.
pub(crate) fn request_timeout(settings: &NatsSettings) -> Duration {
    Duration::from_secs(2).max(settings.connect_timeout)
}

/// Commands (publishes, KV requests) the client may queue; async-nats's default is 2048.
const CLIENT_QUEUE: usize = 65_536;

/// A failure that repeats unchanged is logged again after this long.
const REPEAT_LOG_INTERVAL: Duration = Duration::from_secs(30);

/// Why connection attempts failed, per server, in full.
///
/// async-nats's [`Event::ClientError`] carries only the error kind (`IO error`), which cannot
/// tell a refused certificate from a closed port. Its server pool keeps the full text of each
/// server's last failure and hands it to the reconnect callback, which records it here.
#[derive(Debug, Default)]
pub(crate) struct ConnectErrors {
    /// Per server URL: the last error and when it was last logged.
    by_server: Mutex<HashMap<String, (String, Instant)>>,
    /// The most recent failure, `<url>: <error>`; cleared once connected.
    last: Mutex<Option<String>>,
}

impl ConnectErrors {
    /// Records the failures in `pool`, logging each new (or long-repeated) one.
    fn record(&self, pool: &[async_nats::Server]) {
        let mut by_server = self.by_server.lock().unwrap_or_else(|e| e.into_inner());
        for server in pool {
            let Some(error) = &server.last_error else {
                continue;
            };
            if server.failed_attempts == 0 {
                continue;
            }
            let url = server.addr.as_url_str().to_owned();
            let now = Instant::now();
            let log = match by_server.get(&url) {
                Some((seen, at)) => seen != error || now.duration_since(*at) >= REPEAT_LOG_INTERVAL,
                None => true,
            };
            if log {
                tracing::warn!(server = %url, error = %error, attempts = server.failed_attempts, "NATS connect error");
                by_server.insert(url.clone(), (error.clone(), now));
                *self.last.lock().unwrap_or_else(|e| e.into_inner()) =
                    Some(format!("{url}: {error}"));
            }
        }
    }

    /// Forgets past failures (the client is connected).
    pub(crate) fn clear(&self) {
        self.by_server
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
        *self.last.lock().unwrap_or_else(|e| e.into_inner()) = None;
    }

    /// The most recent failure since the last successful connection.
    pub(crate) fn last(&self) -> Option<String> {
        self.last.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

fn setup_error(key: &'static str, message: String) -> ConnectSetupError {
    ConnectSetupError { key, message }
}

/// The options for `settings`, reporting connection events on `events` and recording each
/// server's connection failures in `errors`.
///
/// Connecting never blocks start-up: the client connects in the background and keeps retrying.
pub(crate) async fn options(
    settings: &NatsSettings,
    client_name: &str,
    events: mpsc::UnboundedSender<Event>,
    errors: Arc<ConnectErrors>,
) -> Result<ConnectOptions, ConnectSetupError> {
    install_crypto_provider();
    let mut opts = ConnectOptions::new();
    let auth = &settings.auth;
    if let Some(path) = &auth.creds_file {
        opts = opts.credentials_file(path).await.map_err(|e| {
            setup_error(
                "nats.auth.credsFile",
                format!("cannot read {}: {e}", path.display()),
            )
        })?;
    }
    if let Some(path) = &auth.nkey_seed_file {
        let seed = std::fs::read_to_string(path).map_err(|e| {
            setup_error(
                "nats.auth.nkeySeedFile",
                format!("cannot read {}: {e}", path.display()),
            )
        })?;
        let seed = seed
            .lines()
            .map(str::trim)
            .find(|l| l.starts_with('S'))
            .ok_or_else(|| {
                setup_error(
                    "nats.auth.nkeySeedFile",
                    format!(
                        "{} holds no nkey seed (a line starting with 'S')",
                        path.display()
                    ),
                )
            })?
            .to_owned();
        opts = opts.nkey(seed);
    }
    if let (Some(user_env), Some(password_env)) = (&auth.user_env, &auth.password_env) {
        let user = std::env::var(user_env).map_err(|_| {
            setup_error(
                "nats.auth.userEnv",
                format!("environment variable {user_env} is not set"),
            )
        })?;
        let password = std::env::var(password_env).map_err(|_| {
            setup_error(
                "nats.auth.passwordEnv",
                format!("environment variable {password_env} is not set"),
            )
        })?;
        opts = opts.user_and_password(user, password);
    }
    if let Some(tls) = &settings.tls {
        for (key, path) in [
            ("nats.tls.caFile", &tls.ca_file),
            ("nats.tls.certFile", &tls.cert_file),
            ("nats.tls.keyFile", &tls.key_file),
        ] {
            if let Some(path) = path
                && !path.is_file()
            {
                return Err(setup_error(
                    key,
                    format!("{} is not a readable file", path.display()),
                ));
            }
        }
        opts = opts.require_tls(true);
        if let Some(ca) = &tls.ca_file {
            opts = opts.add_root_certificates(ca.clone());
        }
        if let (Some(cert), Some(key)) = (&tls.cert_file, &tls.key_file) {
            opts = opts.add_client_certificate(cert.clone(), key.clone());
        }
    }
    Ok(opts
        .name(client_name)
        // Replies and consumer deliveries come to `<inbox_prefix>.…`: a prefix of its own lets
        // the server keep other clients from reading them (see SECURITY.md).
        .custom_inbox_prefix(settings.inbox_prefix.as_str())
        // A node has no use for its own heartbeats and reports: without this the server sends
        // every one back, doubling inbound traffic and inflating `nats_received_total`.
        .no_echo()
        // Room for a burst of changes (a publish and a KV write each) without the driver's
        // publish timing out on a full queue and the change being lost to peers.
        .client_capacity(CLIENT_QUEUE)
        .ping_interval(settings.ping_interval)
        .connection_timeout(settings.connect_timeout)
        .request_timeout(Some(request_timeout(settings)))
        .retry_on_initial_connect()
        .max_reconnects(None)
        .reconnect_delay_callback(|attempts| {
            // Quick first retries (another server of the cluster is usually up), then back off.
            let ms = match attempts {
                0..=2 => 0,
                n => (100u64 << (n - 3).min(5)).min(2_000),
            };
            Duration::from_millis(ms)
        })
        .reconnect_to_server_callback(move |pool, _info| {
            // Only observes: `None` keeps async-nats's own server selection.
            errors.record(&pool);
            std::future::ready(None)
        })
        .event_callback(move |event| {
            let events = events.clone();
            async move {
                let _ = events.send(event);
            }
        }))
}

/// The JetStream context of `config` (with its domain, if any).
///
/// KV writes wait for their ack as long as requests do (async-nats's own default is 5 s): a
/// write lost with a hung server fails, is retried and its report republished that much sooner.
/// The JetStream API prefix `config`'s client uses: `$JS.<domain>.API` with a domain, else
/// `$JS.API`.
pub(crate) fn api_prefix(config: &Config) -> String {
    match &config.nats.jetstream_domain {
        Some(domain) => format!("$JS.{domain}.API"),
        None => "$JS.API".to_owned(),
    }
}

pub(crate) fn jetstream_context(client: &Client, config: &Config) -> jetstream::Context {
    let mut js = match &config.nats.jetstream_domain {
        Some(domain) => jetstream::with_domain(client.clone(), domain),
        None => jetstream::new(client.clone()),
    };
    js.set_timeout(request_timeout(&config.nats));
    js
}
