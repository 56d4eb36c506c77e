//! Shared by the `security_*` tests: a real nats-server with mTLS `verify_and_map` and the
//! per-node permissions of `gslb_state_nats::security` (the configuration SECURITY.md
//! documents), node configurations for it, and raw clients that act as a given user; built on
//! the harness's servers, wait helpers and metrics reader.

#![allow(dead_code)] // each test binary uses a different part

use std::time::Duration;

use async_nats::ConnectOptions;
use gslb_state_core::Config;
use gslb_state_nats::security::{Permissions, authorization_block, node_permissions};
use gslb_state_nats::{Handle, NodeOptions};
use gslb_state_tests::{
    CertFiles, NatsServer, ServerOpts, TestPki, metric_value, wait_for, wait_until,
};

/// Deadline for what should happen within a few heartbeats.
pub const SOON: Duration = Duration::from_secs(10);
/// The config bucket, stream and subject prefix (the guide's).
pub const CONFIG_BUCKET: &str = "PLEIADES_CFG";
/// The guide's config stream name (mapped to `PLEIADES_cfg`).
pub const CONFIG_STREAM: &str = "PLEIADES.cfg";
/// The guide's config subject prefix.
pub const CONFIG_PREFIX: &str = "pleiades.cfg";
/// The certificate subject of the administrator (no permission limits).
pub const ADMIN: &str = "gslb-admin";

/// The guide's YAML for node `node` of cluster `cluster`: 200 ms heartbeats, 1 s TTL, config
/// sync on, its own inbox prefix, mTLS with `cert`. `extra_nats` goes inside `nats:`.
pub fn node_yaml(
    cluster: &str,
    node: &str,
    servers: &[String],
    pki: &TestPki,
    cert: &CertFiles,
    extra_nats: &str,
) -> String {
    let servers: Vec<String> = servers.iter().map(|s| format!("\"{s}\"")).collect();
    format!(
        "cluster:\n  id: \"{cluster}\"\nnode:\n  id: \"{node}\"\n\
         state:\n  healthPolicy: \"prefer-local\"\n  heartbeatInterval: \"200ms\"\n  heartbeatTTL: \"1s\"\n  enableConfigSync: true\n\
         nats:\n  servers: [{}]\n  pingInterval: \"500ms\"\n  connectTimeout: \"1s\"\n  inboxPrefix: \"_INBOX_{node}\"\n  jetStream:\n    domain: \"gslb\"\n\
         \x20 tls:\n    caFile: \"{}\"\n    certFile: \"{}\"\n    keyFile: \"{}\"\n{extra_nats}\
         config:\n  stream: \"{CONFIG_STREAM}\"\n  subjectPrefix: \"{CONFIG_PREFIX}\"\n  kvBucket: \"{CONFIG_BUCKET}\"\n",
        servers.join(", "),
        pki.ca_file().display(),
        cert.cert.display(),
        cert.key.display(),
    )
}

/// Parses a YAML made by [`node_yaml`].
pub fn parse(yaml: &str) -> Config {
    Config::from_yaml(yaml).unwrap_or_else(|e| panic!("test config:\n{yaml}\n{e}"))
}

/// One node's identity: its cluster, id, certificate and configuration.
pub struct NodeId {
    /// Cluster id.
    pub cluster: String,
    /// Node id (also the certificate's common name).
    pub node: String,
    /// Its client certificate.
    pub cert: CertFiles,
    /// Its configuration.
    pub config: Config,
}

impl NodeId {
    /// Starts the node.
    pub fn start(&self) -> Handle {
        Handle::start(NodeOptions::new(self.config.clone(), &self.node)).expect("the node starts")
    }

    /// The permissions the server gives it.
    pub fn permissions(&self) -> Permissions {
        node_permissions(&self.config, &self.node)
    }
}

/// A server that maps each client certificate to a user with the permissions of
/// `gslb_state_nats::security::node_permissions`, plus an unrestricted administrator.
pub struct SecureServer {
    /// The PKI (its files live as long as this).
    pub pki: TestPki,
    /// The server.
    pub server: NatsServer,
    /// The nodes, in the order given.
    pub nodes: Vec<NodeId>,
    /// The administrator's certificate.
    pub admin: CertFiles,
    /// The server's `authorization` block.
    pub authorization: String,
}

impl SecureServer {
    /// Starts a server for `nodes` (`(cluster, node)`). `permissions` may change what a node
    /// gets (e.g. take its KV permissions away); `extra_nats` goes into every node's `nats:`.
    pub fn start(
        nodes: &[(&str, &str)],
        extra_nats: &str,
        permissions: impl Fn(&NodeId) -> Permissions,
    ) -> SecureServer {
        let pki = TestPki::new().unwrap();
        let server_cert = pki.server_cert("server").unwrap();
        let admin = pki.client_cert(ADMIN).unwrap();
        // The client port is known only once the server runs: nodes get it through a
        // placeholder URL, replaced below (permissions do not depend on it).
        let placeholder = vec!["nats://127.0.0.1:1".to_owned()];
        let ids: Vec<NodeId> = nodes
            .iter()
            .map(|(cluster, node)| {
                let cert = pki.client_cert(node).unwrap();
                let config = parse(&node_yaml(
                    cluster,
                    node,
                    &placeholder,
                    &pki,
                    &cert,
                    extra_nats,
                ));
                NodeId {
                    cluster: cluster.to_string(),
                    node: node.to_string(),
                    cert,
                    config,
                }
            })
            .collect();
        let mut users = vec![(format!("user: \"{}\"", admin.subject), None)];
        for id in &ids {
            users.push((
                format!("user: \"{}\"", id.cert.subject),
                Some(permissions(id)),
            ));
        }
        let authorization = authorization_block(&users);
        let opts = ServerOpts::default()
            .extra_config(pki.server_tls_block(&server_cert, true, "verify_and_map: true"))
            .extra_config(&authorization);
        let server = NatsServer::single(opts).unwrap();
        let mut ids = ids;
        for id in &mut ids {
            id.config.nats.servers = vec![server.url()];
        }
        SecureServer {
            pki,
            server,
            nodes: ids,
            admin,
            authorization,
        }
    }

    /// Node `node`.
    pub fn node(&self, node: &str) -> &NodeId {
        self.nodes
            .iter()
            .find(|n| n.node == node)
            .unwrap_or_else(|| panic!("no node {node}"))
    }

    /// A raw client with `cert`, inbox prefix `inbox`, 1 s request timeout; server errors
    /// (permission denials) go to the returned channel.
    pub async fn client_as(
        &self,
        cert: &CertFiles,
        inbox: &str,
    ) -> (
        async_nats::Client,
        tokio::sync::mpsc::UnboundedReceiver<String>,
    ) {
        let _ = async_nats::rustls::crypto::ring::default_provider().install_default();
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let client = ConnectOptions::new()
            .add_root_certificates(self.pki.ca_file().to_path_buf())
            .add_client_certificate(cert.cert.clone(), cert.key.clone())
            .require_tls(true)
            .custom_inbox_prefix(inbox)
            .request_timeout(Some(Duration::from_secs(1)))
            .event_callback(move |ev| {
                let tx = tx.clone();
                async move {
                    if let async_nats::Event::ServerError(e) = ev {
                        let _ = tx.send(e.to_string());
                    }
                }
            })
            .connect(self.server.url())
            .await
            .expect("the certificate maps to a user");
        (client, rx)
    }

    /// The administrator's client.
    pub async fn admin_client(&self) -> async_nats::Client {
        self.client_as(&self.admin, "_INBOX").await.0
    }

    /// A client acting as node `node` (its certificate and inbox prefix).
    pub async fn client_of(
        &self,
        node: &str,
    ) -> (
        async_nats::Client,
        tokio::sync::mpsc::UnboundedReceiver<String>,
    ) {
        let id = self.node(node);
        self.client_as(&id.cert, &format!("_INBOX_{node}")).await
    }

    /// Creates every cluster's buckets and the config bucket and stream, as the administrator
    /// does once (`gslb-state bootstrap`).
    pub async fn bootstrap(&self) {
        let admin = self.admin_client().await;
        let mut done = std::collections::HashSet::new();
        for id in &self.nodes {
            if done.insert(id.cluster.clone()) {
                gslb_state_nats::bootstrap(&admin, &id.config)
                    .await
                    .unwrap_or_else(|e| panic!("bootstrap {}: {e}", id.cluster));
            }
        }
    }

    /// Permission violations the server logged so far.
    pub fn logged_violations(&self) -> Vec<String> {
        std::fs::read_to_string(self.server.log_path())
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains("Violation"))
            .map(str::to_owned)
            .collect()
    }
}

/// Waits for a server error on `errors` that contains `needle`; returns it.
pub async fn wait_denied(
    errors: &mut tokio::sync::mpsc::UnboundedReceiver<String>,
    needle: &str,
) -> (String, Duration) {
    wait_for(
        SOON,
        &format!("a permissions violation on {needle}"),
        || {
            let e = errors.try_recv().ok();
            async move { e.filter(|e| e.contains("Permissions Violation") && e.contains(needle)) }
        },
    )
    .await
    .unwrap()
}

/// Waits until `node` counts exactly `ids` as active members.
pub async fn wait_members(node: &Handle, ids: &[&str]) {
    let mut want: Vec<String> = ids.iter().map(|s| s.to_string()).collect();
    want.sort();
    let what = format!("{} to count members {want:?}", node.node_id());
    wait_until(SOON, &what, || async {
        let mut got: Vec<String> = node
            .members()
            .await
            .unwrap()
            .into_iter()
            .filter(|m| m.active)
            .map(|m| m.node)
            .collect();
        got.sort();
        got == want
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"));
}

/// One series of `node`'s Prometheus text ([`metric_value`]), 0 when absent (a counter not yet
/// incremented).
pub fn metric(node: &Handle, series: &str) -> f64 {
    metric_value(&node.metrics().encode(), series).unwrap_or(0.0)
}
