//! The NATS driver over TLS and mTLS, from `nats.tls.{caFile,certFile,keyFile}`, with a CA and
//! certificates made at test time: valid clients converge; a client without a valid
//! certificate is refused, keeps deciding locally, and says why.

mod driver_common;

use driver_common::*;
use gslb_state_core::Source;
use gslb_state_nats::{Handle, StartError};
use gslb_state_tests::{NatsServer, ServerOpts, TestPki, wait_until};

/// Waits until `node`'s last connect error contains `needle`; returns it.
async fn wait_refused(node: &Handle, needle: &str) -> String {
    let what = format!("{} refused with {needle:?}", node.node_id());
    wait_until(SOON, &what, || async {
        node.last_connect_error()
            .is_some_and(|e| e.contains(needle))
    })
    .await
    .unwrap_or_else(|e| panic!("{e}; last connect error: {:?}", node.last_connect_error()));
    assert!(!node.is_connected());
    node.last_connect_error().unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn mtls_admits_valid_clients_and_refuses_the_others_with_a_clear_error() {
    let pki = TestPki::new().unwrap();
    let server_cert = pki.server_cert("server").unwrap();
    let server = NatsServer::single(ServerOpts::default().extra_config(pki.server_tls_block(
        &server_cert,
        true,
        "",
    )))
    .unwrap();
    let urls = vec![server.url()];
    let with_cert = |id: &str| {
        let cert = pki.client_cert(id).unwrap();
        start_with(
            config(&urls, "prefer-local", &tls_yaml(&pki, Some(&cert))),
            id,
        )
    };
    let n1 = with_cert("n1");
    let n2 = with_cert("n2");
    n1.set_health("api", Some(true)).unwrap();
    wait_members_all(&[&n1, &n2], &["n1", "n2"], SOON).await;
    wait_decision(&n2, "api", Some(true), Source::Global, SOON).await;

    // No client certificate.
    let bare = start_with(config(&urls, "prefer-local", &tls_yaml(&pki, None)), "n3");
    // A certificate from another CA.
    let other_pki = TestPki::new().unwrap();
    let foreign_cert = other_pki.client_cert("n4").unwrap();
    let foreign = start_with(
        config(&urls, "prefer-local", &tls_yaml(&pki, Some(&foreign_cert))),
        "n4",
    );
    // A client that does not trust the server's CA.
    let own_cert = other_pki.client_cert("n5").unwrap();
    let distrustful = start_with(
        config(
            &urls,
            "prefer-local",
            &tls_yaml(&other_pki, Some(&own_cert)),
        ),
        "n5",
    );
    for node in [&bare, &foreign, &distrustful] {
        node.set_health("api", Some(false)).unwrap();
    }
    let errors = [
        wait_refused(&bare, "CertificateRequired").await,
        wait_refused(&foreign, "UnknownCA").await,
        wait_refused(&distrustful, "invalid peer certificate").await,
    ];
    for e in &errors {
        assert!(e.starts_with(&server.url()), "names the server: {e}");
        println!("refused as expected: {e}");
    }
    // Refused nodes keep deciding from what they see; nobody hears from them.
    for node in [&bare, &foreign, &distrustful] {
        assert_eq!(node.decision("api").unwrap().source, Source::Local);
        assert_eq!(metric(node, "gslbd_state_nats_connected"), Some(0.0));
    }
    assert_eq!(active_members(&n1).await.len(), 2);
    assert_eq!(n1.decision("api").unwrap().healthy, Some(true));
    for node in [n1, n2, bare, foreign, distrustful] {
        node.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn tls_without_client_certificates_needs_only_the_ca() {
    let pki = TestPki::new().unwrap();
    let server_cert = pki.server_cert("server").unwrap();
    let server = NatsServer::single(ServerOpts::default().extra_config(pki.server_tls_block(
        &server_cert,
        false,
        "",
    )))
    .unwrap();
    let urls = vec![server.url()];
    let n1 = start_with(config(&urls, "prefer-local", &tls_yaml(&pki, None)), "n1");
    let n2 = start_with(config(&urls, "prefer-local", &tls_yaml(&pki, None)), "n2");
    n1.set_health("api", Some(false)).unwrap();
    wait_decision(&n2, "api", Some(false), Source::Global, SOON).await;
    // Without the CA the server's certificate is not trusted.
    let plain = start(&urls, "prefer-local", "n3");
    let error = wait_refused(&plain, "invalid peer certificate").await;
    println!("refused as expected: {error}");
    for node in [n1, n2, plain] {
        node.shutdown().await;
    }
}

#[test]
fn a_missing_tls_file_is_a_start_error_that_names_the_key() {
    let yaml = "  tls:\n    caFile: \"/nonexistent/ca.pem\"\n";
    let err = Handle::start(gslb_state_nats::NodeOptions::new(
        config(&["nats://127.0.0.1:4222".into()], "prefer-local", yaml),
        "n1",
    ))
    .err()
    .expect("refused at start");
    assert!(
        matches!(&err, StartError::Credentials(e) if e.key == "nats.tls.caFile"),
        "{err:?}"
    );
    assert!(err.to_string().contains("nats.tls.caFile"), "{err}");
}
