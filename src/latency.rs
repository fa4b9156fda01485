//! Latency histograms, shared by the router's statistics and `tractor bench`.

use std::time::Duration;

use hdrhistogram::Histogram;

/// Significant digits kept: every recorded latency is within 0.1% of its
/// true value (1 part in 10^3), at any rate and with no sampling, in a fixed
/// ~200 KiB per histogram.
const SIGNIFICANT_DIGITS: u8 = 3;

/// An empty histogram of microseconds, auto-resizing from 1 µs so that no
/// latency is ever out of range.
pub fn histogram() -> Histogram<u64> {
    Histogram::new(SIGNIFICANT_DIGITS).expect("3 significant digits is within hdrhistogram's 0..=5")
}

/// Records one latency. `record` resizes the histogram to fit it (the
/// `saturating_record` shortcut does not: it clamps to the current range);
/// only a value past u64's range (never a latency) fails and is clamped.
pub fn record(histogram: &mut Histogram<u64>, latency: Duration) {
    let micros = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
    if histogram.record(micros).is_err() {
        histogram.saturating_record(micros);
    }
}
