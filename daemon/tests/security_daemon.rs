//! The `gslb-state` daemon under the documented security setup (SECURITY.md), as an operator
//! runs it:
//!
//! * user and password come from the environment (`nats.auth.userEnv`/`passwordEnv`), never
//!   from the YAML; the server's users get the permissions `gslb-state permissions` prints;
//!   the buckets are made once by `gslb-state bootstrap` with administrator credentials;
//! * a refused operation is an ERROR log line naming the subject, within seconds, and the
//!   daemon keeps running and deciding;
//! * SIGHUP makes the daemon reconnect with the certificate files as they are now (the file
//!   watch is kept out of it by giving the new files the old modification times).
//!
//! Run by `cargo test -p gslb-state-daemon --test security_daemon`, against the `gslb-state`
//! binary cargo builds for this crate (`daemon_common::bin`; `GSLB_STATE_BIN` picks another).

mod daemon_common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, SystemTime};

use daemon_common::*;
use gslb_state_tests::{NatsServer, ServerOpts, TestPki, wait_for_blocking};

/// Waits until `d` decides `endpoint` as `healthy` from the global view.
fn wait_global(d: &mut Daemon, endpoint: &str, healthy: bool) {
    let what = format!("{healthy} from global");
    d.wait_decision(endpoint, &what, SOON, |v| {
        v["healthy"] == healthy && v["source"] == "global"
    });
}

/// A node's YAML: cluster `e2e`, 250 ms heartbeats, `nats` lines given by the caller.
fn yaml(node: &str, servers: &str, nats_extra: &str) -> String {
    format!(
        "cluster:\n  id: \"{CLUSTER}\"\nnode:\n  id: \"{node}\"\n\
         state:\n  heartbeatInterval: \"250ms\"\n  heartbeatTTL: \"1s\"\n\
         nats:\n  servers: [\"{servers}\"]\n  pingInterval: \"500ms\"\n  connectTimeout: \"1s\"\n  jetStream:\n    domain: \"gslb\"\n{nats_extra}\
         admin:\n  listen: \"127.0.0.1:0\"\n"
    )
}

/// `nats.auth` from environment variables `GSLB_USER` / `GSLB_PASSWORD`, and its own inbox.
fn env_auth(node: &str) -> String {
    format!(
        "  inboxPrefix: \"_INBOX_{node}\"\n  auth:\n    userEnv: \"GSLB_USER\"\n    passwordEnv: \"GSLB_PASSWORD\"\n"
    )
}

/// `gslb-state ARGS` with `env`; must succeed; returns stdout.
fn cli(args: &[&str], env: &[(&str, &str)]) -> String {
    let out = Command::new(bin())
        .args(args)
        .envs(env.iter().copied())
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "gslb-state {args:?}: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn the_daemon_runs_with_env_credentials_and_least_privilege_and_logs_refusals() {
    let dir = TestDir::new();
    // The permissions each node needs, as `gslb-state permissions` prints them; d1's user
    // is then denied writing its reports to the KV (a mistake in the server's config).
    let permissions = |node: &str| {
        let file = dir.file(&format!("{node}-perm.yaml"));
        std::fs::write(&file, yaml(node, "nats://127.0.0.1:4222", &env_auth(node))).unwrap();
        let out = cli(&["permissions", "--config", file.to_str().unwrap()], &[]);
        assert!(
            out.contains(&format!("\"gslb.{CLUSTER}.hb.{node}\"")),
            "{out}"
        );
        let block = out
            .split_once("permissions: ")
            .expect("a permissions block")
            .1
            .to_owned();
        if node == "d1" {
            block.replace(
                &format!("\"$KV.gslb_{CLUSTER}_health.d1.>\""),
                "\"nothing\"",
            )
        } else {
            block
        }
    };
    let auth = format!(
        "authorization {{\n  users = [\n    {{ user: \"admin\", password: \"admin-secret\" }}\n    {{ user: \"d1\", password: \"d1-secret\", permissions: {} }}\n    {{ user: \"d2\", password: \"d2-secret\", permissions: {} }}\n  ]\n}}\n",
        permissions("d1"),
        permissions("d2")
    );
    let nats = NatsServer::single(ServerOpts::default().extra_config(&auth)).unwrap();
    let url = nats.url();

    // The administrator makes the buckets once.
    let admin_yaml = dir.file("admin.yaml");
    std::fs::write(&admin_yaml, yaml("admin", &url, &env_auth("admin"))).unwrap();
    let made = cli(
        &["bootstrap", "--config", admin_yaml.to_str().unwrap()],
        &[("GSLB_USER", "admin"), ("GSLB_PASSWORD", "admin-secret")],
    );
    assert!(
        made.contains(&format!("ready: gslb_{CLUSTER}_health")),
        "{made}"
    );

    let mut ds: Vec<Daemon> = ["d1", "d2"]
        .iter()
        .map(|node| {
            let file = dir.file(&format!("{node}.yaml"));
            let text = yaml(node, &url, &env_auth(node));
            assert!(!text.contains("secret"), "no password in the YAML");
            std::fs::write(&file, text).unwrap();
            let password = format!("{node}-secret");
            Daemon::start_file(
                &dir,
                node,
                &file,
                &[],
                &[("GSLB_USER", node), ("GSLB_PASSWORD", &password)],
            )
        })
        .collect();
    for d in ds.iter_mut() {
        d.wait_ready();
        d.wait_members(2, SOON);
    }
    // d1's report cannot be stored: refused at once, said clearly, counted.
    ds[0].put_health("api", true);
    let took = ds[0].wait_log("NATS permission denied", Duration::from_secs(5));
    let line = ds[0].log_lines("NATS permission denied").remove(0);
    println!("after {took:?}: {line}");
    assert!(line.contains("ERROR"), "{line}");
    assert!(
        line.contains(&format!("$KV.gslb_{CLUSTER}_health.d1.api")),
        "{line}"
    );
    assert!(
        ds[0].wait_metric_at_least(
            "gslbd_state_permission_denied_total{operation=\"publish\"}",
            1.0
        ) >= 1.0
    );
    // It keeps working: its change reached d2 on the subject, and d2's reaches it.
    wait_global(&mut ds[1], "api", true);
    ds[1].put_health("web", false);
    wait_global(&mut ds[0], "web", false);
    assert!(!ds[1].logged("permission denied"), "{}", ds[1].log_tail(20));
}

/// Node `name`'s connection on `server`: its id and the SHA-256 of the certificate it showed.
fn connection(server: &NatsServer, name: &str) -> Option<(u64, String)> {
    let connz = server.monitor_json("/connz?auth=true").ok()?;
    let c = connz["connections"]
        .as_array()?
        .iter()
        .find(|c| c["name"].as_str() == Some(&format!("gslb-state {name}")))?
        .clone();
    Some((
        c["cid"].as_u64()?,
        c["tls_peer_certs"][0]["cert_sha256"].as_str()?.to_owned(),
    ))
}

/// Replaces `dst` with `src`'s content, keeping `dst`'s modification time: the new file gets
/// the old time before it is renamed over `dst`, so no look at `dst` ever sees another time.
fn replace_keeping_mtime(src: &Path, dst: &Path) {
    let mtime: SystemTime = std::fs::metadata(dst).unwrap().modified().unwrap();
    let aside = dst.with_extension("new");
    std::fs::write(&aside, std::fs::read(src).unwrap()).unwrap();
    std::fs::File::options()
        .write(true)
        .open(&aside)
        .unwrap()
        .set_modified(mtime)
        .unwrap();
    std::fs::rename(&aside, dst).unwrap();
    assert_eq!(std::fs::metadata(dst).unwrap().modified().unwrap(), mtime);
}

#[test]
fn sighup_reconnects_the_daemon_with_the_rotated_certificate() {
    let pki = TestPki::new().unwrap();
    let server_cert = pki.server_cert("server").unwrap();
    // verify_and_map: the certificate's subject is the user; a rotated certificate keeps it.
    let nats = NatsServer::single(
        ServerOpts::default()
            .extra_config(pki.server_tls_block(&server_cert, true, "verify_and_map: true"))
            .extra_config("authorization { users = [ { user: \"CN=d1\" }, { user: \"CN=d2\" } ] }"),
    )
    .unwrap();
    let dir = TestDir::new();
    let mut ds = Vec::new();
    for node in ["d1", "d2"] {
        let issued = pki.client_cert(node).unwrap();
        let (cert, key) = (
            dir.file(&format!("{node}.pem")),
            dir.file(&format!("{node}-key.pem")),
        );
        std::fs::copy(&issued.cert, &cert).unwrap();
        std::fs::copy(&issued.key, &key).unwrap();
        let tls = format!(
            "  tls:\n    caFile: \"{}\"\n    certFile: \"{}\"\n    keyFile: \"{}\"\n",
            pki.ca_file().display(),
            cert.display(),
            key.display()
        );
        let file = dir.file(&format!("{node}.yaml"));
        std::fs::write(&file, yaml(node, &nats.url(), &tls)).unwrap();
        ds.push(Daemon::start_file(&dir, node, &file, &[], &[]));
    }
    for d in ds.iter_mut() {
        d.wait_ready();
        d.wait_members(2, SOON);
    }
    ds[0].put_health("api", true);
    wait_global(&mut ds[1], "api", true);
    let (cid, sha) = connection(&nats, "d1").expect("d1 connected");

    // A new certificate for d1 (same subject, new key), in place; the modification times stay
    // as they were, so only the signal can make the daemon notice.
    let renewed = pki.client_cert("d1").unwrap();
    replace_keeping_mtime(&renewed.key, &dir.file("d1-key.pem"));
    replace_keeping_mtime(&renewed.cert, &dir.file("d1.pem"));
    ds[0].sighup();
    ds[0].wait_log("SIGHUP: reconnecting", SOON);
    let (new, _) = wait_for_blocking(SOON, "d1 reconnected with the renewed certificate", || {
        connection(&nats, "d1").filter(|(c, s)| *c != cid && *s != sha)
    })
    .unwrap_or_else(|e| panic!("{e}"));
    println!(
        "d1: connection {cid} -> {}, certificate {sha} -> {}",
        new.0, new.1
    );

    // Nothing lost: still connected, both members, decisions flowing, no member went down.
    ds[0].wait_ready();
    ds[0].put_health("api", false);
    wait_global(&mut ds[1], "api", false);
    assert_eq!(ds[1].active_members(), Some(2));
    assert!(!ds[1].logged("member down"), "{}", ds[1].log_tail(20));
}
