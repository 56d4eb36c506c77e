//! The one reader of Prometheus/OpenMetrics text in the end-to-end tests, for `/metrics` of a
//! daemon and `Metrics::encode()` of a library node alike.

/// The value of `series` in Prometheus/OpenMetrics text, where `series` is written as in the
/// exposition, labels included (`gslbd_state_nats_published_total{type="heartbeat"}`); `None`
/// when no sample line has exactly that series. A timestamp or exemplar after the value is
/// ignored.
pub fn metric_value(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|l| {
        let rest = l.strip_prefix(series)?;
        let value = rest.strip_prefix(' ')?.split_whitespace().next()?;
        value.parse().ok()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "# HELP gslbd_state_active_members Active members.\n\
        # TYPE gslbd_state_active_members gauge\n\
        gslbd_state_active_members 3\n\
        gslbd_state_nats_published_total{type=\"heartbeat\"} 12 1700000000\n\
        gslbd_state_nats_published_total{type=\"report\"} 4.5 # {} 1\n\
        gslbd_state_nats_connected 1\n";

    #[test]
    fn finds_exactly_the_series() {
        assert_eq!(metric_value(TEXT, "gslbd_state_active_members"), Some(3.0));
        let hb = "gslbd_state_nats_published_total{type=\"heartbeat\"}";
        assert_eq!(metric_value(TEXT, hb), Some(12.0));
        let report = "gslbd_state_nats_published_total{type=\"report\"}";
        assert_eq!(metric_value(TEXT, report), Some(4.5));
        // A prefix of a name, or a name without its labels, is another series.
        assert_eq!(metric_value(TEXT, "gslbd_state_nats_published_total"), None);
        assert_eq!(metric_value(TEXT, "gslbd_state_nats"), None);
        assert_eq!(metric_value(TEXT, "gslbd_state_absent"), None);
    }
}
