//! What a run measured, for a person (text) or a script (JSON).

use std::fmt::{self, Write as _};
use std::time::Duration;

use super::{Config, Tally};

pub struct Report {
    /// The run's settings, with the thread count actually used.
    pub config: Config,
    pub tally: Tally,
    /// From the first connect to the end of the last request.
    pub elapsed: Duration,
    /// CPU time the load generator itself used, user and system.
    pub cpu: Duration,
    /// Connections the kernel dropped because a listen queue was full, on the
    /// whole machine during the run; `None` where the counter is not readable.
    pub listen_drops: Option<u64>,
}

/// Megabytes of 10^6 bytes, as network rates are usually given.
const MEGABYTE: f64 = 1e6;

impl Report {
    pub fn requests_per_second(&self) -> f64 {
        per_second(self.tally.completed as f64, self.elapsed)
    }

    pub fn megabytes_per_second(&self) -> f64 {
        per_second(self.tally.bytes as f64 / MEGABYTE, self.elapsed)
    }

    /// The generator's own CPU time per finished request, served or failed.
    pub fn cpu_per_request(&self) -> Duration {
        let finished = self.tally.completed + self.tally.failed();
        match u32::try_from(finished) {
            Ok(0) => Duration::ZERO,
            Ok(finished) => self.cpu / finished,
            Err(_) => Duration::from_secs_f64(self.cpu.as_secs_f64() / finished as f64),
        }
    }

    /// Every response was as expected.
    pub fn clean(&self) -> bool {
        self.tally.failed() == 0
    }

    pub fn to_json(&self) -> String {
        let latency = &self.tally.latency;
        let micros = |duration: Duration| format!("{:.1}", duration.as_secs_f64() * 1e6);
        let files: Vec<String> = self
            .config
            .protocol
            .names()
            .into_iter()
            .map(json_string)
            .collect();
        let failures: Vec<String> = self
            .tally
            .failures
            .iter()
            .map(|(failure, count)| format!("{}: {count}", json_string(&failure.key())))
            .collect();
        let mut json = String::from("{");
        let mut field = |name: &str, value: String| {
            if json.len() > 1 {
                json.push_str(", ");
            }
            let _ = write!(json, "{}: {value}", json_string(name));
        };
        field("target", json_string(&self.config.target.to_string()));
        field("protocol", json_string(self.config.protocol.name()));
        field("files", format!("[{}]", files.join(", ")));
        field("concurrency", self.config.concurrency.to_string());
        field("threads", self.config.threads.to_string());
        field("request_limit", self.config.requests.to_string());
        field(
            "duration_limit_s",
            format!("{:.3}", self.config.duration.as_secs_f64()),
        );
        field("completed", self.tally.completed.to_string());
        field("failed", self.tally.failed().to_string());
        field("errors", format!("{{{}}}", failures.join(", ")));
        field("abandoned", self.tally.abandoned.to_string());
        field("bytes", self.tally.bytes.to_string());
        field("elapsed_s", format!("{:.6}", self.elapsed.as_secs_f64()));
        field(
            "requests_per_second",
            format!("{:.1}", self.requests_per_second()),
        );
        field(
            "megabytes_per_second",
            format!("{:.3}", self.megabytes_per_second()),
        );
        field(
            "latency_us",
            format!(
                "{{\"min\": {}, \"mean\": {}, \"p50\": {}, \"p90\": {}, \"p99\": {}, \"max\": {}}}",
                micros(latency.min()),
                micros(latency.mean()),
                micros(latency.percentile(50.0)),
                micros(latency.percentile(90.0)),
                micros(latency.percentile(99.0)),
                micros(latency.max()),
            ),
        );
        field("client_cpu_s", format!("{:.3}", self.cpu.as_secs_f64()));
        field("client_cpu_us_per_request", micros(self.cpu_per_request()));
        field(
            "listen_drops",
            self.listen_drops
                .map_or_else(|| "null".to_string(), |drops| drops.to_string()),
        );
        json.push('}');
        json
    }
}

fn per_second(amount: f64, elapsed: Duration) -> f64 {
    match elapsed.as_secs_f64() {
        seconds if seconds > 0.0 => amount / seconds,
        _ => 0.0,
    }
}

/// A JSON string literal. File names are printable ASCII, but the escape
/// keeps the output valid whatever it is given.
fn json_string(text: &str) -> String {
    let mut quoted = String::with_capacity(text.len() + 2);
    quoted.push('"');
    for character in text.chars() {
        match character {
            '"' => quoted.push_str("\\\""),
            '\\' => quoted.push_str("\\\\"),
            control if u32::from(control) < 0x20 => {
                let _ = write!(quoted, "\\u{:04x}", u32::from(control));
            }
            other => quoted.push(other),
        }
    }
    quoted.push('"');
    quoted
}

/// A duration in the unit that keeps it readable.
fn readable(duration: Duration) -> String {
    let micros = duration.as_secs_f64() * 1e6;
    if micros < 1_000.0 {
        format!("{micros:.0} µs")
    } else if micros < 1_000_000.0 {
        format!("{:.2} ms", micros / 1e3)
    } else {
        format!("{:.3} s", micros / 1e6)
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let config = &self.config;
        let tally = &self.tally;
        let latency = &tally.latency;
        writeln!(
            f,
            "target       {} ({}: {}), concurrency {} on {} thread{}, at most {} requests or {:.1} s",
            config.target,
            config.protocol.name(),
            config.protocol.names().join(", "),
            config.concurrency,
            config.threads,
            if config.threads == 1 { "" } else { "s" },
            config.requests,
            config.duration.as_secs_f64()
        )?;
        writeln!(
            f,
            "served       {} requests in {:.3} s: {:.0} requests/s, {:.1} MB/s ({} bytes)",
            tally.completed,
            self.elapsed.as_secs_f64(),
            self.requests_per_second(),
            self.megabytes_per_second(),
            tally.bytes
        )?;
        writeln!(
            f,
            "latency      min {}, mean {}, p50 {}, p90 {}, p99 {}, max {}",
            readable(latency.min()),
            readable(latency.mean()),
            readable(latency.percentile(50.0)),
            readable(latency.percentile(90.0)),
            readable(latency.percentile(99.0)),
            readable(latency.max())
        )?;
        if tally.failures.is_empty() {
            writeln!(f, "errors       none")?;
        } else {
            let kinds: Vec<String> = tally
                .failures
                .iter()
                .map(|(failure, count)| format!("{} {count}", failure.key()))
                .collect();
            writeln!(f, "errors       {} ({})", tally.failed(), kinds.join(", "))?;
        }
        if tally.abandoned > 0 {
            writeln!(
                f,
                "abandoned    {} requests in flight when the time ran out",
                tally.abandoned
            )?;
        }
        writeln!(
            f,
            "client CPU   {:.3} s, {} per request",
            self.cpu.as_secs_f64(),
            readable(self.cpu_per_request())
        )?;
        if let Some(drops) = self.listen_drops {
            writeln!(f, "listen drops {drops} (whole machine)")?;
        }
        Ok(())
    }
}

/// The kernel's count of connections dropped at a full listen queue
/// (TcpExt ListenDrops in /proc/net/netstat).
pub fn listen_drops() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/net/netstat").ok()?;
    let mut lines = text.lines().filter(|line| line.starts_with("TcpExt:"));
    let names = lines.next()?.split_whitespace();
    let values = lines.next()?.split_whitespace();
    names
        .zip(values)
        .find(|(name, _)| *name == "ListenDrops")
        .and_then(|(_, value)| value.parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::http::HttpPath;
    use crate::bench::{Failure, Protocol};
    use crate::protocol::FileName;

    fn report() -> Report {
        report_of(Protocol::Tcpfile(vec![
            FileName::parse(b"a \"b\".bin").expect("valid name"),
        ]))
    }

    fn report_of(protocol: Protocol) -> Report {
        let mut tally = Tally::default();
        for _ in 0..4 {
            tally.completed += 1;
            tally.bytes += 4096;
            tally.latency.record(Duration::from_micros(250));
        }
        tally.failures.insert(Failure::Status(3), 2);
        tally.failures.insert(Failure::ShortContent, 1);
        Report {
            config: Config {
                target: "127.0.0.1:4000".parse().expect("literal address"),
                protocol,
                concurrency: 2,
                requests: 7,
                duration: Duration::from_secs(5),
                timeout: Duration::from_secs(1),
                threads: 1,
                expected_size: None,
            },
            tally,
            elapsed: Duration::from_millis(500),
            cpu: Duration::from_millis(7),
            listen_drops: Some(0),
        }
    }

    #[test]
    fn json_report_has_rates_latency_and_errors_by_kind() {
        let json = report().to_json();
        assert!(
            json.contains(r#""protocol": "tcpfile", "files": ["a \"b\".bin"]"#),
            "{json}"
        );
        assert!(json.contains(r#""completed": 4, "failed": 3"#), "{json}");
        assert!(
            json.contains(r#""errors": {"status_FILE_NOT_FOUND": 2, "short_content": 1}"#),
            "{json}"
        );
        assert!(json.contains(r#""requests_per_second": 8.0"#), "{json}");
        assert!(json.contains(r#""megabytes_per_second": 0.033"#), "{json}");
        // 250 µs rounded up to the histogram's 128 ns resolution there.
        assert!(json.contains(r#""p99": 250.1"#), "{json}");
        assert!(
            json.contains(r#""client_cpu_us_per_request": 1000.0"#),
            "{json}"
        );
        assert!(json.starts_with('{') && json.ends_with('}'));
    }

    #[test]
    fn text_report_names_every_error_kind() {
        let text = report().to_string();
        assert!(
            text.contains("errors       3 (status_FILE_NOT_FOUND 2, short_content 1)"),
            "{text}"
        );
        assert!(text.contains("8 requests/s"), "{text}");
        assert!(text.contains("p99 250 µs"), "{text}");
    }

    #[test]
    fn an_http_report_names_its_protocol_and_paths() {
        let protocol = Protocol::Http {
            host: "127.0.0.1:4000".into(),
            paths: vec![HttpPath::parse(b"small.bin").expect("valid path")],
        };
        let report = report_of(protocol);
        let json = report.to_json();
        assert!(
            json.contains(r#""protocol": "http", "files": ["/small.bin"]"#),
            "{json}"
        );
        let text = report.to_string();
        assert!(
            text.starts_with("target       127.0.0.1:4000 (http: /small.bin), "),
            "{text}"
        );
    }

    #[test]
    fn durations_read_in_a_fitting_unit() {
        assert_eq!(readable(Duration::from_micros(87)), "87 µs");
        assert_eq!(readable(Duration::from_micros(12_345)), "12.35 ms");
        assert_eq!(readable(Duration::from_millis(2_500)), "2.500 s");
    }
}
