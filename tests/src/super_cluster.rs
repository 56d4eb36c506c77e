//! A NATS super-cluster on loopback: one JetStream cluster per region, the clusters joined by
//! gateways that all run through [`Proxy`]s, so a test can cut, blackhole or slow down the links
//! between regions while traffic inside every region keeps flowing.
//!
//! * Region `eu` with 3 servers is the cluster `eu` (`cluster.name` and `gateway.name`) of the
//!   servers `eu-1`, `eu-2`, `eu-3`, each tagged `region:eu` (`server_tags`). A stream is put
//!   in a region with `placement.cluster = "eu"` (or the tag). Routes inside a region are
//!   direct; every server has the same JetStream domain (the [`ServerOpts`] one), so the whole
//!   super-cluster is one JetStream domain with one meta group.
//! * Every gateway connection runs through a proxy: one in front of each server's gateway port,
//!   which tells the connections apart by the region that dialed (the `gateway` of the dialer's
//!   `CONNECT`, [`Proxy::start_classified`]) and cuts or delays each region pair on its own.
//!   One proxy per server and not per pair of servers, because servers gossip the gateway URLs
//!   they know: `ap-1` tells `eu-1` the address it reaches `us-1` by, so a pair's own proxy
//!   could be bypassed. A server lists, for each other region, the proxies of that region's
//!   servers, and advertises a gateway address nobody listens on, so that what the servers
//!   tell each other of their own addresses leads nowhere and no connection bypasses the
//!   proxies (gateways are discovered implicitly, like routes).
//! * Servers ping every [`PING_INTERVAL`] (top-level `ping_interval`, also applied to clients):
//!   a blackholed gateway is dropped after a few seconds instead of minutes.
//! * A server sends a region's messages on its one outbound gateway connection to it; so the
//!   connections region `a` dials to region `b` carry what `a` sends to `b`
//!   ([`NatsSuperCluster::set_delay`] delays one way only).
//! * Process control is [`NatsCluster`]'s, per region ([`NatsSuperCluster::region`]). Servers
//!   die with the thread that started them ([`crate::die_with_parent`]): start, restart and
//!   [`NatsSuperCluster::restart_region`] only from the test's own thread, never from a spawned
//!   task or thread that may end first.
//!
//! ```no_run
//! use gslb_state_tests::{LinkMode, NatsSuperCluster, ServerOpts};
//! use std::time::Duration;
//! let sc = NatsSuperCluster::start(&[("eu", 3), ("us", 3), ("ap", 3)], ServerOpts::default())
//!     .unwrap();
//! let eu_urls = sc.urls("eu"); // a node in eu connects to these
//! sc.cut("eu", LinkMode::Blackhole); // eu alone; inside eu traffic flows
//! sc.heal();
//! sc.wait_formed(Duration::from_secs(20)).unwrap();
//! ```

use std::collections::BTreeMap;
use std::time::Duration;

use crate::error::{HarnessError, Result};
use crate::http;
use crate::nats_server::{
    HTTP_TIMEOUT, NatsCluster, NatsServer, Ports, ServerOpts, free_ports, io_err,
};
use crate::proxy::{LinkMode, Proxy};
use crate::wait::wait_for_blocking;

/// The servers' `ping_interval` (with the default `ping_max` of 2): a gateway that answers
/// nothing is dropped within about three intervals.
pub const PING_INTERVAL: Duration = Duration::from_secs(1);

/// One region: its name and its cluster.
#[derive(Debug)]
struct Region {
    name: String,
    cluster: NatsCluster,
}

/// A server by (region index, server index in its region).
type At = (usize, usize);

/// The proxy in front of one server's gateway port.
#[derive(Debug)]
struct GatewayProxy {
    /// The server it reaches.
    to: At,
    /// Its connections are classified by the dialer's region ([`gateway_of_connect`]).
    proxy: Proxy,
}

/// The region (gateway name) in a gateway's `CONNECT {..., "gateway": "<name>"}` line.
pub fn gateway_of_connect(line: &[u8]) -> Option<String> {
    let json = line.strip_prefix(b"CONNECT ")?;
    let v: serde_json::Value = serde_json::from_slice(json).ok()?;
    v.get("gateway")?.as_str().map(str::to_string)
}

/// A super-cluster: one JetStream cluster per region, gateways through cuttable proxies.
/// Dropping it kills every server and stops every proxy.
#[derive(Debug)]
pub struct NatsSuperCluster {
    regions: Vec<Region>,
    proxies: Vec<GatewayProxy>,
}

/// The gateways one server is missing, by region name (see [`NatsSuperCluster::missing_gateways`]).
fn gatewayz_missing(v: &serde_json::Value, others: &[&str]) -> Vec<String> {
    let mut missing = Vec::new();
    for r in others {
        let outbound = v
            .pointer(&format!("/outbound_gateways/{r}/connection"))
            .is_some();
        if !outbound {
            missing.push(format!("outbound to {r}"));
        }
    }
    missing
}

impl NatsSuperCluster {
    /// Starts one cluster per `(region, servers)` (at least two regions, at least one server
    /// each; names of `[A-Za-z0-9_-]`), all at once, and waits until every server is ready
    /// (`opts.ready_path`, by default `/healthz`, which includes a JetStream meta leader being
    /// known) and the super-cluster is formed ([`NatsSuperCluster::wait_formed`]).
    /// `opts.cluster_name` and `opts.name_prefix` are replaced by the region's name; the
    /// harness adds `server_tags`, `ping_interval` and the `gateway {}` block to every server's
    /// config, so `opts.extra_config` must not set them.
    pub fn start(regions: &[(&str, usize)], opts: ServerOpts) -> Result<NatsSuperCluster> {
        assert!(regions.len() >= 2, "a super-cluster needs two regions");
        for (i, (name, n)) in regions.iter().enumerate() {
            assert!(*n >= 1, "region {name} needs at least one server");
            assert!(
                !name.is_empty()
                    && name
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'),
                "region name {name:?}: use [A-Za-z0-9_-]"
            );
            assert!(
                regions[..i].iter().all(|(other, _)| other != name),
                "region {name} given twice"
            );
        }
        let mut last = None;
        for _ in 0..3 {
            let sc = NatsSuperCluster::create(regions, &opts)?;
            match sc.spawn_all() {
                Ok(()) => {
                    sc.wait_formed(opts.ready_timeout)?;
                    return Ok(sc);
                }
                Err(e) if sc.servers().any(NatsServer::port_clash) => last = Some(e),
                Err(e) => return Err(e),
            }
        }
        Err(last.expect("three tries"))
    }

    /// Picks ports, starts the proxies and writes every server's config; starts no server.
    fn create(regions: &[(&str, usize)], opts: &ServerOpts) -> Result<NatsSuperCluster> {
        let total: usize = regions.iter().map(|(_, n)| n).sum();
        let p = free_ports(4 * total)?;
        // Global index of each server, in region order.
        let mut first = Vec::with_capacity(regions.len());
        let mut next = 0;
        for (_, n) in regions {
            first.push(next);
            next += n;
        }
        let global = |(r, i): At| first[r] + i;
        let client_port = |at: At| p[4 * global(at)];
        let cluster_port = |at: At| p[4 * global(at) + 1];
        let http_port = |at: At| p[4 * global(at) + 2];
        let gateway_port = |at: At| p[4 * global(at) + 3];

        let mut proxies = Vec::with_capacity(total);
        for (r, (_, n)) in regions.iter().enumerate() {
            for i in 0..*n {
                let proxy = Proxy::start_classified(gateway_port((r, i)), gateway_of_connect)
                    .map_err(io_err("start a gateway proxy"))?;
                proxies.push(GatewayProxy { to: (r, i), proxy });
            }
        }
        let proxy_url = |at: At| {
            let p = &proxies[global(at)];
            debug_assert_eq!(p.to, at);
            format!("\"nats://127.0.0.1:{}\"", p.proxy.port())
        };
        let mut built = Vec::with_capacity(regions.len());
        for (r, (name, n)) in regions.iter().enumerate() {
            let routes: Vec<u16> = (0..*n).map(|i| cluster_port((r, i))).collect();
            let mut servers = Vec::with_capacity(*n);
            for i in 0..*n {
                let remotes: Vec<String> = regions
                    .iter()
                    .enumerate()
                    .filter(|&(q, _)| q != r)
                    .map(|(q, (other, m))| {
                        let urls: Vec<String> = (0..*m).map(|j| proxy_url((q, j))).collect();
                        format!("    {{ name: \"{other}\", urls: [{}] }}", urls.join(", "))
                    })
                    .collect();
                // An advertised gateway address nobody listens on, distinct per server (the
                // servers tell each other apart by it): what the servers learn of each other
                // leads nowhere, and every gateway connection stays on the proxies.
                let advertise = global((r, i)) + 1;
                let server_opts = opts
                    .clone()
                    .extra_config(format!(
                        "server_tags: [\"region:{name}\"]\n\
                         ping_interval: \"{}ms\"\n\
                         gateway {{\n  name: \"{name}\"\n  listen: \"127.0.0.1:{}\"\n  \
                         advertise: \"127.0.0.1:{advertise}\"\n  gateways: [\n{}\n  ]\n}}",
                        PING_INTERVAL.as_millis(),
                        gateway_port((r, i)),
                        remotes.join("\n")
                    ))
                    .cluster_name(*name);
                let ports = Ports {
                    client: client_port((r, i)),
                    cluster: Some(cluster_port((r, i))),
                    http: http_port((r, i)),
                };
                servers.push(NatsServer::create(
                    format!("{name}-{}", i + 1),
                    ports,
                    &routes,
                    &server_opts,
                )?);
            }
            built.push(Region {
                name: name.to_string(),
                cluster: NatsCluster { servers },
            });
        }
        Ok(NatsSuperCluster {
            regions: built,
            proxies,
        })
    }

    /// Spawns every server of every region, then waits until each is ready.
    fn spawn_all(&self) -> Result<()> {
        for s in self.servers() {
            s.spawn()?;
        }
        for s in self.servers() {
            s.wait_ready(s.ready_timeout)?;
        }
        Ok(())
    }

    fn index(&self, region: &str) -> usize {
        self.regions
            .iter()
            .position(|r| r.name == region)
            .unwrap_or_else(|| panic!("no region {region:?} in {:?}", self.region_names()))
    }

    /// The region names, in the order given to [`NatsSuperCluster::start`].
    pub fn region_names(&self) -> Vec<&str> {
        self.regions.iter().map(|r| r.name.as_str()).collect()
    }

    /// The servers of `region` (panics on an unknown name): their URLs, process control
    /// ([`NatsCluster::server`], [`NatsCluster::restart_stopped`]), stream leaders.
    pub fn region(&self, region: &str) -> &NatsCluster {
        &self.regions[self.index(region)].cluster
    }

    /// Client URLs of `region`'s servers: what a node in that region connects to.
    pub fn urls(&self, region: &str) -> Vec<String> {
        self.region(region).urls()
    }

    /// Every server of every region, in region order.
    pub fn servers(&self) -> impl Iterator<Item = &NatsServer> {
        self.regions.iter().flat_map(|r| r.cluster.servers())
    }

    /// The server named `name` (e.g. `eu-2`).
    pub fn server(&self, name: &str) -> Option<&NatsServer> {
        self.servers().find(|s| s.name() == name)
    }

    /// The region of the server named `name`.
    pub fn region_of(&self, name: &str) -> Option<&str> {
        self.regions
            .iter()
            .find(|r| r.cluster.index_of(name).is_some())
            .map(|r| r.name.as_str())
    }

    /// The proxies in front of region `r`'s servers.
    fn proxies_of(&self, r: usize) -> impl Iterator<Item = &Proxy> {
        self.proxies
            .iter()
            .filter(move |p| p.to.0 == r)
            .map(|p| &p.proxy)
    }

    /// Sets every gateway connection between regions `a` and `b` (both directions) to `mode`.
    pub fn set_link(&self, a: &str, b: &str, mode: LinkMode) {
        let (ia, ib) = (self.index(a), self.index(b));
        assert_ne!(ia, ib, "a region has no gateway to itself");
        for p in self.proxies_of(ia) {
            p.set_class_mode(b, mode);
        }
        for p in self.proxies_of(ib) {
            p.set_class_mode(a, mode);
        }
    }

    /// Cuts `region` from every other region: its gateway connections reset (closed, and new
    /// ones closed as soon as they say who they are) or blackholed (held open, nothing flows).
    /// Routes inside every region are untouched.
    pub fn cut(&self, region: &str, mode: LinkMode) {
        for other in self.region_names() {
            if other != region {
                self.set_link(region, other, mode);
            }
        }
    }

    /// Every gateway connection passes again (delays stay as set).
    pub fn heal(&self) {
        let names = self.region_names();
        for p in &self.proxies {
            for name in &names {
                p.proxy.set_class_mode(name, LinkMode::Pass);
            }
        }
    }

    /// What region `from` sends to region `to` arrives `delay` later: the connections `from`'s
    /// servers dial to `to`'s carry it; what `to` sends to `from` is not delayed. The proxies
    /// hold each chunk for `delay` in each direction of those connections, so the protocol's
    /// answers on them (PONGs) are delayed too.
    pub fn set_delay(&self, from: &str, to: &str, delay: Duration) {
        let (f, t) = (self.index(from), self.index(to));
        assert_ne!(f, t, "a region has no gateway to itself");
        for p in self.proxies_of(t) {
            p.set_class_delay(from, delay);
        }
    }

    /// Open gateway connections from `from`'s servers to `to`'s, as the proxies count them
    /// (including ones the servers have not registered yet or have given up on).
    pub fn proxied_connections(&self, from: &str, to: &str) -> usize {
        let t = self.index(to);
        self.proxies_of(t)
            .map(|p| p.connections().get(from).copied().unwrap_or(0))
            .sum()
    }

    /// SIGKILLs every server of `region` (their stores stay for [`restart_region`](Self::restart_region)).
    pub fn kill_region(&self, region: &str) -> Result<()> {
        for s in self.region(region).servers() {
            s.kill()?;
        }
        Ok(())
    }

    /// SIGSTOPs every server of `region`: they keep their sockets and answer nothing (a hung
    /// region); [`cont_region`](Self::cont_region) resumes them.
    pub fn stop_region(&self, region: &str) -> Result<()> {
        for s in self.region(region).servers() {
            s.stop()?;
        }
        Ok(())
    }

    /// SIGCONTs every server of `region` stopped with [`stop_region`](Self::stop_region).
    pub fn cont_region(&self, region: &str) -> Result<()> {
        for s in self.region(region).servers() {
            if s.is_stopped() {
                s.cont()?;
            }
        }
        Ok(())
    }

    /// Starts every server of `region` that is not running again (same ports, config and
    /// store), all at once, and waits until each is ready. Call it from the thread that will
    /// outlive the servers (the test's own): they die with it.
    pub fn restart_region(&self, region: &str) -> Result<()> {
        self.region(region).restart_stopped()
    }

    /// What keeps the super-cluster from being formed, empty when it is: every running server
    /// has an outbound gateway to every other region that has a running server (a region whose
    /// servers are all down is left out), and every running server's outbound
    /// connections are registered as inbound at the region it reaches (for each ordered pair
    /// of regions, the inbound connections counted over the receiving region's servers equal
    /// the sending region's running servers). A server is not required to have an inbound
    /// connection from every region: each remote server picks one server of a region to dial.
    pub fn missing_gateways(&self) -> Vec<String> {
        // Regions with no running server are left out: nobody can reach them.
        let live: Vec<&str> = self
            .regions
            .iter()
            .filter(|r| running(&r.cluster).next().is_some())
            .map(|r| r.name.as_str())
            .collect();
        let mut missing = Vec::new();
        // inbound[(from region, to region)] = connections counted at `to`'s servers.
        let mut inbound: BTreeMap<(String, String), usize> = BTreeMap::new();
        for region in &self.regions {
            let others: Vec<&str> = live.iter().copied().filter(|n| *n != region.name).collect();
            for s in running(&region.cluster) {
                let v = match s.monitor_json("/gatewayz") {
                    Ok(v) => v,
                    Err(e) => {
                        missing.push(format!("{}: {e}", s.name()));
                        continue;
                    }
                };
                for m in gatewayz_missing(&v, &others) {
                    missing.push(format!("{}: {m}", s.name()));
                }
                for other in &others {
                    let n = v
                        .pointer(&format!("/inbound_gateways/{other}"))
                        .and_then(|a| a.as_array())
                        .map_or(0, Vec::len);
                    *inbound
                        .entry((other.to_string(), region.name.clone()))
                        .or_default() += n;
                }
            }
        }
        for from in &self.regions {
            let sending = running(&from.cluster).count();
            for to in self.regions.iter().filter(|r| r.name != from.name) {
                if running(&to.cluster).count() == 0 {
                    continue;
                }
                let got = inbound
                    .get(&(from.name.clone(), to.name.clone()))
                    .copied()
                    .unwrap_or(0);
                if got != sending {
                    missing.push(format!(
                        "{} has {got} inbound gateway connections from {}, which has {sending} running servers",
                        to.name, from.name
                    ));
                }
            }
        }
        missing
    }

    /// Waits (blocking) until the super-cluster is formed ([`missing_gateways`](Self::missing_gateways)
    /// is empty); returns how long it took, or a timeout naming what is still missing.
    pub fn wait_formed(&self, timeout: Duration) -> Result<Duration> {
        let mut last = Vec::new();
        wait_for_blocking(timeout, "the super-cluster to form", || {
            last = self.missing_gateways();
            last.is_empty().then_some(())
        })
        .map(|((), took)| took)
        .map_err(|e| timeout_with(e, &last))
    }

    /// Inbound gateway connections from region `from` registered at region `to`'s running
    /// servers (a server that cannot be asked counts `usize::MAX`: nothing is known). Each
    /// running server of `from` has one outbound connection to `to` when the super-cluster is
    /// formed, so the count is then `from`'s running servers.
    ///
    /// Outbound connections are not what tells: a server registers one as soon as the
    /// remote's `INFO` arrives, which the proxy lets through before it knows who dialed, so a
    /// blackholed region keeps registering outbound connections that go stale. An inbound one
    /// is registered only once the dialer's `CONNECT` has passed.
    pub fn inbound_gateways(&self, from: &str, to: &str) -> usize {
        let t = self.index(to);
        let mut n = 0usize;
        for s in running(&self.regions[t].cluster) {
            let Ok(v) = s.monitor_json("/gatewayz") else {
                return usize::MAX;
            };
            n += v
                .pointer(&format!("/inbound_gateways/{from}"))
                .and_then(|a| a.as_array())
                .map_or(0, Vec::len);
        }
        n
    }

    /// Whether `region` is cut off as its servers see it: no gateway connection between it and
    /// any other region is registered ([`inbound_gateways`](Self::inbound_gateways), both ways).
    pub fn is_isolated(&self, region: &str) -> bool {
        self.region_names()
            .into_iter()
            .filter(|o| *o != region)
            .all(|o| self.inbound_gateways(o, region) == 0 && self.inbound_gateways(region, o) == 0)
    }

    /// Waits (blocking) until [`is_isolated`](Self::is_isolated) holds for `region`.
    pub fn wait_isolated(&self, region: &str, timeout: Duration) -> Result<Duration> {
        wait_for_blocking(
            timeout,
            &format!("region {region} to have no gateway connection"),
            || self.is_isolated(region).then_some(()),
        )
        .map(|((), took)| took)
    }

    /// The JetStream meta leader (its server name): the responsive server whose
    /// `/jsz?leader-only=true` answers 200. `None` while there is none. With `region`, only
    /// that region's servers are asked (which leader does a cut region have?).
    pub fn meta_leader(&self, region: Option<&str>) -> Option<String> {
        self.regions
            .iter()
            .filter(|r| region.is_none_or(|name| r.name == name))
            .flat_map(|r| running(&r.cluster))
            .find(|s| {
                matches!(
                    http::get(s.monitor_port(), "/jsz?leader-only=true", HTTP_TIMEOUT),
                    Ok((200, _))
                )
            })
            .map(|s| s.name().to_string())
    }

    /// Waits (blocking) until there is a meta leader that every responsive server names as
    /// such (`/jsz` → `meta_cluster.leader`), and returns its name. (While a region is cut off,
    /// its servers name none: wait with [`meta_leader`](Self::meta_leader) instead.)
    pub fn wait_meta_leader(&self, timeout: Duration) -> Result<String> {
        wait_for_blocking(timeout, "a JetStream meta leader known everywhere", || {
            let leader = self.meta_leader(None)?;
            self.regions
                .iter()
                .flat_map(|r| running(&r.cluster))
                .all(|s| s.meta_leader_name().ok().flatten().as_deref() == Some(leader.as_str()))
                .then_some(leader)
        })
        .map(|(leader, _)| leader)
    }
}

/// The servers of `cluster` that can answer (running and not stopped).
fn running(cluster: &NatsCluster) -> impl Iterator<Item = &NatsServer> {
    cluster
        .servers()
        .iter()
        .filter(|s| s.is_running() && !s.is_stopped())
}

/// A timeout that also says what was still missing.
fn timeout_with(e: HarnessError, missing: &[String]) -> HarnessError {
    match e {
        HarnessError::Timeout { what, waited } => HarnessError::Timeout {
            what: format!("{what}; still missing: {}", missing.join("; ")),
            waited,
        },
        other => other,
    }
}
