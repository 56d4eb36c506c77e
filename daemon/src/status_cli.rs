//! `gslb-state status`: a running daemon's summary as a table in a terminal, read from its
//! HTTP API (`GET /v1/status`, and `GET /v1/status/decisions?verdict=down` for the endpoints
//! that are down): this node, NATS, the snapshot, the policy, the config version, the counts
//! by verdict, the members. `--watch` redraws it every second.
//!
//! Exit codes: [`EXIT_OK`] (0) all is well; [`EXIT_ERROR`] (1) the daemon could not be asked
//! (unreachable, a bad answer, a bad `--url` or config file); [`EXIT_DEGRADED`] (2) the daemon
//! answered but is not connected to NATS, is still loading its health snapshot, or sees fewer
//! active members than `--min-members`.

use std::fmt::Write as _;
use std::io::{IsTerminal, Write as _};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use gslb_state_core::config::DEFAULT_ADMIN_LISTEN;

use crate::config_file::load_config;
use crate::http::{DecisionPageJson, StatusJson};

/// All is well.
pub const EXIT_OK: u8 = 0;
/// The daemon could not be asked: unreachable, a bad answer, a bad `--url` or config file.
pub const EXIT_ERROR: u8 = 1;
/// The daemon answered, but is disconnected from NATS, still loading its health snapshot, or
/// sees fewer active members than `--min-members`.
pub const EXIT_DEGRADED: u8 = 2;

/// The config file read for the default `--url` when it exists and `--config` is not given.
pub const DEFAULT_CONFIG: &str = "/etc/gslb/config.yaml";

/// Timeout of one request to the daemon.
const HTTP_TIMEOUT: Duration = Duration::from_secs(5);
/// How often `--watch` redraws.
const WATCH_EVERY: Duration = Duration::from_secs(1);

/// `gslb-state status`.
#[derive(clap::Args, Debug, Clone)]
pub struct StatusArgs {
    /// The daemon's HTTP API, e.g. http://127.0.0.1:9464 (default: the config file's
    /// admin.listen, else http://127.0.0.1:9464).
    #[arg(long)]
    pub url: Option<String>,
    /// A configuration file whose admin.listen gives the default --url (default:
    /// /etc/gslb/config.yaml when it exists).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Redraw every second until interrupted (Ctrl-C).
    #[arg(long)]
    pub watch: bool,
    /// Exit 2 when the node sees fewer active members than this (itself included).
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub min_members: usize,
    /// List at most this many endpoints that are down.
    #[arg(long, value_name = "N", default_value_t = 20)]
    pub show_down: usize,
}

/// Runs `gslb-state status` and returns its exit code.
pub fn main(args: &StatusArgs) -> ExitCode {
    let url = match base_url(args) {
        Ok(u) => u,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(EXIT_ERROR);
        }
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start a tokio runtime: {e}");
            return ExitCode::from(EXIT_ERROR);
        }
    };
    ExitCode::from(runtime.block_on(run(args, &url)))
}

async fn run(args: &StatusArgs, url: &str) -> u8 {
    // reqwest is built without a TLS crypto provider (as async-nats): install ring's, so that an
    // https --url works.
    let _ = async_nats::rustls::crypto::ring::default_provider().install_default();
    let client = match reqwest::Client::builder().timeout(HTTP_TIMEOUT).build() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: cannot make an HTTP client: {e}");
            return EXIT_ERROR;
        }
    };
    if !args.watch {
        let (text, code) = report(&client, url, args).await;
        print!("{text}");
        return code;
    }
    let terminal = std::io::stdout().is_terminal();
    let mut tick = tokio::time::interval(WATCH_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let (text, _) = report(&client, url, args).await;
        let mut out = std::io::stdout().lock();
        // A terminal is redrawn in place; a pipe gets one report after the other.
        let written = if terminal {
            write!(out, "\x1b[H\x1b[2J{text}")
        } else {
            writeln!(out, "{text}")
        };
        if written.and_then(|()| out.flush()).is_err() {
            return EXIT_ERROR; // stdout closed
        }
    }
}

/// The daemon's API root from `--url`, else the config file's `admin.listen`, else
/// [`DEFAULT_ADMIN_LISTEN`].
fn base_url(args: &StatusArgs) -> Result<String, String> {
    if let Some(url) = &args.url {
        return normalize_url(url);
    }
    let config = match &args.config {
        Some(path) => Some(path.clone()),
        None => Some(PathBuf::from(DEFAULT_CONFIG)).filter(|p| p.is_file()),
    };
    match config {
        Some(path) => url_of_listen(&load_config(&path)?.admin_listen, &path),
        None => normalize_url(DEFAULT_ADMIN_LISTEN),
    }
}

/// `url` with a scheme (`http://` when none) and no trailing `/`.
fn normalize_url(url: &str) -> Result<String, String> {
    let url = url.trim().trim_end_matches('/');
    if url.is_empty() {
        return Err("--url is empty".to_owned());
    }
    if url.starts_with("http://") || url.starts_with("https://") {
        Ok(url.to_owned())
    } else if url.contains("://") {
        Err(format!("--url {url:?}: expected http:// or https://"))
    } else {
        Ok(format!("http://{url}"))
    }
}

/// The URL to reach a daemon listening on `listen` (`admin.listen` of `path`) from this host:
/// a wildcard address is reached on loopback.
fn url_of_listen(listen: &str, path: &Path) -> Result<String, String> {
    let addr: std::net::SocketAddr = listen.parse().map_err(|e| {
        format!(
            "{}: admin.listen {listen:?} is not an address ({e}); give --url",
            path.display()
        )
    })?;
    if addr.port() == 0 {
        return Err(format!(
            "{}: admin.listen {listen:?} asks for any free port; give --url",
            path.display()
        ));
    }
    let ip = match addr.ip() {
        std::net::IpAddr::V4(ip) if ip.is_unspecified() => std::net::Ipv4Addr::LOCALHOST.into(),
        std::net::IpAddr::V6(ip) if ip.is_unspecified() => std::net::Ipv6Addr::LOCALHOST.into(),
        ip => ip,
    };
    Ok(format!(
        "http://{}",
        std::net::SocketAddr::new(ip, addr.port())
    ))
}

/// One report: the text to print and the exit code it stands for.
async fn report(client: &reqwest::Client, url: &str, args: &StatusArgs) -> (String, u8) {
    let status: StatusJson = match get_json(client, &format!("{url}/v1/status")).await {
        Ok(s) => s,
        Err(e) => return (format!("error: {e}\n"), EXIT_ERROR),
    };
    let down = if args.show_down > 0 && status.verdicts.down > 0 {
        let path = format!(
            "{url}/v1/status/decisions?verdict=down&limit={}",
            args.show_down.min(crate::http::MAX_PAGE_LIMIT)
        );
        get_json::<DecisionPageJson>(client, &path).await.ok()
    } else {
        None
    };
    let problems = problems(&status, args.min_members);
    let text = render(url, &status, down.as_ref(), &problems);
    let code = if problems.is_empty() {
        EXIT_OK
    } else {
        EXIT_DEGRADED
    };
    (text, code)
}

async fn get_json<T: serde::de::DeserializeOwned>(
    client: &reqwest::Client,
    url: &str,
) -> Result<T, String> {
    let response = client
        .get(url)
        .send()
        .await
        .map_err(|e| format!("GET {url}: {e} (is gslb-state running there? see --url)"))?;
    let code = response.status();
    let body = response
        .bytes()
        .await
        .map_err(|e| format!("GET {url}: {e}"))?;
    if !code.is_success() {
        return Err(format!(
            "GET {url}: {code}: {}",
            String::from_utf8_lossy(&body).trim()
        ));
    }
    serde_json::from_slice(&body).map_err(|e| format!("GET {url}: unexpected answer: {e}"))
}

/// What makes the report exit [`EXIT_DEGRADED`], in words.
pub fn problems(status: &StatusJson, min_members: usize) -> Vec<String> {
    let mut out = Vec::new();
    if !status.nats_connected {
        out.push(match &status.last_connect_error {
            Some(e) => format!("NATS disconnected ({e})"),
            None => "NATS disconnected".to_owned(),
        });
    }
    if !status.snapshot_loaded {
        out.push("the health snapshot is still loading".to_owned());
    }
    if status.active_members < min_members {
        out.push(format!(
            "{} active member{}, fewer than --min-members {min_members}",
            status.active_members,
            if status.active_members == 1 { "" } else { "s" }
        ));
    }
    out
}

/// Milliseconds as `850 ms`, `12.3 s`, `4 min`.
fn ago(ms: u64) -> String {
    if ms < 1000 {
        format!("{ms} ms ago")
    } else if ms < 120_000 {
        format!("{:.1} s ago", ms as f64 / 1000.0)
    } else {
        format!("{} min ago", ms / 60_000)
    }
}

/// `rows` under `headers`, columns padded to their widest cell, two spaces apart.
fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let line = |out: &mut String, cells: &mut dyn Iterator<Item = &str>| {
        let mut text = String::new();
        for (cell, w) in cells.zip(&widths) {
            let _ = write!(text, "{cell:<w$}  ");
        }
        out.push_str(text.trim_end());
        out.push('\n');
    };
    line(&mut out, &mut headers.iter().copied());
    for row in rows {
        line(&mut out, &mut row.iter().map(String::as_str));
    }
    out
}

/// The report's text.
pub fn render(
    url: &str,
    s: &StatusJson,
    down: Option<&DecisionPageJson>,
    problems: &[String],
) -> String {
    let mut out = String::new();
    let region = if s.region.is_empty() {
        String::new()
    } else {
        format!(" (region {})", s.region)
    };
    let policy = if s.policy == "global-quorum" {
        format!("{}, quorumMinPercent {}", s.policy, s.quorum_min_percent)
    } else {
        s.policy.clone()
    };
    let nats = if s.nats_connected {
        "connected".to_owned()
    } else {
        match &s.last_connect_error {
            Some(e) => format!("DISCONNECTED: {e}"),
            None => "DISCONNECTED".to_owned(),
        }
    };
    let config = match (s.config_version, s.config_applying) {
        (0, _) => "the node's own file".to_owned(),
        (v, false) => format!("version {v}"),
        (v, true) => format!("version {v} (being applied)"),
    };
    let v = &s.verdicts;
    let summary = [
        ("node", format!("{}{region}", s.node)),
        ("api", url.to_owned()),
        ("status", s.status.clone()),
        ("NATS", nats),
        (
            "snapshot",
            if s.snapshot_loaded {
                "loaded"
            } else {
                "LOADING"
            }
            .to_owned(),
        ),
        ("policy", policy),
        ("config", config),
        (
            "members",
            format!("{} active of {}", s.active_members, s.members.len()),
        ),
        (
            "endpoints",
            format!(
                "{}: {} up, {} down, {} unknown, {} pending",
                s.endpoints, v.up, v.down, v.unknown, v.pending
            ),
        ),
    ];
    for (k, v) in summary {
        let _ = writeln!(out, "{k:<10} {v}");
    }
    out.push('\n');
    let members: Vec<Vec<String>> = s
        .members
        .iter()
        .map(|m| {
            vec![
                if m.local {
                    format!("{} (this node)", m.node)
                } else {
                    m.node.clone()
                },
                if m.region.is_empty() {
                    "-".to_owned()
                } else {
                    m.region.clone()
                },
                if m.active {
                    "yes".to_owned()
                } else if m.left {
                    "no (left)".to_owned()
                } else {
                    "no".to_owned()
                },
                match (m.local, m.last_heard_ms_ago) {
                    (true, _) | (_, None) => "-".to_owned(),
                    (false, Some(ms)) => ago(ms),
                },
                if m.local {
                    "-".to_owned()
                } else {
                    format!("{:+} ms", m.clock_offset_ms)
                },
                m.incarnation.to_string(),
                m.reports.to_string(),
            ]
        })
        .collect();
    out.push_str(&table(
        &[
            "MEMBER",
            "REGION",
            "ACTIVE",
            "LAST HEARD",
            "CLOCK OFFSET",
            "INCARNATION",
            "REPORTS",
        ],
        &members,
    ));
    if let Some(page) = down.filter(|p| !p.decisions.is_empty()) {
        let _ = writeln!(
            out,
            "\nDOWN ({} of {})",
            page.decisions.len(),
            page.matching
        );
        let rows: Vec<Vec<String>> = page
            .decisions
            .iter()
            .map(|d| {
                let x = &d.decision;
                vec![
                    d.endpoint.clone(),
                    x.source.clone(),
                    format!("{}/{}", x.healthy_reports, x.total_reports),
                    format!("{}/{}", x.healthy_regions, x.total_regions),
                    match x.local {
                        Some(true) => "up",
                        Some(false) => "down",
                        None => "-",
                    }
                    .to_owned(),
                ]
            })
            .collect();
        out.push_str(&table(
            &["ENDPOINT", "SOURCE", "HEALTHY/REPORTS", "REGIONS", "LOCAL"],
            &rows,
        ));
    }
    out.push('\n');
    if problems.is_empty() {
        out.push_str("OK\n");
    } else {
        let _ = writeln!(out, "DEGRADED: {}", problems.join("; "));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::{MemberJson, VerdictCounts};

    fn status() -> StatusJson {
        StatusJson {
            node: "a".into(),
            region: "eu".into(),
            status: "ok".into(),
            snapshot_loaded: true,
            nats_connected: true,
            last_connect_error: None,
            policy: "global-quorum".into(),
            quorum_min_percent: 51,
            config_version: 0,
            config_applying: false,
            endpoints: 3,
            verdicts: VerdictCounts {
                up: 2,
                down: 1,
                unknown: 0,
                pending: 0,
            },
            active_members: 2,
            members: vec![
                MemberJson {
                    node: "a".into(),
                    region: "eu".into(),
                    incarnation: 7,
                    active: true,
                    local: true,
                    left: false,
                    last_heard_ms_ago: None,
                    reports: 3,
                    clock_offset_ms: 0,
                },
                MemberJson {
                    node: "b".into(),
                    region: "us".into(),
                    incarnation: 8,
                    active: true,
                    local: false,
                    left: false,
                    last_heard_ms_ago: Some(120),
                    reports: 3,
                    clock_offset_ms: -4,
                },
            ],
        }
    }

    #[test]
    fn urls_come_from_the_flag_or_the_listen_address() {
        assert_eq!(
            normalize_url("127.0.0.1:9464/").unwrap(),
            "http://127.0.0.1:9464"
        );
        assert_eq!(normalize_url("https://h:1").unwrap(), "https://h:1");
        assert!(normalize_url("ftp://h").is_err());
        let p = Path::new("c.yaml");
        assert_eq!(
            url_of_listen("0.0.0.0:9464", p).unwrap(),
            "http://127.0.0.1:9464"
        );
        assert_eq!(url_of_listen("[::]:80", p).unwrap(), "http://[::1]:80");
        assert_eq!(
            url_of_listen("10.0.0.5:9464", p).unwrap(),
            "http://10.0.0.5:9464"
        );
        assert!(
            url_of_listen("127.0.0.1:0", p)
                .unwrap_err()
                .contains("--url")
        );
    }

    #[test]
    fn problems_are_nats_loading_and_too_few_members() {
        let mut s = status();
        assert!(problems(&s, 2).is_empty());
        assert_eq!(
            problems(&s, 3),
            ["2 active members, fewer than --min-members 3"]
        );
        s.nats_connected = false;
        s.snapshot_loaded = false;
        let p = problems(&s, 0);
        assert_eq!(p.len(), 2, "{p:?}");
        assert!(p[0].starts_with("NATS disconnected"), "{p:?}");
    }

    #[test]
    fn the_table_shows_the_summary_and_every_member() {
        let text = render("http://x", &status(), None, &[]);
        assert!(text.contains("node       a (region eu)"), "{text}");
        assert!(
            text.contains("3: 2 up, 1 down, 0 unknown, 0 pending"),
            "{text}"
        );
        let member_b = text.lines().find(|l| l.starts_with("b ")).expect(&text);
        assert!(
            member_b.contains("120 ms ago") && member_b.contains("-4 ms"),
            "{text}"
        );
        assert!(text.ends_with("OK\n"), "{text}");
        let text = render("http://x", &status(), None, &["NATS disconnected".into()]);
        assert!(text.ends_with("DEGRADED: NATS disconnected\n"), "{text}");
    }
}
