//! Certificate rotation with certificates made at test time, on a real nats-server with mTLS.
//!
//! Node n1's `nats.tls.certFile`/`keyFile` are replaced in place: first by a certificate of the
//! same CA (picked up by the driver's watch on the files), then by one of a new CA that the
//! server trusts alongside the old one (picked up on `Handle::reload_tls`, what SIGHUP does in
//! the daemon). Each time the server's `/connz` shows the node connected with the new
//! certificate, and nothing is lost: no member goes down, the peer keeps n1's incarnation, and
//! decisions keep flowing. Finally the server stops trusting the old CA: the node, already on
//! the new certificate, reconnects, while the old certificate is refused.

mod security_common;

use std::path::Path;
use std::time::Duration;

use gslb_state_core::{Config, Source};
use gslb_state_nats::{Event, Handle, NodeOptions};
use gslb_state_tests::{CertFiles, NatsServer, ServerOpts, TestPki, wait_for, wait_until};
use security_common::{SOON, wait_members};

/// The server's `tls {}` block: its certificate from `pki`, clients verified against `ca`.
fn tls_block(server: &CertFiles, ca: &Path) -> String {
    format!(
        "tls {{\n  cert_file: \"{}\"\n  key_file: \"{}\"\n  ca_file: \"{}\"\n  verify: true\n}}\n",
        server.cert.display(),
        server.key.display(),
        ca.display()
    )
}

fn node_config(server: &NatsServer, ca: &Path, cert: &Path, key: &Path) -> Config {
    let yaml = format!(
        "cluster:\n  id: \"c1\"\nstate:\n  heartbeatInterval: \"200ms\"\n  heartbeatTTL: \"1s\"\n\
         nats:\n  servers: [\"{}\"]\n  pingInterval: \"500ms\"\n  connectTimeout: \"1s\"\n  jetStream:\n    domain: \"gslb\"\n\
         \x20 tls:\n    caFile: \"{}\"\n    certFile: \"{}\"\n    keyFile: \"{}\"\n",
        server.url(),
        ca.display(),
        cert.display(),
        key.display()
    );
    Config::from_yaml(&yaml).unwrap()
}

/// Replaces `dst`'s content with `src`'s atomically (write aside, rename), as a certificate
/// manager does.
fn install(src: &Path, dst: &Path) {
    let tmp = dst.with_extension("new");
    std::fs::copy(src, &tmp).unwrap();
    std::fs::rename(&tmp, dst).unwrap();
}

/// Node `id`'s connection on `server` (from `/connz`): its id and the subject of the
/// certificate it presented.
fn connection(server: &NatsServer, id: &str) -> Option<(u64, String)> {
    let name = format!("gslb-state {id}");
    let connz = server.monitor_json("/connz?auth=true").ok()?;
    let c = connz["connections"]
        .as_array()?
        .iter()
        .find(|c| c["name"].as_str() == Some(name.as_str()))?
        .clone();
    Some((
        c["cid"].as_u64()?,
        c["tls_peer_certs"][0]["subject"].as_str()?.to_owned(),
    ))
}

/// Waits until node `id` is connected with a certificate of `subject` on a connection other
/// than `not_cid`; returns the connection id and how long it took.
async fn wait_connection(
    server: &NatsServer,
    id: &str,
    subject: &str,
    not_cid: Option<u64>,
) -> (u64, Duration) {
    let what = format!("{id} connected with certificate {subject}");
    wait_for(SOON, &what, || async {
        connection(server, id)
            .and_then(|(cid, s)| (s == subject && Some(cid) != not_cid).then_some(cid))
    })
    .await
    .unwrap_or_else(|e| {
        panic!(
            "{e}; connz: {:?}",
            server.monitor_json("/connz?auth=true").ok()
        )
    })
}

async fn wait_decision(node: &Handle, ep: &str, healthy: bool) {
    let what = format!("{} to decide {ep} = {healthy} from Global", node.node_id());
    wait_until(SOON, &what, || async {
        node.decision(ep)
            .is_some_and(|d| d.healthy == Some(healthy) && d.source == Source::Global)
    })
    .await
    .unwrap_or_else(|e| panic!("{e}; decision: {:?}", node.decision(ep)));
}

#[tokio::test(flavor = "multi_thread")]
async fn rotated_certificates_are_picked_up_without_losing_state() {
    let old_ca = TestPki::new().unwrap();
    let new_ca = TestPki::new().unwrap();
    let server_cert = old_ca.server_cert("server").unwrap();
    // Clients trust the server's CA; the server trusts both client CAs during the change-over.
    let both = old_ca.dir().join("both-cas.pem");
    std::fs::write(
        &both,
        std::fs::read_to_string(old_ca.ca_file()).unwrap()
            + &std::fs::read_to_string(new_ca.ca_file()).unwrap(),
    )
    .unwrap();
    let server =
        NatsServer::single(ServerOpts::default().extra_config(tls_block(&server_cert, &both)))
            .unwrap();

    // n1's certificate files, at fixed paths its configuration names.
    let files = tempfile::tempdir().unwrap();
    let (cert, key) = (files.path().join("n1.pem"), files.path().join("n1-key.pem"));
    let first = old_ca.client_cert("n1-2026-01").unwrap();
    install(&first.cert, &cert);
    install(&first.key, &key);
    let n1 = Handle::start(NodeOptions::new(
        node_config(&server, old_ca.ca_file(), &cert, &key),
        "n1",
    ))
    .unwrap();
    let n2_cert = old_ca.client_cert("n2").unwrap();
    let n2 = Handle::start(NodeOptions::new(
        node_config(&server, old_ca.ca_file(), &n2_cert.cert, &n2_cert.key),
        "n2",
    ))
    .unwrap();
    let mut n2_events = n2.subscribe();
    wait_members(&n1, &["n1", "n2"]).await;
    wait_members(&n2, &["n1", "n2"]).await;
    n1.set_health("api", Some(true)).unwrap();
    wait_decision(&n2, "api", true).await;
    let (cid, _) = wait_connection(&server, "n1", "CN=n1-2026-01", None).await;
    let incarnation = |members: Vec<gslb_state_core::MemberInfo>| {
        members
            .into_iter()
            .find(|m| m.node == "n1")
            .map(|m| m.incarnation)
    };
    let n1_incarnation = incarnation(n2.members().await.unwrap()).unwrap();

    // 1. A new certificate from the same CA, noticed by the driver's file watch.
    let second = old_ca.client_cert("n1-2026-02").unwrap();
    install(&second.cert, &cert);
    install(&second.key, &key);
    let (cid, took) = wait_connection(&server, "n1", "CN=n1-2026-02", Some(cid)).await;
    println!("file change picked up after {took:?}");
    n1.set_health("api", Some(false)).unwrap();
    wait_decision(&n2, "api", false).await;

    // 2. A certificate from a new CA, picked up on request (SIGHUP in the daemon).
    let third = new_ca.client_cert("n1-newca").unwrap();
    install(&third.cert, &cert);
    install(&third.key, &key);
    n1.reload_tls();
    let (cid, _) = wait_connection(&server, "n1", "CN=n1-newca", Some(cid)).await;
    n1.set_health("api", Some(true)).unwrap();
    wait_decision(&n2, "api", true).await;

    // 3. The server stops trusting the old CA (config reload). The node, on its new
    //    certificate, reconnects; the old certificate no longer gets in.
    let conf = std::fs::read_to_string(server.config_path()).unwrap();
    std::fs::write(
        server.config_path(),
        conf.replace(
            &both.display().to_string(),
            &new_ca.ca_file().display().to_string(),
        ),
    )
    .unwrap();
    let pid = server.pid().unwrap() as i32;
    // SAFETY: signalling our own child process.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGHUP) }, 0);
    wait_until(SOON, "the server to reload its configuration", || async {
        std::fs::read_to_string(server.log_path())
            .unwrap_or_default()
            .contains("Reloaded server configuration")
    })
    .await
    .unwrap();
    n1.reload_tls();
    wait_connection(&server, "n1", "CN=n1-newca", Some(cid)).await;
    let _ = async_nats::rustls::crypto::ring::default_provider().install_default();
    let refused = async_nats::ConnectOptions::new()
        .add_root_certificates(old_ca.ca_file().to_path_buf())
        .add_client_certificate(second.cert.clone(), second.key.clone())
        .require_tls(true)
        .connection_timeout(Duration::from_secs(2))
        .connect(server.url())
        .await;
    assert!(refused.is_err(), "the old CA's certificate is refused now");
    n1.set_health("api", Some(false)).unwrap();
    wait_decision(&n2, "api", false).await;

    // Nothing was lost on the way: n1 never went down for n2, and is the same incarnation.
    assert_eq!(
        incarnation(n2.members().await.unwrap()),
        Some(n1_incarnation)
    );
    let (downs, _) = wait_for(SOON, "n2's events so far", || {
        let mut downs = Vec::new();
        while let Ok(ev) = n2_events.try_recv() {
            if let Event::MemberDown { node, reason } = ev {
                downs.push(format!("{node}: {reason:?}"));
            }
        }
        async move { Some(downs) }
    })
    .await
    .unwrap();
    assert_eq!(downs, Vec::<String>::new(), "no member went down");
    wait_members(&n2, &["n1", "n2"]).await;
    for n in [n1, n2] {
        n.shutdown().await;
    }
}
