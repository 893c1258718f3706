//! Request latencies in an HdrHistogram: three significant digits, so any
//! reported value is within 0.1 % of the true sample, from a nanosecond to a
//! day, in a fixed amount of memory whatever the run's length.

use std::time::Duration;

use hdrhistogram::Histogram;

/// Longer latencies count as this; no timeout is longer than a day.
const LONGEST_NANOS: u64 = 86_400 * 1_000_000_000;
const SIGNIFICANT_DIGITS: u8 = 3;

#[derive(Clone)]
pub struct Latencies(Histogram<u64>);

impl Default for Latencies {
    fn default() -> Self {
        Latencies(
            Histogram::new_with_bounds(1, LONGEST_NANOS, SIGNIFICANT_DIGITS)
                .expect("constant bounds that HdrHistogram accepts"),
        )
    }
}

impl Latencies {
    pub fn record(&mut self, latency: Duration) {
        let nanos = u64::try_from(latency.as_nanos()).unwrap_or(u64::MAX);
        self.0.saturating_record(nanos);
    }

    pub fn merge(&mut self, other: &Latencies) {
        self.0
            .add(&other.0)
            .expect("histograms with the same bounds take each other's values");
    }

    pub fn count(&self) -> u64 {
        self.0.len()
    }

    pub fn min(&self) -> Duration {
        self.nonzero(|histogram| histogram.min())
    }

    pub fn max(&self) -> Duration {
        self.nonzero(|histogram| histogram.max())
    }

    pub fn mean(&self) -> Duration {
        self.nonzero(|histogram| histogram.mean().round() as u64)
    }

    /// The latency that `percent` % of the requests did not exceed.
    pub fn percentile(&self, percent: f64) -> Duration {
        self.nonzero(|histogram| histogram.value_at_percentile(percent))
    }

    /// `value` of the histogram in nanoseconds, or zero for an empty one
    /// (where HdrHistogram leaves some values undefined).
    fn nonzero(&self, value: impl Fn(&Histogram<u64>) -> u64) -> Duration {
        if self.0.is_empty() {
            Duration::ZERO
        } else {
            Duration::from_nanos(value(&self.0))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn within_a_thousandth(got: Duration, want: Duration) {
        let (got, want) = (got.as_secs_f64(), want.as_secs_f64());
        assert!((got - want).abs() <= want * 0.001, "{got} vs {want}");
    }

    #[test]
    fn percentiles_of_a_uniform_run() {
        let mut latencies = Latencies::default();
        for micros in 1..=10_000u64 {
            latencies.record(Duration::from_micros(micros));
        }
        within_a_thousandth(latencies.percentile(50.0), Duration::from_micros(5_000));
        within_a_thousandth(latencies.percentile(90.0), Duration::from_micros(9_000));
        within_a_thousandth(latencies.percentile(99.0), Duration::from_micros(9_900));
        within_a_thousandth(latencies.max(), Duration::from_micros(10_000));
        within_a_thousandth(latencies.min(), Duration::from_micros(1));
        within_a_thousandth(latencies.mean(), Duration::from_nanos(5_000_500));
        assert_eq!(latencies.percentile(100.0), latencies.max());
    }

    #[test]
    fn a_single_outlier_is_the_maximum() {
        let mut latencies = Latencies::default();
        for _ in 0..999 {
            latencies.record(Duration::from_micros(100));
        }
        latencies.record(Duration::from_millis(1_234));
        within_a_thousandth(latencies.max(), Duration::from_millis(1_234));
        within_a_thousandth(latencies.percentile(99.0), Duration::from_micros(100));
        within_a_thousandth(latencies.percentile(99.95), Duration::from_millis(1_234));
    }

    #[test]
    fn latencies_past_a_day_count_as_a_day() {
        let mut latencies = Latencies::default();
        latencies.record(Duration::from_secs(10 * 86_400));
        within_a_thousandth(latencies.max(), Duration::from_secs(86_400));
    }

    #[test]
    fn merging_adds_the_samples() {
        let mut left = Latencies::default();
        let mut right = Latencies::default();
        left.record(Duration::from_micros(10));
        right.record(Duration::from_micros(30));
        left.merge(&right);
        assert_eq!(left.count(), 2);
        within_a_thousandth(left.min(), Duration::from_micros(10));
        within_a_thousandth(left.max(), Duration::from_micros(30));
        within_a_thousandth(left.mean(), Duration::from_micros(20));
    }

    #[test]
    fn an_empty_run_reports_zeros() {
        let latencies = Latencies::default();
        assert_eq!(latencies.percentile(99.0), Duration::ZERO);
        assert_eq!(latencies.min(), Duration::ZERO);
        assert_eq!(latencies.max(), Duration::ZERO);
        assert_eq!(latencies.mean(), Duration::ZERO);
    }
}
