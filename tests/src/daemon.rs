//! A `gslb-state run` child process: spawned with its log going to a file, its admin port read
//! back from its `gslb-state running` line (`admin.listen: 127.0.0.1:0` lets it pick one), its
//! HTTP API at hand, signalled and reaped. SIGKILLed on drop. The daemon's tests and
//! `gslb-state scenario` both drive daemons through it.

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

use crate::http;

/// Timeout of one HTTP request to a daemon.
pub const HTTP_TIMEOUT: Duration = Duration::from_secs(5);

/// One `gslb-state run` child process.
#[derive(Debug)]
pub struct DaemonProcess {
    /// A name for messages (the node id).
    pub name: String,
    /// Its log file (stdout and stderr).
    pub log: PathBuf,
    child: Option<Child>,
    port: std::sync::OnceLock<u16>,
    exited: Option<ExitStatus>,
}

impl DaemonProcess {
    /// Starts `bin ARGS run --config CONFIG` with extra environment variables, logging to a
    /// new file `<name>.log` (`<name>.2.log`, ... for later starts) in `log_dir`.
    pub fn spawn(
        bin: &Path,
        name: &str,
        config: &Path,
        args: &[&str],
        env: &[(&str, &str)],
        log_dir: &Path,
    ) -> io::Result<DaemonProcess> {
        let mut log = log_dir.join(format!("{name}.log"));
        let mut n = 1;
        while log.exists() {
            n += 1;
            log = log_dir.join(format!("{name}.{n}.log"));
        }
        let out = File::create(&log)?;
        let mut command = Command::new(bin);
        command
            .args(args)
            .arg("run")
            .arg("--config")
            .arg(config)
            .env("RUST_LOG", "info,async_nats=warn")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out);
        crate::die_with_parent(&mut command);
        let child = command.spawn()?;
        Ok(DaemonProcess {
            name: name.to_owned(),
            log,
            child: Some(child),
            port: std::sync::OnceLock::new(),
            exited: None,
        })
    }

    /// Its process id.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// The log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The last `n` lines of the log.
    pub fn log_tail(&self, n: usize) -> String {
        let text = self.log_text();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    /// The admin API port, once the daemon logged it (`None` before).
    pub fn port(&self) -> Option<u16> {
        if let Some(p) = self.port.get() {
            return Some(*p);
        }
        let port = self
            .log_text()
            .lines()
            .find(|l| l.contains("gslb-state running"))
            .and_then(parse_listen_port)?;
        Some(*self.port.get_or_init(|| port))
    }

    /// `METHOD path` with `body` on its API: the status and the body.
    pub fn request(&self, method: &str, path: &str, body: &str) -> io::Result<(u16, String)> {
        let port = self
            .port()
            .ok_or_else(|| io::Error::other(format!("{}: no admin port yet", self.name)))?;
        http::request(port, method, path, body, HTTP_TIMEOUT)
    }

    /// `GET path` parsed as JSON; `None` on any failure or a status other than 200.
    pub fn get_json(&self, path: &str) -> Option<serde_json::Value> {
        let (status, body) = http::get(self.port()?, path, HTTP_TIMEOUT).ok()?;
        if status != 200 {
            return None;
        }
        serde_json::from_str(&body).ok()
    }

    /// Sends signal `sig` (a no-op once it was reaped).
    pub fn signal(&self, sig: libc::c_int) -> io::Result<()> {
        if self.exited.is_some() {
            return Ok(());
        }
        let child = self
            .child
            .as_ref()
            .ok_or_else(|| io::Error::other("not started"))?;
        let pid = libc::pid_t::try_from(child.id()).map_err(io::Error::other)?;
        // SAFETY: kill(2) on our own child, not yet reaped (we hold its `Child`).
        let rc = unsafe { libc::kill(pid, sig) };
        if rc == 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    }

    /// The exit status if the process has exited (reaped once, remembered).
    pub fn try_exit(&mut self) -> Option<ExitStatus> {
        if self.exited.is_none()
            && let Some(child) = self.child.as_mut()
            && let Ok(Some(status)) = child.try_wait()
        {
            self.exited = Some(status);
        }
        self.exited
    }

    /// SIGKILL, and reap.
    pub fn kill(&mut self) {
        if let Some(child) = self.child.as_mut()
            && self.exited.is_none()
        {
            let _ = child.kill();
            if let Ok(status) = child.wait() {
                self.exited = Some(status);
            }
        }
    }
}

impl Drop for DaemonProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The port in `listen=127.0.0.1:PORT` (text) or `"listen":"127.0.0.1:PORT"` (JSON).
pub fn parse_listen_port(line: &str) -> Option<u16> {
    let at = line.find("listen")?;
    let rest = &line[at..];
    let addr_at = rest.find("127.0.0.1:")? + "127.0.0.1:".len();
    let digits: String = rest[addr_at..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().ok().filter(|p| *p != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_listen_port_is_read_from_text_and_json_lines() {
        assert_eq!(
            parse_listen_port("INFO gslb-state running node=a listen=127.0.0.1:4711 endpoints=0"),
            Some(4711)
        );
        assert_eq!(
            parse_listen_port(r#"{"message":"gslb-state running","listen":"127.0.0.1:9464"}"#),
            Some(9464)
        );
        assert_eq!(parse_listen_port("listen=127.0.0.1:0"), None);
    }
}
