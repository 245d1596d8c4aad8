//! A figure's marker: `<!--fig RUN EXPR [STAT] [/N | *N]-->` right after the
//! number it vouches for (bench/README.md, "Figures in the prose"), and
//! how its value is computed from the run's `results.csv`.
//!
//! - RUN: the run directory's name under `bench/runs/`, or an alias the
//!   same file declares with `<!--fig-runs ALIAS=NAME ...-->`.
//! - EXPR: `MODE:TEST` (a value), `MODE/MODE2:TEST` (a ratio of two modes
//!   on one test), `MODE:TEST/TEST2` (a ratio of two tests of one mode) or
//!   `MODE:TEST/MODE2:TEST2`. A run that measured several underlay
//!   profiles needs `MODE@UNDERLAY` (`uring@wire`).
//! - STAT: `median` (the default: the median over the repetitions; for a
//!   ratio, the ratio of the two medians), `paired` (the median of the
//!   per-repetition ratios), `rN` (repetition N's value or ratio), `min` or
//!   `max` (over the repetitions' values or ratios).
//! - `/N` or `*N` scales the value (`/1000`: pps as kpps, µs as ms).
//!
//! A soak run (`bench/soak.sh`, no `results.csv`) has `soak.csv`, one row
//! per slice: EXPR is then `soak:COLUMN` and STAT `first`, `last`, `min`,
//! `max` or `mean` over the slices that have a value (`first` is the
//! default).
//!
//! `<!--fig none-->` (a reason may follow) marks a number that is not a
//! committed run's figure (an experiment's, a threshold, a sum of two) in
//! a sentence that cites one, so that the unmarked-figure check passes it.

use super::results::{RunData, median};

#[derive(Debug, Clone, PartialEq)]
pub struct Term {
    pub mode: String,
    pub test: String,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Stat {
    Median,
    Paired,
    Rep(u32),
    Min,
    Max,
    First,
    Last,
    Mean,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Figure {
    pub run: String,
    /// `soak:COLUMN`: a column of the run's soak.csv, not a (mode, test).
    pub column: Option<String>,
    pub num: Term,
    pub den: Option<Term>,
    pub stat: Stat,
    pub scale: f64,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Marker {
    Figure(Figure),
    /// `<!--fig none-->`: not a figure of a committed run.
    None,
}

fn term(s: &str) -> Result<Term, String> {
    let (mode, test) = s.split_once(':').ok_or_else(|| format!("{s:?} is not MODE:TEST"))?;
    if mode.is_empty() || test.is_empty() {
        return Err(format!("{s:?} is not MODE:TEST"));
    }
    Ok(Term { mode: mode.to_owned(), test: test.to_owned() })
}

fn expr(s: &str) -> Result<(Term, Option<Term>), String> {
    match s.matches(':').count() {
        1 => {
            let (modes, tests) = s.split_once(':').unwrap();
            match (modes.split_once('/'), tests.split_once('/')) {
                (None, None) => Ok((term(s)?, None)),
                (Some((a, b)), None) => Ok((term(&format!("{a}:{tests}"))?, Some(term(&format!("{b}:{tests}"))?))),
                (None, Some((a, b))) => Ok((term(&format!("{modes}:{a}"))?, Some(term(&format!("{modes}:{b}"))?))),
                (Some(_), Some(_)) => Err(format!("{s:?}: write MODE:TEST/MODE2:TEST2 for two modes and two tests")),
            }
        }
        2 => {
            let (a, b) = s.split_once('/').filter(|(a, _)| a.contains(':')).ok_or_else(|| format!("{s:?} is not MODE:TEST/MODE2:TEST2"))?;
            Ok((term(a)?, Some(term(b)?)))
        }
        _ => Err(format!("{s:?} is not MODE:TEST, MODE/MODE2:TEST, MODE:TEST/TEST2 or MODE:TEST/MODE2:TEST2")),
    }
}

/// Parses a marker's body (the comment's text after `fig`).
pub fn parse(body: &str) -> Result<Marker, String> {
    let mut words = body.split_whitespace();
    let run = words.next().ok_or("empty marker: write <!--fig RUN MODE:TEST--> or <!--fig none-->")?;
    if run.trim_end_matches(':') == "none" {
        return Ok(Marker::None);
    }
    let e = words.next().ok_or_else(|| format!("marker for run {run:?} names no MODE:TEST"))?;
    let column = e.strip_prefix("soak:").map(str::to_owned);
    let (num, den) = match &column {
        Some(c) => (Term { mode: "soak".into(), test: c.clone() }, None),
        None => expr(e)?,
    };
    let stat = if column.is_some() { Stat::First } else { Stat::Median };
    let mut figure = Figure { run: run.to_owned(), column, num, den, stat, scale: 1.0 };
    for w in words {
        figure.stat = match w {
            "median" => Stat::Median,
            "paired" => Stat::Paired,
            "min" => Stat::Min,
            "max" => Stat::Max,
            "first" => Stat::First,
            "last" => Stat::Last,
            "mean" => Stat::Mean,
            _ if w.starts_with('r') && w[1..].parse::<u32>().is_ok() => Stat::Rep(w[1..].parse().unwrap()),
            _ if w.starts_with('/') || w.starts_with('*') => {
                let n: f64 = w[1..].parse().map_err(|_| format!("scale {w:?} is not /N or *N"))?;
                figure.scale = if w.starts_with('/') { 1.0 / n } else { n };
                continue;
            }
            _ => return Err(format!("{w:?} is not a statistic (median, paired, rN, min, max) or a scale (/N, *N)")),
        };
    }
    if figure.stat == Stat::Paired && figure.den.is_none() {
        return Err("`paired` needs a ratio (MODE/MODE2:TEST)".into());
    }
    let series_stat = matches!(figure.stat, Stat::First | Stat::Last | Stat::Mean | Stat::Min | Stat::Max);
    if figure.column.is_some() != series_stat && !matches!(figure.stat, Stat::Min | Stat::Max) {
        return Err("first, last and mean go with soak:COLUMN, which takes only them, min and max".into());
    }
    Ok(Marker::Figure(figure))
}

/// The figure's value in `run` (scaled).
pub fn evaluate(f: &Figure, run: &RunData) -> Result<f64, String> {
    if let Some(c) = &f.column {
        let v: Vec<f64> = run.column(c)?.iter().flatten().copied().collect();
        let value = match f.stat {
            Stat::First => v.first().copied(),
            Stat::Last => v.last().copied(),
            Stat::Min => v.iter().copied().reduce(f64::min),
            Stat::Max => v.iter().copied().reduce(f64::max),
            Stat::Mean => (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64),
            _ => unreachable!("refused by parse"),
        };
        return value.map(|x| x * f.scale).ok_or_else(|| format!("column {c:?} has no value"));
    }
    let num = run.per_rep(&f.num.mode, &f.num.test)?;
    let value = match &f.den {
        None => {
            let values: Vec<f64> = num.values().copied().collect();
            match f.stat {
                Stat::Median => median(values),
                Stat::Rep(r) => num.get(&r).copied(),
                Stat::Min => values.into_iter().reduce(f64::min),
                Stat::Max => values.into_iter().reduce(f64::max),
                _ => unreachable!("refused by parse"),
            }
        }
        Some(d) => {
            let den = run.per_rep(&d.mode, &d.test)?;
            let ratios: Vec<f64> = num.iter().filter_map(|(r, a)| den.get(r).filter(|b| **b != 0.0).map(|b| a / b)).collect();
            match f.stat {
                Stat::Median => match (median(num.values().copied().collect()), median(den.values().copied().collect())) {
                    (Some(a), Some(b)) if b != 0.0 => Some(a / b),
                    _ => None,
                },
                Stat::Paired => median(ratios),
                Stat::Rep(r) => num.get(&r).zip(den.get(&r)).filter(|(_, b)| **b != 0.0).map(|(a, b)| a / b),
                Stat::Min => ratios.into_iter().reduce(f64::min),
                Stat::Max => ratios.into_iter().reduce(f64::max),
                _ => unreachable!("refused by parse"),
            }
        }
    };
    value.map(|v| v * f.scale).ok_or_else(|| "no value (NA, or no such repetition)".into())
}

/// Whether `quoted` (as written: `1,022`, `0.42`) is `value` rounded to the
/// precision it is written with. Either rounding of an exact tie passes.
pub fn agrees(quoted: &str, value: f64) -> Option<bool> {
    let plain: String = quoted.chars().filter(|c| *c != ',').collect();
    let q: f64 = plain.parse().ok()?;
    let decimals = plain.split_once('.').map_or(0, |(_, d)| d.len()) as i32;
    let half_step = 0.5 * 10f64.powi(-decimals);
    Some((q - value).abs() <= half_step * (1.0 + 1e-9) + 1e-12)
}

/// `value` at the precision of `quoted`, for messages.
pub fn at_precision(quoted: &str, value: f64) -> String {
    let decimals = quoted.split_once('.').map_or(0, |(_, d)| d.len());
    format!("{value:.decimals$}")
}
