//! The configuration model: the operator guide's YAML, parsed into typed, validated settings.
//!
//! Keys are read exactly as the guide writes them (`state.heartbeatTTL`, `nats.jetStream.domain`,
//! durations like `"10s"`). Unknown keys, out-of-range values and missing required keys are
//! errors that name the key and the line. Hostile input (huge files, deep nesting, alias bombs)
//! is refused within fixed bounds.
//!
//! `raw` reads the YAML (its shape, with positions, under bounds); `validate` turns it into
//! the typed settings here, naming every problem.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use crate::names::{check_endpoint_name, check_id};
use crate::policy::{Holds, Policy, QuorumScope};

mod raw;
mod validate;

use raw::parse_raw;
pub use raw::read_yaml;
use validate::Validator;
pub use validate::{MAX_DURATION, parse_duration};

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
    /// `state.quorumScope`: how the quorum weighs the counted reports. Default `members`.
    pub quorum_scope: QuorumScope,
    /// `state.holdUp`: how long an unhealthy-to-healthy change must hold before it takes
    /// effect. Default 0 (at once).
    pub hold_up: Duration,
    /// `state.holdDown`: how long a healthy-to-unhealthy change must hold before it takes
    /// effect. Default 0 (at once).
    pub hold_down: Duration,
}

impl Default for StateSettings {
    fn default() -> Self {
        StateSettings {
            policy: Policy::PreferLocal,
            quorum_min_percent: DEFAULT_QUORUM_MIN_PERCENT,
            heartbeat_interval: DEFAULT_HEARTBEAT_INTERVAL,
            heartbeat_ttl: DEFAULT_HEARTBEAT_TTL,
            enable_config_sync: false,
            quorum_scope: QuorumScope::Members,
            hold_up: Duration::ZERO,
            hold_down: Duration::ZERO,
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
        for (key, hold) in [
            ("state.holdUp", self.hold_up),
            ("state.holdDown", self.hold_down),
        ] {
            if hold > MAX_DURATION {
                return Err(format!("{key}: must be at most {MAX_DURATION:?}"));
            }
        }
        Ok(())
    }

    /// `state.holdUp` and `state.holdDown`.
    pub fn holds(&self) -> Holds {
        Holds {
            up: self.hold_up,
            down: self.hold_down,
        }
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
    /// `nats.jetStream.regions`: the regions of the fleet, each with its own buckets placed
    /// in the NATS cluster named like it (region-local storage, see
    /// [`Config::storage_region`]). A node writes to its region's buckets and reads every
    /// listed region's at start-up. Empty by default: every node shares one pair of buckets.
    pub jetstream_regions: Vec<String>,
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
            jetstream_regions: Vec::new(),
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
        Config::defaults_of(cluster_id)
    }

    /// The region whose buckets this node writes: `node.region` when
    /// `nats.jetStream.regions` is set (region-local storage), else the empty region (the
    /// buckets every node shares, as in the guide; `node.region` then only groups votes).
    pub fn storage_region(&self) -> &str {
        if self.nats.jetstream_regions.is_empty() {
            ""
        } else {
            &self.region
        }
    }

    /// Every region whose buckets this node reads at start-up: its own
    /// ([`Config::storage_region`]), then the others of `nats.jetStream.regions`. An
    /// administrator's file may list the regions without one of its own: then the list alone.
    pub fn storage_regions(&self) -> Vec<String> {
        let listed = &self.nats.jetstream_regions;
        let mut regions = Vec::new();
        if !self.storage_region().is_empty() || listed.is_empty() {
            regions.push(self.storage_region().to_owned());
        }
        for r in listed {
            if !regions.contains(r) {
                regions.push(r.clone());
            }
        }
        regions
    }

    fn defaults_of(cluster_id: &str) -> Config {
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

#[cfg(test)]
mod tests {
    use super::*;

    const GUIDE_EXAMPLE: &str = include_str!("../../tests/data/config.example.yaml");

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
    fn jetstream_regions_are_read_and_checked() {
        let c = Config::from_yaml(
            "cluster: {id: c}\nnode: {region: eu}\nnats:\n  jetStream:\n    regions: [eu, us, ap]\n",
        )
        .unwrap();
        assert_eq!(c.nats.jetstream_regions, ["eu", "us", "ap"]);
        assert_eq!((c.region.as_str(), c.storage_region()), ("eu", "eu"));
        assert_eq!(c.storage_regions(), ["eu", "us", "ap"]);
        // Without the list, every node shares the region-less buckets, whatever its region.
        let c = Config::from_yaml("cluster: {id: c}\nnode: {region: eu}\n").unwrap();
        assert!(c.nats.jetstream_regions.is_empty());
        assert_eq!((c.region.as_str(), c.storage_region()), ("eu", ""));
        assert_eq!(c.storage_regions(), [""]);
        // An administrator's file: the list alone.
        let c = Config::from_yaml("cluster: {id: c}\nnats: {jetStream: {regions: [us, eu]}}\n")
            .unwrap();
        assert_eq!(c.storage_regions(), ["us", "eu"]);
        // A node's region must be one of the listed.
        let p = problem(
            "cluster:\n  id: c\nnode:\n  region: ap\nnats:\n  jetStream:\n    regions: [eu, us]\n",
        );
        assert_eq!(p.key, "node.region", "{p}");
        assert!(p.message.contains("nats.jetStream.regions"), "{p}");
        let p = problem("cluster:\n  id: c\nnats:\n  jetStream:\n    regions: [eu, us, eu]\n");
        assert_eq!(
            (p.key.as_str(), p.line),
            ("nats.jetStream.regions", Some(5))
        );
        assert!(p.message.contains("\"eu\" is listed twice"), "{p}");
        let p = problem("cluster:\n  id: c\nnats:\n  jetStream:\n    regions: [\"\"]\n");
        assert_eq!(
            (p.key.as_str(), p.line),
            ("nats.jetStream.regions", Some(5))
        );
        let p = problem("cluster:\n  id: c\nnats:\n  jetStream:\n    regions: eu\n");
        assert_eq!(p.line, Some(5), "{p}");
    }

    #[test]
    fn scope_and_holds_are_read_and_checked() {
        let c = Config::from_yaml(
            "cluster: {id: c}\nstate:\n  quorumScope: regions\n  holdUp: 30s\n  holdDown: 1m 30s\n",
        )
        .unwrap();
        assert_eq!(c.state.quorum_scope, QuorumScope::Regions);
        assert_eq!(c.state.hold_up, Duration::from_secs(30));
        assert_eq!(c.state.hold_down, Duration::from_secs(90));
        let c =
            Config::from_yaml("cluster: {id: c}\nstate:\n  quorumScope: members\n  holdUp: 0s\n")
                .unwrap();
        assert_eq!(c.state, StateSettings::default());

        let p = problem("cluster:\n  id: c\nstate:\n  quorumScope: region\n");
        assert_eq!((p.key.as_str(), p.line), ("state.quorumScope", Some(4)));
        assert!(
            p.message.contains("members") && p.message.contains("regions"),
            "{p}"
        );
        let p =
            problem("cluster:\n  id: c\nstate:\n  healthPolicy: global-quorum\n  holdUp: -5s\n");
        assert_eq!((p.key.as_str(), p.line), ("state.holdUp", Some(5)));
        assert!(p.message.contains("negative"), "{p}");
        let p = problem("cluster:\n  id: c\nstate:\n  holdDown: soon\n");
        assert_eq!((p.key.as_str(), p.line), ("state.holdDown", Some(4)));
        let p = problem("cluster:\n  id: c\nstate:\n  holdDown: 8d\n");
        assert_eq!((p.key.as_str(), p.line), ("state.holdDown", Some(4)));
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
