//! Reading YAML: the raw serde model of the configuration file (the YAML's shape, with
//! positions) and the bounded reader every YAML file of the project goes through. What the
//! values mean is the `validate` module's.

use std::cell::RefCell;

use serde::Deserialize;
use serde_saphyr::Spanned;

use super::{ConfigError, ConfigProblem, MAX_CONFIG_BYTES, MAX_CONFIG_DEPTH};

// ---- raw serde model: the YAML's shape, with positions ----

pub(super) type S<T> = Spanned<T>;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawFile {
    /// Spanned even when empty (`cluster:`), so a missing `cluster.id` can name a line.
    #[serde(default = "absent")]
    pub(super) cluster: S<Option<RawCluster>>,
    pub(super) node: Option<RawNode>,
    pub(super) state: Option<RawState>,
    pub(super) nats: Option<RawNats>,
    pub(super) config: Option<RawConfigSync>,
    pub(super) admin: Option<RawAdmin>,
    pub(super) endpoints: Option<S<Vec<RawEndpoint>>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawCluster {
    /// Spanned even when empty (`id:`), so its line can be named.
    #[serde(default = "absent")]
    pub(super) id: S<Option<String>>,
}

/// An absent key: no value, no line.
pub(super) fn absent<T>() -> S<Option<T>> {
    Spanned::new(
        None,
        serde_saphyr::Location::UNKNOWN,
        serde_saphyr::Location::UNKNOWN,
    )
}

/// The line of a spanned value, if it was in the file.
pub(super) fn line_of<T>(s: &S<T>) -> Option<u64> {
    Some(s.referenced.line()).filter(|l| *l > 0)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawNode {
    pub(super) id: Option<S<String>>,
    pub(super) region: Option<S<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(super) struct RawState {
    pub(super) health_policy: Option<S<String>>,
    pub(super) quorum_min_percent: Option<S<i64>>,
    pub(super) heartbeat_interval: Option<S<String>>,
    #[serde(rename = "heartbeatTTL")]
    pub(super) heartbeat_ttl: Option<S<String>>,
    pub(super) enable_config_sync: Option<bool>,
    pub(super) quorum_scope: Option<S<String>>,
    pub(super) hold_up: Option<S<String>>,
    pub(super) hold_down: Option<S<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(super) struct RawNats {
    pub(super) servers: Option<S<Vec<String>>>,
    pub(super) tls: Option<RawTls>,
    pub(super) jet_stream: Option<RawJetStream>,
    pub(super) auth: Option<RawAuth>,
    pub(super) ping_interval: Option<S<String>>,
    pub(super) connect_timeout: Option<S<String>>,
    pub(super) inbox_prefix: Option<S<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(super) struct RawTls {
    pub(super) ca_file: Option<String>,
    pub(super) cert_file: Option<S<String>>,
    pub(super) key_file: Option<S<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawJetStream {
    pub(super) domain: Option<String>,
    pub(super) regions: Option<S<Vec<String>>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(super) struct RawAuth {
    pub(super) creds_file: Option<String>,
    pub(super) nkey_seed_file: Option<String>,
    pub(super) user_env: Option<S<String>>,
    pub(super) password_env: Option<S<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(super) struct RawConfigSync {
    pub(super) mode: Option<S<String>>,
    pub(super) stream: Option<S<String>>,
    pub(super) subject_prefix: Option<S<String>>,
    pub(super) kv_bucket: Option<S<String>>,
    pub(super) apply_timeout: Option<S<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAdmin {
    pub(super) listen: Option<S<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawEndpoint {
    pub(super) name: Option<S<String>>,
    pub(super) probe: Option<S<RawProbe>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(super) struct RawProbe {
    pub(super) tcp: Option<String>,
    pub(super) http: Option<String>,
    pub(super) expect_status: Option<S<i64>>,
    pub(super) interval: Option<S<String>>,
    pub(super) timeout: Option<S<String>>,
    pub(super) rise: Option<S<i64>>,
    pub(super) fall: Option<S<i64>>,
}

pub(super) fn parse_raw(text: &str) -> Result<RawFile, ConfigError> {
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
