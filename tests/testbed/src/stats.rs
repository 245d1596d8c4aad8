//! Small summaries of measured samples: nearest-rank percentiles, and the
//! `key=value` figures the fleet scenario reports.

use std::fmt;
use std::time::Duration;

/// A duration in milliseconds.
pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// p50, p99 and the maximum of a set of samples (`None` when empty).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Percentiles {
    pub samples: usize,
    pub p50: Option<f64>,
    pub p99: Option<f64>,
    pub max: Option<f64>,
}

impl Percentiles {
    pub fn of(values: &[f64]) -> Percentiles {
        let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
        v.sort_by(f64::total_cmp);
        Percentiles { samples: v.len(), p50: nearest_rank(&v, 0.5), p99: nearest_rank(&v, 0.99), max: v.last().copied() }
    }

    /// `PREFIX_p50_ms=..`, `PREFIX_p99_ms=..`, `PREFIX_max_ms=..` ("NA" when
    /// there were no samples), one decimal.
    pub fn figures(&self, prefix: &str) -> Vec<(String, String)> {
        let f = |v: Option<f64>| v.map_or("NA".to_owned(), |x| format!("{x:.1}"));
        vec![
            (format!("{prefix}_p50_ms"), f(self.p50)),
            (format!("{prefix}_p99_ms"), f(self.p99)),
            (format!("{prefix}_max_ms"), f(self.max)),
        ]
    }
}

/// The nearest-rank percentile (q in 0..=1) of sorted values.
pub fn nearest_rank(sorted: &[f64], q: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

/// Named figures in the order they were measured, and what failed. Each
/// figure is echoed as `FIGURE key=value` on stdout when `echo` is set
/// (what `encapd-bench fleet` prints).
#[derive(Debug, Default)]
pub struct Figures {
    entries: Vec<(String, String)>,
    failures: Vec<String>,
    echo: bool,
}

impl Figures {
    pub fn new(echo: bool) -> Figures {
        Figures { echo, ..Figures::default() }
    }

    pub fn add(&mut self, key: impl Into<String>, value: impl fmt::Display) {
        let (key, value) = (key.into(), value.to_string());
        if self.echo {
            println!("FIGURE {key}={value}");
        }
        match self.entries.iter_mut().find(|(k, _)| *k == key) {
            Some(e) => e.1 = value,
            None => self.entries.push((key, value)),
        }
    }

    pub fn extend(&mut self, pairs: Vec<(String, String)>) {
        for (k, v) in pairs {
            self.add(k, v);
        }
    }

    /// Records a failure (the run goes on; [`passed`](Self::passed) is false).
    pub fn fail(&mut self, what: impl Into<String>) {
        let what = what.into();
        eprintln!("FAIL: {what}");
        self.failures.push(what);
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.entries.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }

    /// The figure as a number; panics when it is missing or not a number.
    pub fn num(&self, key: &str) -> f64 {
        let v = self.get(key).unwrap_or_else(|| panic!("figure {key} missing; figures: {:?}", self.entries));
        v.parse().unwrap_or_else(|_| panic!("figure {key} = {v:?} is not a number"))
    }

    pub fn entries(&self) -> &[(String, String)] {
        &self.entries
    }

    pub fn failures(&self) -> &[String] {
        &self.failures
    }

    pub fn passed(&self) -> bool {
        self.failures.is_empty()
    }

    /// `key=value` lines.
    pub fn to_text(&self) -> String {
        self.entries.iter().map(|(k, v)| format!("{k}={v}\n")).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let p = Percentiles::of(&[5.0, 1.0, 3.0, 2.0, 4.0]);
        assert_eq!((p.samples, p.p50, p.p99, p.max), (5, Some(3.0), Some(5.0), Some(5.0)));
        let one = Percentiles::of(&[7.0]);
        assert_eq!((one.p50, one.p99), (Some(7.0), Some(7.0)));
        assert_eq!(Percentiles::of(&[]).figures("x")[0], ("x_p50_ms".to_owned(), "NA".to_owned()));
        let hundred: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(Percentiles::of(&hundred).p99, Some(99.0));
    }

    #[test]
    fn figures_keep_order_and_the_last_value() {
        let mut f = Figures::new(false);
        f.add("b", 1);
        f.add("a", "x");
        f.add("b", 2);
        assert_eq!(f.to_text(), "b=2\na=x\n");
        assert_eq!(f.num("b"), 2.0);
        assert!(f.passed());
        f.fail("something");
        assert!(!f.passed());
    }
}
