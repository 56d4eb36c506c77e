//! Measures ways to read every entry under a key prefix of a KV bucket (see tests/NATS-API.md).
//!
//! `cargo run --release -p gslb-state-tests --example kv_prefix_read -- [N] [SERVERS]`
//! writes N keys (default 100000) under `node1.` plus N/5 under `node2.` into bucket `bench`
//! (replicas = SERVERS, default 1), then reads the `node1.>` entries back in several ways.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use async_nats::jetstream::consumer::{AckPolicy, DeliverPolicy, ReplayPolicy, pull, push};
use async_nats::jetstream::{self, kv};
use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use gslb_state_tests::{DEFAULT_DOMAIN, NatsCluster, NatsServer, ServerOpts};

type Res<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

const BUCKET: &str = "bench";

#[tokio::main]
async fn main() -> Res<()> {
    let mut args = std::env::args().skip(1);
    let n: usize = args
        .next()
        .map(|a| a.parse())
        .transpose()?
        .unwrap_or(100_000);
    let servers: usize = args.next().map(|a| a.parse()).transpose()?.unwrap_or(1);

    let (_single, _cluster, urls) = if servers == 1 {
        let s = NatsServer::single(ServerOpts::default())?;
        let u = vec![s.url()];
        (Some(s), None, u)
    } else {
        let c = NatsCluster::start(servers, ServerOpts::default())?;
        let u = c.urls();
        (None, Some(c), u)
    };
    let client = async_nats::ConnectOptions::new()
        .request_timeout(Some(Duration::from_secs(10)))
        .connect(urls)
        .await?;
    let js = jetstream::with_domain(client.clone(), DEFAULT_DOMAIN);
    let kv = js
        .create_key_value(kv::Config {
            bucket: BUCKET.into(),
            history: 1,
            num_replicas: servers,
            ..Default::default()
        })
        .await?;

    // Write: pipelined JetStream publishes (acks awaited per chunk of 2000).
    let value = Bytes::from(vec![b'v'; 48]);
    let t = Instant::now();
    let noise = n / 5;
    let subjects: Vec<String> = (0..n)
        .map(|i| format!("$KV.{BUCKET}.node1.ep{i:07}"))
        .chain((0..noise).map(|i| format!("$KV.{BUCKET}.node2.ep{i:07}")))
        .collect();
    for chunk in subjects.chunks(2000) {
        let mut acks = Vec::with_capacity(chunk.len());
        for s in chunk {
            acks.push(js.publish(s.clone(), value.clone()).await?);
        }
        for a in acks {
            a.await?;
        }
    }
    let w = t.elapsed();
    println!(
        "wrote {} entries ({n} node1 + {noise} node2, 48-byte values, R{servers}) in {w:?} ({:.0}/s)",
        n + noise,
        (n + noise) as f64 / w.as_secs_f64()
    );
    let prefix_filter = format!("$KV.{BUCKET}.node1.>");

    // Watchdog numbers: last sequence of the stream and of the prefix.
    let t = Instant::now();
    let info = kv.stream.get_info().await?;
    println!(
        "stream.get_info(): last_sequence={} in {:?}",
        info.state.last_sequence,
        t.elapsed()
    );
    let t = Instant::now();
    let last = kv
        .stream
        .direct_get_last_for_subject(prefix_filter.clone())
        .await?;
    println!(
        "direct_get_last_for_subject(\"{prefix_filter}\"): seq={} in {:?}",
        last.sequence,
        t.elapsed()
    );
    let cached = kv.status().await?;
    println!(
        "kv.status() (cached at bucket creation!): last_sequence={}",
        cached.info.state.last_sequence
    );

    // 1. watch_with_history("node1.>"): ordered push consumer, LastPerSubject, made by the KV API.
    let t = Instant::now();
    let mut w = kv.watch_with_history("node1.>").await?;
    let mut got = 0usize;
    while let Some(e) = w.next().await {
        let e = e?;
        got += 1;
        if e.delta == 0 {
            break;
        }
    }
    report("kv.watch_with_history(\"node1.>\")", got, n, t.elapsed());
    drop(w);

    // An empty prefix: the watcher yields nothing at all (no "caught up" marker), so a snapshot
    // reader must check num_pending (consumer info) or bound the wait.
    let mut w = kv.watch_with_history("node9.>").await?;
    let quiet = tokio::time::timeout(Duration::from_millis(500), w.next()).await;
    println!(
        "watch_with_history on an empty prefix: {}",
        if quiet.is_err() {
            "nothing within 500 ms"
        } else {
            "yielded something"
        }
    );
    drop(w);

    // 2. ordered push consumer on the stream with a filter subject.
    let t = Instant::now();
    let consumer = kv
        .stream
        .create_consumer(push::OrderedConfig {
            deliver_subject: client.new_inbox(),
            filter_subject: prefix_filter.clone(),
            deliver_policy: DeliverPolicy::LastPerSubject,
            replay_policy: ReplayPolicy::Instant,
            ..Default::default()
        })
        .await?;
    let pending = consumer.cached_info().num_pending;
    let mut msgs = consumer.messages().await?;
    let mut got = 0usize;
    let mut map = HashMap::with_capacity(n);
    while (got as u64) < pending {
        let m = msgs.next().await.ok_or("push consumer ended")??;
        got += 1;
        map.insert(m.subject.to_string(), m.payload.clone());
        if m.info()?.pending == 0 {
            break;
        }
    }
    report(
        "ordered push consumer (filter, LastPerSubject)",
        got,
        n,
        t.elapsed(),
    );
    drop(msgs);

    // 3. ordered pull consumer (batches of 500 inside async-nats).
    let t = Instant::now();
    let consumer = kv
        .stream
        .create_consumer(pull::OrderedConfig {
            filter_subject: prefix_filter.clone(),
            deliver_policy: DeliverPolicy::LastPerSubject,
            replay_policy: ReplayPolicy::Instant,
            ..Default::default()
        })
        .await?;
    let pending = consumer.cached_info().num_pending;
    let mut msgs = consumer.messages().await?;
    let mut got = 0usize;
    while (got as u64) < pending {
        let m = msgs.next().await.ok_or("pull consumer ended")??;
        got += 1;
        if m.info()?.pending == 0 {
            break;
        }
    }
    report(
        "ordered pull consumer (filter, LastPerSubject)",
        got,
        n,
        t.elapsed(),
    );
    drop(msgs);

    // 4. ephemeral pull consumer, AckPolicy::None, big batches.
    let t = Instant::now();
    let consumer = kv
        .stream
        .create_consumer(pull::Config {
            filter_subject: prefix_filter.clone(),
            deliver_policy: DeliverPolicy::LastPerSubject,
            ack_policy: AckPolicy::None,
            inactive_threshold: Duration::from_secs(30),
            ..Default::default()
        })
        .await?;
    let pending = consumer.cached_info().num_pending;
    let mut msgs = consumer
        .stream()
        .max_messages_per_batch(10_000)
        .messages()
        .await?;
    let mut got = 0usize;
    while (got as u64) < pending {
        let m = msgs.next().await.ok_or("pull consumer ended")??;
        got += 1;
        if m.info()?.pending == 0 {
            break;
        }
    }
    report(
        "pull consumer, AckPolicy::None, batch 10000",
        got,
        n,
        t.elapsed(),
    );
    drop(msgs);

    // 5. batched direct get over the prefix: no consumer at all (server 2.11+).
    for batch in [1000, 10_000, n] {
        let t = Instant::now();
        let got = batched_direct_get(&client, &prefix_filter, batch).await?;
        report(
            &format!("batched DIRECT.GET next_by_subj, batch {batch}"),
            got.len(),
            n,
            t.elapsed(),
        );
    }
    println!(
        "DIRECT.GET multi_last over {n} subjects: {}",
        multi_last_error(&client, &prefix_filter).await?
    );

    // 6. keys() then get() per key (64 in flight) -- and sequentially for a sample.
    let t = Instant::now();
    let keys: Vec<String> = kv
        .keys()
        .await?
        .try_filter(|k| futures::future::ready(k.starts_with("node1.")))
        .try_collect()
        .await?;
    let tk = t.elapsed();
    println!(
        "{:<48} {:>7} keys in {tk:?} (lists the whole bucket, {} keys)",
        "kv.keys() filtered",
        keys.len(),
        n + noise
    );
    let vals: Vec<_> = futures::stream::iter(keys.iter().cloned())
        .map(|k| {
            let kv = kv.clone();
            async move { kv.get(k).await }
        })
        .buffer_unordered(64)
        .try_collect()
        .await?;
    report(
        "kv.keys() + kv.get() x64 concurrent",
        vals.len(),
        n,
        t.elapsed(),
    );
    let sample = 2000.min(keys.len());
    let t = Instant::now();
    for k in &keys[..sample] {
        kv.get(k.clone()).await?;
    }
    let per = t.elapsed() / sample as u32;
    println!(
        "{:<48} {per:?} per get -> {:?} for {n} (extrapolated)",
        "kv.get() sequential",
        per * n as u32
    );
    Ok(())
}

fn report(what: &str, got: usize, n: usize, took: Duration) {
    assert_eq!(got, n, "{what}: read {got} of {n}");
    println!(
        "{what:<48} {got:>7} entries in {took:?} ({:.0}/s)",
        got as f64 / took.as_secs_f64()
    );
}

/// Batched direct get (server 2.11+, ADR-31): `$JS.API.DIRECT.GET.<stream>` with
/// `{"seq": s, "next_by_subj": filter, "batch": b}` answers with up to `b` messages and then an
/// empty `204 EOB` message whose `Nats-Num-Pending` says whether to ask again from the last
/// sequence + 1. This reads every message matching the filter (all revisions when the bucket
/// keeps history > 1: keep the last per key). `multi_last` would give last-per-subject directly
/// but answers `413 Too Many Results` above 1024 matching subjects.
async fn batched_direct_get(
    client: &async_nats::Client,
    filter: &str,
    batch: usize,
) -> Res<HashMap<String, Bytes>> {
    let api = format!("$JS.{DEFAULT_DOMAIN}.API.DIRECT.GET.KV_{BUCKET}");
    let mut out = HashMap::new();
    let mut seq = 1u64;
    loop {
        let inbox = client.new_inbox();
        let mut sub = client.subscribe(inbox.clone()).await?;
        let req = serde_json::json!({ "seq": seq, "next_by_subj": filter, "batch": batch });
        client
            .publish_with_reply(api.clone(), inbox, req.to_string().into())
            .await?;
        let pending = loop {
            let m = tokio::time::timeout(Duration::from_secs(10), sub.next())
                .await?
                .ok_or("direct get ended")?;
            let h = m.headers.as_ref().ok_or("no headers")?;
            let header = |name: &str| h.get(name).map(|v| v.as_str().to_string());
            match m.status.map(|s| s.as_u16()) {
                None => {}
                Some(204) => {
                    break header("Nats-Num-Pending")
                        .and_then(|v| v.parse::<u64>().ok())
                        .unwrap_or(0);
                }
                Some(404) => break 0, // nothing (more) matches
                Some(code) => return Err(format!("direct get: {code} {:?}", m.description).into()),
            }
            seq = header("Nats-Sequence")
                .ok_or("no Nats-Sequence")?
                .parse::<u64>()?
                + 1;
            let subject = header("Nats-Subject").ok_or("no Nats-Subject")?;
            out.insert(subject, m.payload.clone());
        };
        if pending == 0 {
            return Ok(out);
        }
    }
}

async fn multi_last_error(client: &async_nats::Client, filter: &str) -> Res<String> {
    let api = format!("$JS.{DEFAULT_DOMAIN}.API.DIRECT.GET.KV_{BUCKET}");
    let req = serde_json::json!({ "multi_last": [filter], "batch": 10 });
    let inbox = client.new_inbox();
    let mut sub = client.subscribe(inbox.clone()).await?;
    client
        .publish_with_reply(api, inbox, req.to_string().into())
        .await?;
    let m = tokio::time::timeout(Duration::from_secs(10), sub.next())
        .await?
        .ok_or("direct get ended")?;
    Ok(format!("{:?} {:?}", m.status, m.description))
}
