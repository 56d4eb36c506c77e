//! The configuration model: the operator guide's YAML, parsed into typed, validated settings.
//!
//! Keys are read exactly as the guide writes them (`state.heartbeatTTL`, `nats.jetStream.domain`,
//! durations like `"10s"`). Unknown keys, out-of-range values and missing required keys are
//! errors that name the key and the line. Hostile input (huge files, deep nesting, alias bombs)
//! is refused within fixed bounds.

use std::cell::RefCell;
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;
use serde_saphyr::Spanned;

use crate::names::{check_endpoint_name, check_id};
use crate::policy::Policy;

/// Largest configuration file accepted, in bytes.
pub const MAX_CONFIG_BYTES: usize = 1024 * 1024;
/// Most endpoints in one configuration file.
pub const MAX_CONFIG_ENDPOINTS: usize = 100_000;
/// Deepest nesting accepted in a configuration file.
pub const MAX_CONFIG_DEPTH: usize = 16;

/// Default `state.quorumMinPercent`.
pub const DEFAULT_QUORUM_MIN_PERCENT: u8 = 51;
/// Default `state.heartbeatInterval`.
pub const DEFAULT_HEARTBEAT_INTERVAL: Duration = Duration::from_secs(10);
/// Default `state.heartbeatTTL`.
pub const DEFAULT_HEARTBEAT_TTL: Duration = Duration::from_secs(30);
/// Default `config.applyTimeout`.
pub const DEFAULT_APPLY_TIMEOUT: Duration = Duration::from_secs(5);
/// Default `admin.listen`.
pub const DEFAULT_ADMIN_LISTEN: &str = "127.0.0.1:9464";
/// Default `nats.servers`.
pub const DEFAULT_NATS_SERVER: &str = "nats://127.0.0.1:4222";
/// Default `nats.inboxPrefix`.
pub const DEFAULT_INBOX_PREFIX: &str = "_INBOX";
/// Shortest accepted heartbeat interval.
pub const MIN_HEARTBEAT_INTERVAL: Duration = Duration::from_millis(10);
/// Longest accepted heartbeat TTL.
pub const MAX_HEARTBEAT_TTL: Duration = Duration::from_secs(24 * 3600);

/// The membership and health settings (`state.*`): the part a config event may change at run time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateSettings {
    /// `state.healthPolicy`.
    pub policy: Policy,
    /// `state.quorumMinPercent`, in 1..=100.
    pub quorum_min_percent: u8,
    /// `state.heartbeatInterval`.
    pub heartbeat_interval: Duration,
    /// `state.heartbeatTTL`, greater than the interval.
    pub heartbeat_ttl: Duration,
    /// `state.enableConfigSync`.
    pub enable_config_sync: bool,
}

impl Default for StateSettings {
    fn default() -> Self {
        StateSettings {
            policy: Policy::PreferLocal,
            quorum_min_percent: DEFAULT_QUORUM_MIN_PERCENT,
            heartbeat_interval: DEFAULT_HEARTBEAT_INTERVAL,
            heartbeat_ttl: DEFAULT_HEARTBEAT_TTL,
            enable_config_sync: false,
        }
    }
}

impl StateSettings {
    /// Checks the rules between fields (the YAML parser checks them with line numbers).
    pub fn validate(&self) -> Result<(), String> {
        if !(1..=100).contains(&self.quorum_min_percent) {
            return Err(format!(
                "state.quorumMinPercent: must be between 1 and 100, got {}",
                self.quorum_min_percent
            ));
        }
        if self.heartbeat_interval < MIN_HEARTBEAT_INTERVAL {
            return Err(format!(
                "state.heartbeatInterval: must be at least {MIN_HEARTBEAT_INTERVAL:?}"
            ));
        }
        if self.heartbeat_ttl <= self.heartbeat_interval {
            return Err("state.heartbeatTTL: must be greater than state.heartbeatInterval".into());
        }
        if self.heartbeat_ttl > MAX_HEARTBEAT_TTL {
            return Err(format!(
                "state.heartbeatTTL: must be at most {MAX_HEARTBEAT_TTL:?}"
            ));
        }
        Ok(())
    }
}

/// TLS files (`nats.tls.*`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TlsFiles {
    /// `nats.tls.caFile`: CA certificate(s) that sign the servers' certificates.
    pub ca_file: Option<PathBuf>,
    /// `nats.tls.certFile`: this client's certificate, for mTLS.
    pub cert_file: Option<PathBuf>,
    /// `nats.tls.keyFile`: this client's private key, for mTLS.
    pub key_file: Option<PathBuf>,
}

/// How the node authenticates to NATS besides mTLS (`nats.auth.*`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct NatsAuth {
    /// `nats.auth.credsFile`: a NATS credentials file (JWT and nkey seed).
    pub creds_file: Option<PathBuf>,
    /// `nats.auth.nkeySeedFile`: a file holding an nkey seed.
    pub nkey_seed_file: Option<PathBuf>,
    /// `nats.auth.userEnv`: the environment variable holding the user name.
    pub user_env: Option<String>,
    /// `nats.auth.passwordEnv`: the environment variable holding the password.
    pub password_env: Option<String>,
}

/// How to reach NATS (`nats.*`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NatsSettings {
    /// `nats.servers`: every server URL of the cluster.
    pub servers: Vec<String>,
    /// `nats.tls`, when present.
    pub tls: Option<TlsFiles>,
    /// `nats.jetStream.domain`, when set.
    pub jetstream_domain: Option<String>,
    /// `nats.auth`.
    pub auth: NatsAuth,
    /// `nats.pingInterval`: how often the client pings the server (a hung server is noticed
    /// after about two missed pings). Default 2 s.
    pub ping_interval: Duration,
    /// `nats.connectTimeout`: how long one connection attempt may take. Default 2 s.
    pub connect_timeout: Duration,
    /// `nats.inboxPrefix`: the subject prefix of this client's reply inboxes (request replies
    /// and consumer deliveries). Default `_INBOX`; give each node its own (`_INBOX_<node>`)
    /// when per-node permissions must keep nodes from reading each other's replies.
    pub inbox_prefix: String,
}

impl Default for NatsSettings {
    fn default() -> Self {
        NatsSettings {
            servers: vec![DEFAULT_NATS_SERVER.to_owned()],
            tls: None,
            jetstream_domain: None,
            auth: NatsAuth::default(),
            ping_interval: Duration::from_secs(2),
            connect_timeout: Duration::from_secs(2),
            inbox_prefix: DEFAULT_INBOX_PREFIX.to_owned(),
        }
    }
}

/// Configuration sync settings (`config.*`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigSyncSettings {
    /// `config.mode`; only `jetstream` exists.
    pub mode: String,
    /// `config.stream` as written by the operator (see [`ConfigSyncSettings::stream_name`]).
    pub stream: String,
    /// `config.subjectPrefix`: config events are published on `<subjectPrefix>.<cluster>`.
    pub subject_prefix: String,
    /// `config.kvBucket`: the desired config is the value of key `<cluster>` in this bucket.
    pub kv_bucket: String,
    /// `config.applyTimeout`.
    pub apply_timeout: Duration,
}

impl ConfigSyncSettings {
    /// The JetStream stream name to use: `config.stream` with every character NATS forbids in
    /// stream names (`.`, `*`, `>`, `/`, `\`, whitespace, control) replaced by `_`.
    /// The guide's `PLEIADES.cfg` becomes `PLEIADES_cfg`.
    pub fn stream_name(&self) -> String {
        self.stream
            .chars()
            .map(|c| {
                if matches!(c, '.' | '*' | '>' | '/' | '\\') || c.is_whitespace() || c.is_control()
                {
                    '_'
                } else {
                    c
                }
            })
            .collect()
    }

    /// Whether [`ConfigSyncSettings::stream_name`] differs from what the operator wrote.
    pub fn stream_name_was_mapped(&self) -> bool {
        self.stream_name() != self.stream
    }
}

/// A built-in probe of an endpoint (`endpoints[].probe`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeSpec {
    /// What to probe.
    pub target: ProbeTarget,
    /// `probe.interval`. Default 5 s.
    pub interval: Duration,
    /// `probe.timeout`. Default 2 s; less than the interval.
    pub timeout: Duration,
    /// `probe.rise`: consecutive successes before a down endpoint is reported up. Default 2.
    pub rise: u32,
    /// `probe.fall`: consecutive failures before an up endpoint is reported down. Default 3.
    pub fall: u32,
}

/// The target of a probe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProbeTarget {
    /// `probe.tcp: "host:port"`: a TCP connect succeeds.
    Tcp {
        /// `host:port`.
        address: String,
    },
    /// `probe.http: "http(s)://..."`: a GET answers with `expect_status`.
    Http {
        /// The URL.
        url: String,
        /// `probe.expectStatus`. Default 200.
        expect_status: u16,
    },
}

/// An endpoint this node knows about (`endpoints[]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointSpec {
    /// `name`: 1 to 255 bytes of UTF-8.
    pub name: String,
    /// `probe`: a built-in check; without one, health comes from the HTTP API.
    pub probe: Option<ProbeSpec>,
}

/// A whole configuration file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// `cluster.id` (required).
    pub cluster_id: String,
    /// `node.id`; when absent the driver uses the host name.
    pub node_id: Option<String>,
    /// `node.region`; empty when absent.
    pub region: String,
    /// `state.*`.
    pub state: StateSettings,
    /// `nats.*`.
    pub nats: NatsSettings,
    /// `config.*`; present when the file has a `config` section.
    pub config_sync: Option<ConfigSyncSettings>,
    /// `admin.listen`.
    pub admin_listen: String,
    /// `endpoints`.
    pub endpoints: Vec<EndpointSpec>,
}

/// One problem in a configuration file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigProblem {
    /// The dotted key, like `state.quorumMinPercent` (empty for the whole document).
    pub key: String,
    /// 1-based line, when known.
    pub line: Option<u64>,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for ConfigProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(line) = self.line {
            write!(f, "line {line}: ")?;
        }
        if !self.key.is_empty() {
            write!(f, "{}: ", self.key)?;
        }
        f.write_str(&self.message)
    }
}

impl std::error::Error for ConfigProblem {}

/// Why a configuration was refused: every problem found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The problems, in file order where known.
    pub problems: Vec<ConfigProblem>,
}

impl ConfigError {
    fn one(key: &str, line: Option<u64>, message: impl Into<String>) -> Self {
        ConfigError {
            problems: vec![ConfigProblem {
                key: key.to_owned(),
                line,
                message: message.into(),
            }],
        }
    }
}

/// A [`ConfigError`] shown in one line names at most this many problems, then how many more.
pub const MAX_PROBLEMS_SHOWN: usize = 10;

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.problems.iter().take(MAX_PROBLEMS_SHOWN).enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{p}")?;
        }
        let more = self.problems.len().saturating_sub(MAX_PROBLEMS_SHOWN);
        if more > 0 {
            write!(f, "; and {more} more")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigError {}

// ---- raw serde model: the YAML's shape, with positions ----

type S<T> = Spanned<T>;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    /// Spanned even when empty (`cluster:`), so a missing `cluster.id` can name a line.
    #[serde(default = "absent")]
    cluster: S<Option<RawCluster>>,
    node: Option<RawNode>,
    state: Option<RawState>,
    nats: Option<RawNats>,
    config: Option<RawConfigSync>,
    admin: Option<RawAdmin>,
    endpoints: Option<S<Vec<RawEndpoint>>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCluster {
    /// Spanned even when empty (`id:`), so its line can be named.
    #[serde(default = "absent")]
    id: S<Option<String>>,
}

/// An absent key: no value, no line.
fn absent<T>() -> S<Option<T>> {
    Spanned::new(
        None,
        serde_saphyr::Location::UNKNOWN,
        serde_saphyr::Location::UNKNOWN,
    )
}

/// The line of a spanned value, if it was in the file.
fn line_of<T>(s: &S<T>) -> Option<u64> {
    Some(s.referenced.line()).filter(|l| *l > 0)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawNode {
    id: Option<S<String>>,
    region: Option<S<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawState {
    health_policy: Option<S<String>>,
    quorum_min_percent: Option<S<i64>>,
    heartbeat_interval: Option<S<String>>,
    #[serde(rename = "heartbeatTTL")]
    heartbeat_ttl: Option<S<String>>,
    enable_config_sync: Option<bool>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawNats {
    servers: Option<S<Vec<String>>>,
    tls: Option<RawTls>,
    jet_stream: Option<RawJetStream>,
    auth: Option<RawAuth>,
    ping_interval: Option<S<String>>,
    connect_timeout: Option<S<String>>,
    inbox_prefix: Option<S<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawTls {
    ca_file: Option<String>,
    cert_file: Option<S<String>>,
    key_file: Option<S<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawJetStream {
    domain: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawAuth {
    creds_file: Option<String>,
    nkey_seed_file: Option<String>,
    user_env: Option<S<String>>,
    password_env: Option<S<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawConfigSync {
    mode: Option<S<String>>,
    stream: Option<S<String>>,
    subject_prefix: Option<S<String>>,
    kv_bucket: Option<S<String>>,
    apply_timeout: Option<S<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAdmin {
    listen: Option<S<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEndpoint {
    name: Option<S<String>>,
    probe: Option<S<RawProbe>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawProbe {
    tcp: Option<String>,
    http: Option<String>,
    expect_status: Option<S<i64>>,
    interval: Option<S<String>>,
    timeout: Option<S<String>>,
    rise: Option<S<i64>>,
    fall: Option<S<i64>>,
}

// ---- parsing ----

impl Config {
    /// Parses and validates a configuration file.
    pub fn from_yaml(text: &str) -> Result<Config, ConfigError> {
        if text.len() > MAX_CONFIG_BYTES {
            return Err(ConfigError::one(
                "",
                None,
                format!(
                    "file is {} bytes, larger than {MAX_CONFIG_BYTES}",
                    text.len()
                ),
            ));
        }
        let raw = parse_raw(text)?;
        let mut v = Validator::default();
        let config = v.build(raw);
        match config {
            Some(c) if v.problems.is_empty() => Ok(c),
            _ => {
                v.problems.sort_by_key(|p| p.line.unwrap_or(u64::MAX));
                Err(ConfigError {
                    problems: v.problems,
                })
            }
        }
    }

    /// Parses configuration bytes (for example a KV value); they must be UTF-8.
    pub fn from_yaml_bytes(bytes: &[u8]) -> Result<Config, ConfigError> {
        if bytes.len() > MAX_CONFIG_BYTES {
            return Err(ConfigError::one(
                "",
                None,
                format!(
                    "file is {} bytes, larger than {MAX_CONFIG_BYTES}",
                    bytes.len()
                ),
            ));
        }
        let text = std::str::from_utf8(bytes)
            .map_err(|e| ConfigError::one("", None, format!("not UTF-8: {e}")))?;
        Config::from_yaml(text)
    }

    /// A minimal valid configuration for cluster `cluster_id` with every default.
    pub fn with_defaults(cluster_id: &str) -> Config {
        Config {
            cluster_id: cluster_id.to_owned(),
            node_id: None,
            region: String::new(),
            state: StateSettings::default(),
            nats: NatsSettings::default(),
            config_sync: None,
            admin_listen: DEFAULT_ADMIN_LISTEN.to_owned(),
            endpoints: Vec::new(),
        }
    }
}

fn parse_raw(text: &str) -> Result<RawFile, ConfigError> {
    if text.trim().is_empty() {
        return Err(ConfigError::one("", None, "the file is empty"));
    }
    read_yaml(text, MAX_CONFIG_BYTES).map_err(|p| ConfigError { problems: vec![p] })
}

/// Deserializes one YAML document of at most `max_bytes` under fixed bounds (nesting, aliases,
/// anchors, events, scalar bytes; duplicate keys and YAML 1.1 booleans refused). An error names
/// the dotted key (`endpoints[2].name`) and the line. Shared by every YAML file of the project
/// (the configuration, gslb-sim scenarios).
pub fn read_yaml<T: serde::de::DeserializeOwned>(
    text: &str,
    max_bytes: usize,
) -> Result<T, ConfigProblem> {
    let mut budget = serde_saphyr::Budget::default();
    budget.max_reader_input_bytes = Some(max_bytes);
    budget.max_events = 1_000_000;
    budget.max_aliases = 100;
    budget.max_anchors = 100;
    budget.max_depth = MAX_CONFIG_DEPTH;
    budget.max_nodes = 500_000;
    budget.max_documents = 1;
    budget.max_total_scalar_bytes = max_bytes;
    let options = serde_saphyr::options! {
        budget: Some(budget),
        duplicate_keys: serde_saphyr::DuplicateKeyPolicy::Error,
        strict_booleans: true,
    };
    let path = RefCell::new(String::new());
    let result = serde_saphyr::with_deserializer_from_str_with_options(text, options, |de| {
        serde_path_to_error::deserialize(de).map_err(|e| {
            *path.borrow_mut() = dotted(e.path());
            e.into_inner()
        })
    });
    result.map_err(|e| ConfigProblem {
        key: path.borrow().clone(),
        line: e.location().map(|l| l.line()),
        message: clean_message(&e.to_string()),
    })
}

/// The guide's dotted key for a serde path (`endpoints.2.name` becomes `endpoints[2].name`;
/// `Spanned`'s own `value` segments are dropped).
fn dotted(path: &serde_path_to_error::Path) -> String {
    use serde_path_to_error::Segment;
    let mut out = String::new();
    for seg in path.iter() {
        match seg {
            Segment::Seq { index } => out.push_str(&format!("[{index}]")),
            // `Spanned<T>` adds a `value` segment of its own; no key of ours is named so.
            Segment::Map { key } | Segment::Enum { variant: key } if key == "value" => {}
            Segment::Map { key } | Segment::Enum { variant: key } => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(key);
            }
            Segment::Unknown => {}
        }
    }
    out
}

/// serde-saphyr's message without its own position prefix, suffix and snippet (we print the
/// line ourselves), in an operator's words.
fn clean_message(message: &str) -> String {
    let mut m = message.lines().next().unwrap_or(message).trim();
    m = m.strip_prefix("error: ").unwrap_or(m);
    if let Some(rest) = m.strip_prefix("line ")
        && let Some((_, after)) = rest.split_once(": ")
    {
        m = after;
    }
    if let Some(i) = m.find(" at line ") {
        m = &m[..i];
    }
    if let Some(i) = m.find(", set DuplicateKeyPolicy") {
        m = &m[..i];
    }
    match m {
        "invalid i64" => "expected a whole number".to_owned(),
        other => other.to_owned(),
    }
}

/// Longest duration any of the project's YAML files accepts.
pub const MAX_DURATION: Duration = Duration::from_secs(7 * 24 * 3600);

/// Parses a duration like `10s`, `500ms` or `1m 30s`, at most [`MAX_DURATION`] (the form every
/// YAML file of the project uses).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(text.trim()).map_err(|e| {
        format!("expected a duration like \"10s\" or \"500ms\", got {text:?} ({e})")
    })?;
    if d > MAX_DURATION {
        return Err(format!("duration {text:?} is longer than a week"));
    }
    Ok(d)
}

#[derive(Default)]
struct Validator {
    problems: Vec<ConfigProblem>,
}

impl Validator {
    fn problem(&mut self, key: &str, line: Option<u64>, message: impl Into<String>) {
        self.problems.push(ConfigProblem {
            key: key.to_owned(),
            line,
            message: message.into(),
        });
    }

    fn duration(&mut self, key: &str, raw: Option<S<String>>, default: Duration) -> Duration {
        match raw {
            None => default,
            Some(s) => match parse_duration(&s.value) {
                Ok(d) if d.is_zero() => {
                    self.problem(key, Some(s.referenced.line()), "must be greater than zero");
                    default
                }
                Ok(d) => d,
                Err(e) => {
                    self.problem(key, Some(s.referenced.line()), e);
                    default
                }
            },
        }
    }

    fn int_in(
        &mut self,
        key: &str,
        raw: Option<S<i64>>,
        range: std::ops::RangeInclusive<i64>,
        default: i64,
    ) -> i64 {
        match raw {
            None => default,
            Some(s) if range.contains(&s.value) => s.value,
            Some(s) => {
                self.problem(
                    key,
                    Some(s.referenced.line()),
                    format!(
                        "must be between {} and {}, got {}",
                        range.start(),
                        range.end(),
                        s.value
                    ),
                );
                default
            }
        }
    }

    fn build(&mut self, raw: RawFile) -> Option<Config> {
        // A missing id names the line of its empty value or of its empty section, when the
        // file has one; a file without a `cluster` section has no line to name.
        let section_line = line_of(&raw.cluster);
        let id = raw.cluster.value.map(|c| c.id);
        let cluster_id = match id.as_ref().map(|id| (&id.value, line_of(id))) {
            None if section_line.is_none() => {
                self.problem(
                    "cluster.id",
                    None,
                    "required key is missing (the file has no cluster section)",
                );
                None
            }
            None => {
                self.problem("cluster.id", section_line, "required key is missing");
                None
            }
            Some((None, line)) => {
                self.problem(
                    "cluster.id",
                    line.or(section_line),
                    "required key is missing",
                );
                None
            }
            Some((Some(value), line)) => match check_id(value) {
                Ok(()) => Some(value.clone()),
                Err(e) => {
                    self.problem("cluster.id", line, e.to_string());
                    None
                }
            },
        };
        let (node_id, region) = self.node(raw.node);
        let state = self.state(raw.state);
        let nats = self.nats(raw.nats);
        let config_sync = raw.config.map(|c| self.config_sync(c));
        if state.enable_config_sync && config_sync.is_none() {
            self.problem(
                "config",
                None,
                "state.enableConfigSync is true but the config section (config.kvBucket, ...) is missing",
            );
        }
        let admin_listen = match raw.admin.and_then(|a| a.listen) {
            None => DEFAULT_ADMIN_LISTEN.to_owned(),
            Some(l) if l.value.parse::<core::net::SocketAddr>().is_ok() => l.value,
            Some(l) => {
                self.problem(
                    "admin.listen",
                    Some(l.referenced.line()),
                    format!(
                        "expected an address like \"127.0.0.1:9464\", got {:?}",
                        l.value
                    ),
                );
                String::new()
            }
        };
        let endpoints = self.endpoints(raw.endpoints);
        Some(Config {
            cluster_id: cluster_id?,
            node_id,
            region,
            state,
            nats,
            config_sync,
            admin_listen,
            endpoints,
        })
    }

    fn node(&mut self, raw: Option<RawNode>) -> (Option<String>, String) {
        let Some(raw) = raw else {
            return (None, String::new());
        };
        let id = raw.id.and_then(|id| match check_id(&id.value) {
            Ok(()) => Some(id.value),
            Err(e) => {
                self.problem("node.id", Some(id.referenced.line()), e.to_string());
                None
            }
        });
        let region = match raw.region {
            None => String::new(),
            Some(r) if r.value.len() <= crate::codec::MAX_REGION_BYTES => r.value,
            Some(r) => {
                self.problem(
                    "node.region",
                    Some(r.referenced.line()),
                    "longer than 64 bytes",
                );
                String::new()
            }
        };
        (id, region)
    }

    fn state(&mut self, raw: Option<RawState>) -> StateSettings {
        let mut s = StateSettings::default();
        let Some(raw) = raw else {
            return s;
        };
        if let Some(p) = raw.health_policy {
            match Policy::from_name(&p.value) {
                Some(policy) => s.policy = policy,
                None => self.problem(
                    "state.healthPolicy",
                    Some(p.referenced.line()),
                    format!(
                        "unknown policy {:?}; expected one of prefer-local, local-only, global-any-healthy, global-quorum",
                        p.value
                    ),
                ),
            }
        }
        s.quorum_min_percent = self.int_in(
            "state.quorumMinPercent",
            raw.quorum_min_percent,
            1..=100,
            i64::from(DEFAULT_QUORUM_MIN_PERCENT),
        ) as u8;
        let interval_line = raw.heartbeat_interval.as_ref().map(|s| s.referenced.line());
        let ttl_line = raw.heartbeat_ttl.as_ref().map(|s| s.referenced.line());
        s.heartbeat_interval = self.duration(
            "state.heartbeatInterval",
            raw.heartbeat_interval,
            DEFAULT_HEARTBEAT_INTERVAL,
        );
        s.heartbeat_ttl = self.duration(
            "state.heartbeatTTL",
            raw.heartbeat_ttl,
            DEFAULT_HEARTBEAT_TTL,
        );
        if s.heartbeat_interval < MIN_HEARTBEAT_INTERVAL {
            self.problem(
                "state.heartbeatInterval",
                interval_line,
                format!("must be at least {}ms", MIN_HEARTBEAT_INTERVAL.as_millis()),
            );
        }
        if s.heartbeat_ttl <= s.heartbeat_interval {
            self.problem(
                "state.heartbeatTTL",
                ttl_line.or(interval_line),
                format!(
                    "must be greater than state.heartbeatInterval ({} is not greater than {})",
                    humantime::format_duration(s.heartbeat_ttl),
                    humantime::format_duration(s.heartbeat_interval)
                ),
            );
        } else if s.heartbeat_ttl > MAX_HEARTBEAT_TTL {
            self.problem("state.heartbeatTTL", ttl_line, "must be at most 24h");
        }
        s.enable_config_sync = raw.enable_config_sync.unwrap_or(false);
        s
    }

    fn nats(&mut self, raw: Option<RawNats>) -> NatsSettings {
        let mut n = NatsSettings::default();
        let Some(raw) = raw else {
            return n;
        };
        if let Some(servers) = raw.servers {
            let line = Some(servers.referenced.line());
            if servers.value.is_empty() {
                self.problem("nats.servers", line, "must list at least one server");
            }
            for s in &servers.value {
                let ok = ["nats://", "tls://", "ws://", "wss://"]
                    .iter()
                    .any(|scheme| s.starts_with(scheme) && s.len() > scheme.len())
                    || (!s.contains("://") && s.contains(':'));
                if !ok {
                    self.problem(
                        "nats.servers",
                        line,
                        format!("{s:?} is not a server URL like \"nats://host:4222\""),
                    );
                }
            }
            n.servers = servers.value;
        }
        if let Some(tls) = raw.tls {
            if tls.cert_file.is_some() != tls.key_file.is_some() {
                let line = tls
                    .cert_file
                    .as_ref()
                    .or(tls.key_file.as_ref())
                    .map(|s| s.referenced.line());
                self.problem(
                    "nats.tls",
                    line,
                    "certFile and keyFile must be given together",
                );
            }
            n.tls = Some(TlsFiles {
                ca_file: tls.ca_file.map(PathBuf::from),
                cert_file: tls.cert_file.map(|s| PathBuf::from(s.value)),
                key_file: tls.key_file.map(|s| PathBuf::from(s.value)),
            });
        }
        n.jetstream_domain = raw
            .jet_stream
            .and_then(|j| j.domain)
            .filter(|d| !d.is_empty());
        if let Some(auth) = raw.auth {
            if auth.user_env.is_some() != auth.password_env.is_some() {
                let line = auth
                    .user_env
                    .as_ref()
                    .or(auth.password_env.as_ref())
                    .map(|s| s.referenced.line());
                self.problem(
                    "nats.auth",
                    line,
                    "userEnv and passwordEnv must be given together",
                );
            }
            n.auth = NatsAuth {
                creds_file: auth.creds_file.map(PathBuf::from),
                nkey_seed_file: auth.nkey_seed_file.map(PathBuf::from),
                user_env: auth.user_env.map(|s| s.value),
                password_env: auth.password_env.map(|s| s.value),
            };
        }
        n.ping_interval = self.duration("nats.pingInterval", raw.ping_interval, n.ping_interval);
        n.connect_timeout = self.duration(
            "nats.connectTimeout",
            raw.connect_timeout,
            n.connect_timeout,
        );
        if let Some(prefix) = raw.inbox_prefix {
            let ok = !prefix.value.is_empty()
                && prefix.value.split('.').all(|t| {
                    !t.is_empty() && t != "*" && t != ">" && !t.chars().any(char::is_whitespace)
                });
            if !ok {
                self.problem(
                    "nats.inboxPrefix",
                    Some(prefix.referenced.line()),
                    format!(
                        "{:?} is not a subject prefix like \"_INBOX_node1\" (no wildcards, spaces or empty tokens)",
                        prefix.value
                    ),
                );
            }
            n.inbox_prefix = prefix.value;
        }
        n
    }

    fn config_sync(&mut self, raw: RawConfigSync) -> ConfigSyncSettings {
        let mode = match raw.mode {
            None => "jetstream".to_owned(),
            Some(m) if m.value == "jetstream" => m.value,
            Some(m) => {
                self.problem(
                    "config.mode",
                    Some(m.referenced.line()),
                    format!("unknown mode {:?}; the only mode is \"jetstream\"", m.value),
                );
                m.value
            }
        };
        let kv_bucket = match raw.kv_bucket {
            None => {
                self.problem("config.kvBucket", None, "required key is missing");
                String::new()
            }
            Some(b) => {
                let ok = !b.value.is_empty()
                    && b.value.len() <= 64
                    && b.value
                        .bytes()
                        .all(|c| c.is_ascii_alphanumeric() || c == b'_' || c == b'-');
                if !ok {
                    self.problem(
                        "config.kvBucket",
                        Some(b.referenced.line()),
                        format!(
                            "{:?} is not a KV bucket name (letters, digits, '_' and '-')",
                            b.value
                        ),
                    );
                }
                b.value
            }
        };
        let stream = raw
            .stream
            .map(|s| s.value)
            .unwrap_or_else(|| format!("{kv_bucket}_EVENTS"));
        let subject_prefix = match raw.subject_prefix {
            None => format!("{}.cfg", kv_bucket.to_ascii_lowercase()),
            Some(p) => {
                let ok = !p.value.is_empty()
                    && p.value.split('.').all(|t| {
                        !t.is_empty() && !t.contains(['*', '>']) && !t.contains(char::is_whitespace)
                    });
                if !ok {
                    self.problem(
                        "config.subjectPrefix",
                        Some(p.referenced.line()),
                        format!(
                            "{:?} is not a subject prefix like \"pleiades.cfg\"",
                            p.value
                        ),
                    );
                }
                p.value
            }
        };
        let apply_timeout = self.duration(
            "config.applyTimeout",
            raw.apply_timeout,
            DEFAULT_APPLY_TIMEOUT,
        );
        ConfigSyncSettings {
            mode,
            stream,
            subject_prefix,
            kv_bucket,
            apply_timeout,
        }
    }

    fn endpoints(&mut self, raw: Option<S<Vec<RawEndpoint>>>) -> Vec<EndpointSpec> {
        let Some(raw) = raw else {
            return Vec::new();
        };
        if raw.value.len() > MAX_CONFIG_ENDPOINTS {
            self.problem(
                "endpoints",
                Some(raw.referenced.line()),
                format!("more than {MAX_CONFIG_ENDPOINTS} endpoints"),
            );
            return Vec::new();
        }
        let mut seen = rustc_hash::FxHashSet::default();
        let mut out = Vec::with_capacity(raw.value.len());
        for (i, e) in raw.value.into_iter().enumerate() {
            let key = format!("endpoints[{i}].name");
            let Some(name) = e.name else {
                self.problem(&key, Some(raw.referenced.line()), "required key is missing");
                continue;
            };
            let line = Some(name.referenced.line());
            if let Err(err) = check_endpoint_name(&name.value) {
                self.problem(&key, line, err.to_string());
                continue;
            }
            if !seen.insert(name.value.clone()) {
                self.problem(&key, line, format!("duplicate endpoint {:?}", name.value));
                continue;
            }
            let probe = e.probe.and_then(|p| self.probe(i, p));
            out.push(EndpointSpec {
                name: name.value,
                probe,
            });
        }
        out
    }

    fn probe(&mut self, index: usize, raw: S<RawProbe>) -> Option<ProbeSpec> {
        let key = |k: &str| format!("endpoints[{index}].probe.{k}");
        let line = Some(raw.referenced.line());
        let p = raw.value;
        let expect_status =
            self.int_in(&key("expectStatus"), p.expect_status, 100..=599, 200) as u16;
        let target = match (p.tcp, p.http) {
            (Some(address), None) => {
                if address
                    .rsplit_once(':')
                    .is_none_or(|(_, port)| port.parse::<u16>().is_err())
                {
                    self.problem(
                        &key("tcp"),
                        line,
                        format!("expected \"host:port\", got {address:?}"),
                    );
                }
                ProbeTarget::Tcp { address }
            }
            (None, Some(url)) => {
                if !(url.starts_with("http://") || url.starts_with("https://")) {
                    self.problem(
                        &key("http"),
                        line,
                        format!("expected an http:// or https:// URL, got {url:?}"),
                    );
                }
                ProbeTarget::Http { url, expect_status }
            }
            _ => {
                self.problem(
                    &format!("endpoints[{index}].probe"),
                    line,
                    "exactly one of tcp or http is required",
                );
                return None;
            }
        };
        let interval = self.duration(&key("interval"), p.interval, Duration::from_secs(5));
        let timeout_line = p.timeout.as_ref().map(|s| s.referenced.line());
        let timeout = self.duration(
            &key("timeout"),
            p.timeout,
            Duration::from_secs(2).min(interval),
        );
        if timeout > interval {
            self.problem(
                &key("timeout"),
                timeout_line.or(line),
                "must not be longer than the interval",
            );
        }
        let rise = self.int_in(&key("rise"), p.rise, 1..=100, 2) as u32;
        let fall = self.int_in(&key("fall"), p.fall, 1..=100, 3) as u32;
        Some(ProbeSpec {
            target,
            interval,
            timeout,
            rise,
            fall,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GUIDE_EXAMPLE: &str = include_str!("../tests/data/config.example.yaml");

    #[test]
    fn the_guides_example_parses_as_written() {
        let c = Config::from_yaml(GUIDE_EXAMPLE).unwrap();
        assert_eq!(c.cluster_id, "prod-global");
        assert_eq!(c.state.policy, Policy::PreferLocal);
        assert_eq!(c.state.quorum_min_percent, 51);
        assert_eq!(c.state.heartbeat_interval, Duration::from_secs(10));
        assert_eq!(c.state.heartbeat_ttl, Duration::from_secs(30));
        assert!(c.state.enable_config_sync);
        assert_eq!(c.nats.servers.len(), 3);
        assert_eq!(c.nats.jetstream_domain.as_deref(), Some("gslb"));
        let tls = c.nats.tls.unwrap();
        assert_eq!(tls.ca_file.unwrap(), PathBuf::from("/etc/gslb/pki/ca.crt"));
        let cs = c.config_sync.unwrap();
        assert_eq!(cs.kv_bucket, "PLEIADES_CFG");
        assert_eq!(cs.stream, "PLEIADES.cfg");
        assert_eq!(cs.stream_name(), "PLEIADES_cfg");
        assert!(cs.stream_name_was_mapped());
        assert_eq!(cs.subject_prefix, "pleiades.cfg");
        assert_eq!(cs.apply_timeout, Duration::from_secs(5));
    }

    #[test]
    fn defaults_are_the_guides() {
        let c = Config::from_yaml("cluster:\n  id: c1\n").unwrap();
        assert_eq!(c.state, StateSettings::default());
        assert_eq!(c.state.policy, Policy::PreferLocal);
        assert_eq!(c.state.quorum_min_percent, 51);
        assert_eq!(c.admin_listen, DEFAULT_ADMIN_LISTEN);
        assert_eq!(c, Config::with_defaults("c1"));
    }

    #[test]
    fn auth_and_inbox_prefix_are_read_and_checked() {
        let c = Config::from_yaml(
            "cluster:\n  id: c\nnats:\n  inboxPrefix: \"_INBOX_n1\"\n  auth:\n    credsFile: /etc/gslb/n1.creds\n    nkeySeedFile: /etc/gslb/n1.nk\n    userEnv: GSLB_USER\n    passwordEnv: GSLB_PASSWORD\n",
        )
        .unwrap();
        assert_eq!(c.nats.inbox_prefix, "_INBOX_n1");
        assert_eq!(
            c.nats.auth,
            NatsAuth {
                creds_file: Some(PathBuf::from("/etc/gslb/n1.creds")),
                nkey_seed_file: Some(PathBuf::from("/etc/gslb/n1.nk")),
                user_env: Some("GSLB_USER".into()),
                password_env: Some("GSLB_PASSWORD".into()),
            }
        );
        assert_eq!(
            Config::from_yaml("cluster:\n  id: c\n")
                .unwrap()
                .nats
                .inbox_prefix,
            "_INBOX"
        );
        for bad in ["\"\"", "\"_INBOX.>\"", "\"a..b\"", "\"a b\""] {
            let p = problem(&format!("cluster:\n  id: c\nnats:\n  inboxPrefix: {bad}\n"));
            assert_eq!(
                (p.key.as_str(), p.line),
                ("nats.inboxPrefix", Some(4)),
                "{bad}"
            );
        }
        let p = problem("cluster:\n  id: c\nnats:\n  auth:\n    userEnv: U\n");
        assert_eq!(p.key, "nats.auth");
        // A password in clear is not a key.
        let p = problem("cluster:\n  id: c\nnats:\n  auth:\n    password: hunter2\n");
        assert!(p.key.starts_with("nats.auth"), "{p}");
    }

    fn problem(yaml: &str) -> ConfigProblem {
        let e = Config::from_yaml(yaml).unwrap_err();
        e.problems[0].clone()
    }

    #[test]
    fn errors_name_the_key_and_line() {
        let p = problem("cluster:\n  id: c\nstate:\n  quorumMinPercent: 0\n");
        assert_eq!(
            (p.key.as_str(), p.line),
            ("state.quorumMinPercent", Some(4))
        );
        assert!(p.message.contains("between 1 and 100"), "{p}");

        let p = problem("cluster:\n  id: c\nstate:\n  quorumMinPercent: 101\n");
        assert_eq!(p.key, "state.quorumMinPercent");

        let p =
            problem("cluster:\n  id: c\nstate:\n  heartbeatInterval: 30s\n  heartbeatTTL: 30s\n");
        assert_eq!((p.key.as_str(), p.line), ("state.heartbeatTTL", Some(5)));

        let p = problem("cluster:\n  id: c\nstate:\n  healthPolicy: global\n");
        assert_eq!((p.key.as_str(), p.line), ("state.healthPolicy", Some(4)));
        assert!(p.message.contains("global-quorum"), "{p}");

        let p = problem("cluster:\n  id: c\nstate:\n  heartbeatTtl: 30s\n");
        assert_eq!(p.line, Some(4), "{p}");
        assert!(p.key.starts_with("state"), "{p}");
        assert!(p.message.contains("heartbeatTtl"), "{p}");

        let p = problem("cluster:\n  id: c\nstate:\n  heartbeatInterval: ten\n");
        assert_eq!(
            (p.key.as_str(), p.line),
            ("state.heartbeatInterval", Some(4))
        );

        let p = problem("state:\n  healthPolicy: prefer-local\n");
        assert_eq!((p.key.as_str(), p.line), ("cluster.id", None));
        assert!(p.message.contains("no cluster section"), "{p}");
        // An empty id or an empty section names its line.
        let p = problem("state:\n  healthPolicy: prefer-local\ncluster:\n  id:\n");
        assert_eq!((p.key.as_str(), p.line), ("cluster.id", Some(4)), "{p}");
        let p = problem("# the cluster\ncluster:\nstate:\n  healthPolicy: prefer-local\n");
        assert_eq!((p.key.as_str(), p.line), ("cluster.id", Some(2)), "{p}");
        let p = problem("cluster: {}\n");
        assert_eq!((p.key.as_str(), p.line), ("cluster.id", Some(1)), "{p}");

        let p = problem("cluster:\n  id: c\nstate:\n  quorumMinPercent: lots\n");
        assert_eq!(p.line, Some(4), "{p}");
        assert_eq!(p.key, "state.quorumMinPercent", "{p}");
    }

    #[test]
    fn all_problems_are_reported() {
        let e = Config::from_yaml(
            "cluster:\n  id: c\nstate:\n  quorumMinPercent: 0\n  healthPolicy: nope\n",
        )
        .unwrap_err();
        assert_eq!(e.problems.len(), 2, "{e}");
        assert_eq!(e.problems[0].line, Some(4));
        assert_eq!(e.problems[1].line, Some(5));
    }

    #[test]
    fn endpoints_and_probes() {
        let c = Config::from_yaml(
            "cluster: {id: c}\nendpoints:\n  - name: web\n    probe: {http: \"http://127.0.0.1:8080/\", expectStatus: 204, interval: 1s, timeout: 500ms, rise: 1, fall: 2}\n  - name: db\n    probe: {tcp: \"127.0.0.1:5432\"}\n  - name: ext\n",
        )
        .unwrap();
        assert_eq!(c.endpoints.len(), 3);
        let web = c.endpoints[0].probe.as_ref().unwrap();
        assert_eq!(
            web.target,
            ProbeTarget::Http {
                url: "http://127.0.0.1:8080/".into(),
                expect_status: 204
            }
        );
        assert_eq!((web.rise, web.fall), (1, 2));
        assert!(c.endpoints[2].probe.is_none());

        let p = problem("cluster: {id: c}\nendpoints:\n  - name: a\n  - name: a\n");
        assert_eq!((p.key.as_str(), p.line), ("endpoints[1].name", Some(4)));
        let p =
            problem("cluster: {id: c}\nendpoints:\n  - name: a\n    probe: {tcp: x, http: y}\n");
        assert_eq!(p.key, "endpoints[0].probe");
    }

    #[test]
    fn config_sync_requires_its_section() {
        let p = problem("cluster: {id: c}\nstate: {enableConfigSync: true}\n");
        assert_eq!(p.key, "config");
        let p = problem("cluster: {id: c}\nconfig: {mode: etcd, kvBucket: B}\n");
        assert_eq!((p.key.as_str(), p.line), ("config.mode", Some(2)));
    }

    #[test]
    fn a_long_error_is_capped_in_one_line() {
        let problems = (1..=25)
            .map(|i| ConfigProblem {
                key: format!("endpoints[{i}].name"),
                line: Some(i),
                message: "required".into(),
            })
            .collect();
        let text = ConfigError { problems }.to_string();
        assert_eq!(text.matches("required").count(), MAX_PROBLEMS_SHOWN);
        assert!(text.ends_with("; and 15 more"), "{text}");
        assert!(text.starts_with("line 1: endpoints[1].name: required; line 2:"));
    }

    #[test]
    fn hostile_yaml_is_refused() {
        let deep = format!(
            "cluster: {{id: c}}\nx: {}{}\n",
            "[".repeat(10_000),
            "]".repeat(10_000)
        );
        assert!(Config::from_yaml(&deep).is_err());
        let mut bomb = String::from("a: &a [x, x, x, x, x, x, x, x, x, x]\n");
        for i in 0..20 {
            bomb.push_str(&format!(
                "b{i}: &b{i} [*{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}]\n",
                p = if i == 0 {
                    "a".to_string()
                } else {
                    format!("b{}", i - 1)
                }
            ));
        }
        assert!(Config::from_yaml(&bomb).is_err());
        let huge = "x".repeat(MAX_CONFIG_BYTES + 1);
        assert!(Config::from_yaml(&huge).is_err());
        assert!(Config::from_yaml("").is_err());
        assert!(Config::from_yaml("- a\n- b\n").is_err());
        assert!(Config::from_yaml_bytes(&[0xff, 0xfe]).is_err());
    }
}
