//! Authentication besides mTLS, on a real nats-server, each with the per-node permissions of
//! `gslb_state_nats::security::node_permissions`:
//!
//! * `nats.auth.nkeySeedFile`: the server knows the node's public nkey;
//! * `nats.auth.credsFile`: NATS accounts in operator mode, the node's user JWT (carrying its
//!   permissions) and nkey seed in one credentials file; operator, account and user JWTs are
//!   made at test time.
//!
//! (`nats.auth.userEnv`/`passwordEnv` are exercised with the daemon in `security_daemon.rs`,
//! where the environment is the child process's own.)

mod security_common;

use std::path::Path;

use data_encoding::BASE64URL_NOPAD;
use gslb_state_core::{Config, Source};
use gslb_state_nats::security::{Permissions, authorization_block, node_permissions};
use gslb_state_nats::{Handle, NodeOptions};
use gslb_state_tests::{NatsServer, ServerOpts, wait_until};
use nkeys::KeyPair;
use security_common::{SOON, metric, wait_members};
use serde_json::json;

const CLUSTER: &str = "c1";

fn node_yaml(node: &str, servers: &[String], auth: &str) -> String {
    let servers: Vec<String> = servers.iter().map(|s| format!("\"{s}\"")).collect();
    format!(
        "cluster:\n  id: \"{CLUSTER}\"\nnode:\n  id: \"{node}\"\n\
         state:\n  heartbeatInterval: \"200ms\"\n  heartbeatTTL: \"1s\"\n\
         nats:\n  servers: [{}]\n  pingInterval: \"500ms\"\n  connectTimeout: \"1s\"\n  inboxPrefix: \"_INBOX_{node}\"\n  jetStream:\n    domain: \"gslb\"\n  auth:\n{auth}",
        servers.join(", ")
    )
}

fn config(node: &str, servers: &[String], auth: &str) -> Config {
    Config::from_yaml(&node_yaml(node, servers, auth)).unwrap()
}

/// Checks that `nodes` (ids `ids`) see each other, share a report through the subjects and
/// the KV, and were refused nothing.
async fn check_working(nodes: &[&Handle], ids: &[&str]) {
    for n in nodes {
        wait_members(n, ids).await;
    }
    nodes[0].set_health("api", Some(true)).unwrap();
    for n in &nodes[1..] {
        wait_until(SOON, "the report to arrive", || async {
            n.decision("api")
                .is_some_and(|d| d.healthy == Some(true) && d.source == Source::Global)
        })
        .await
        .unwrap();
    }
    wait_until(SOON, "the report to be stored", || async {
        metric(
            nodes[0],
            "gslbd_state_kv_put_total{bucket=\"gslb_c1_health\",result=\"ok\"}",
        ) >= 1.0
    })
    .await
    .unwrap();
    for n in nodes {
        let denied = metric(
            n,
            "gslbd_state_permission_denied_total{operation=\"publish\"}",
        ) + metric(
            n,
            "gslbd_state_permission_denied_total{operation=\"subscribe\"}",
        );
        assert_eq!(denied, 0.0, "{}:\n{}", n.node_id(), n.metrics().encode());
    }
}

/// Makes the cluster's buckets with an unrestricted client.
async fn bootstrap(client: async_nats::Client) {
    let config = config("admin", &["nats://unused:1".into()], "");
    gslb_state_nats::bootstrap(&client, &config).await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn an_nkey_seed_file_authenticates_a_node() {
    let dir = tempfile::tempdir().unwrap();
    let admin = KeyPair::new_user();
    let keys: Vec<(&str, KeyPair)> = ["n1", "n2"]
        .into_iter()
        .map(|n| (n, KeyPair::new_user()))
        .collect();
    let placeholder = ["nats://127.0.0.1:1".to_owned()];
    let mut users = vec![(format!("nkey: \"{}\"", admin.public_key()), None)];
    for (node, key) in &keys {
        let seed_file = dir.path().join(format!("{node}.nk"));
        users.push((
            format!("nkey: \"{}\"", key.public_key()),
            Some(node_permissions(
                &config(node, &placeholder, &seed_auth(&seed_file)),
                node,
            )),
        ));
        std::fs::write(&seed_file, format!("{}\n", key.seed().unwrap())).unwrap();
    }
    let server =
        NatsServer::single(ServerOpts::default().extra_config(authorization_block(&users)))
            .unwrap();
    let admin_seed = admin.seed().unwrap();
    bootstrap(
        async_nats::ConnectOptions::with_nkey(admin_seed)
            .connect(server.url())
            .await
            .unwrap(),
    )
    .await;
    let start = |node: &str| {
        let seed_file = dir.path().join(format!("{node}.nk"));
        Handle::start(NodeOptions::new(
            config(node, &[server.url()], &seed_auth(&seed_file)),
            node,
        ))
        .unwrap()
    };
    let (n1, n2) = (start("n1"), start("n2"));
    check_working(&[&n1, &n2], &["n1", "n2"]).await;

    // A seed the server does not know is refused, and the node says why.
    let stranger = dir.path().join("stranger.nk");
    std::fs::write(&stranger, KeyPair::new_user().seed().unwrap()).unwrap();
    let n3 = Handle::start(NodeOptions::new(
        config("n3", &[server.url()], &seed_auth(&stranger)),
        "n3",
    ))
    .unwrap();
    wait_until(SOON, "n3 to be refused", || async {
        n3.last_connect_error()
            .is_some_and(|e| e.contains("authorization violation"))
    })
    .await
    .unwrap_or_else(|e| panic!("{e}: {:?}", n3.last_connect_error()));
    assert!(!n3.is_connected());
    for n in [n1, n2, n3] {
        n.shutdown().await;
    }
}

fn seed_auth(file: &Path) -> String {
    format!("    nkeySeedFile: \"{}\"\n", file.display())
}

/// A JWT of `claims` (with `iss`, `sub`, `iat`, `jti` filled in) signed by `issuer`.
fn jwt(issuer: &KeyPair, subject: &str, name: &str, nats: serde_json::Value) -> String {
    let header = json!({ "typ": "JWT", "alg": "ed25519-nkey" });
    let claims = json!({
        "jti": BASE64URL_NOPAD.encode(subject.as_bytes()),
        "iat": 1_700_000_000u64,
        "iss": issuer.public_key(),
        "name": name,
        "sub": subject,
        "nats": nats,
    });
    let body = format!(
        "{}.{}",
        BASE64URL_NOPAD.encode(header.to_string().as_bytes()),
        BASE64URL_NOPAD.encode(claims.to_string().as_bytes())
    );
    let signature = issuer.sign(body.as_bytes()).unwrap();
    format!("{body}.{}", BASE64URL_NOPAD.encode(&signature))
}

/// A credentials file: the user's JWT and nkey seed, decorated as `nsc` writes them.
fn creds(user_jwt: &str, user: &KeyPair) -> String {
    format!(
        "-----BEGIN NATS USER JWT-----\n{user_jwt}\n------END NATS USER JWT------\n\n\
         ************************* IMPORTANT *************************\n\
         NKEY Seed printed below can be used to sign and prove identity.\n\n\
         -----BEGIN USER NKEY SEED-----\n{}\n------END USER NKEY SEED------\n",
        user.seed().unwrap()
    )
}

/// The user claims of `permissions` (`None`: unrestricted).
fn user_claims(account: &KeyPair, permissions: Option<&Permissions>) -> serde_json::Value {
    let mut claims = json!({
        "type": "user",
        "version": 2,
        "issuer_account": account.public_key(),
        "subs": -1,
        "data": -1,
        "payload": -1,
    });
    if let Some(p) = permissions {
        claims["pub"] = json!({ "allow": p.publish });
        claims["sub"] = json!({ "allow": p.subscribe });
    }
    claims
}

#[tokio::test(flavor = "multi_thread")]
async fn a_credentials_file_authenticates_a_node_in_operator_mode() {
    let dir = tempfile::tempdir().unwrap();
    let operator = KeyPair::new_operator();
    let account = KeyPair::new_account();
    let system = KeyPair::new_account();
    let operator_jwt = jwt(
        &operator,
        &operator.public_key(),
        "gslb-operator",
        json!({ "type": "operator", "version": 2, "system_account": system.public_key() }),
    );
    let limits = json!({
        "subs": -1, "data": -1, "payload": -1, "imports": -1, "exports": -1,
        "wildcards": true, "conn": -1, "leaf": -1,
        "mem_storage": -1, "disk_storage": -1, "streams": -1, "consumer": -1,
    });
    let account_jwt = jwt(
        &operator,
        &account.public_key(),
        "GSLB",
        json!({ "type": "account", "version": 2, "limits": limits }),
    );
    let system_jwt = jwt(
        &operator,
        &system.public_key(),
        "SYS",
        json!({ "type": "account", "version": 2, "limits": { "conn": -1, "subs": -1, "data": -1, "payload": -1 } }),
    );
    let placeholder = ["nats://127.0.0.1:1".to_owned()];
    let write_creds = |name: &str, permissions: Option<&Permissions>| {
        let user = KeyPair::new_user();
        let user_jwt = jwt(
            &account,
            &user.public_key(),
            name,
            user_claims(&account, permissions),
        );
        let file = dir.path().join(format!("{name}.creds"));
        std::fs::write(&file, creds(&user_jwt, &user)).unwrap();
        file
    };
    let creds_auth = |file: &Path| format!("    credsFile: \"{}\"\n", file.display());
    let admin_creds = write_creds("admin", None);
    let node_creds: Vec<(&str, std::path::PathBuf)> = ["n1", "n2"]
        .into_iter()
        .map(|node| {
            let file = dir.path().join(format!("{node}.creds"));
            let p = node_permissions(&config(node, &placeholder, &creds_auth(&file)), node);
            (node, write_creds(node, Some(&p)))
        })
        .collect();
    let server_conf = format!(
        "operator: \"{operator_jwt}\"\nsystem_account: \"{}\"\nresolver: MEMORY\nresolver_preload: {{\n  {}: \"{account_jwt}\"\n  {}: \"{system_jwt}\"\n}}\n",
        system.public_key(),
        account.public_key(),
        system.public_key(),
    );
    let server = NatsServer::single(ServerOpts::default().extra_config(server_conf))
        .unwrap_or_else(|e| panic!("{e}"));
    bootstrap(
        async_nats::ConnectOptions::with_credentials_file(&admin_creds)
            .await
            .unwrap()
            .connect(server.url())
            .await
            .unwrap(),
    )
    .await;
    let nodes: Vec<Handle> = node_creds
        .iter()
        .map(|(node, file)| {
            Handle::start(NodeOptions::new(
                config(node, &[server.url()], &creds_auth(file)),
                node,
            ))
            .unwrap()
        })
        .collect();
    check_working(&[&nodes[0], &nodes[1]], &["n1", "n2"]).await;

    // The permissions in n1's JWT hold: it cannot publish as n2.
    let (tx, mut errors) = tokio::sync::mpsc::unbounded_channel();
    let rogue = async_nats::ConnectOptions::with_credentials_file(&node_creds[0].1)
        .await
        .unwrap()
        .event_callback(move |ev| {
            let tx = tx.clone();
            async move {
                if let async_nats::Event::ServerError(e) = ev {
                    let _ = tx.send(e.to_string());
                }
            }
        })
        .connect(server.url())
        .await
        .unwrap();
    rogue
        .publish("gslb.c1.hb.n2", "forged".into())
        .await
        .unwrap();
    security_common::wait_denied(&mut errors, "gslb.c1.hb.n2").await;
    for n in nodes {
        n.shutdown().await;
    }
}
