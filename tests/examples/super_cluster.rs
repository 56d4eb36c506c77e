//! A NATS super-cluster on loopback that a script drives line by line: one JetStream cluster
//! per region, joined by gateways through proxies that cut, blackhole and heal a region's
//! links ([`NatsSuperCluster`]). `scripts/demo` runs it as a coprocess.
//!
//! ```text
//! cargo build --release -p gslb-state-tests --example super_cluster
//! target/release/examples/super_cluster [REGION[:SERVERS]]...     # default: eu us ap, 1 server each
//! ```
//!
//! * Once the super-cluster is formed it prints one line of JSON on stdout, the client URLs of
//!   each region's servers (what a node of that region connects to):
//!   `{"eu":["nats://127.0.0.1:P"],"us":[...],"ap":[...]}`. Every server has JetStream domain
//!   `gslb`, `server_tags: ["region:<R>"]`, and is named `<R>-<i>` in the cluster named `<R>`.
//! * Then it reads commands from stdin, one a line, and answers each with one line on stdout,
//!   `ok <what happened>` or `error: <why>`:
//!   * `cut R`: every gateway connection between region R and the others is reset (and new
//!     ones refused); answered once no server registers a gateway between R and another region.
//!   * `blackhole R`: the same links hold every byte; answered once the servers have dropped the
//!     silent gateways (their pings go unanswered: a few seconds).
//!   * `heal`: every link passes again; answered once the super-cluster is formed again.
//!   * `quit`: stops.
//! * On `quit`, end of input, SIGINT or SIGTERM it kills every server, removes their temp dirs
//!   (under `TMPDIR`; kept with `GSLB_KEEP_NATS_DIRS=1`) and exits 0. (A SIGINT ignored when
//!   it starts, as in a shell's background job or coprocess, stays ignored: Ctrl-C is then the
//!   script's to handle.) Progress and errors go to stderr.
//!
//! The servers die with the thread that started them, so everything that starts or stops them
//! stays on the main thread; a second thread only reads stdin.

use std::io::{BufRead, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::time::{Duration, Instant};

use gslb_state_tests::{LinkMode, NatsSuperCluster, ServerOpts};

type Res<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

/// Set by SIGINT and SIGTERM: stop at the next chance.
static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    STOP.store(true, Ordering::SeqCst);
}

/// Deadline of a cut or blackhole to take effect.
const ISOLATE_TIMEOUT: Duration = Duration::from_secs(30);
/// Deadline of the super-cluster to form again after `heal`.
const FORM_TIMEOUT: Duration = Duration::from_secs(60);

/// `REGION[:SERVERS]` arguments, default `eu us ap` with one server each.
fn regions() -> Res<Vec<(String, usize)>> {
    let mut out = Vec::new();
    for arg in std::env::args().skip(1) {
        let (name, n) = match arg.split_once(':') {
            Some((name, n)) => (name.to_string(), n.parse::<usize>()?),
            None => (arg, 1),
        };
        if n == 0 {
            return Err(format!("region {name}: at least one server").into());
        }
        out.push((name, n));
    }
    if out.is_empty() {
        out = ["eu", "us", "ap"]
            .iter()
            .map(|r| (r.to_string(), 1))
            .collect();
    }
    if out.len() < 2 {
        return Err("a super-cluster needs at least two regions".into());
    }
    Ok(out)
}

/// Polls `cond` every 20 ms until it holds; `Err` on timeout or when a signal asks to stop.
fn wait(timeout: Duration, what: &str, mut cond: impl FnMut() -> bool) -> Result<Duration, String> {
    let start = Instant::now();
    loop {
        if cond() {
            return Ok(start.elapsed());
        }
        if STOP.load(Ordering::SeqCst) {
            return Err(format!("stopped while waiting for {what}"));
        }
        if start.elapsed() >= timeout {
            return Err(format!("timed out after {timeout:?} waiting for {what}"));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Carries out one command; the line to answer with.
fn command(sc: &NatsSuperCluster, line: &str) -> String {
    let words: Vec<&str> = line.split_whitespace().collect();
    let known = |r: &str| sc.region_names().contains(&r);
    let answer = match words.as_slice() {
        ["cut", r] | ["blackhole", r] if known(r) => {
            let mode = if words[0] == "cut" {
                LinkMode::Reset
            } else {
                LinkMode::Blackhole
            };
            sc.cut(r, mode);
            wait(
                ISOLATE_TIMEOUT,
                &format!("region {r} to be isolated"),
                || sc.is_isolated(r),
            )
            .map(|took| format!("{r} isolated ({}) after {} ms", words[0], took.as_millis()))
        }
        ["cut" | "blackhole", r] => Err(format!(
            "unknown region {r:?}; regions: {}",
            sc.region_names().join(" ")
        )),
        ["heal"] => {
            sc.heal();
            wait(FORM_TIMEOUT, "the super-cluster to form", || {
                sc.missing_gateways().is_empty()
            })
            .map(|took| format!("super-cluster formed after {} ms", took.as_millis()))
        }
        _ => Err(format!(
            "unknown command {line:?}; commands: cut R, blackhole R, heal, quit"
        )),
    };
    answer.map_or_else(|e| format!("error: {e}"), |ok| format!("ok {ok}"))
}

fn main() -> Res<()> {
    let regions = regions()?;
    let handler: extern "C" fn(libc::c_int) = on_signal;
    // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
    unsafe {
        libc::signal(libc::SIGTERM, handler as libc::sighandler_t);
        // A SIGINT ignored from the start stays ignored: a shell starts background jobs and
        // coprocesses so, and the script that runs this one stops it in order on Ctrl-C.
        if libc::signal(libc::SIGINT, handler as libc::sighandler_t) == libc::SIG_IGN {
            libc::signal(libc::SIGINT, libc::SIG_IGN);
        }
    }
    let started = Instant::now();
    let spec: Vec<(&str, usize)> = regions.iter().map(|(r, n)| (r.as_str(), *n)).collect();
    let sc = NatsSuperCluster::start(&spec, ServerOpts::default())?;
    eprintln!(
        "super-cluster formed after {} ms",
        started.elapsed().as_millis()
    );
    for s in sc.servers() {
        eprintln!(
            "  {} (region {}): client {}, monitor {}, dir {}",
            s.name(),
            sc.region_of(s.name()).unwrap_or("?"),
            s.url(),
            s.monitor_url(),
            s.dir().display()
        );
    }
    let urls: serde_json::Map<String, serde_json::Value> = regions
        .iter()
        .map(|(r, _)| (r.clone(), serde_json::json!(sc.urls(r))))
        .collect();
    let mut out = std::io::stdout().lock();
    writeln!(out, "{}", serde_json::Value::Object(urls))?;
    out.flush()?;

    // Stdin on its own thread, so that the main thread sees signals while it waits for a line.
    let (tx, rx) = mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in std::io::stdin().lock().lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    while !STOP.load(Ordering::SeqCst) {
        let line = match rx.recv_timeout(Duration::from_millis(100)) {
            Ok(line) => line,
            Err(RecvTimeoutError::Timeout) => continue,
            Err(RecvTimeoutError::Disconnected) => break,
        };
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        if line == "quit" {
            break;
        }
        let answer = command(&sc, line);
        eprintln!("{line}: {answer}");
        if writeln!(out, "{answer}")
            .and_then(|()| out.flush())
            .is_err()
        {
            break; // nobody reads the answers any more
        }
    }
    eprintln!("stopping the super-cluster");
    drop(sc);
    Ok(())
}
