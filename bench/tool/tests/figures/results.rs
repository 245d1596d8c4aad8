//! A committed run's data, read on its own: `results.csv` of a
//! `bench/run.sh` run (`mode,underlay,rep,test,value,unit` since the
//! underlay profiles, `mode,rep,test,value,unit` before them, read as the
//! `veth` profile; `NA` for a value that was not measured), or `soak.csv` (one row per slice, `#`
//! comment lines first) of a `bench/soak.sh` run. The report code in
//! `src/report/` has a reader too, but this check only needs values by
//! mode, test and repetition (or by column), and should not move when the
//! report does.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Every value of one run: (mode, underlay, test) -> repetition -> value;
/// and a soak run's columns, slice by slice (`None` for `NA`).
#[derive(Debug, Default)]
pub struct RunData {
    values: BTreeMap<(String, String, String), BTreeMap<u32, f64>>,
    modes: BTreeSet<String>,
    underlays: BTreeSet<String>,
    tests: BTreeSet<String>,
    series: BTreeMap<String, Vec<Option<f64>>>,
}

/// The files a run's figures are read from.
pub const FILES: [&str; 2] = ["results.csv", "soak.csv"];

/// The kernel pair was called `vxlan` before the vxlan backend's modes
/// (bench/README.md): either name finds it.
fn aliases(mode: &str) -> [&str; 2] {
    match mode {
        "vxlan" => ["vxlan", "vxlan-kernel"],
        "vxlan-kernel" => ["vxlan-kernel", "vxlan"],
        m => [m, m],
    }
}

impl RunData {
    pub fn read(dir: &Path) -> Result<RunData, String> {
        let read = |name: &str| std::fs::read_to_string(dir.join(name)).ok();
        let fail = |name: &str, e: String| format!("{}: {e}", dir.join(name).display());
        let mut run = match read("results.csv") {
            Some(text) => RunData::parse(&text).map_err(|e| fail("results.csv", e))?,
            None => RunData::default(),
        };
        if let Some(text) = read("soak.csv") {
            run.series = parse_series(&text).map_err(|e| fail("soak.csv", e))?;
        }
        if run.values.is_empty() && run.series.is_empty() {
            return Err(format!("{}: neither {} holds figures", dir.display(), FILES.join(" nor ")));
        }
        Ok(run)
    }

    /// Sets the soak columns from `soak.csv` text (for the checker's own test).
    #[cfg(test)]
    pub fn series_from(&mut self, text: &str) {
        self.series = parse_series(text).unwrap();
    }

    /// A soak run's column, slice by slice.
    pub fn column(&self, name: &str) -> Result<&[Option<f64>], String> {
        self.series.get(name).map(Vec::as_slice).ok_or_else(|| {
            format!("no column {name:?} in this run's soak.csv (columns: {})", self.series.keys().cloned().collect::<Vec<_>>().join(", "))
        })
    }

    pub fn parse(text: &str) -> Result<RunData, String> {
        let mut lines = text.lines().enumerate();
        let profiled = match lines.next() {
            Some((_, h)) if h.trim() == "mode,rep,test,value,unit" => false,
            Some((_, h)) if h.trim() == "mode,underlay,rep,test,value,unit" => true,
            other => return Err(format!("line 1: expected `mode,[underlay,]rep,test,value,unit`, got {:?}", other.map(|o| o.1))),
        };
        let mut run = RunData::default();
        for (i, line) in lines.filter(|(_, l)| !l.trim().is_empty()) {
            let f: Vec<&str> = line.split(',').map(str::trim).collect();
            let (mode, underlay, rep, test, value) = match (profiled, &f[..]) {
                (false, [mode, rep, test, value, _unit]) => (*mode, "veth", *rep, *test, *value),
                (true, [mode, underlay, rep, test, value, _unit]) => (*mode, *underlay, *rep, *test, *value),
                _ => return Err(format!("line {}: expected {} fields", i + 1, if profiled { 6 } else { 5 })),
            };
            let rep: u32 = rep.parse().map_err(|_| format!("line {}: repetition {rep:?}", i + 1))?;
            run.modes.insert(mode.to_owned());
            run.underlays.insert(underlay.to_owned());
            run.tests.insert(test.to_owned());
            let slot = run.values.entry((mode.to_owned(), underlay.to_owned(), test.to_owned())).or_default();
            if value != "NA" && !value.is_empty() {
                let v: f64 = value.parse().map_err(|_| format!("line {}: value {value:?}", i + 1))?;
                slot.insert(rep, v);
            }
        }
        Ok(run)
    }

    /// The values of `test` in `mode` (`MODE@UNDERLAY` when the run
    /// measured more than one underlay profile), by repetition; an error
    /// that lists what the run has when it has no such mode or test.
    pub fn per_rep(&self, mode: &str, test: &str) -> Result<&BTreeMap<u32, f64>, String> {
        let (mode, underlay) = match mode.split_once('@') {
            Some((m, u)) => (m, u.to_owned()),
            None if self.underlays.len() > 1 => {
                let list = self.underlays.iter().cloned().collect::<Vec<_>>().join(", ");
                return Err(format!("this run measured the underlays {list}: write {mode}@UNDERLAY"));
            }
            None => (mode, self.underlays.iter().next().cloned().unwrap_or_default()),
        };
        if !self.underlays.contains(&underlay) {
            return Err(format!("no underlay {underlay:?} in this run"));
        }
        if let Some(v) = aliases(mode).iter().find_map(|m| self.values.get(&(m.to_string(), underlay.clone(), test.to_owned()))) {
            return Ok(v);
        }
        if !aliases(mode).iter().any(|m| self.modes.contains(*m)) {
            return Err(format!("no mode {mode:?} in this run (it has {})", self.modes.iter().cloned().collect::<Vec<_>>().join(", ")));
        }
        Err(format!("no test {test:?} in this run (tests: {})", self.tests.iter().cloned().collect::<Vec<_>>().join(", ")))
    }
}

/// `soak.csv`: `#` lines, a header, then one row of numbers (or `NA`) per
/// slice.
fn parse_series(text: &str) -> Result<BTreeMap<String, Vec<Option<f64>>>, String> {
    let mut lines = text.lines().enumerate().filter(|(_, l)| !l.starts_with('#') && !l.trim().is_empty());
    let (_, header) = lines.next().ok_or("no header")?;
    let names: Vec<&str> = header.split(',').map(str::trim).collect();
    let mut out: BTreeMap<String, Vec<Option<f64>>> = names.iter().map(|n| (n.to_string(), Vec::new())).collect();
    for (i, line) in lines {
        let cells: Vec<&str> = line.split(',').map(str::trim).collect();
        if cells.len() != names.len() {
            return Err(format!("line {}: {} fields, the header has {}", i + 1, cells.len(), names.len()));
        }
        for (name, cell) in names.iter().zip(cells) {
            let v = match cell {
                "NA" | "" => None,
                c => Some(c.parse::<f64>().map_err(|_| format!("line {}: {name} = {c:?}", i + 1))?),
            };
            out.get_mut(*name).unwrap().push(v);
        }
    }
    Ok(out)
}

/// The median (the mean of the middle two for an even count), as the report
/// computes it.
pub fn median(mut v: Vec<f64>) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    Some(if n % 2 == 1 { v[n / 2] } else { (v[n / 2 - 1] + v[n / 2]) / 2.0 })
}
