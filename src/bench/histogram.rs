//! A latency histogram of bounded size: exact below 256 ns, and above that
//! 128 buckets per power of two, so any reported percentile is within 0.8 % of
//! the true sample, whatever the run's length.

use std::time::Duration;

/// Sub-buckets per power of two, as a power of two: 2^7 = 128 gives a relative
/// width of at most 1/128 per bucket.
const SUB_BITS: u32 = 7;
const SUB_COUNT: usize = 1 << SUB_BITS;
/// Values below this are counted exactly, one bucket each.
const EXACT_BELOW: u64 = 1 << (SUB_BITS + 1);
/// Enough buckets for any `u64` of nanoseconds: the largest shift is
/// 63 - SUB_BITS, and each shift holds SUB_COUNT buckets above the first ones.
const BUCKETS: usize = (64 - SUB_BITS as usize + 1) * SUB_COUNT;

#[derive(Clone)]
pub struct Histogram {
    counts: Vec<u64>,
    count: u64,
    sum_nanos: u128,
    min: u64,
    max: u64,
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram {
            counts: vec![0; BUCKETS],
            count: 0,
            sum_nanos: 0,
            min: u64::MAX,
            max: 0,
        }
    }
}

fn bucket_of(nanos: u64) -> usize {
    if nanos < EXACT_BELOW {
        return nanos as usize;
    }
    let magnitude = 63 - nanos.leading_zeros();
    let shift = magnitude - SUB_BITS;
    // In [SUB_COUNT, 2 * SUB_COUNT): the leading SUB_BITS + 1 bits.
    let leading = (nanos >> shift) as usize;
    ((shift as usize) << SUB_BITS) + leading
}

/// The largest value that falls into `bucket`.
fn highest_in(bucket: usize) -> u64 {
    if (bucket as u64) < EXACT_BELOW {
        return bucket as u64;
    }
    let shift = (bucket >> SUB_BITS) - 1;
    let leading = (bucket - (shift << SUB_BITS)) as u64;
    (leading << shift) + ((1 << shift) - 1)
}

fn nanos(duration: Duration) -> u64 {
    u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX)
}

impl Histogram {
    pub fn record(&mut self, latency: Duration) {
        let value = nanos(latency);
        self.counts[bucket_of(value)] += 1;
        self.count += 1;
        self.sum_nanos += u128::from(value);
        self.min = self.min.min(value);
        self.max = self.max.max(value);
    }

    pub fn merge(&mut self, other: &Histogram) {
        for (mine, theirs) in self.counts.iter_mut().zip(&other.counts) {
            *mine += theirs;
        }
        self.count += other.count;
        self.sum_nanos += other.sum_nanos;
        self.min = self.min.min(other.min);
        self.max = self.max.max(other.max);
    }

    pub fn count(&self) -> u64 {
        self.count
    }

    pub fn min(&self) -> Duration {
        Duration::from_nanos(if self.count == 0 { 0 } else { self.min })
    }

    pub fn max(&self) -> Duration {
        Duration::from_nanos(self.max)
    }

    pub fn mean(&self) -> Duration {
        match u128::from(self.count) {
            0 => Duration::ZERO,
            count => {
                Duration::from_nanos(u64::try_from(self.sum_nanos / count).unwrap_or(u64::MAX))
            }
        }
    }

    /// The smallest recorded latency that at least `percent` % of the samples
    /// do not exceed, rounded up to its bucket's upper edge (never past the
    /// largest sample).
    pub fn percentile(&self, percent: f64) -> Duration {
        if self.count == 0 {
            return Duration::ZERO;
        }
        let wanted = ((percent / 100.0) * self.count as f64).ceil() as u64;
        let rank = wanted.clamp(1, self.count);
        let mut seen = 0;
        for (bucket, &count) in self.counts.iter().enumerate() {
            seen += count;
            if seen >= rank {
                let edge = highest_in(bucket).clamp(self.min, self.max);
                return Duration::from_nanos(edge);
            }
        }
        self.max()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_contiguous_and_ordered() {
        let mut previous_high = None;
        for bucket in 0..BUCKETS {
            let high = highest_in(bucket);
            if let Some(previous) = previous_high {
                assert!(high > previous, "bucket {bucket} does not grow");
            }
            assert_eq!(bucket_of(high), bucket, "upper edge of bucket {bucket}");
            previous_high = Some(high);
        }
        assert_eq!(bucket_of(u64::MAX), BUCKETS - 1);
    }

    #[test]
    fn every_value_lands_in_a_bucket_at_most_one_percent_wide() {
        for value in [
            0,
            1,
            255,
            256,
            257,
            1_000,
            65_535,
            1_000_000,
            123_456_789,
            u64::MAX / 3,
        ] {
            let high = highest_in(bucket_of(value));
            assert!(high >= value);
            assert!(
                (high - value) as f64 <= value as f64 * 0.01,
                "{value} -> {high}"
            );
        }
    }

    #[test]
    fn percentiles_of_a_uniform_run() {
        let mut histogram = Histogram::default();
        for micros in 1..=10_000u64 {
            histogram.record(Duration::from_micros(micros));
        }
        let within_one_percent = |got: Duration, want_micros: f64| {
            let got = got.as_secs_f64() * 1e6;
            assert!(
                (got - want_micros).abs() <= want_micros * 0.01,
                "{got} vs {want_micros}"
            );
        };
        within_one_percent(histogram.percentile(50.0), 5_000.0);
        within_one_percent(histogram.percentile(90.0), 9_000.0);
        within_one_percent(histogram.percentile(99.0), 9_900.0);
        assert_eq!(histogram.percentile(100.0), Duration::from_micros(10_000));
        assert_eq!(histogram.max(), Duration::from_micros(10_000));
        assert_eq!(histogram.min(), Duration::from_micros(1));
        within_one_percent(histogram.mean(), 5_000.5);
    }

    #[test]
    fn a_single_outlier_is_the_maximum_exactly() {
        let mut histogram = Histogram::default();
        for _ in 0..999 {
            histogram.record(Duration::from_micros(100));
        }
        histogram.record(Duration::from_millis(1_234));
        assert_eq!(histogram.max(), Duration::from_millis(1_234));
        assert!(histogram.percentile(99.0) <= Duration::from_micros(101));
        assert_eq!(histogram.percentile(99.95), Duration::from_millis(1_234));
    }

    #[test]
    fn merging_adds_the_samples() {
        let mut left = Histogram::default();
        let mut right = Histogram::default();
        left.record(Duration::from_micros(10));
        right.record(Duration::from_micros(30));
        left.merge(&right);
        assert_eq!(left.count(), 2);
        assert_eq!(left.min(), Duration::from_micros(10));
        assert_eq!(left.max(), Duration::from_micros(30));
        assert_eq!(left.mean(), Duration::from_micros(20));
    }

    #[test]
    fn an_empty_histogram_reports_zeros() {
        let histogram = Histogram::default();
        assert_eq!(histogram.percentile(99.0), Duration::ZERO);
        assert_eq!(histogram.min(), Duration::ZERO);
        assert_eq!(histogram.mean(), Duration::ZERO);
    }
}
