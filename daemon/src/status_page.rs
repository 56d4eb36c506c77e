//! The status page, `GET /`: one self-contained HTML page (inline CSS and script, no external
//! asset, embedded in the binary) for an operator's browser. It shows this node, its policy,
//! NATS connection, snapshot state and config version, the members, and every endpoint's
//! decision, colour-coded, filterable by name and verdict and paged by the server
//! (`GET /v1/status/decisions`), so 100,000 endpoints cost the browser one page of rows; a
//! click on an endpoint shows its explanation (`GET /v1/decisions/{endpoint}?explain=true`).
//! It polls every [`POLL_MS`] milliseconds (less often when a poll is slow or the page is
//! hidden) and redraws only what changed.

use axum::http::header;
use axum::response::{IntoResponse, Response};

/// The page (`daemon/src/status_page.html`).
pub const PAGE: &str = include_str!("status_page.html");

/// How often the page polls the API, in milliseconds (the script's `POLL_MS`): a flip shows
/// within about this. A slow poll (taking more than a quarter of it) spaces the next ones out
/// to four times its duration, at most 5 s, so a busy daemon is not polled harder.
pub const POLL_MS: u64 = 500;

/// What the page may load: nothing but itself and the API of the daemon that served it.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'unsafe-inline'; \
     style-src 'unsafe-inline'; connect-src 'self'; img-src data:; base-uri 'none'; \
     form-action 'none'; frame-ancestors 'none'";

/// `GET /`: the page.
pub async fn page() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
            (header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        PAGE,
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_is_self_contained_and_polls_as_documented() {
        // No external asset: nothing is fetched from another origin.
        for needle in ["http://", "https://", "//cdn", "<link", "src="] {
            assert!(
                !PAGE.contains(needle),
                "the status page must not load external assets: {needle:?}"
            );
        }
        assert!(
            PAGE.contains(&format!("const POLL_MS = {POLL_MS};")),
            "the script's POLL_MS differs from status_page::POLL_MS"
        );
        for api in [
            "/v1/status",
            "/v1/status/decisions",
            "/v1/decisions/",
            "explain=true",
        ] {
            assert!(PAGE.contains(api), "the page does not use {api}");
        }
    }
}
