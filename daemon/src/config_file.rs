//! The node's own configuration file: reading it with errors that name the file, the line and
//! the key; the default node id; which pushed settings need a restart.

use std::path::Path;

use gslb_state_core::config::{Config, ConfigError, DEFAULT_ADMIN_LISTEN, NatsSettings};

/// Reads and validates a configuration file; errors name the file, the line and the key.
pub fn load_config(path: &Path) -> Result<Config, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("{}: cannot read: {e}", path.display()))?;
    Config::from_yaml(&text).map_err(|e| describe_config_error(path, &e))
}

/// Most problems `check-config` lists one per line before saying how many more there are.
pub const MAX_PROBLEM_LINES: usize = 50;

/// One line per problem: `FILE: line N: key: message` (at most [`MAX_PROBLEM_LINES`], then
/// `FILE: and M more problems`).
pub fn describe_config_error(path: &Path, e: &ConfigError) -> String {
    let mut lines: Vec<String> = e
        .problems
        .iter()
        .take(MAX_PROBLEM_LINES)
        .map(|p| format!("{}: {p}", path.display()))
        .collect();
    let more = e.problems.len().saturating_sub(MAX_PROBLEM_LINES);
    if more > 0 {
        lines.push(format!("{}: and {more} more problems", path.display()));
    }
    lines.join("\n")
}

/// This host's name, as the default `node.id`.
pub fn host_name() -> String {
    let name = std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/proc/sys/kernel/hostname").ok())
        .map(|n| n.trim().to_owned())
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| "gslb-node".to_owned());
    let mut end = name.len().min(gslb_state_core::names::MAX_ID_BYTES);
    while !name.is_char_boundary(end) {
        end -= 1;
    }
    name[..end].to_owned()
}

/// Which settings of a pushed configuration take effect at run time, and which need a restart.
///
/// At run time: `state.healthPolicy`, `state.quorumMinPercent`, `state.heartbeatInterval`,
/// `state.heartbeatTTL` (applied by the core) and `endpoints` (probes started and stopped here).
/// Per node, read from the local file at start: `node.*`, `nats.*`, `config.*`, `admin.*`,
/// `state.enableConfigSync`. A pushed value for those that differs from the running one is
/// reported and otherwise ignored.
pub fn restart_only_changes(running: &Config, desired: &Config) -> Vec<&'static str> {
    let mut out = Vec::new();
    if desired.node_id.is_some() && desired.node_id != running.node_id {
        out.push("node.id");
    }
    if !desired.region.is_empty() && desired.region != running.region {
        out.push("node.region");
    }
    if desired.nats != NatsSettings::default() && desired.nats != running.nats {
        out.push("nats");
    }
    if desired.config_sync.is_some() && desired.config_sync != running.config_sync {
        out.push("config");
    }
    if desired.admin_listen != DEFAULT_ADMIN_LISTEN && desired.admin_listen != running.admin_listen
    {
        out.push("admin.listen");
    }
    if desired.state.enable_config_sync != running.state.enable_config_sync
        && desired.config_sync.is_some()
    {
        out.push("state.enableConfigSync");
    }
    out
}
