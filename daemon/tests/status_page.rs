//! The status page (`GET /`) in a real headless Chromium, driven over the DevTools protocol
//! (CDP): a real nats-server and two real daemons; the page served by one of them must show the
//! node, the members and every endpoint's decision, show a health flip made through the other
//! daemon's API within [`FLIP_DEADLINE`] (measured and printed), filter its rows as one types,
//! show an endpoint's explanation when its row is clicked, page on the server (a page of rows
//! of many endpoints), and load nothing from elsewhere. A screenshot goes to
//! `target/status-page.png` for humans (and to `docs/status-page.png` with
//! `GSLB_UPDATE_SCREENSHOT=1`).
//!
//! Chromium is `CHROMIUM_BIN`, else what `scripts/ensure-chromium` prints (it installs Debian's
//! `chromium` when none is found); it runs in a process group of its own, killed when the test
//! ends, panics included. Every wait polls with a deadline; nothing sleeps to synchronise.
//!
//! Run by `cargo test -p gslb-state-daemon --test status_page`.

mod daemon_common;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use base64::Engine as _;
use daemon_common::{SOON, TestDir, Yaml, start_all};
use futures::{SinkExt as _, StreamExt as _};
use gslb_state_tests::{NatsServer, ServerOpts, wait_for_blocking};
use serde_json::{Value, json};

/// A flip made through the API must be on the page within this.
const FLIP_DEADLINE: Duration = Duration::from_secs(2);
/// The viewport, and so the screenshot's size.
const VIEWPORT: (u32, u32) = (1200, 800);
/// Longest wait for one DevTools answer.
const CDP_TIMEOUT: Duration = Duration::from_secs(20);
/// Longest wait for Chromium to start.
const LAUNCH_TIMEOUT: Duration = Duration::from_secs(60);
/// The committed screenshot must stay small.
const MAX_SCREENSHOT_BYTES: usize = 200 * 1024;

// ---------------------------------------------------------------------------------------------
// Chromium
// ---------------------------------------------------------------------------------------------

/// The repository's root.
fn repo_root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("daemon/ has a parent")
}

/// `CHROMIUM_BIN`, else the path `scripts/ensure-chromium` prints (installing it if needed).
fn chromium_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("CHROMIUM_BIN").filter(|p| !p.is_empty()) {
        let p = PathBuf::from(p);
        assert!(p.is_file(), "CHROMIUM_BIN={} is not a file", p.display());
        return p;
    }
    let script = repo_root().join("scripts/ensure-chromium");
    let out = Command::new(&script)
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", script.display()));
    assert!(
        out.status.success(),
        "{} failed ({}): this test needs Chromium; install it (apt-get install chromium) or set \
         CHROMIUM_BIN",
        script.display(),
        out.status
    );
    PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
}

/// A headless Chromium with its DevTools port, in a process group of its own that is killed
/// on drop.
struct Chromium {
    child: Child,
    /// Its DevTools websocket (`ws://127.0.0.1:PORT/devtools/browser/ID`).
    ws_url: String,
    /// What it wrote to stderr, for failure messages.
    stderr: Arc<Mutex<Vec<String>>>,
    _profile: tempfile::TempDir,
}

impl Chromium {
    /// Starts `chromium --headless=new --remote-debugging-port=0` and waits for its
    /// `DevTools listening on ws://...` line.
    fn launch() -> Chromium {
        use std::os::unix::process::CommandExt as _;
        let bin = chromium_bin();
        let profile = tempfile::Builder::new()
            .prefix("gslb-chromium-")
            .tempdir()
            .expect("a temp dir for Chromium's profile");
        let mut command = Command::new(&bin);
        command
            .args([
                "--headless=new",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--disable-extensions",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--disable-crash-reporter",
                "--disable-breakpad",
                "--no-first-run",
                "--no-default-browser-check",
                "--hide-scrollbars",
                "--remote-debugging-port=0",
                &format!("--window-size={},{}", VIEWPORT.0, VIEWPORT.1),
                &format!("--user-data-dir={}", profile.path().display()),
                "about:blank",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .process_group(0);
        gslb_state_tests::die_with_parent(&mut command);
        let mut child = command
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", bin.display()));
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let (url_tx, url_rx) = mpsc::channel();
        let pipe = child.stderr.take().expect("piped");
        let lines = stderr.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                if let Some(at) = line.find("DevTools listening on ") {
                    let _ = url_tx.send(line[at + "DevTools listening on ".len()..].to_owned());
                }
                lines.lock().unwrap().push(line);
            }
        });
        let mut browser = Chromium {
            child,
            ws_url: String::new(),
            stderr,
            _profile: profile,
        };
        browser.ws_url = url_rx.recv_timeout(LAUNCH_TIMEOUT).unwrap_or_else(|_| {
            panic!(
                "{} printed no `DevTools listening on` line within {LAUNCH_TIMEOUT:?}:\n{}",
                bin.display(),
                browser.stderr_tail()
            )
        });
        browser
    }

    /// The last lines Chromium wrote to stderr.
    fn stderr_tail(&self) -> String {
        let lines = self.stderr.lock().unwrap();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }
}

impl Drop for Chromium {
    fn drop(&mut self) {
        if let Ok(pgid) = libc::pid_t::try_from(self.child.id()) {
            // SAFETY: kill(2) on the process group of our own child (it leads it:
            // `process_group(0)`), not yet reaped: the browser and its helper processes.
            unsafe { libc::kill(-pgid, libc::SIGKILL) };
        }
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("--- chromium stderr tail ---\n{}", self.stderr_tail());
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The DevTools protocol, blocking
// ---------------------------------------------------------------------------------------------

type Ws =
    tokio_websockets::WebSocketStream<tokio_websockets::MaybeTlsStream<tokio::net::TcpStream>>;

/// One page of the browser, attached over the browser's DevTools websocket (a flat session):
/// commands and their answers (events are not enabled, and skipped).
struct Page {
    rt: tokio::runtime::Runtime,
    ws: Ws,
    next_id: u64,
    /// The page's session (`None` for browser-wide commands).
    session: Option<String>,
}

impl Page {
    /// Attaches to the browser's first page target.
    fn connect(browser: &Chromium) -> Page {
        let url = browser.ws_url.clone();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a tokio runtime");
        let builder = tokio_websockets::ClientBuilder::new()
            .uri(&url)
            .unwrap_or_else(|e| panic!("{url}: {e}"));
        let (ws, _) = rt
            .block_on(builder.connect())
            .unwrap_or_else(|e| panic!("connect to {url}: {e}"));
        let mut page = Page {
            rt,
            ws,
            next_id: 0,
            session: None,
        };
        let targets = page.call("Target.getTargets", json!({}));
        let target = targets["targetInfos"]
            .as_array()
            .and_then(|ts| ts.iter().find(|t| t["type"] == "page"))
            .and_then(|t| t["targetId"].as_str())
            .unwrap_or_else(|| panic!("no page target: {targets}"))
            .to_owned();
        let attached = page.call(
            "Target.attachToTarget",
            json!({ "targetId": target, "flatten": true }),
        );
        page.session = Some(
            attached["sessionId"]
                .as_str()
                .unwrap_or_else(|| panic!("no sessionId: {attached}"))
                .to_owned(),
        );
        page
    }

    /// Sends `method` with `params`; the answer's `result`, or its `error`.
    fn try_call(&mut self, method: &str, params: Value) -> Result<Value, String> {
        self.next_id += 1;
        let id = self.next_id;
        let mut command = json!({ "id": id, "method": method, "params": params });
        if let Some(session) = &self.session {
            command["sessionId"] = json!(session);
        }
        let text = command.to_string();
        let ws = &mut self.ws;
        let answer = self.rt.block_on(async {
            ws.send(tokio_websockets::Message::text(text))
                .await
                .map_err(|e| e.to_string())?;
            let read = async {
                while let Some(message) = ws.next().await {
                    let message = message.map_err(|e| e.to_string())?;
                    let Some(text) = message.as_text() else {
                        continue;
                    };
                    let v: Value = serde_json::from_str(text).map_err(|e| e.to_string())?;
                    if v["id"] == id {
                        return Ok(v);
                    }
                }
                Err("the DevTools connection closed".to_owned())
            };
            tokio::time::timeout(CDP_TIMEOUT, read)
                .await
                .map_err(|_| format!("no answer within {CDP_TIMEOUT:?}"))?
        })?;
        match answer.get("error") {
            Some(e) => Err(e.to_string()),
            None => Ok(answer["result"].clone()),
        }
    }

    /// [`Page::try_call`], which must succeed.
    fn call(&mut self, method: &str, params: Value) -> Value {
        self.try_call(method, params)
            .unwrap_or_else(|e| panic!("CDP {method}: {e}"))
    }

    /// Evaluates `expr` in the page (awaiting a promise); its value, or why not.
    fn try_eval(&mut self, expr: &str) -> Result<Value, String> {
        let r = self.try_call(
            "Runtime.evaluate",
            json!({ "expression": expr, "returnByValue": true, "awaitPromise": true }),
        )?;
        match r.get("exceptionDetails") {
            Some(x) => Err(format!("exception: {x}")),
            None => Ok(r["result"]["value"].clone()),
        }
    }

    /// [`Page::try_eval`], which must succeed.
    fn eval(&mut self, expr: &str) -> Value {
        self.try_eval(expr)
            .unwrap_or_else(|e| panic!("evaluating {expr}: {e}"))
    }

    /// Polls `expr` until `done` holds of its value; returns the value and how long it took.
    /// Fails with the last value (or error) seen.
    fn wait(
        &mut self,
        what: &str,
        timeout: Duration,
        expr: &str,
        done: impl Fn(&Value) -> bool,
    ) -> (Value, Duration) {
        let mut last = String::new();
        wait_for_blocking(timeout, what, || match self.try_eval(expr) {
            Ok(v) if done(&v) => Some(v),
            Ok(v) => {
                last = v.to_string();
                None
            }
            Err(e) => {
                last = e;
                None
            }
        })
        .unwrap_or_else(|e| panic!("{e}; last: {last}"))
    }

    /// The endpoints of the rows on the page, in order.
    fn rows(&mut self) -> Vec<String> {
        strings(&self.eval(ROWS))
    }

    /// Clicks the middle of the element `selector` with the mouse (scrolled into view first).
    fn click(&mut self, selector: &str) {
        let sel = serde_json::to_string(selector).unwrap();
        let at = self.eval(&format!(
            "(() => {{ const e = document.querySelector({sel}); if (!e) return null;
               e.scrollIntoView({{ block: 'center' }}); const r = e.getBoundingClientRect();
               return [r.x + Math.min(r.width / 2, 60), r.y + r.height / 2]; }})()"
        ));
        let (x, y) = (
            at[0]
                .as_f64()
                .unwrap_or_else(|| panic!("no {selector} to click")),
            at[1].as_f64().expect("y"),
        );
        for kind in ["mousePressed", "mouseReleased"] {
            self.call(
                "Input.dispatchMouseEvent",
                json!({ "type": kind, "x": x, "y": y, "button": "left", "clickCount": 1 }),
            );
        }
    }

    /// Types `text` into the focused element, as a keyboard would (input events).
    fn type_text(&mut self, text: &str) {
        self.call("Input.insertText", json!({ "text": text }));
    }

    /// A PNG of the viewport.
    fn screenshot(&mut self) -> Vec<u8> {
        let r = self.call("Page.captureScreenshot", json!({ "format": "png" }));
        let data = r["data"].as_str().expect("screenshot data");
        base64::engine::general_purpose::STANDARD
            .decode(data)
            .expect("screenshot is base64")
    }
}

/// The endpoints of the decision rows, in order.
const ROWS: &str = "[...document.querySelectorAll('#rows tr')].map(r => r.dataset.endpoint)";
/// Endpoint → verdict of the decision rows.
const VERDICTS: &str = "Object.fromEntries([...document.querySelectorAll('#rows tr')]\
                        .map(r => [r.dataset.endpoint, r.dataset.verdict]))";

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// JS: the text of the element with id `id` (`null` when absent).
fn text_of(id: &str) -> String {
    format!("document.getElementById({id:?})?.textContent ?? null")
}

// ---------------------------------------------------------------------------------------------
// The test
// ---------------------------------------------------------------------------------------------

/// The endpoints and what each daemon says of them: `(endpoint, a says, b says)` (`None`: no
/// report), and the verdict under global-quorum at 51%.
const ENDPOINTS: [(&str, Option<bool>, Option<bool>, &str); 5] = [
    ("api.example.com", Some(true), Some(true), "up"),
    ("cdn.example.com", Some(true), None, "up"),
    ("db.example.com", Some(true), Some(false), "down"),
    ("mail.example.com", Some(false), Some(false), "down"),
    ("www.example.com", Some(true), Some(true), "up"),
];

#[test]
fn the_status_page_shows_the_node_follows_flips_filters_and_explains() {
    let nats = NatsServer::single(ServerOpts::default()).expect("nats-server");
    let dir = TestDir::new();
    let servers = [nats.url()];
    let yaml = |node: &str| {
        Yaml::node(node, &servers)
            .policy("global-quorum")
            .quorum(51)
            .timing("250ms", "3s")
    };
    let mut daemons = start_all(&dir, &[yaml("a"), yaml("b")]);
    let (a, b) = daemons.split_at_mut(1);
    let (a, b) = (&mut a[0], &mut b[0]);
    for (endpoint, by_a, by_b, _) in ENDPOINTS {
        if let Some(h) = by_a {
            a.put_health(endpoint, h);
        }
        if let Some(h) = by_b {
            b.put_health(endpoint, h);
        }
    }
    for (endpoint, _, _, verdict) in ENDPOINTS {
        let want = verdict == "up";
        a.wait_decision(endpoint, verdict, SOON, |d| d["healthy"] == want);
    }
    let origin = format!("http://127.0.0.1:{}", a.port());

    let browser = Chromium::launch();
    let mut page = Page::connect(&browser);
    page.call(
        "Emulation.setDeviceMetricsOverride",
        json!({ "width": VIEWPORT.0, "height": VIEWPORT.1, "deviceScaleFactor": 1, "mobile": false }),
    );
    page.call("Page.navigate", json!({ "url": format!("{origin}/") }));

    // It renders: this node, its policy, NATS, the snapshot, both members, every endpoint.
    let (_, took) = page.wait(
        "the page to show node a, 2 members and 5 endpoints",
        SOON,
        &format!(
            "({}) === 'a' && document.querySelectorAll('#member-rows tr').length === 2 \
             && document.querySelectorAll('#rows tr').length === 5",
            text_of("node")
        ),
        |v| v == true,
    );
    eprintln!("the page rendered {took:?} after navigating");
    assert_eq!(page.eval(&text_of("policy")), "global-quorum 51%");
    assert_eq!(page.eval(&text_of("nats")), "connected");
    assert_eq!(page.eval(&text_of("snapshot")), "loaded");
    assert_eq!(page.eval(&text_of("config")), "own file");
    let members = strings(
        &page.eval("[...document.querySelectorAll('#member-rows tr')].map(r => r.textContent)"),
    );
    assert!(
        members[0].starts_with("a (this node)") && members[1].starts_with('b'),
        "members: {members:?}"
    );
    assert!(
        members.iter().all(|m| m.contains("active")),
        "members: {members:?}"
    );
    let names: Vec<&str> = ENDPOINTS.iter().map(|e| e.0).collect();
    assert_eq!(page.rows(), names, "rows by name");
    let verdicts = page.eval(VERDICTS);
    for (endpoint, _, _, verdict) in ENDPOINTS {
        assert_eq!(verdicts[endpoint], verdict, "{endpoint}: {verdicts}");
    }
    let range = page.eval(&text_of("range"));
    assert_eq!(range, "1–5 of 5 matching");

    // Nothing was loaded from anywhere else than the daemon.
    let resources = strings(
        &page.eval("[location.href, ...performance.getEntriesByType('resource').map(e => e.name)]"),
    );
    assert!(
        resources.iter().all(|r| r.starts_with(&origin)),
        "resources from elsewhere: {resources:?}"
    );

    // A flip made through b's API shows on a's page: www goes 1 of 2 healthy = 50% < 51%.
    let www_verdict = "(() => { const r = [...document.querySelectorAll('#rows tr')]\
                       .find(r => r.dataset.endpoint === 'www.example.com'); \
                       return r ? r.dataset.verdict : null; })()";
    assert_eq!(page.eval(www_verdict), "up");
    let flipped = Instant::now();
    b.put_health("www.example.com", false);
    let (_, _) = page.wait("www.example.com DOWN on the page", SOON, www_verdict, |v| {
        v == "down"
    });
    let flip = flipped.elapsed();
    eprintln!("health flip through b's API -> a's status page: {flip:?}");
    assert!(
        flip <= FLIP_DEADLINE,
        "the flip took {flip:?} to show, more than {FLIP_DEADLINE:?}"
    );
    let counts = page
        .eval("[...document.querySelectorAll('#counts button')].map(b => b.textContent).join(' ')");
    assert_eq!(counts, "all 5 up 2 down 3 unknown 0 pending 0");

    // The filter: typing narrows the rows to the matching ones.
    page.eval("document.getElementById('filter').focus()");
    page.type_text("mail");
    page.wait("the rows to narrow to mail.example.com", SOON, ROWS, |v| {
        strings(v) == ["mail.example.com"]
    });
    assert_eq!(page.eval(&text_of("range")), "1–1 of 1 matching");
    // ... and by verdict, with the name filter cleared.
    page.eval(
        "(() => { const f = document.getElementById('filter'); f.value = '';
           f.dispatchEvent(new Event('input', { bubbles: true }));
           const v = document.getElementById('verdict'); v.value = 'down';
           v.dispatchEvent(new Event('change', { bubbles: true })); return true; })()",
    );
    page.wait(
        "the rows to narrow to the endpoints down",
        SOON,
        ROWS,
        |v| strings(v) == ["db.example.com", "mail.example.com", "www.example.com"],
    );
    page.click("#counts button[data-verdict='all']");
    page.wait("every row back", SOON, ROWS, |v| strings(v) == names);

    // A click on a row shows its explanation: who says what, counted or not, the rule.
    page.click("#rows tr[data-endpoint='db.example.com']");
    let (summary, _) = page.wait(
        "db.example.com's explanation",
        SOON,
        &format!(
            "({}) === 'db.example.com' ? ({}) : null",
            text_of("explain-endpoint"),
            text_of("explain-summary")
        ),
        |v| v.is_string(),
    );
    let api = a.json("/v1/decisions/db.example.com?explain=true");
    assert_eq!(
        summary,
        format!("rule: {}", api["explanation"]["summary"].as_str().unwrap())
    );
    assert_eq!(summary, "rule: global-quorum: 1 of 2 healthy = 50% < 51%");
    let parts = page.eval(
        "Object.fromEntries([...document.querySelectorAll('#explain-members tr')]\
         .map(r => [r.dataset.node, [...r.cells].map(c => c.textContent)]))",
    );
    assert_eq!(parts["a"][2], "healthy", "{parts}");
    assert_eq!(parts["a"][3], "counted", "{parts}");
    assert_eq!(parts["b"][2], "unhealthy", "{parts}");
    assert_eq!(parts["b"][3], "counted", "{parts}");
    assert!(
        page.eval("location.hash")
            .as_str()
            .is_some_and(|h| h.contains("endpoint=db.example.com")),
        "the selection is kept in the address"
    );

    // The screenshot, for humans: the page with db's explanation open.
    let png = page.screenshot();
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"), "not a PNG");
    let target = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .expect("target/")
        .join("status-page.png");
    std::fs::write(&target, &png).unwrap();
    eprintln!("screenshot: {} ({} bytes)", target.display(), png.len());
    assert!(
        png.len() < MAX_SCREENSHOT_BYTES,
        "the screenshot is {} bytes",
        png.len()
    );
    if std::env::var_os("GSLB_UPDATE_SCREENSHOT").is_some_and(|v| v == "1") {
        let docs = repo_root().join("docs/status-page.png");
        std::fs::create_dir_all(docs.parent().unwrap()).unwrap();
        std::fs::write(&docs, &png).unwrap();
        eprintln!("updated {}", docs.display());
    }
    page.click("#explain .close");
    page.wait(
        "the explanation to close",
        SOON,
        "document.getElementById('explain').hidden",
        |v| v == true,
    );

    // Many endpoints: the server pages; the browser draws one page of rows.
    const MANY: usize = 1000;
    for i in 0..MANY {
        a.put_health(&format!("ep-{i:04}.example.net"), i % 4 != 0);
    }
    let total = MANY + ENDPOINTS.len();
    page.wait(
        "the page to count every endpoint",
        SOON,
        &text_of("endpoint-count"),
        |v| v == format!("{total} known").as_str(),
    );
    page.wait(
        "one page of 200 rows",
        SOON,
        &format!(
            "[document.querySelectorAll('#rows tr').length, {}]",
            text_of("range")
        ),
        |v| v[0] == 200 && v[1] == format!("1–200 of {total} matching").as_str(),
    );
    page.click("#next");
    let (rows, _) = page.wait("the second page", SOON, ROWS, |v| {
        strings(v).first().map(String::as_str) == Some("ep-0197.example.net")
    });
    assert_eq!(strings(&rows).len(), 200);
    assert_eq!(
        page.eval(&text_of("range")),
        format!("201–400 of {total} matching")
    );
    // Filtering resets to the first page of the matches, on the server.
    page.eval(
        "(() => { const f = document.getElementById('filter'); f.value = 'EP-099';
           f.dispatchEvent(new Event('input', { bubbles: true })); return true; })()",
    );
    let want: Vec<String> = (990..1000)
        .map(|i| format!("ep-{i:04}.example.net"))
        .collect();
    page.wait("ep-099x only", SOON, ROWS, |v| strings(v) == want);
    let polls = page.eval("window.statusPage.polls").as_u64().unwrap_or(0);
    page.wait(
        "the page to keep polling",
        SOON,
        "window.statusPage.polls",
        |v| v.as_u64().unwrap_or(0) >= polls + 2,
    );
    drop(page);
    drop(browser);
    drop(daemons);
}
