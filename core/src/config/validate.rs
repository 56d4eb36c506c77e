//! Validation: the raw model turned into typed settings, every problem named by key and line.

use std::time::Duration;

use super::raw::*;
use super::*;

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
pub(super) struct Validator {
    pub(super) problems: Vec<ConfigProblem>,
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

    /// A duration that may be zero (a hold): negative or malformed ones are problems.
    fn duration_or_zero(&mut self, key: &str, raw: Option<S<String>>) -> Duration {
        let Some(s) = raw else {
            return Duration::ZERO;
        };
        let line = Some(s.referenced.line());
        if s.value.trim_start().starts_with('-') {
            self.problem(
                key,
                line,
                format!("must not be negative, got {:?}", s.value),
            );
            return Duration::ZERO;
        }
        match parse_duration(&s.value) {
            Ok(d) => d,
            Err(e) => {
                self.problem(key, line, e);
                Duration::ZERO
            }
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

    pub(super) fn build(&mut self, raw: RawFile) -> Option<Config> {
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
        let (node_id, region, region_line) = self.node(raw.node);
        let state = self.state(raw.state);
        let nats = self.nats(raw.nats);
        let listed = &nats.jetstream_regions;
        if !region.is_empty() && !listed.is_empty() && !listed.contains(&region) {
            self.problem(
                "node.region",
                region_line,
                format!("{region:?} is not one of nats.jetStream.regions {listed:?}"),
            );
        }
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

    /// `node.id`, `node.region` and the line of the latter.
    fn node(&mut self, raw: Option<RawNode>) -> (Option<String>, String, Option<u64>) {
        let Some(raw) = raw else {
            return (None, String::new(), None);
        };
        let region_line = raw.region.as_ref().map(|r| r.referenced.line());
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
        (id, region, region_line)
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
        if let Some(scope) = raw.quorum_scope {
            match QuorumScope::from_name(&scope.value) {
                Some(q) => s.quorum_scope = q,
                None => self.problem(
                    "state.quorumScope",
                    Some(scope.referenced.line()),
                    format!(
                        "unknown scope {:?}; expected one of members, regions",
                        scope.value
                    ),
                ),
            }
        }
        s.hold_up = self.duration_or_zero("state.holdUp", raw.hold_up);
        s.hold_down = self.duration_or_zero("state.holdDown", raw.hold_down);
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
        if let Some(js) = raw.jet_stream {
            n.jetstream_domain = js.domain.filter(|d| !d.is_empty());
            if let Some(regions) = js.regions {
                let line = Some(regions.referenced.line());
                let mut seen = std::collections::BTreeSet::new();
                for r in regions.value {
                    if r.is_empty() {
                        self.problem("nats.jetStream.regions", line, "a region name is empty");
                    } else if !seen.insert(r.clone()) {
                        self.problem(
                            "nats.jetStream.regions",
                            line,
                            format!("region {r:?} is listed twice"),
                        );
                    } else {
                        n.jetstream_regions.push(r);
                    }
                }
            }
        }
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
