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
//! A proxy started with [`Proxy::start_classified`] also puts each connection in a class, from
//! the first line its dialer sends (a NATS gateway's `CONNECT` names the dialer's cluster), and
//! a class can have its own mode and delay ([`Proxy::set_class_mode`],
//! [`Proxy::set_class_delay`]): one proxy in front of a server then cuts some of its peers and
//! not others, whichever address they learnt to reach it by.
//!
//! Threads and blocking sockets; a connection costs four threads, fine for tests.

use std::collections::{HashMap, VecDeque};
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock};
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

/// Puts a connection in a class from the first line its dialer sends (without the line end);
/// `None` leaves it unclassified (the proxy's own mode and delay apply).
pub type Classifier = fn(&[u8]) -> Option<String>;

/// Longest first line read to classify a connection; past it the connection is unclassified.
const FIRST_LINE_MAX: usize = 4096;

/// The class of one connection, set once its dialer's first line is read.
type Class = Arc<OnceLock<String>>;

#[derive(Debug)]
struct State {
    mode: LinkMode,
    delay: Duration,
    /// Modes and delays of classes, overriding `mode` and `delay` for their connections.
    class_modes: HashMap<String, LinkMode>,
    class_delays: HashMap<String, Duration>,
    /// Both ends of every open connection, with its class, to close them on a reset.
    conns: Vec<(Class, TcpStream)>,
}

impl State {
    fn mode_of(&self, class: &Class) -> LinkMode {
        class
            .get()
            .and_then(|c| self.class_modes.get(c))
            .copied()
            .unwrap_or(self.mode)
    }

    fn delay_of(&self, class: &Class) -> Duration {
        class
            .get()
            .and_then(|c| self.class_delays.get(c))
            .copied()
            .unwrap_or(self.delay)
    }

    /// Closes every connection whose mode is now `Reset`.
    fn close_reset(&mut self) {
        let mut kept = Vec::with_capacity(self.conns.len());
        for (class, stream) in std::mem::take(&mut self.conns) {
            if self.mode_of(&class) == LinkMode::Reset {
                let _ = stream.shutdown(Shutdown::Both);
            } else {
                kept.push((class, stream));
            }
        }
        self.conns = kept;
    }
}

#[derive(Debug)]
struct Shared {
    state: Mutex<State>,
    changed: Condvar,
    stop: AtomicBool,
    classify: Option<Classifier>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Waits while the connection of `class` is blackholed; false when it was reset or the
    /// proxy stopped.
    fn wait_flowing(&self, class: &Class) -> bool {
        let mut s = self.lock();
        loop {
            if self.stop.load(Ordering::Relaxed) {
                return false;
            }
            match s.mode_of(class) {
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
        Proxy::start_with(target_port, None)
    }

    /// Like [`Proxy::start`], and puts each connection in the class `classify` finds in the
    /// first line its dialer sends; until then (and if it finds none) the connection is
    /// unclassified. Bytes from the target flow meanwhile: a server that speaks first (a NATS
    /// `INFO`) is answered.
    pub fn start_classified(target_port: u16, classify: Classifier) -> io::Result<Proxy> {
        Proxy::start_with(target_port, Some(classify))
    }

    fn start_with(target_port: u16, classify: Option<Classifier>) -> io::Result<Proxy> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let port = listener.local_addr()?.port();
        let target = SocketAddr::from(([127, 0, 0, 1], target_port));
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                mode: LinkMode::Pass,
                delay: Duration::ZERO,
                class_modes: HashMap::new(),
                class_delays: HashMap::new(),
                conns: Vec::new(),
            }),
            changed: Condvar::new(),
            stop: AtomicBool::new(false),
            classify,
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

    /// What the link does from now on, for connections of no class with a mode of its own.
    /// `Reset` closes them at once.
    pub fn set_mode(&self, mode: LinkMode) {
        let mut s = self.shared.lock();
        s.mode = mode;
        s.close_reset();
        self.shared.changed.notify_all();
    }

    /// What the link does from now on for the connections of `class` (see
    /// [`Proxy::start_classified`]), whatever [`Proxy::set_mode`] says. `Reset` closes them at
    /// once, and those classified later as soon as they are.
    pub fn set_class_mode(&self, class: &str, mode: LinkMode) {
        let mut s = self.shared.lock();
        s.class_modes.insert(class.to_string(), mode);
        s.close_reset();
        self.shared.changed.notify_all();
    }

    /// The one-way delay added to every byte of the connections of `class` from now on (each
    /// direction), whatever [`Proxy::set_delay`] says.
    pub fn set_class_delay(&self, class: &str, delay: Duration) {
        self.shared
            .lock()
            .class_delays
            .insert(class.to_string(), delay);
        self.shared.changed.notify_all();
    }

    /// How many connections are open now, by class (`""` for unclassified ones).
    pub fn connections(&self) -> HashMap<String, usize> {
        let s = self.shared.lock();
        let mut by_class = HashMap::new();
        // Each connection is held twice (both ends).
        for (class, _) in s.conns.iter().step_by(2) {
            *by_class
                .entry(class.get().cloned().unwrap_or_default())
                .or_default() += 1;
        }
        by_class
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
        {
            // Every connection, whatever its class's mode.
            let mut s = self.shared.lock();
            s.mode = LinkMode::Reset;
            s.class_modes.clear();
            s.close_reset();
        }
        self.shared.changed.notify_all();
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
        let class = Class::default();
        if shared.lock().mode_of(&class) == LinkMode::Reset {
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
                s.conns.push((class.clone(), a));
                s.conns.push((class.clone(), b));
            }
        }
        let classify = shared.classify;
        pump(client, s2, shared.clone(), class.clone(), classify);
        pump(server, c2, shared.clone(), class, None);
    }
}

/// Reads the first line `from` sends (up to [`FIRST_LINE_MAX`] bytes), classifies the
/// connection by it, and returns what was read. `None` when the connection ended first or its
/// class is reset (then both ends are closed).
fn classify_first_line(
    from: &mut TcpStream,
    shared: &Shared,
    class: &Class,
    classify: Classifier,
) -> Option<Vec<u8>> {
    let mut read = Vec::new();
    let mut buf = [0u8; 1024];
    let line_end = loop {
        if let Some(i) = read.windows(2).position(|w| w == b"\r\n") {
            break Some(i);
        }
        if read.len() >= FIRST_LINE_MAX {
            break None;
        }
        match from.read(&mut buf) {
            Ok(0) | Err(_) => return None,
            Ok(n) => read.extend_from_slice(&buf[..n]),
        }
    };
    let found = line_end.and_then(|i| classify(&read[..i]));
    let mut s = shared.lock();
    if let Some(c) = found {
        let _ = class.set(c);
    }
    if s.mode_of(class) == LinkMode::Reset || shared.stop.load(Ordering::Relaxed) {
        // Closes both ends of this connection (held in `conns`) with any other reset one.
        s.close_reset();
        let _ = from.shutdown(Shutdown::Both);
        return None;
    }
    Some(read)
}

/// Chunks read and not yet written, each with when it was read, and a wake-up for the writer.
type Chunks = Arc<(Mutex<VecDeque<(Instant, Vec<u8>)>>, Condvar)>;

/// Forwards `from` to `to` in one direction: a reader that stops while blackholed, and a
/// writer that holds each chunk until its delay has passed. With `classify`, the reader first
/// classifies the connection by the first line `from` sends.
fn pump(
    mut from: TcpStream,
    mut to: TcpStream,
    shared: Arc<Shared>,
    class: Class,
    classify: Option<Classifier>,
) {
    let queue: Chunks = Arc::default();
    let done = Arc::new(AtomicBool::new(false));
    let (rq, rdone, rshared, rclass) = (queue.clone(), done.clone(), shared.clone(), class.clone());
    let _ = thread::Builder::new()
        .name("proxy-read".into())
        .spawn(move || {
            let push = |bytes: Vec<u8>| {
                let (q, cv) = &*rq;
                q.lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push_back((Instant::now(), bytes));
                cv.notify_one();
            };
            let first = match classify {
                Some(classify) => classify_first_line(&mut from, &rshared, &rclass, classify),
                None => Some(Vec::new()),
            };
            if let Some(first) = first {
                if !first.is_empty() {
                    push(first);
                }
                let mut buf = vec![0u8; 64 * 1024];
                while rshared.wait_flowing(&rclass) {
                    match from.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => push(buf[..n].to_vec()),
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
                let delay = shared.lock().delay_of(&class);
                let due = read_at + delay;
                let now = Instant::now();
                if due > now {
                    thread::sleep(due - now);
                }
                if !shared.wait_flowing(&class) || to.write_all(&bytes).is_err() {
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

    /// The class of a connection whose dialer first sends `HELLO <class>`.
    fn hello_class(line: &[u8]) -> Option<String> {
        let line = std::str::from_utf8(line).ok()?;
        line.strip_prefix("HELLO ").map(str::to_string)
    }

    /// Connects, says hello as `class`, and returns the connection once the echo came back.
    fn hello(port: u16, class: &str) -> TcpStream {
        let mut c = TcpStream::connect(("127.0.0.1", port)).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let line = format!("HELLO {class}\r\n");
        c.write_all(line.as_bytes()).unwrap();
        let mut buf = vec![0u8; line.len()];
        c.read_exact(&mut buf).unwrap();
        assert_eq!(buf, line.as_bytes());
        c
    }

    #[test]
    fn classes_have_their_own_modes_and_delays() {
        let proxy = Proxy::start_classified(echo_server(), hello_class).unwrap();
        let mut a = hello(proxy.port(), "a");
        let mut b = hello(proxy.port(), "b");
        assert_eq!(proxy.connections().get("a"), Some(&1));
        assert_eq!(proxy.connections().get("b"), Some(&1));

        // Resetting class a closes a's connection, and refuses a's new ones once they say who
        // they are; b's flows on.
        proxy.set_class_mode("a", LinkMode::Reset);
        let mut byte = [0u8; 1];
        assert!(matches!(a.read(&mut byte), Ok(0) | Err(_)), "a is closed");
        let mut again = TcpStream::connect(("127.0.0.1", proxy.port())).unwrap();
        again
            .set_read_timeout(Some(Duration::from_secs(2)))
            .unwrap();
        again.write_all(b"HELLO a\r\n").unwrap();
        assert!(
            matches!(again.read(&mut byte), Ok(0) | Err(_)),
            "a new connection of a is closed once classified"
        );
        b.write_all(b"x").unwrap();
        b.read_exact(&mut byte).unwrap();
        assert_eq!(&byte, b"x");

        // Blackholing b holds its bytes until it passes again; a third class is untouched.
        proxy.set_class_mode("b", LinkMode::Blackhole);
        let mut c = hello(proxy.port(), "c");
        b.set_read_timeout(Some(Duration::from_millis(300)))
            .unwrap();
        b.write_all(b"y").unwrap();
        assert!(b.read_exact(&mut byte).is_err(), "silence while blackholed");
        c.write_all(b"z").unwrap();
        c.read_exact(&mut byte).unwrap();
        assert_eq!(&byte, b"z");
        proxy.set_class_mode("b", LinkMode::Pass);
        b.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        b.read_exact(&mut byte).unwrap();
        assert_eq!(&byte, b"y", "held bytes flow again");

        // A class's delay applies to its connections only.
        proxy.set_class_delay("c", Duration::from_millis(100));
        let t = Instant::now();
        c.write_all(b"d").unwrap();
        c.read_exact(&mut byte).unwrap();
        assert!(
            t.elapsed() >= Duration::from_millis(200),
            "{:?}",
            t.elapsed()
        );
        let t = Instant::now();
        b.write_all(b"e").unwrap();
        b.read_exact(&mut byte).unwrap();
        assert!(
            t.elapsed() < Duration::from_millis(100),
            "{:?}",
            t.elapsed()
        );

        // Back to a: it passes again.
        proxy.set_class_mode("a", LinkMode::Pass);
        hello(proxy.port(), "a");
    }
}
