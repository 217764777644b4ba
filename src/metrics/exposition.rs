//! The two text formats `/metrics` speaks and the choice between them:
//! OpenMetrics 1.0.0 (what prometheus-client encodes) when the scraper's
//! `Accept` asks for it, else the Prometheus text format 0.0.4, converted
//! from the OpenMetrics text here (prometheus-client has no 0.0.4 encoder).
//!
//! Must not know any family: it rewrites names and metadata by the rules of
//! the two formats only.

/// An exposition format `/metrics` can answer in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// Prometheus text format 0.0.4: the default.
    Text,
    /// OpenMetrics 1.0.0 text.
    OpenMetrics,
}

impl Format {
    pub const fn content_type(self) -> &'static str {
        match self {
            Format::Text => "text/plain; version=0.0.4; charset=utf-8",
            Format::OpenMetrics => "application/openmetrics-text; version=1.0.0; charset=utf-8",
        }
    }

    /// Content negotiation (RFC 9110 §12.5.1) between the two formats.
    /// OpenMetrics when an explicit `application/openmetrics-text` range
    /// (version 1.0.0 or none) has a `q` above zero and at least as high as
    /// the best range that covers the text format; otherwise the text format,
    /// also when `Accept` is absent, unreadable or names neither.
    pub fn negotiate<'a>(accept: impl IntoIterator<Item = &'a str>) -> Format {
        let mut open_metrics = 0.0f32;
        let mut text = 0.0f32;
        for range in accept.into_iter().flat_map(|v| v.split(',')) {
            let mut parts = range.split(';').map(str::trim);
            let media = parts.next().unwrap_or_default().to_ascii_lowercase();
            let mut q = 1.0f32;
            let mut version = None;
            for param in parts {
                let Some((key, value)) = param.split_once('=') else {
                    continue;
                };
                let value = value.trim().trim_matches('"');
                match key.trim().to_ascii_lowercase().as_str() {
                    // A malformed weight makes the range worthless, not preferred.
                    "q" => {
                        q = value
                            .parse()
                            .ok()
                            .filter(|q| (0.0..=1.0).contains(q))
                            .unwrap_or(0.0)
                    }
                    "version" => version = Some(value.to_owned()),
                    _ => {}
                }
            }
            let version = version.as_deref();
            match media.as_str() {
                "application/openmetrics-text" if matches!(version, None | Some("1.0.0")) => {
                    open_metrics = open_metrics.max(q);
                }
                "text/plain" if matches!(version, None | Some("0.0.4")) => text = text.max(q),
                "text/*" | "*/*" => text = text.max(q),
                _ => {}
            }
        }
        if open_metrics > 0.0 && open_metrics >= text {
            Format::OpenMetrics
        } else {
            Format::Text
        }
    }
}

/// Converts prometheus-client's OpenMetrics text to the text format 0.0.4:
///
/// - a counter family `x` (samples `x_total`) becomes the family `x_total`,
///   and an info family `x` (samples `x_info`) the gauge family `x_info`, so
///   that HELP and TYPE name what the samples are called;
/// - type `unknown` becomes `untyped`;
/// - `# UNIT` and `# EOF` lines, `_created` samples and exemplars are dropped
///   (0.0.4 has none of them); a sample's timestamp goes from seconds to
///   milliseconds;
/// - HELP text loses OpenMetrics' `\"` escape (0.0.4 escapes only `\\` and
///   `\n`, which mean the same in both).
///
/// Label sets and values are written the same way in both formats.
pub fn to_text_format(open_metrics: &str) -> String {
    let mut out = String::with_capacity(open_metrics.len());
    let mut family = Family::default();
    for line in open_metrics.lines() {
        if let Some(rest) = line.strip_prefix("# ") {
            let (keyword, rest) = rest.split_once(' ').unwrap_or((rest, ""));
            let (name, value) = rest.split_once(' ').unwrap_or((rest, ""));
            if !matches!(keyword, "HELP" | "TYPE" | "UNIT") {
                continue; // `# EOF`
            }
            if family.name != name || family.started {
                family.flush_metadata(&mut out);
                family = Family {
                    name: name.to_owned(),
                    ..Family::default()
                };
            }
            match keyword {
                "HELP" => family.help = Some(value.to_owned()),
                "TYPE" => family.kind = Some(value.to_owned()),
                _ => {}
            }
            continue;
        }
        if line.is_empty() {
            continue;
        }
        family.flush_metadata(&mut out);
        family.started = true;
        let (series, value) = split_sample(line);
        let sample_name = series.split('{').next().unwrap_or_default();
        let created = matches!(
            family.kind.as_deref(),
            Some("counter" | "histogram" | "summary")
        ) && sample_name.strip_suffix("_created") == Some(family.name.as_str());
        if created {
            continue;
        }
        out.push_str(series);
        out.push(' ');
        out.push_str(&value_to_text_format(value));
        out.push('\n');
    }
    family.flush_metadata(&mut out);
    out
}

/// The metadata of the family being converted.
#[derive(Default)]
struct Family {
    name: String,
    help: Option<String>,
    kind: Option<String>,
    /// Its metadata has been written (a sample came).
    started: bool,
}

impl Family {
    fn flush_metadata(&mut self, out: &mut String) {
        if self.started || self.name.is_empty() {
            return;
        }
        self.started = true;
        let (name, kind) = match self.kind.as_deref() {
            Some("counter") => (format!("{}_total", self.name), Some("counter")),
            Some("info") => (format!("{}_info", self.name), Some("gauge")),
            Some("unknown") => (self.name.clone(), Some("untyped")),
            Some(kind @ ("gauge" | "histogram" | "summary")) => (self.name.clone(), Some(kind)),
            // stateset, gaugehistogram: no 0.0.4 type has their samples.
            Some(_) => (self.name.clone(), Some("untyped")),
            None => (self.name.clone(), None),
        };
        if let Some(help) = &self.help {
            out.push_str("# HELP ");
            out.push_str(&name);
            out.push(' ');
            out.push_str(&help.replace("\\\"", "\""));
            out.push('\n');
        }
        if let Some(kind) = kind {
            out.push_str("# TYPE ");
            out.push_str(&name);
            out.push(' ');
            out.push_str(kind);
            out.push('\n');
        }
    }
}

/// Splits a sample line into its series (`name{labels}`) and the rest (value,
/// timestamp, exemplar). Label values may hold spaces, `}` and `#` inside
/// quotes, with `\"` escaped.
fn split_sample(line: &str) -> (&str, &str) {
    let end = match line.find(['{', ' ']) {
        Some(i) if line.as_bytes().get(i) == Some(&b'{') => {
            let mut quoted = false;
            let mut escaped = false;
            let mut close = line.len();
            for (j, c) in line.char_indices().skip_while(|(j, _)| *j <= i) {
                match c {
                    _ if escaped => escaped = false,
                    '\\' if quoted => escaped = true,
                    '"' => quoted = !quoted,
                    '}' if !quoted => {
                        close = j + 1;
                        break;
                    }
                    _ => {}
                }
            }
            close
        }
        Some(i) => i,
        None => line.len(),
    };
    let (series, rest) = line.split_at(end);
    (series, rest.trim_start())
}

/// `value [timestamp] [# exemplar]` in OpenMetrics to `value [timestamp]`
/// in 0.0.4 (timestamps in milliseconds there).
fn value_to_text_format(rest: &str) -> String {
    let rest = rest.split(" # ").next().unwrap_or_default();
    let mut parts = rest.split_whitespace();
    let value = parts.next().unwrap_or_default();
    match parts.next().and_then(|t| t.parse::<f64>().ok()) {
        Some(seconds) => format!("{value} {}", (seconds * 1000.0).round() as i64),
        None => value.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn negotiation_follows_the_scrapers_weights() {
        let prometheus = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";
        for (accept, want) in [
            (vec![], Format::Text),
            (vec![prometheus], Format::OpenMetrics),
            (vec!["application/openmetrics-text"], Format::OpenMetrics),
            (
                vec![
                    "text/plain;version=0.0.4;q=0.9",
                    "application/openmetrics-text",
                ],
                Format::OpenMetrics,
            ),
            (
                vec!["application/openmetrics-text;q=0.3, text/plain;version=0.0.4"],
                Format::Text,
            ),
            (
                vec!["Application/OpenMetrics-Text; Version=\"1.0.0\"; q=0.8, */*;q=0.8"],
                Format::OpenMetrics,
            ),
            (vec!["application/openmetrics-text;q=0"], Format::Text),
            (vec!["application/openmetrics-text;q=banana"], Format::Text),
            (
                vec!["application/openmetrics-text;version=0.0.1"],
                Format::Text,
            ),
            (vec!["text/plain"], Format::Text),
            (vec!["*/*"], Format::Text),
            (vec!["application/json"], Format::Text),
            (vec![",;,=;q"], Format::Text),
        ] {
            assert_eq!(
                Format::negotiate(accept.iter().copied()),
                want,
                "{accept:?}"
            );
        }
    }

    #[test]
    fn counters_info_and_unknown_take_their_text_format_names() {
        let open_metrics = "\
# HELP a_requests Requests, by \\\"method\\\".
# TYPE a_requests counter
a_requests_total{method=\"x\"} 3
a_requests_created{method=\"x\"} 1700000000.5
# HELP a_build Build.
# TYPE a_build info
a_build_info{version=\"1\"} 1
# HELP a_thing Something.
# TYPE a_thing unknown
a_thing 7
# HELP a_up Up.
# TYPE a_up gauge
a_up 1
# HELP process_cpu_seconds CPU time.
# TYPE process_cpu_seconds counter
# UNIT process_cpu_seconds seconds
process_cpu_seconds_total 0.25
# EOF
";
        assert_eq!(
            to_text_format(open_metrics),
            "\
# HELP a_requests_total Requests, by \"method\".
# TYPE a_requests_total counter
a_requests_total{method=\"x\"} 3
# HELP a_build_info Build.
# TYPE a_build_info gauge
a_build_info{version=\"1\"} 1
# HELP a_thing Something.
# TYPE a_thing untyped
a_thing 7
# HELP a_up Up.
# TYPE a_up gauge
a_up 1
# HELP process_cpu_seconds_total CPU time.
# TYPE process_cpu_seconds_total counter
process_cpu_seconds_total 0.25
"
        );
    }

    #[test]
    fn histograms_keep_their_samples_and_lose_exemplars_and_timestamps_change_unit() {
        let open_metrics = "\
# HELP d_seconds Latency.
# TYPE d_seconds histogram
# UNIT d_seconds seconds
d_seconds_sum{ns=\"a # b} c\"} 1.5
d_seconds_count{ns=\"a # b} c\"} 2
d_seconds_bucket{ns=\"a # b} c\",le=\"0.5\"} 1 # {trace=\"x\"} 0.4 1700000000.001
d_seconds_bucket{ns=\"a # b} c\",le=\"+Inf\"} 2
# TYPE c counter
c_total 5 1700000000.25 # {trace=\"y\"} 1
# EOF
";
        assert_eq!(
            to_text_format(open_metrics),
            "\
# HELP d_seconds Latency.
# TYPE d_seconds histogram
d_seconds_sum{ns=\"a # b} c\"} 1.5
d_seconds_count{ns=\"a # b} c\"} 2
d_seconds_bucket{ns=\"a # b} c\",le=\"0.5\"} 1
d_seconds_bucket{ns=\"a # b} c\",le=\"+Inf\"} 2
# TYPE c_total counter
c_total 5 1700000000250
"
        );
    }

    #[test]
    fn escaped_quotes_in_label_values_do_not_end_them() {
        let (series, rest) = split_sample(r#"x{a="q\"} # ",b="\\"} 1 # {e="1"} 2"#);
        assert_eq!(series, r#"x{a="q\"} # ",b="\\"}"#);
        assert_eq!(value_to_text_format(rest), "1");
        assert_eq!(split_sample("y 2"), ("y", "2"));
    }
}
