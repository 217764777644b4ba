//! The standard `process_*` families (the names every Prometheus client
//! library uses), read from /proc at each scrape. Linux only: elsewhere, and
//! for any file that cannot be read, the family is simply left out.
//!
//! Must not keep state or fail a scrape.

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Unit;

/// Encodes the process families on each scrape.
#[derive(Debug)]
pub struct ProcessCollector;

/// One reading of the process; `None` where /proc did not tell.
#[derive(Debug, Default, PartialEq)]
pub struct Reading {
    pub cpu_seconds: Option<f64>,
    pub resident_bytes: Option<u64>,
    pub virtual_bytes: Option<u64>,
    pub open_fds: Option<u64>,
    pub max_fds: Option<u64>,
    pub start_time_seconds: Option<f64>,
}

impl Reading {
    #[cfg(target_os = "linux")]
    pub fn now() -> Reading {
        use procfs::process::{LimitValue, Process};
        let Ok(me) = Process::myself() else {
            return Reading::default();
        };
        let stat = me.stat().ok();
        let ticks = procfs::ticks_per_second() as f64;
        let max_fds = me
            .limits()
            .ok()
            .and_then(|l| match l.max_open_files.soft_limit {
                LimitValue::Value(n) => Some(n),
                LimitValue::Unlimited => None,
            });
        Reading {
            cpu_seconds: stat.as_ref().map(|s| (s.utime + s.stime) as f64 / ticks),
            resident_bytes: stat
                .as_ref()
                .map(|s| s.rss.saturating_mul(procfs::page_size())),
            virtual_bytes: stat.as_ref().map(|s| s.vsize),
            open_fds: me.fd_count().ok().map(|n| n as u64),
            max_fds,
            start_time_seconds: stat.as_ref().and_then(|s| {
                let boot = procfs::boot_time_secs().ok()?;
                Some(boot as f64 + s.starttime as f64 / ticks)
            }),
        }
    }

    #[cfg(not(target_os = "linux"))]
    pub fn now() -> Reading {
        Reading::default()
    }
}

impl Collector for ProcessCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let r = Reading::now();
        if let Some(v) = r.cpu_seconds {
            let m = ConstCounter::new(v);
            let help = "Total user and system CPU time spent in seconds.";
            m.encode(encoder.encode_descriptor(
                "process_cpu",
                help,
                Some(&Unit::Seconds),
                m.metric_type(),
            )?)?;
        }
        let gauges: [(&str, &str, Option<Unit>, Option<f64>); 5] = [
            (
                "process_resident_memory",
                "Resident memory size in bytes.",
                Some(Unit::Bytes),
                r.resident_bytes.map(|v| v as f64),
            ),
            (
                "process_virtual_memory",
                "Virtual memory size in bytes.",
                Some(Unit::Bytes),
                r.virtual_bytes.map(|v| v as f64),
            ),
            (
                "process_open_fds",
                "Number of open file descriptors.",
                None,
                r.open_fds.map(|v| v as f64),
            ),
            (
                "process_max_fds",
                "Maximum number of open file descriptors.",
                None,
                r.max_fds.map(|v| v as f64),
            ),
            (
                "process_start_time",
                "Start time of the process since unix epoch in seconds.",
                Some(Unit::Seconds),
                r.start_time_seconds,
            ),
        ];
        for (name, help, unit, value) in gauges {
            let Some(value) = value else { continue };
            let m = ConstGauge::new(value);
            m.encode(encoder.encode_descriptor(name, help, unit.as_ref(), m.metric_type())?)?;
        }
        Ok(())
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    #[test]
    fn a_reading_of_this_process_is_plausible() {
        let r = Reading::now();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs_f64();
        let start = r.start_time_seconds.unwrap();
        // Boot time is whole seconds, so allow one second of rounding.
        assert!(
            start <= now + 1.0 && start > now - 24.0 * 3600.0,
            "{start} vs {now}"
        );
        assert!(r.cpu_seconds.unwrap() >= 0.0);
        assert!(r.resident_bytes.unwrap() > 0);
        assert!(r.virtual_bytes.unwrap() >= r.resident_bytes.unwrap());
        let open = r.open_fds.unwrap();
        // stdin, stdout, stderr at least.
        assert!(open >= 3, "{open}");
        if let Some(max) = r.max_fds {
            assert!(max >= open);
        }
    }
}
