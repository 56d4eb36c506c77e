//! Per-node isolation on the NATS server: the exact permissions a node needs, as nats-server
//! configuration (`gslb-state permissions` prints them; SECURITY.md shows an example, and the
//! `security_*` tests run a real server with them), and the recognition of a permission denial
//! reported by the server.
//!
//! Under these permissions node X of cluster C can publish only its own subjects
//! (`gslb.C.hb.X`, `gslb.C.health.X`) and KV keys (`X` in the members bucket, `X.>` in the
//! health bucket), read only cluster C (its subjects, its two buckets, its key in the config
//! bucket), and receive only replies sent to its own inbox prefix. Buckets and streams are made
//! by an administrator (`gslb-state bootstrap`), not by nodes.

use gslb_state_core::Bucket;
use gslb_state_core::config::Config;
use gslb_state_core::names::{Names, encode_token};

/// What one user may publish and subscribe to (nats-server `permissions`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Permissions {
    /// Subjects the user may publish to.
    pub publish: Vec<String>,
    /// Subjects the user may subscribe to.
    pub subscribe: Vec<String>,
}

impl Permissions {
    /// The `permissions: { ... }` value in nats-server configuration syntax, its lines
    /// indented by `indent` spaces.
    pub fn to_conf(&self, indent: usize) -> String {
        let pad = " ".repeat(indent);
        let list = |subjects: &[String]| {
            subjects
                .iter()
                .map(|s| format!("{pad}      \"{s}\""))
                .collect::<Vec<_>>()
                .join(",\n")
        };
        format!(
            "{{\n{pad}  publish: {{ allow: [\n{}\n{pad}  ] }}\n{pad}  subscribe: {{ allow: [\n{}\n{pad}  ] }}\n{pad}}}",
            list(&self.publish),
            list(&self.subscribe)
        )
    }
}

/// The JetStream API prefix the server checks permissions on: `$JS.API`, also when the client
/// uses a JetStream domain (the server maps `$JS.<domain>.API.>` to `$JS.API.>` before it
/// checks; measured with nats-server 2.15).
pub const API_PREFIX: &str = "$JS.API";

/// The least a node needs: node `node_id` running with `config` (its cluster, JetStream domain,
/// `nats.inboxPrefix`, and `config.*` when config sync is on).
///
/// | what | subjects |
/// | --- | --- |
/// | its heartbeats and reports | publish `gslb.<c>.hb.<node>`, `gslb.<c>.health.<node>` |
/// | its KV keys | publish `$KV.<members>.<node>`, `$KV.<health>.<node>.>` in its own region's buckets (`gslb_<c>_members_<region>`, or `gslb_<c>_members` without a region) |
/// | its cluster's messages | subscribe `gslb.<c>.>` |
/// | opening its cluster's buckets (its region's and every region of `nats.jetStream.regions`) | publish `<api>.STREAM.INFO.KV_<bucket>` |
/// | reading them | publish `<api>.CONSUMER.CREATE.KV_<bucket>.*.$KV.<bucket>.>` (named consumers filtered to the bucket), `$JS.FC.KV_<bucket>.>` (flow control), and `<api>.DIRECT.GET.KV_<bucket>` (batched direct gets, where no consumer can be created) |
/// | replies and deliveries | subscribe `<inboxPrefix>.>` |
/// | config sync | its key only: `<api>.DIRECT.GET.KV_<cfg>.$KV.<cfg>.<c>`, `<api>.CONSUMER.CREATE.KV_<cfg>.*.$KV.<cfg>.<c>`, `<api>.STREAM.INFO.KV_<cfg>` and the event stream's, subscribe `<subjectPrefix>.<c>` |
pub fn node_permissions(config: &Config, node_id: &str) -> Permissions {
    let api = API_PREFIX;
    let names = Names::new(&config.cluster_id);
    let node = encode_token(node_id);
    let cluster = encode_token(&config.cluster_id);
    let subject = |kind: gslb_state_core::names::SubjectKind| names.subject(kind, node_id);
    let mut publish = vec![
        subject(gslb_state_core::names::SubjectKind::Heartbeat),
        subject(gslb_state_core::names::SubjectKind::Health),
    ];
    let members = names.region_bucket(Bucket::Members, config.storage_region());
    let health = names.region_bucket(Bucket::Health, config.storage_region());
    publish.push(format!("$KV.{members}.{node}"));
    publish.push(format!("$KV.{health}.{node}.>"));
    // Reading: its own region's buckets and those of every region it lists.
    for region in config.storage_regions() {
        for bucket in [Bucket::Members, Bucket::Health] {
            let bucket = names.region_bucket(bucket, &region);
            publish.push(format!("{api}.STREAM.INFO.KV_{bucket}"));
            publish.push(format!(
                "{api}.CONSUMER.CREATE.KV_{bucket}.*.$KV.{bucket}.>"
            ));
            publish.push(format!("$JS.FC.KV_{bucket}.>"));
            publish.push(format!("{api}.DIRECT.GET.KV_{bucket}"));
        }
    }
    let mut subscribe = vec![
        names.subscription(),
        format!("{}.>", config.nats.inbox_prefix),
    ];
    if config.state.enable_config_sync
        && let Some(cs) = &config.config_sync
    {
        let bucket = &cs.kv_bucket;
        publish.push(format!("{api}.STREAM.INFO.KV_{bucket}"));
        publish.push(format!("{api}.STREAM.INFO.{}", cs.stream_name()));
        publish.push(format!(
            "{api}.DIRECT.GET.KV_{bucket}.$KV.{bucket}.{cluster}"
        ));
        publish.push(format!(
            "{api}.CONSUMER.CREATE.KV_{bucket}.*.$KV.{bucket}.{cluster}"
        ));
        publish.push(format!("$JS.FC.KV_{bucket}.>"));
        subscribe.push(format!("{}.{cluster}", cs.subject_prefix));
    }
    Permissions { publish, subscribe }
}

/// A nats-server `authorization { users = [...] }` block: each user is its identity line (for
/// example `user: "CN=eu-1"` for mTLS with `verify_and_map`, or `nkey: "U..."`) and its
/// permissions; `None` grants everything (an administrator).
pub fn authorization_block(users: &[(String, Option<Permissions>)]) -> String {
    let mut out = String::from("authorization {\n  users = [\n");
    for (identity, permissions) in users {
        match permissions {
            Some(p) => out.push_str(&format!(
                "    {{ {identity}, permissions: {} }}\n",
                p.to_conf(4)
            )),
            None => out.push_str(&format!("    {{ {identity} }}\n")),
        }
    }
    out.push_str("  ]\n}\n");
    out
}

/// A permission denial the server reported (`Permissions Violation for Publish to "..."`):
/// the operation (`publish` or `subscribe`) and the subject.
pub(crate) fn permission_violation(error: &str) -> Option<(&'static str, String)> {
    let rest = &error[error.find("Permissions Violation for ")? + 26..];
    let operation = if rest.starts_with("Subscription") {
        "subscribe"
    } else {
        "publish"
    };
    let subject = rest
        .split_once('"')
        .and_then(|(_, s)| s.split_once('"'))
        .map(|(s, _)| s.to_owned())
        .unwrap_or_else(|| rest.to_owned());
    Some((operation, subject))
}

/// Which permission denials to log: each subject once per 30 s, and at most 256 distinct
/// subjects per 30 s (a node denied a write for each of many endpoints would otherwise log a
/// line per endpoint per retry). Every denial is counted regardless.
#[derive(Debug, Default)]
pub(crate) struct DenialLog {
    since: Option<std::time::Instant>,
    seen: std::collections::HashSet<String>,
}

impl DenialLog {
    const REPEAT: std::time::Duration = std::time::Duration::from_secs(30);
    const MAX_SUBJECTS: usize = 256;

    /// Whether a denial on `subject` should be logged now.
    pub(crate) fn should_log(&mut self, subject: &str) -> bool {
        let now = std::time::Instant::now();
        if self
            .since
            .is_none_or(|since| now.duration_since(since) >= Self::REPEAT)
        {
            self.since = Some(now);
            self.seen.clear();
        }
        if self.seen.contains(subject) || self.seen.len() >= Self::MAX_SUBJECTS {
            return false;
        }
        self.seen.insert(subject.to_owned());
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A node's file in the recommended setup (SECURITY.md): the guide's example with its own
    /// `node.id` and `nats.inboxPrefix`.
    fn example_config(node: &str) -> Config {
        let yaml = format!(
            "cluster:\n  id: \"prod-global\"\nnode:\n  id: \"{node}\"\n\
             state:\n  enableConfigSync: true\n\
             nats:\n  servers: [\"tls://n1.example.com:4222\"]\n  inboxPrefix: \"_INBOX_{node}\"\n\
             \x20 tls:\n    caFile: \"/etc/gslb/pki/ca.crt\"\n    certFile: \"/etc/gslb/pki/client.crt\"\n    keyFile: \"/etc/gslb/pki/client.key\"\n\
             \x20 jetStream:\n    domain: \"gslb\"\n\
             config:\n  stream: \"PLEIADES.cfg\"\n  subjectPrefix: \"pleiades.cfg\"\n  kvBucket: \"PLEIADES_CFG\"\n"
        );
        Config::from_yaml(&yaml).unwrap()
    }

    /// The `authorization` block SECURITY.md shows: an administrator and nodes `eu-1` and
    /// `us-1` of cluster `prod-global`, users named by their certificates' subjects.
    fn example_block() -> String {
        let mut users = vec![("user: \"CN=gslb-admin\"".to_owned(), None)];
        for node in ["eu-1", "us-1"] {
            users.push((
                format!("user: \"CN={node}\""),
                Some(node_permissions(&example_config(node), node)),
            ));
        }
        authorization_block(&users)
    }

    #[test]
    fn security_md_shows_the_generated_permissions() {
        let doc = include_str!("../../SECURITY.md");
        let block = example_block();
        assert!(
            doc.contains(&block),
            "SECURITY.md must contain, as generated:\n{block}"
        );
    }

    #[test]
    fn denials_are_recognised() {
        assert_eq!(
            permission_violation("nats: Permissions Violation for Publish to \"gslb.c1.hb.node2\""),
            Some(("publish", "gslb.c1.hb.node2".to_owned()))
        );
        assert_eq!(
            permission_violation(
                "nats: Permissions Violation for Subscription to \"gslb.d.>\" using queue \"q\""
            ),
            Some(("subscribe", "gslb.d.>".to_owned()))
        );
        assert_eq!(permission_violation("nats: authorization violation"), None);
    }

    #[test]
    fn denials_are_logged_once_per_subject_and_boundedly() {
        let mut log = DenialLog::default();
        assert!(log.should_log("a"));
        assert!(!log.should_log("a"));
        assert!(log.should_log("b"));
        for i in 0..1000 {
            log.should_log(&format!("s{i}"));
        }
        assert_eq!(log.seen.len(), DenialLog::MAX_SUBJECTS);
        assert!(!log.should_log("new"));
    }
}
