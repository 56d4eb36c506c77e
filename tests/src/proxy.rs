//! A TCP proxy on loopback that a test (or `gslb-state scenario`) can cut, blackhole, or slow
//! down: put between a client and its server to isolate the client, or between two servers of a
//! cluster (routes) or of a super-cluster (gateways) to partition them.
//!
//! * [`LinkMode::Pass`]: bytes flow, after the one-way [`Proxy::set_delay`].
//! * [`LinkMode::Reset`]: every connection is closed at once and new ones are closed as soon as
//!   they are accepted (the peers see resets and refused reconnects, as across a cut link that
//!   reports itself).
//! * [`LinkMode::Blackhole`]: connections stay open but nothing is read or forwarded (the peers
//!   see silence, as across a link that drops everything, until their pings give up); back to
//!   `Pass`, what was held flows again.
//!
//! Threads and blocking sockets; a connection costs four threads, fine for tests.

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

/// What a [`Proxy`] does with traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkMode {
    /// Forward (after the delay).
    Pass,
    /// Close every connection and refuse new ones.
    Reset,
    /// Hold every byte: read nothing, forward nothing.
    Blackhole,
}

#[derive(Debug)]
struct State {
    mode: LinkMode,
    delay: Duration,
    /// Both ends of every open connection, to close them on a reset.
    conns: Vec<TcpStream>,
}

#[derive(Debug)]
struct Shared {
    state: Mutex<State>,
    changed: Condvar,
    stop: AtomicBool,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Waits while the link is blackholed; false when the link was reset or the proxy stopped.
    fn wait_flowing(&self) -> bool {
        let mut s = self.lock();
        loop {
            if self.stop.load(Ordering::Relaxed) {
                return false;
            }
            match s.mode {
                LinkMode::Pass => return true,
                LinkMode::Reset => return false,
                LinkMode::Blackhole => {
                    s = self
                        .changed
                        .wait_timeout(s, Duration::from_millis(100))
                        .unwrap_or_else(|e| e.into_inner())
                        .0;
                }
            }
        }
    }
}

/// A TCP proxy from a free loopback port to `target`. Stops (closing everything) on drop.
#[derive(Debug)]
pub struct Proxy {
    port: u16,
    target: SocketAddr,
    shared: Arc<Shared>,
}

impl Proxy {
    /// Listens on a free loopback port and forwards to `127.0.0.1:target_port`.
    pub fn start(target_port: u16) -> io::Result<Proxy> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let port = listener.local_addr()?.port();
        let target = SocketAddr::from(([127, 0, 0, 1], target_port));
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                mode: LinkMode::Pass,
                delay: Duration::ZERO,
                conns: Vec::new(),
            }),
            changed: Condvar::new(),
            stop: AtomicBool::new(false),
        });
        let accept_shared = shared.clone();
        thread::Builder::new()
            .name(format!("proxy-{port}"))
            .spawn(move || accept_loop(listener, target, accept_shared))?;
        Ok(Proxy {
            port,
            target,
            shared,
        })
    }

    /// The port clients connect to.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The address traffic goes to.
    pub fn target(&self) -> SocketAddr {
        self.target
    }

    /// What the link does from now on. `Reset` closes every open connection at once.
    pub fn set_mode(&self, mode: LinkMode) {
        let mut s = self.shared.lock();
        s.mode = mode;
        if mode == LinkMode::Reset {
            for c in s.conns.drain(..) {
                let _ = c.shutdown(Shutdown::Both);
            }
        }
        self.shared.changed.notify_all();
    }

    /// What the link does now.
    pub fn mode(&self) -> LinkMode {
        self.shared.lock().mode
    }

    /// The one-way delay added to every byte from now on (each direction).
    pub fn set_delay(&self, delay: Duration) {
        self.shared.lock().delay = delay;
        self.shared.changed.notify_all();
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
        self.set_mode(LinkMode::Reset);
        // Wake the accept loop so it sees `stop`.
        let _ = TcpStream::connect_timeout(
            &SocketAddr::from(([127, 0, 0, 1], self.port)),
            Duration::from_millis(100),
        );
    }
}

fn accept_loop(listener: TcpListener, target: SocketAddr, shared: Arc<Shared>) {
    for client in listener.incoming() {
        if shared.stop.load(Ordering::Relaxed) {
            return;
        }
        let Ok(client) = client else { continue };
        if shared.lock().mode == LinkMode::Reset {
            let _ = client.shutdown(Shutdown::Both);
            continue;
        }
        let Ok(server) = TcpStream::connect_timeout(&target, Duration::from_secs(2)) else {
            let _ = client.shutdown(Shutdown::Both);
            continue;
        };
        let _ = client.set_nodelay(true);
        let _ = server.set_nodelay(true);
        let (Ok(c2), Ok(s2)) = (client.try_clone(), server.try_clone()) else {
            continue;
        };
        {
            let mut s = shared.lock();
            if let (Ok(a), Ok(b)) = (client.try_clone(), server.try_clone()) {
                s.conns.push(a);
                s.conns.push(b);
            }
        }
        pump(client, s2, shared.clone());
        pump(server, c2, shared.clone());
    }
}

/// Chunks read and not yet written, each with when it was read, and a wake-up for the writer.
type Chunks = Arc<(Mutex<VecDeque<(Instant, Vec<u8>)>>, Condvar)>;

/// Forwards `from` to `to` in one direction: a reader that stops while blackholed, and a
/// writer that holds each chunk until its delay has passed.
fn pump(mut from: TcpStream, mut to: TcpStream, shared: Arc<Shared>) {
    let queue: Chunks = Arc::default();
    let done = Arc::new(AtomicBool::new(false));
    let (rq, rdone, rshared) = (queue.clone(), done.clone(), shared.clone());
    let _ = thread::Builder::new()
        .name("proxy-read".into())
        .spawn(move || {
            let mut buf = vec![0u8; 64 * 1024];
            while rshared.wait_flowing() {
                match from.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        let (q, cv) = &*rq;
                        q.lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .push_back((Instant::now(), buf[..n].to_vec()));
                        cv.notify_one();
                    }
                }
            }
            // The writer closes `to` once it has drained the queue.
            rdone.store(true, Ordering::Relaxed);
            rq.1.notify_all();
            let _ = from.shutdown(Shutdown::Read);
        });
    let _ = thread::Builder::new()
        .name("proxy-write".into())
        .spawn(move || {
            loop {
                let next = {
                    let (q, cv) = &*queue;
                    let mut q = q.lock().unwrap_or_else(|e| e.into_inner());
                    loop {
                        if let Some(item) = q.pop_front() {
                            break Some(item);
                        }
                        if done.load(Ordering::Relaxed) || shared.stop.load(Ordering::Relaxed) {
                            break None;
                        }
                        q = cv
                            .wait_timeout(q, Duration::from_millis(100))
                            .unwrap_or_else(|e| e.into_inner())
                            .0;
                    }
                };
                let Some((read_at, bytes)) = next else { break };
                let delay = shared.lock().delay;
                let due = read_at + delay;
                let now = Instant::now();
                if due > now {
                    thread::sleep(due - now);
                }
                if !shared.wait_flowing() || to.write_all(&bytes).is_err() {
                    break;
                }
            }
            let _ = to.shutdown(Shutdown::Write);
        });
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An echo server on loopback; returns its port.
    fn echo_server() -> u16 {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        thread::spawn(move || {
            for s in l.incoming().flatten() {
                thread::spawn(move || {
                    let mut s = s;
                    let mut buf = [0u8; 1024];
                    while let Ok(n) = s.read(&mut buf) {
                        if n == 0 || s.write_all(&buf[..n]).is_err() {
                            break;
                        }
                    }
                });
            }
        });
        port
    }

    fn roundtrip(port: u16, msg: &[u8]) -> io::Result<(Vec<u8>, Duration)> {
        let mut c = TcpStream::connect(("127.0.0.1", port))?;
        c.set_read_timeout(Some(Duration::from_secs(2)))?;
        let t = Instant::now();
        c.write_all(msg)?;
        let mut buf = vec![0u8; msg.len()];
        c.read_exact(&mut buf)?;
        Ok((buf, t.elapsed()))
    }

    #[test]
    fn passes_delays_resets_and_blackholes() {
        let proxy = Proxy::start(echo_server()).unwrap();
        let (echo, _) = roundtrip(proxy.port(), b"hello").unwrap();
        assert_eq!(echo, b"hello");

        proxy.set_delay(Duration::from_millis(50));
        let (_, took) = roundtrip(proxy.port(), b"slow").unwrap();
        assert!(
            took >= Duration::from_millis(100),
            "two one-way delays: {took:?}"
        );
        proxy.set_delay(Duration::ZERO);

        // An open connection is closed by a reset, and new ones are refused.
        let mut open = TcpStream::connect(("127.0.0.1", proxy.port())).unwrap();
        open.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        open.write_all(b"x").unwrap();
        let mut b = [0u8; 1];
        open.read_exact(&mut b).unwrap();
        proxy.set_mode(LinkMode::Reset);
        assert!(
            matches!(open.read(&mut b), Ok(0) | Err(_)),
            "closed by the reset"
        );
        assert!(roundtrip(proxy.port(), b"refused").is_err());

        // Blackholed: nothing comes back, until the link passes again.
        proxy.set_mode(LinkMode::Pass);
        let mut c = TcpStream::connect(("127.0.0.1", proxy.port())).unwrap();
        c.write_all(b"a").unwrap();
        c.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        c.read_exact(&mut b).unwrap();
        proxy.set_mode(LinkMode::Blackhole);
        c.set_read_timeout(Some(Duration::from_millis(300)))
            .unwrap();
        c.write_all(b"b").unwrap();
        assert!(c.read_exact(&mut b).is_err(), "silence while blackholed");
        proxy.set_mode(LinkMode::Pass);
        c.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        c.read_exact(&mut b).unwrap();
        assert_eq!(&b, b"b", "held bytes flow again");
    }
}
