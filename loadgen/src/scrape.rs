//! The gateway's `GET /metrics` (the plain-HTTP `[admin] listen` listener on
//! loopback) and what the benchmark reads from it: the time the gateway adds
//! to a routed request (`adjunct_gateway_routed_added_seconds`, by leg), as
//! quantiles of the increase between two scrapes, interpolated within a
//! bucket the way Prometheus' `histogram_quantile` does. It only reads: a
//! listener that does not answer or a family that is absent (an older
//! gateway) is "no data", never an error.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The histogram of the time the gateway itself adds to a routed request.
pub const ROUTED_ADDED: &str = "adjunct_gateway_routed_added_seconds";

/// The body of `GET http://127.0.0.1:PORT/metrics` if it answers 200 within 2 s.
pub async fn fetch(port: u16) -> Option<String> {
    let get = async {
        let mut tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .ok()?;
        tcp.write_all(b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
            .await
            .ok()?;
        let mut raw = Vec::new();
        tcp.read_to_end(&mut raw).await.ok()?;
        let raw = String::from_utf8(raw).ok()?;
        let (head, body) = raw.split_once("\r\n\r\n")?;
        // The exporter sends a Content-Length body (never chunked), so the
        // bytes after the head are the exposition.
        let status = head.split_whitespace().nth(1)?;
        (status == "200").then(|| body.to_owned())
    };
    tokio::time::timeout(Duration::from_secs(2), get)
        .await
        .ok()
        .flatten()
}

/// One series (sample line) of an exposition: name, labels, value.
pub struct Sample<'a> {
    pub name: &'a str,
    pub labels: Vec<(&'a str, &'a str)>,
    pub value: f64,
}

impl Sample<'_> {
    pub fn label(&self, key: &str) -> Option<&str> {
        self.labels.iter().find(|(k, _)| *k == key).map(|(_, v)| *v)
    }
}

/// The samples of a text-format exposition (comments and lines that do not
/// parse are skipped). Label values are taken as written: ours never hold
/// escaped quotes.
pub fn samples(text: &str) -> impl Iterator<Item = Sample<'_>> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|line| {
            let (series, rest) = match line.find('{') {
                Some(open) => {
                    let close = open + line.get(open..)?.find('}')?;
                    (line.get(..close + 1)?, line.get(close + 1..)?)
                }
                None => line.split_once(' ')?,
            };
            // A timestamp may follow the value.
            let value = parse_value(rest.split_whitespace().next()?)?;
            let (name, labels) = match series.split_once('{') {
                Some((name, inner)) => (name, labels(inner.strip_suffix('}')?)?),
                None => (series, Vec::new()),
            };
            Some(Sample {
                name,
                labels,
                value,
            })
        })
}

/// `a="x",b="y"` into pairs.
fn labels(mut s: &str) -> Option<Vec<(&str, &str)>> {
    let mut out = Vec::new();
    loop {
        s = s.trim_start_matches([',', ' ']);
        if s.is_empty() {
            return Some(out);
        }
        let (key, rest) = s.split_once("=\"")?;
        let (value, rest) = rest.split_once('"')?;
        out.push((key.trim(), value));
        s = rest;
    }
}

fn parse_value(s: &str) -> Option<f64> {
    match s {
        "+Inf" => Some(f64::INFINITY),
        "-Inf" => Some(f64::NEG_INFINITY),
        _ => s.parse().ok(),
    }
}

/// One histogram series: (upper bound, cumulative count), ascending by bound.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Buckets(pub Vec<(f64, f64)>);

/// The buckets of histogram `family` in `text`, by the value of `label`.
pub fn histograms(text: &str, family: &str, label: &str) -> BTreeMap<String, Buckets> {
    let bucket = format!("{family}_bucket");
    let mut out: BTreeMap<String, Buckets> = BTreeMap::new();
    for s in samples(text).filter(|s| s.name == bucket) {
        let (Some(key), Some(le)) = (s.label(label), s.label("le").and_then(parse_value)) else {
            continue;
        };
        out.entry(key.to_owned()).or_default().0.push((le, s.value));
    }
    for b in out.values_mut() {
        b.0.sort_by(|x, y| x.0.total_cmp(&y.0));
    }
    out
}

impl Buckets {
    /// What was added between `before` and `self`; None if the bounds differ
    /// or a count went down (the gateway restarted in between).
    pub fn since(&self, before: &Buckets) -> Option<Buckets> {
        if before.0.is_empty() {
            return Some(self.clone());
        }
        if before.0.len() != self.0.len() {
            return None;
        }
        self.0
            .iter()
            .zip(&before.0)
            .map(|(&(le, now), &(le0, then))| {
                (le == le0 && now >= then).then_some((le, now - then))
            })
            .collect::<Option<Vec<_>>>()
            .map(Buckets)
    }

    /// The observations counted (the `+Inf` bucket).
    pub fn count(&self) -> f64 {
        match self.0.last() {
            Some(&(le, n)) if le == f64::INFINITY => n,
            _ => 0.0,
        }
    }

    /// The `q` quantile as Prometheus' `histogram_quantile` computes it:
    /// linear within the bucket the rank falls in (from 0 for the first), the
    /// highest finite bound if it falls in `+Inf`. None without observations.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        let total = self.count();
        if total <= 0.0 || self.0.len() < 2 {
            return None;
        }
        let rank = q.clamp(0.0, 1.0) * total;
        let i = self.0.iter().position(|&(_, n)| n >= rank)?;
        let (end, n) = *self.0.get(i)?;
        if end == f64::INFINITY {
            return self.0.get(i.checked_sub(1)?).map(|&(le, _)| le);
        }
        let (start, below) = match i.checked_sub(1).and_then(|j| self.0.get(j)) {
            Some(&prev) => prev,
            None if end <= 0.0 => return Some(end),
            None => (0.0, 0.0),
        };
        if n - below <= 0.0 {
            return Some(start);
        }
        Some(start + (end - start) * (rank - below) / (n - below))
    }
}

/// The time the gateway added to one leg of the routed requests of a window.
#[derive(Serialize, Clone, Debug)]
pub struct Leg {
    /// Requests (or answers) counted in the window.
    pub count: u64,
    pub p50_ms: f64,
    pub p99_ms: f64,
}

/// The gateway-added time of a window, per leg: `request` (the caller's
/// frame read to written to the provider), `answer` (the provider's answer
/// read to written to the caller).
#[derive(Serialize, Clone, Debug)]
pub struct Added {
    pub request: Option<Leg>,
    pub answer: Option<Leg>,
}

/// [`Added`] over the window between two scrapes; None when the family is
/// in neither or no leg has observations in between.
pub fn routed_added(before: &str, after: &str) -> Option<Added> {
    let then = histograms(before, ROUTED_ADDED, "leg");
    let now = histograms(after, ROUTED_ADDED, "leg");
    let leg = |name: &str| {
        let delta = now
            .get(name)?
            .since(then.get(name).unwrap_or(&Buckets::default()))?;
        Some(Leg {
            count: delta.count() as u64,
            p50_ms: delta.quantile(0.5)? * 1000.0,
            p99_ms: delta.quantile(0.99)? * 1000.0,
        })
    };
    let added = Added {
        request: leg("request"),
        answer: leg("answer"),
    };
    (added.request.is_some() || added.answer.is_some()).then_some(added)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The shape the gateway's exporter writes (prometheus-client, text 0.0.4).
    fn exposition(request: [u64; 4], answer: [u64; 4]) -> String {
        let mut text = String::from(
            "# HELP adjunct_gateway_routed_added_seconds Time the gateway itself adds.\n\
             # TYPE adjunct_gateway_routed_added_seconds histogram\n\
             # UNIT adjunct_gateway_routed_added_seconds seconds\n",
        );
        for (leg, counts) in [("request", request), ("answer", answer)] {
            let sum = 0.0001 * counts[3] as f64;
            text += &format!(
                "adjunct_gateway_routed_added_seconds_sum{{leg=\"{leg}\"}} {sum}\n\
                 adjunct_gateway_routed_added_seconds_count{{leg=\"{leg}\"}} {}\n",
                counts[3]
            );
            for (le, n) in ["0.00001", "0.00002", "0.00004", "+Inf"].iter().zip(counts) {
                text += &format!(
                    "adjunct_gateway_routed_added_seconds_bucket{{le=\"{le}\",leg=\"{leg}\"}} {n}\n"
                );
            }
        }
        text + "adjunct_gateway_sessions{path=\"/adjunct\"} 3\n"
    }

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-9
    }

    #[test]
    fn quantiles_interpolate_within_the_bucket_of_the_window() {
        let before = exposition([10, 10, 10, 10], [0, 0, 0, 0]);
        // In the window: request 100 in (10, 20] µs, 100 in (20, 40] µs;
        // answer 50 below 10 µs, 50 above 40 µs.
        let after = exposition([10, 110, 210, 210], [50, 50, 50, 100]);
        let added = routed_added(&before, &after).unwrap();
        let request = added.request.unwrap();
        assert_eq!(request.count, 200);
        // Rank 100 of 200 is the top of the (10, 20] µs bucket.
        assert!(close(request.p50_ms, 0.020), "{}", request.p50_ms);
        // Rank 198: 98 of the 100 in (20, 40] µs.
        assert!(
            close(request.p99_ms, 0.020 + 0.020 * 0.98),
            "{}",
            request.p99_ms
        );
        let answer = added.answer.unwrap();
        // Rank 50 of the first bucket interpolates from 0; rank 99 is in
        // +Inf, reported as the highest finite bound.
        assert!(close(answer.p50_ms, 0.010), "{}", answer.p50_ms);
        assert!(close(answer.p99_ms, 0.040), "{}", answer.p99_ms);
    }

    #[test]
    fn no_family_or_no_traffic_is_no_data() {
        let other = "# TYPE adjunct_gateway_sessions gauge\nadjunct_gateway_sessions 3\n";
        assert!(routed_added(other, other).is_none());
        let same = exposition([1, 2, 3, 3], [1, 2, 3, 3]);
        assert!(routed_added(&same, &same).is_none());
        // A restart in between (counts went down) is not a window either.
        let later = exposition([0, 0, 1, 1], [0, 0, 1, 1]);
        assert!(routed_added(&same, &later).is_none());
    }

    #[test]
    fn samples_take_labels_in_any_order_and_a_timestamp() {
        let text = "x_bucket{leg=\"a\",le=\"0.5\"} 4 1700000000\nx_bucket{le=\"+Inf\", leg=\"a\"} 6\nbad line\n";
        let h = histograms(text, "x", "leg");
        assert_eq!(h["a"], Buckets(vec![(0.5, 4.0), (f64::INFINITY, 6.0)]));
    }
}
