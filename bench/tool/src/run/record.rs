//! What a run writes as it goes: `results.csv` (one row per value, `NA`
//! when a test failed) and `commands.log` (every command as run). Both are
//! appended to and flushed row by row, so an interrupted run keeps what
//! it measured.
//!
//! `results.csv` is `mode,underlay,rep,test,value,unit`. Runs before the
//! underlay profiles wrote `mode,rep,test,value,unit`; the report reads
//! those as `veth` (see [`crate::report`]).

use std::fs::File;
use std::io::Write;
use std::path::Path;

/// The header of `results.csv`.
pub const HEADER: &str = "mode,underlay,rep,test,value,unit";

/// One measured value.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    pub test: String,
    /// `None`: the test failed (`NA`).
    pub value: Option<f64>,
    pub unit: &'static str,
}

impl Row {
    pub fn new(test: impl Into<String>, value: Option<f64>, unit: &'static str) -> Row {
        Row { test: test.into(), value, unit }
    }
}

/// Which (mode, profile, repetition) rows belong to.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Cell {
    pub mode: String,
    pub underlay: String,
    pub rep: u32,
}

/// `results.csv`, kept in memory too (a test reads values recorded before
/// it, and the run counts its `NA`s at the end).
pub struct Results {
    file: File,
    rows: Vec<(Cell, Row)>,
}

impl Results {
    pub fn create(path: &Path) -> std::io::Result<Results> {
        let mut file = File::create(path)?;
        writeln!(file, "{HEADER}")?;
        Ok(Results { file, rows: Vec::new() })
    }

    /// Appends `rows` of `cell`.
    pub fn add(&mut self, cell: &Cell, rows: Vec<Row>) -> std::io::Result<()> {
        for r in rows {
            let v = r.value.map_or_else(|| "NA".to_owned(), fmt_g6);
            writeln!(self.file, "{},{},{},{},{v},{}", cell.mode, cell.underlay, cell.rep, r.test, r.unit)?;
            self.rows.push((cell.clone(), r));
        }
        self.file.flush()
    }

    /// A value recorded earlier for `cell` (`None` when absent or NA).
    pub fn value(&self, cell: &Cell, test: &str) -> Option<f64> {
        self.rows.iter().rev().find(|(c, r)| c == cell && r.test == test).and_then(|(_, r)| r.value)
    }

    /// How many values are `NA`.
    pub fn na_count(&self) -> usize {
        self.rows.iter().filter(|(_, r)| r.value.is_none()).count()
    }

    /// Every row of `cell`.
    pub fn rows_of<'a>(&'a self, cell: &'a Cell) -> impl Iterator<Item = &'a Row> + 'a {
        self.rows.iter().filter(move |(c, _)| c == cell).map(|(_, r)| r)
    }
}

/// `v` with 6 significant digits, as C's `%.6g` (what the shell harness
/// wrote): fixed notation for exponents −4..5, else `d.ddddde±XX`;
/// trailing zeros dropped.
pub fn fmt_g6(v: f64) -> String {
    const P: i32 = 6;
    if v == 0.0 {
        return "0".into();
    }
    if !v.is_finite() {
        return format!("{v}");
    }
    // The exponent after rounding to P significant digits.
    let sci = format!("{:.*e}", (P - 1) as usize, v);
    let (mantissa, exp) = sci.split_once('e').expect("exponent notation");
    let exp: i32 = exp.parse().expect("an integer exponent");
    if !(-4..P).contains(&exp) {
        let m = trim_zeros(mantissa);
        let sign = if exp < 0 { '-' } else { '+' };
        format!("{m}e{sign}{:02}", exp.abs())
    } else {
        let decimals = (P - 1 - exp).max(0) as usize;
        trim_zeros(&format!("{v:.decimals$}")).to_owned()
    }
}

fn trim_zeros(s: &str) -> &str {
    if s.contains('.') { s.trim_end_matches('0').trim_end_matches('.') } else { s }
}

/// `commands.log`: every command as run, per mode and repetition.
pub struct CommandLog {
    file: File,
}

impl CommandLog {
    pub fn create(path: &Path) -> std::io::Result<CommandLog> {
        Ok(CommandLog { file: File::create(path)? })
    }

    /// Appends one line (errors are ignored: the log is a record, not a
    /// result).
    pub fn line(&mut self, line: impl AsRef<str>) {
        let _ = writeln!(self.file, "{}", line.as_ref());
        let _ = self.file.flush();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn six_significant_digits_as_printf_g() {
        for (v, want) in [
            (12.345678, "12.3457"),
            (1234567.0, "1.23457e+06"),
            (123456.0, "123456"),
            (0.5, "0.5"),
            (0.0001234567, "0.000123457"),
            (0.00001234567, "1.23457e-05"),
            (42.0, "42"),
            (9.9999999, "10"),
            (999999.7, "1e+06"),
            (-2.5, "-2.5"),
            (0.0, "0"),
        ] {
            assert_eq!(fmt_g6(v), want, "{v}");
        }
    }

    #[test]
    fn results_are_written_and_remembered() {
        let dir = std::env::temp_dir().join(format!("encapd-bench-record-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("results.csv");
        let mut r = Results::create(&path).unwrap();
        let cell = Cell { mode: "uring".into(), underlay: "wire".into(), rep: 2 };
        r.add(&cell, vec![Row::new("tcp1", Some(4.321), "Gbit/s"), Row::new("tcp1_retrans", None, "count")]).unwrap();
        assert_eq!(r.value(&cell, "tcp1"), Some(4.321));
        assert_eq!(r.value(&cell, "tcp1_retrans"), None);
        assert_eq!(r.na_count(), 1);
        let text = std::fs::read_to_string(&path).unwrap();
        let _ = std::fs::remove_dir_all(&dir);
        assert_eq!(text, format!("{HEADER}\nuring,wire,2,tcp1,4.321,Gbit/s\nuring,wire,2,tcp1_retrans,NA,count\n"));
    }
}
