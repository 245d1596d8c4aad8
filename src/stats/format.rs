//! Which text format a scrape gets: content negotiation on the `Accept`
//! header, the way the Prometheus client libraries do it (client_golang's
//! `expfmt.NegotiateIncludingOpenMetrics`): media ranges are tried in order
//! of their `q` weight, the first one encapd can serve wins, and anything
//! else (no header, `*/*`, protobuf only) gets the classic text format.
//!
//! Pure: no I/O, never fails. A header that does not parse is treated like
//! the parts of it that do.

/// An exposition format encapd serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Prometheus text format 0.0.4: counters declared under their sample
    /// name (`# TYPE encapd_tx_packets_total counter`), no `# EOF`.
    PrometheusText,
    /// OpenMetrics 1.0.0 text: counters declared as the family
    /// (`# TYPE encapd_tx_packets counter`), samples `_total`, closing `# EOF`.
    OpenMetrics,
}

/// The `Accept` header Prometheus 2.x (Debian 12 ships 2.42) sends with
/// every scrape.
pub const PROMETHEUS_SCRAPE_ACCEPT: &str =
    "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";

impl Format {
    /// The format to answer a request carrying `accept` (`None`: no header).
    pub fn negotiate(accept: Option<&str>) -> Format {
        let Some(accept) = accept else { return Format::PrometheusText };
        let mut ranges: Vec<(f64, Option<Format>)> = accept.split(',').filter_map(media_range).collect();
        // Stable: among equal weights the client's order stands.
        ranges.sort_by(|a, b| b.0.total_cmp(&a.0));
        ranges.into_iter().find_map(|(_, format)| format).unwrap_or(Format::PrometheusText)
    }

    /// The `Content-Type` of a response in this format.
    pub fn content_type(self) -> &'static str {
        match self {
            Format::PrometheusText => prometheus_client::encoding::prometheus_text::CONTENT_TYPE,
            Format::OpenMetrics => "application/openmetrics-text; version=1.0.0; charset=utf-8",
        }
    }
}

/// One media range of an `Accept` header: its weight and the format it
/// selects (`None` for types and versions encapd does not serve). Ranges
/// with `q=0` ("not acceptable") are left out.
fn media_range(range: &str) -> Option<(f64, Option<Format>)> {
    let mut parts = range.split(';').map(str::trim);
    let media_type = parts.next()?.to_ascii_lowercase();
    let (mut q, mut version) = (1.0, None);
    for param in parts {
        let Some((key, value)) = param.split_once('=') else { continue };
        let value = value.trim().trim_matches('"');
        match key.trim().to_ascii_lowercase().as_str() {
            "q" => q = value.parse::<f64>().ok().filter(|q| (0.0..=1.0).contains(q))?,
            "version" => version = Some(value.to_owned()),
            _ => {}
        }
    }
    if q == 0.0 {
        return None;
    }
    let format = match (media_type.as_str(), version.as_deref()) {
        ("text/plain", None | Some("0.0.4")) => Some(Format::PrometheusText),
        // 0.0.1 was the draft of 1.0.0; the text encoding is the same, and
        // Prometheus's parser reads both.
        ("application/openmetrics-text", None | Some("1.0.0" | "0.0.1")) => Some(Format::OpenMetrics),
        _ => None,
    };
    Some((q, format))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prometheus_server_gets_openmetrics() {
        assert_eq!(Format::negotiate(Some(PROMETHEUS_SCRAPE_ACCEPT)), Format::OpenMetrics);
        // A Prometheus 3 style header with protobuf negotiation first (which encapd does not serve).
        let v3 = "application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;encoding=delimited;q=0.5,\
                  application/openmetrics-text;version=1.0.0;escaping=allow-utf-8;q=0.4,\
                  application/openmetrics-text;version=0.0.1;q=0.3,text/plain;version=1.0.0;escaping=allow-utf-8;q=0.2,\
                  text/plain;version=0.0.4;q=0.1,*/*;q=0.05";
        assert_eq!(Format::negotiate(Some(v3)), Format::OpenMetrics);
    }

    #[test]
    fn classic_text_by_default_and_on_request() {
        for accept in [None, Some(""), Some("*/*"), Some("text/plain"), Some("text/plain; version=0.0.4"), Some("garbage;;;=")] {
            assert_eq!(Format::negotiate(accept), Format::PrometheusText, "{accept:?}");
        }
        // Weights decide, not order.
        let text_preferred = "application/openmetrics-text;version=1.0.0;q=0.2,text/plain;version=0.0.4;q=0.9";
        assert_eq!(Format::negotiate(Some(text_preferred)), Format::PrometheusText);
        // Only protobuf or an unknown OpenMetrics version: the default.
        assert_eq!(
            Format::negotiate(Some("application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;encoding=delimited")),
            Format::PrometheusText
        );
        assert_eq!(Format::negotiate(Some("application/openmetrics-text; version=2.0.0")), Format::PrometheusText);
    }

    #[test]
    fn openmetrics_when_asked_for_it() {
        for accept in [
            "application/openmetrics-text",
            "Application/OpenMetrics-Text; Version=\"1.0.0\"",
            "application/openmetrics-text; version=0.0.1",
            "text/plain;q=0.5, application/openmetrics-text",
        ] {
            assert_eq!(Format::negotiate(Some(accept)), Format::OpenMetrics, "{accept}");
        }
    }

    #[test]
    fn unacceptable_or_malformed_weights_are_ignored() {
        assert_eq!(Format::negotiate(Some("application/openmetrics-text;q=0, text/plain")), Format::PrometheusText);
        assert_eq!(Format::negotiate(Some("application/openmetrics-text;q=abc, text/plain;q=0.1")), Format::PrometheusText);
        assert_eq!(Format::negotiate(Some("text/plain;q=7, application/openmetrics-text;q=0.1")), Format::OpenMetrics);
    }

    #[test]
    fn content_types_name_the_format() {
        assert_eq!(Format::PrometheusText.content_type(), "text/plain; version=0.0.4; charset=utf-8");
        assert!(Format::OpenMetrics.content_type().starts_with("application/openmetrics-text; version=1.0.0"));
    }
}
