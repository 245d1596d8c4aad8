//! Quantiles from the cumulative buckets of a Prometheus histogram, computed
//! exactly as PromQL's `histogram_quantile` does (linear interpolation inside
//! the bucket holding the rank; the lowest bucket starts at 0; a rank in the
//! `+Inf` bucket answers the highest finite bound). `encapd stats` uses it so
//! that its percentiles are the numbers a dashboard shows for the same window.
//!
//! Pure; never panics, whatever the buckets (unsorted, non-monotonic, NaN).

/// The `q`-quantile (0 ≤ q ≤ 1) of the observations in `buckets`, given as
/// `(upper bound, cumulative count)` pairs in any order. `None` when there
/// is nothing to answer from: no observations, no `+Inf` bucket, fewer than
/// two buckets, or `q` outside [0, 1] or NaN.
pub fn histogram_quantile(q: f64, buckets: &[(f64, f64)]) -> Option<f64> {
    if !(0.0..=1.0).contains(&q) {
        return None;
    }
    let mut sorted: Vec<(f64, f64)> = buckets.iter().copied().filter(|(le, n)| !le.is_nan() && !n.is_nan()).collect();
    sorted.sort_by(|a, b| a.0.total_cmp(&b.0));
    if sorted.len() < 2 || sorted.last().map(|b| b.0) != Some(f64::INFINITY) {
        return None;
    }
    // Counts scraped at slightly different moments can dip; PromQL evens
    // them out the same way.
    let mut highest = 0.0f64;
    for bucket in &mut sorted {
        highest = highest.max(bucket.1);
        bucket.1 = highest;
    }
    let observations = sorted.last().map_or(0.0, |b| b.1);
    if observations <= 0.0 {
        return None;
    }
    let mut rank = q * observations;
    let b = sorted.iter().position(|bucket| bucket.1 >= rank).unwrap_or(sorted.len() - 1);
    if b == sorted.len() - 1 {
        return Some(sorted[sorted.len() - 2].0);
    }
    if b == 0 && sorted[0].0 <= 0.0 {
        return Some(sorted[0].0);
    }
    let (start, below) = if b == 0 { (0.0, 0.0) } else { sorted[b - 1] };
    let (end, upto) = sorted[b];
    rank -= below;
    let in_bucket = upto - below;
    Some(if in_bucket > 0.0 { start + (end - start) * (rank / in_bucket) } else { end })
}

#[cfg(test)]
mod tests {
    use super::*;

    const INF: f64 = f64::INFINITY;

    #[test]
    fn interpolates_inside_the_bucket_like_promql() {
        // 10 observations ≤ 1, 10 more in (1, 2], none above.
        let b = [(1.0, 10.0), (2.0, 20.0), (INF, 20.0)];
        assert_eq!(histogram_quantile(0.5, &b), Some(1.0));
        assert_eq!(histogram_quantile(0.75, &b), Some(1.5));
        assert_eq!(histogram_quantile(0.25, &b), Some(0.5), "the lowest bucket starts at 0");
        assert_eq!(histogram_quantile(1.0, &b), Some(2.0));
        assert_eq!(histogram_quantile(0.0, &b), Some(0.0));
    }

    #[test]
    fn ranks_in_the_inf_bucket_answer_the_highest_finite_bound() {
        let b = [(INF, 10.0), (1.0, 2.0), (0.5, 1.0)];
        assert_eq!(histogram_quantile(0.99, &b), Some(1.0));
    }

    #[test]
    fn nothing_to_answer_from() {
        assert_eq!(histogram_quantile(0.5, &[]), None);
        assert_eq!(histogram_quantile(0.5, &[(INF, 5.0)]), None);
        assert_eq!(histogram_quantile(0.5, &[(1.0, 5.0), (2.0, 5.0)]), None, "no +Inf bucket");
        assert_eq!(histogram_quantile(0.5, &[(1.0, 0.0), (INF, 0.0)]), None, "no observations");
        assert_eq!(histogram_quantile(1.5, &[(1.0, 1.0), (INF, 1.0)]), None);
        assert_eq!(histogram_quantile(f64::NAN, &[(1.0, 1.0), (INF, 1.0)]), None);
    }

    #[test]
    fn dips_in_cumulative_counts_are_evened_out() {
        let b = [(1.0, 10.0), (2.0, 9.0), (4.0, 20.0), (INF, 20.0)];
        assert_eq!(histogram_quantile(0.5, &b), Some(1.0));
        let nan = [(f64::NAN, 3.0), (1.0, f64::NAN), (1.0, 4.0), (INF, 4.0)];
        assert_eq!(histogram_quantile(0.5, &nan), Some(0.5));
    }
}
