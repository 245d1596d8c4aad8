//! HdrHistogram's percentile-distribution text format (`.hgrm`): a writer
//! that follows the Java implementation's `outputPercentileDistribution`
//! line for line, and a parser for what it (or any HdrHistogram tool)
//! writes.
//!
//! ```text
//!        Value     Percentile TotalCount 1/(1-Percentile)
//!
//!       29.000 0.000000000000          1           1.00
//!       ...
//!     2047.000 1.000000000000      10000
//! #[Mean    =       35.120, StdDeviation   =       12.004]
//! #[Max     =     2047.000, Total count    =        10000]
//! #[Buckets =           22, SubBuckets     =         2048]
//! ```
//!
//! The `hdrhistogram` crate has no writer for this format; its quantile
//! iterator also differs from Java's in details, so the iteration is done
//! here over the recorded values, exactly as Java's `PercentileIterator`
//! steps: percentile levels advance in `ticks_per_half_distance` equal steps
//! per halving of the distance to 100 %, every level reached at a value
//! yields one line, and the last recorded value yields one line followed by
//! the 100 % line.

use std::fmt::Write as _;

use hdrhistogram::Histogram;

/// Java's default: 5 percentile ticks per half distance to 100 %.
pub const TICKS_PER_HALF_DISTANCE: u32 = 5;

/// Formats `h` as a percentile distribution. Values are divided by `scale`
/// (`outputValueUnitScalingRatio`; 1.0 prints them in recorded units).
pub fn percentile_distribution(h: &Histogram<u64>, ticks_per_half_distance: u32, scale: f64) -> String {
    assert!(ticks_per_half_distance > 0, "ticks per half distance must be positive");
    let digits = usize::from(h.sigfig());
    let mut out = String::new();
    let _ = write!(out, "{:>12} {:>14} {:>10} {:>14}\n\n", "Value", "Percentile", "TotalCount", "1/(1-Percentile)");

    let total = h.len();
    if total > 0 {
        let mut level = 0.0_f64; // percent, as Java's percentileLevelToIterateTo
        let mut cumulative = 0u64;
        let mut recorded = h.iter_recorded().peekable();
        while let Some(v) = recorded.next() {
            cumulative += v.count_at_value();
            let value = v.value_iterated_to() as f64 / scale;
            let current = 100.0 * cumulative as f64 / total as f64;
            let last = recorded.peek().is_none() || cumulative >= total;
            while current >= level {
                let fraction = level / 100.0;
                let _ = writeln!(out, "{value:12.digits$} {fraction:2.12} {cumulative:10} {:14.2}", 1.0 / (1.0 - fraction));
                level += 100.0 / ticks_for(ticks_per_half_distance, level);
                if last {
                    // Java: once the total count is reached, one extra step to 100 %.
                    let _ = writeln!(out, "{value:12.digits$} {:2.12} {cumulative:10}", 1.0);
                    break;
                }
            }
            if last {
                break;
            }
        }
    }

    let _ = writeln!(out, "#[Mean    = {:12.digits$}, StdDeviation   = {:12.digits$}]", h.mean() / scale, h.stdev() / scale);
    let max = if total == 0 { 0.0 } else { h.max() as f64 / scale };
    let _ = writeln!(out, "#[Max     = {max:12.digits$}, Total count    = {total:12}]");
    let _ = writeln!(out, "#[Buckets = {:12}, SubBuckets     = {:12}]", h.buckets(), sub_bucket_count(h.sigfig()));
    out
}

/// Java's `percentileReportingTicks`: the step at `level` % is 100 / this.
fn ticks_for(ticks_per_half_distance: u32, level: f64) -> f64 {
    let halvings = ((100.0 / (100.0 - level)).ln() / 2f64.ln()) as i64 + 1;
    f64::from(ticks_per_half_distance) * 2f64.powi(halvings as i32)
}

/// Sub-buckets per bucket: the power of two that holds 2 × 10^sigfig.
fn sub_bucket_count(sigfig: u8) -> u64 {
    (2 * 10u64.pow(u32::from(sigfig))).next_power_of_two()
}

/// One line of a percentile distribution.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Row {
    /// Value at this percentile, in the file's units.
    pub value: f64,
    /// Percentile as a fraction in [0, 1].
    pub percentile: f64,
    /// Samples at or below `value`.
    pub total_count: u64,
}

/// A parsed `.hgrm` file.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Distribution {
    pub rows: Vec<Row>,
    pub mean: Option<f64>,
    pub stddev: Option<f64>,
    pub max: Option<f64>,
    pub total_count: Option<u64>,
}

impl Distribution {
    /// The value at fraction `q` (smallest row whose percentile ≥ q).
    pub fn value_at(&self, q: f64) -> Option<f64> {
        self.rows.iter().find(|r| r.percentile >= q).or(self.rows.last()).map(|r| r.value)
    }
}

/// Parses a percentile distribution: blank lines, the column header and
/// unknown `#` lines are skipped; footer values are read when present.
pub fn parse(text: &str) -> Result<Distribution, String> {
    let mut d = Distribution::default();
    for (no, line) in text.lines().enumerate() {
        let t = line.trim();
        if t.is_empty() || t.starts_with("Value") {
            continue;
        }
        if let Some(footer) = t.strip_prefix("#[").and_then(|f| f.strip_suffix(']')) {
            for part in footer.split(',') {
                let Some((k, v)) = part.split_once('=') else { continue };
                let v = v.trim();
                match k.trim() {
                    "Mean" => d.mean = v.parse().ok(),
                    "StdDeviation" => d.stddev = v.parse().ok(),
                    "Max" => d.max = v.parse().ok(),
                    "Total count" => d.total_count = v.parse().ok(),
                    _ => {}
                }
            }
            continue;
        }
        if t.starts_with('#') {
            continue;
        }
        let mut cols = t.split_whitespace();
        let bad = || format!("line {}: expected `Value Percentile TotalCount [1/(1-Percentile)]`, got {t:?}", no + 1);
        let value: f64 = cols.next().and_then(|c| c.parse().ok()).ok_or_else(bad)?;
        let percentile: f64 = cols.next().and_then(|c| c.parse().ok()).ok_or_else(bad)?;
        let total_count: u64 = cols.next().and_then(|c| c.parse().ok()).ok_or_else(bad)?;
        if !(0.0..=1.0).contains(&percentile) || !value.is_finite() {
            return Err(bad());
        }
        d.rows.push(Row { value, percentile, total_count });
    }
    if d.rows.is_empty() && d.total_count.unwrap_or(0) > 0 {
        return Err("no percentile rows".into());
    }
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hist(values: &[(u64, u64)]) -> Histogram<u64> {
        let mut h = Histogram::<u64>::new_with_bounds(1, 3_600_000_000, 3).unwrap();
        for &(v, n) in values {
            h.record_n(v, n).unwrap();
        }
        h
    }

    /// 1..=10, once each: checked against the layout (and the levels) that
    /// HdrHistogram's Java `outputPercentileDistribution(out, 5, 1.0)` prints.
    #[test]
    fn small_histogram_layout() {
        let h = hist(&(1..=10).map(|v| (v, 1)).collect::<Vec<_>>());
        let text = percentile_distribution(&h, 5, 1.0);
        let expected = "       Value     Percentile TotalCount 1/(1-Percentile)

       1.000 0.000000000000          1           1.00
       1.000 0.100000000000          1           1.11
       2.000 0.200000000000          2           1.25
       3.000 0.300000000000          3           1.43
       4.000 0.400000000000          4           1.67
       5.000 0.500000000000          5           2.00
       6.000 0.550000000000          6           2.22
       6.000 0.600000000000          6           2.50
       7.000 0.650000000000          7           2.86
       7.000 0.700000000000          7           3.33
       8.000 0.750000000000          8           4.00
       8.000 0.775000000000          8           4.44
       8.000 0.800000000000          8           5.00
       9.000 0.825000000000          9           5.71
       9.000 0.850000000000          9           6.67
       9.000 0.875000000000          9           8.00
       9.000 0.887500000000          9           8.89
       9.000 0.900000000000          9          10.00
      10.000 0.912500000000         10          11.43
      10.000 1.000000000000         10
#[Mean    =        5.500, StdDeviation   =        2.872]
#[Max     =       10.000, Total count    =           10]
#[Buckets =           22, SubBuckets     =         2048]
";
        assert_eq!(text, expected, "\n{text}");
    }

    /// The expectation of hdr-histogram-js's own test of its port of Java's
    /// `outputPercentileDistribution` (25, 50, 75 in a 1..2^53-1 histogram).
    #[test]
    fn matches_reference_implementation_output() {
        let mut h = Histogram::<u64>::new_with_bounds(1, (1 << 53) - 1, 3).unwrap();
        for v in [25, 50, 75] {
            h.record(v).unwrap();
        }
        let expected = "       Value     Percentile TotalCount 1/(1-Percentile)

      25.000 0.000000000000          1           1.00
      25.000 0.100000000000          1           1.11
      25.000 0.200000000000          1           1.25
      25.000 0.300000000000          1           1.43
      50.000 0.400000000000          2           1.67
      50.000 0.500000000000          2           2.00
      50.000 0.550000000000          2           2.22
      50.000 0.600000000000          2           2.50
      50.000 0.650000000000          2           2.86
      75.000 0.700000000000          3           3.33
      75.000 1.000000000000          3
#[Mean    =       50.000, StdDeviation   =       20.412]
#[Max     =       75.000, Total count    =            3]
#[Buckets =           43, SubBuckets     =         2048]
";
        assert_eq!(percentile_distribution(&h, 5, 1.0), expected);
    }

    #[test]
    fn values_beyond_sub_bucket_resolution_print_highest_equivalent() {
        // 5000 lies in the third bucket (resolution 4 units at 3 sigfigs): 5003.
        let h = hist(&[(100, 3), (5000, 1)]);
        assert_eq!(h.highest_equivalent(5000), 5003);
        let text = percentile_distribution(&h, 5, 1.0);
        let rows: Vec<&str> = text.lines().filter(|l| !l.is_empty() && !l.starts_with('#')).skip(1).collect();
        assert_eq!(rows.first().unwrap().trim_start(), "100.000 0.000000000000          3           1.00");
        assert_eq!(rows.last().unwrap().trim_start(), "5003.000 1.000000000000          4");
        assert!(text.contains("#[Max     =     5003.000, Total count    =            4]"), "{text}");
    }

    #[test]
    fn scaling_divides_values() {
        let h = hist(&[(1500, 1)]);
        let text = percentile_distribution(&h, 5, 1000.0);
        assert!(text.contains("       1.500 0.000000000000          1           1.00\n"), "{text}");
        assert!(text.contains("       1.500 1.000000000000          1\n"), "{text}");
    }

    #[test]
    fn empty_histogram_has_header_and_footer_only() {
        let h = hist(&[]);
        let text = percentile_distribution(&h, 5, 1.0);
        assert_eq!(text.lines().count(), 5, "{text}");
        let d = parse(&text).unwrap();
        assert!(d.rows.is_empty());
        assert_eq!(d.total_count, Some(0));
    }

    #[test]
    fn parse_round_trips_the_writer() {
        let values: Vec<(u64, u64)> = (0..2000u64).map(|i| (20 + (i * i) % 977, 1 + i % 3)).collect();
        let h = hist(&values);
        let text = percentile_distribution(&h, 5, 1.0);
        let d = parse(&text).unwrap();
        assert_eq!(d.total_count, Some(h.len()));
        assert_eq!(d.max, Some(h.max() as f64));
        assert_eq!(d.rows.last().unwrap().percentile, 1.0);
        assert_eq!(d.rows.last().unwrap().total_count, h.len());
        // Rows are monotone in value, percentile and count.
        for w in d.rows.windows(2) {
            assert!(w[0].value <= w[1].value && w[0].percentile <= w[1].percentile && w[0].total_count <= w[1].total_count);
        }
        for q in [0.5, 0.9, 0.99] {
            let v = d.value_at(q).unwrap();
            assert!((v - h.value_at_quantile(q) as f64).abs() <= 1.0, "q {q}: {v} vs {}", h.value_at_quantile(q));
        }
    }

    #[test]
    fn parse_rejects_garbage() {
        assert!(parse("       Value     Percentile\n\n  12.0 zero 3\n").is_err());
        assert!(parse("  12.0 1.5 3 1.0\n").is_err());
    }
}
