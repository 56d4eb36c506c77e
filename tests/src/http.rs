//! The one HTTP client of the end-to-end tests: blocking, HTTP/1.1 on `127.0.0.1`, one request
//! per connection (`Connection: close`), any method, chunked bodies decoded. It talks to
//! nats-server monitor ports and to the `gslb-state` daemon's admin API alike.
//!
//! ```no_run
//! use std::time::Duration;
//! let (status, body) = gslb_state_tests::http::get(8222, "/healthz", Duration::from_secs(2))?;
//! let (status, _) = gslb_state_tests::http::request(
//!     9464,
//!     "PUT",
//!     "/v1/health/www.example.com",
//!     r#"{"healthy": false}"#,
//!     Duration::from_secs(5),
//! )?;
//! # Ok::<(), std::io::Error>(())
//! ```

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

/// `GET path` on `127.0.0.1:port`; the status code and the body.
pub fn get(port: u16, path: &str, timeout: Duration) -> io::Result<(u16, String)> {
    request(port, "GET", path, "", timeout)
}

/// `METHOD path` on `127.0.0.1:port` with `body` (sent as `application/json` when not empty);
/// the status code and the body. `timeout` bounds the connect, and each read and write.
pub fn request(
    port: u16,
    method: &str,
    path: &str,
    body: &str,
    timeout: Duration,
) -> io::Result<(u16, String)> {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let mut s = TcpStream::connect_timeout(&addr, timeout)?;
    s.set_read_timeout(Some(timeout))?;
    s.set_write_timeout(Some(timeout))?;
    let content_type = if body.is_empty() {
        ""
    } else {
        "Content-Type: application/json\r\n"
    };
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n{content_type}Content-Length: {}\r\n\r\n{body}",
        body.len()
    )?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf)?;
    parse_response(&String::from_utf8_lossy(&buf))
}

/// The status and the body of a whole HTTP/1.1 response.
fn parse_response(text: &str) -> io::Result<(u16, String)> {
    let bad = |m: String| io::Error::new(io::ErrorKind::InvalidData, m);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| bad(format!("bad HTTP response: {text:?}")))?;
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| bad(format!("bad status line: {head:?}")))?;
    let chunked = head.lines().any(|l| {
        l.to_ascii_lowercase()
            .starts_with("transfer-encoding: chunked")
    });
    let body = if chunked {
        dechunk(body).ok_or_else(|| bad(format!("bad chunked body: {body:?}")))?
    } else {
        body.to_owned()
    };
    Ok((status, body))
}

/// The data of a `Transfer-Encoding: chunked` body (`None` if it is malformed or cut short).
fn dechunk(mut s: &str) -> Option<String> {
    let mut out = String::new();
    loop {
        let (size, rest) = s.split_once("\r\n")?;
        let size = usize::from_str_radix(size.split(';').next()?.trim(), 16).ok()?;
        if size == 0 {
            return Some(out);
        }
        out.push_str(rest.get(..size)?);
        s = rest.get(size + 2..)?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_and_chunked_bodies() {
        let plain = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
        assert_eq!(parse_response(plain).unwrap(), (200, "ok".to_owned()));
        let chunked = "HTTP/1.1 404 Not Found\r\nTransfer-Encoding: chunked\r\n\r\n\
                       3\r\nabc\r\n4;ext=1\r\ndefg\r\n0\r\n\r\n";
        assert_eq!(
            parse_response(chunked).unwrap(),
            (404, "abcdefg".to_owned())
        );
    }

    #[test]
    fn malformed_responses_are_errors() {
        assert!(parse_response("").is_err());
        assert!(parse_response("HTTP/1.1 abc\r\n\r\n").is_err());
        let cut = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nab";
        assert!(parse_response(cut).is_err());
    }
}
