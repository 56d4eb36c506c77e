//! The timeline as a picture: one row per (endpoint, node) with the decision in force over
//! time (striped in the colour of the coming verdict while a change waits for its hold),
//! partitions and broker outages shaded across the plot, isolation and crashes shaded on the
//! rows of the node concerned, and every expectation marked where it was checked.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::ops::Range;

use gslb_state_core::Source;
use gslb_state_core::policy::{Pending, QuorumScope};

use crate::scenario::{NS_PER_MS, Scenario, fmt_time};
use crate::trace::{FaultKind, Record};
use crate::world::Outcome;

const LEFT: f64 = 170.0;
const RIGHT: f64 = 30.0;
const PLOT_W: f64 = 1000.0;
const ROW_H: f64 = 16.0;
const GROUP_GAP: f64 = 10.0;
const TOP: f64 = 92.0;

const HEALTHY: &str = "#43a047";
const UNHEALTHY: &str = "#e53935";
const UNKNOWN: &str = "#c7c7c7";
const HEALTHY_FALLBACK: &str = "#a5d6a7";
const UNHEALTHY_FALLBACK: &str = "#ef9a9a";
/// Pattern ids: stripes of the verdict a pending change brings.
const PENDING_UP: &str = "pending-up";
const PENDING_DOWN: &str = "pending-down";

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// A stretch of time between an opening and a closing fault, `[start_ns, end_ns)`.
struct Interval {
    /// The node it concerns (`None`: cluster-wide).
    node: Option<u32>,
    start_ns: u64,
    end_ns: u64,
}

/// The intervals between an opening and a closing fault kind, per node.
fn intervals(o: &Outcome, open: FaultKind, close: FaultKind, end_ns: u64) -> Vec<Interval> {
    let mut started: BTreeMap<Option<u32>, u64> = BTreeMap::new();
    let mut out = Vec::new();
    for r in &o.trace.records {
        if let Record::Fault {
            t_ns, kind, node, ..
        } = r
        {
            if *kind == open {
                started.entry(*node).or_insert(*t_ns);
            } else if *kind == close {
                let key = if open == FaultKind::Partition {
                    None
                } else {
                    *node
                };
                if let Some(start_ns) = started.remove(&key) {
                    out.push(Interval {
                        node: key,
                        start_ns,
                        end_ns: *t_ns,
                    });
                }
            }
        }
    }
    out.extend(started.into_iter().map(|(node, start_ns)| Interval {
        node,
        start_ns,
        end_ns,
    }));
    out
}

/// Renders `outcome` of `scenario` as a standalone SVG document.
pub fn render(scenario: &Scenario, outcome: &Outcome, title: &str) -> String {
    let end_ns = scenario.duration_ns.max(1);
    let x = |t: u64| LEFT + PLOT_W * (t.min(end_ns) as f64 / end_ns as f64);
    let nodes = &scenario.nodes;
    let mut endpoints: Vec<String> = scenario.endpoints();
    for r in &outcome.trace.records {
        if let Record::Decision { endpoint, .. } = r
            && !endpoints.contains(endpoint)
        {
            endpoints.push(endpoint.clone());
        }
    }
    let row_y = |e: usize, n: usize| {
        TOP + e as f64 * (nodes.len() as f64 * ROW_H + GROUP_GAP) + n as f64 * ROW_H
    };
    let plot_h = endpoints.len() as f64 * (nodes.len() as f64 * ROW_H + GROUP_GAP);
    let height = TOP + plot_h + 40.0;
    let width = LEFT + PLOT_W + RIGHT;

    let mut svg = String::new();
    let _ = writeln!(
        svg,
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="11">"##
    );
    let holds = !scenario.state.holds().is_none();
    svg.push_str(
        r##"<defs><pattern id="hatch" width="6" height="6" patternUnits="userSpaceOnUse" patternTransform="rotate(45)"><rect width="6" height="6" fill="#ffffff"/><line x1="0" y1="0" x2="0" y2="6" stroke="#555" stroke-width="2"/></pattern>"##,
    );
    if holds {
        // Stripes in the colour of the verdict a pending change would bring.
        for (id, color) in [(PENDING_UP, HEALTHY), (PENDING_DOWN, UNHEALTHY)] {
            let _ = write!(
                svg,
                r##"<pattern id="{id}" width="7" height="7" patternUnits="userSpaceOnUse" patternTransform="rotate(-45)"><line x1="0" y1="0" x2="0" y2="7" stroke="{color}" stroke-width="3"/></pattern>"##
            );
        }
    }
    svg.push_str(
        r##"</defs>
<rect width="100%" height="100%" fill="#ffffff"/>
"##,
    );
    let _ = writeln!(
        svg,
        r##"<text x="10" y="20" font-size="15" font-weight="bold">{}</text>"##,
        esc(title)
    );
    let st = &scenario.state;
    let regions = st.quorum_scope == QuorumScope::Regions;
    let scope = if regions { ", quorumScope regions" } else { "" };
    let hold_text = if holds {
        format!(
            ", holdUp {}, holdDown {}",
            humantime::format_duration(st.hold_up),
            humantime::format_duration(st.hold_down)
        )
    } else {
        String::new()
    };
    let _ = writeln!(
        svg,
        r##"<text x="10" y="38">policy {} (quorumMinPercent {}{scope}), heartbeat {}, TTL {}{hold_text}, seed {}</text>"##,
        st.policy,
        st.quorum_min_percent,
        humantime::format_duration(st.heartbeat_interval),
        humantime::format_duration(st.heartbeat_ttl),
        scenario.seed
    );
    legend(&mut svg);
    if holds {
        pending_legend(&mut svg);
    }

    // Cluster-wide bands behind the rows.
    for i in intervals(outcome, FaultKind::Partition, FaultKind::Heal, end_ns) {
        band(
            &mut svg,
            x(i.start_ns),
            x(i.end_ns),
            TOP - 6.0,
            plot_h + 6.0,
            "#7e57c2",
            0.18,
            "partition",
        );
    }
    for i in intervals(outcome, FaultKind::BrokerDown, FaultKind::BrokerUp, end_ns) {
        band(
            &mut svg,
            x(i.start_ns),
            x(i.end_ns),
            TOP - 6.0,
            plot_h + 6.0,
            "#424242",
            0.18,
            "broker down",
        );
    }

    // Rows.
    // Per node: when each of its lives ran.
    let mut lives: BTreeMap<u32, Vec<Range<u64>>> = BTreeMap::new();
    for l in &outcome.lives {
        lives
            .entry(l.node)
            .or_default()
            .push(l.started_ns..l.stopped_ns.unwrap_or(end_ns));
    }
    for (ei, endpoint) in endpoints.iter().enumerate() {
        let _ = writeln!(
            svg,
            r##"<text x="10" y="{}" font-weight="bold">{}</text>"##,
            row_y(ei, 0) + 11.0,
            esc(endpoint)
        );
        for (ni, node) in nodes.iter().enumerate() {
            let y = row_y(ei, ni);
            let label = if regions {
                let region = if node.region.is_empty() {
                    "\"\""
                } else {
                    &node.region
                };
                format!("{} ({region})", node.id)
            } else {
                node.id.clone()
            };
            let _ = writeln!(
                svg,
                r##"<text x="{}" y="{}" text-anchor="end">{}</text>"##,
                LEFT - 6.0,
                y + 11.0,
                esc(&label)
            );
            let changes = outcome.trace.decisions_of(ni as u32, endpoint);
            let node_lives = lives.get(&(ni as u32)).map(Vec::as_slice).unwrap_or(&[]);
            // Not running: hatched between lives.
            let mut down_from = 0;
            for life in node_lives.iter().chain([&(end_ns..end_ns)]) {
                let (start, stop) = (life.start, life.end);
                if start > down_from {
                    let _ = writeln!(
                        svg,
                        r##"<rect x="{:.2}" y="{}" width="{:.2}" height="{}" fill="url(#hatch)" opacity="0.6"><title>not running</title></rect>"##,
                        x(down_from),
                        y + 1.0,
                        x(start) - x(down_from),
                        ROW_H - 2.0
                    );
                }
                down_from = stop;
            }
            for life in node_lives {
                let (start, stop) = (life.start, life.end);
                let mut t = start;
                let mut shown = Shown {
                    healthy: None,
                    source: Source::Unknown,
                    pending: None,
                };
                for &(ct, d) in changes.iter().filter(|(ct, _)| *ct >= start && *ct < stop) {
                    segment(&mut svg, x(t), x(ct), y, shown);
                    t = ct;
                    shown = Shown {
                        healthy: d.healthy,
                        source: d.source,
                        pending: d.pending,
                    };
                }
                segment(&mut svg, x(t), x(stop), y, shown);
            }
        }
    }
    for i in intervals(outcome, FaultKind::Isolate, FaultKind::Rejoin, end_ns) {
        let Some(n) = i.node else { continue };
        let (s, e) = (i.start_ns, i.end_ns);
        for ei in 0..endpoints.len() {
            let y = row_y(ei, n as usize);
            let _ = writeln!(
                svg,
                r##"<rect x="{}" y="{}" width="{}" height="{}" fill="#fb8c00" opacity="0.45"><title>isolated from the broker</title></rect>"##,
                x(s),
                y + 1.0,
                (x(e) - x(s)).max(1.0),
                ROW_H - 2.0
            );
        }
    }

    // Expectations.
    for xo in &outcome.expects {
        let e = &scenario.expects[xo.index];
        let Some(ep) = &e.checks.endpoint else {
            continue;
        };
        let Some(ei) = endpoints.iter().position(|x| x == ep) else {
            continue;
        };
        let (cx, cy) = (x(e.at_ns), row_y(ei, e.node) + ROW_H / 2.0);
        let (fill, mark) = if xo.ok {
            ("#1b5e20", "✓")
        } else {
            ("#b71c1c", "✗")
        };
        let _ = writeln!(
            svg,
            r##"<g><title>{}</title><circle cx="{cx}" cy="{cy}" r="6" fill="#ffffff" stroke="{fill}" stroke-width="2"/><text x="{cx}" y="{}" text-anchor="middle" font-size="10" fill="{fill}">{mark}</text></g>"##,
            esc(&if xo.ok {
                xo.seen.clone()
            } else {
                format!("{} — saw {}", xo.why, xo.seen)
            }),
            cy + 3.5
        );
    }

    axis(&mut svg, end_ns, TOP + plot_h + 4.0, &x);
    svg.push_str("</svg>\n");
    svg
}

/// A decision as a row shows it.
#[derive(Clone, Copy)]
struct Shown {
    healthy: Option<bool>,
    source: Source,
    /// A change waiting for its hold (its instant in simulated time, as the trace keeps it).
    pending: Option<Pending>,
}

/// A stretch of a row from `x0` to `x1` in the colour of a decision; striped in the colour
/// of the coming verdict while a change is pending.
fn segment(svg: &mut String, x0: f64, x1: f64, y: f64, shown: Shown) {
    let Shown {
        healthy,
        source,
        pending,
    } = shown;
    if x1 <= x0 {
        return;
    }
    let fallback = source == Source::FallbackLocal;
    let color = match (healthy, fallback) {
        (Some(true), false) => HEALTHY,
        (Some(true), true) => HEALTHY_FALLBACK,
        (Some(false), false) => UNHEALTHY,
        (Some(false), true) => UNHEALTHY_FALLBACK,
        (None, _) => UNKNOWN,
    };
    let verdict = match healthy {
        Some(true) => "healthy",
        Some(false) => "unhealthy",
        None => "unknown",
    };
    let Some(p) = pending else {
        let _ = writeln!(
            svg,
            r##"<rect x="{x0:.2}" y="{}" width="{:.2}" height="{}" fill="{color}"><title>{verdict} ({})</title></rect>"##,
            y + 1.0,
            x1 - x0,
            ROW_H - 2.0,
            source
        );
        return;
    };
    let (stripes, coming) = if p.healthy {
        (PENDING_UP, "healthy")
    } else {
        (PENDING_DOWN, "unhealthy")
    };
    let _ = writeln!(
        svg,
        r##"<g><title>{verdict} ({source}); {coming} pending, due at {}</title><rect x="{x0:.2}" y="{}" width="{:.2}" height="{}" fill="{color}"/><rect x="{x0:.2}" y="{}" width="{:.2}" height="{}" fill="url(#{stripes})"/></g>"##,
        fmt_time(p.at.as_nanos()),
        y + 1.0,
        x1 - x0,
        ROW_H - 2.0,
        y + 1.0,
        x1 - x0,
        ROW_H - 2.0,
    );
}

/// The second legend row, for a scenario with holds: the striped segments.
fn pending_legend(svg: &mut String) {
    let items = [
        (
            HEALTHY,
            PENDING_DOWN,
            "healthy held, unhealthy pending (holdDown)",
        ),
        (
            UNHEALTHY,
            PENDING_UP,
            "unhealthy held, healthy pending (holdUp)",
        ),
    ];
    let mut lx = 10.0;
    for (base, stripes, label) in items {
        let _ = writeln!(
            svg,
            r##"<rect x="{lx}" y="66" width="14" height="10" fill="{base}" stroke="#999" stroke-width="0.5"/><rect x="{lx}" y="66" width="14" height="10" fill="url(#{stripes})"/><text x="{}" y="75">{label}</text>"##,
            lx + 18.0
        );
        lx += 28.0 + label.len() as f64 * 6.0;
    }
}

#[allow(clippy::too_many_arguments)]
fn band(
    svg: &mut String,
    x0: f64,
    x1: f64,
    y: f64,
    h: f64,
    color: &str,
    opacity: f64,
    label: &str,
) {
    let _ = writeln!(
        svg,
        r##"<rect x="{x0:.2}" y="{y}" width="{:.2}" height="{h}" fill="{color}" opacity="{opacity}"><title>{label}</title></rect><text x="{:.2}" y="{}" font-size="10" fill="{color}">{label}</text>"##,
        (x1 - x0).max(1.0),
        x0 + 2.0,
        y - 2.0
    );
}

fn legend(svg: &mut String) {
    let items: [(&str, &str, f64); 9] = [
        (HEALTHY, "healthy", 1.0),
        (UNHEALTHY, "unhealthy", 1.0),
        (HEALTHY_FALLBACK, "healthy (fallback-local)", 1.0),
        (UNHEALTHY_FALLBACK, "unhealthy (fallback-local)", 1.0),
        (UNKNOWN, "unknown", 1.0),
        ("url(#hatch)", "not running", 0.6),
        ("#fb8c00", "cut off from broker", 0.45),
        ("#7e57c2", "partition", 0.25),
        ("#424242", "broker down", 0.25),
    ];
    let mut lx = 10.0;
    for (fill, label, opacity) in items {
        let _ = writeln!(
            svg,
            r##"<rect x="{lx}" y="50" width="14" height="10" fill="{fill}" opacity="{opacity}" stroke="#999" stroke-width="0.5"/><text x="{}" y="59">{label}</text>"##,
            lx + 18.0
        );
        lx += 28.0 + label.len() as f64 * 6.0;
    }
}

fn axis(svg: &mut String, end_ns: u64, y: f64, x: &dyn Fn(u64) -> f64) {
    let end_ms = end_ns / NS_PER_MS;
    let step_ms = [
        100u64, 250, 500, 1_000, 2_000, 5_000, 10_000, 30_000, 60_000, 300_000, 600_000, 1_800_000,
        3_600_000,
    ]
    .into_iter()
    .find(|s| end_ms / s <= 20)
    .unwrap_or(3_600_000);
    let _ = writeln!(
        svg,
        r##"<line x1="{LEFT}" y1="{y}" x2="{}" y2="{y}" stroke="#333"/>"##,
        LEFT + PLOT_W
    );
    let mut t = 0;
    while t <= end_ms {
        let px = x(t * NS_PER_MS);
        let label = if step_ms % 1000 == 0 {
            format!("{}s", t / 1000)
        } else {
            format!("{:.1}s", t as f64 / 1000.0)
        };
        let _ = writeln!(
            svg,
            r##"<line x1="{px:.2}" y1="{y}" x2="{px:.2}" y2="{}" stroke="#333"/><text x="{px:.2}" y="{}" text-anchor="middle">{label}</text>"##,
            y + 4.0,
            y + 16.0
        );
        t += step_ms;
    }
}
