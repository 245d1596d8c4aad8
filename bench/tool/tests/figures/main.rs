//! Figures in the prose cannot go stale silently (bench/README.md,
//! "Figures in the prose"): every figure quoted from a committed benchmark
//! run carries a marker naming the run and what it is, and this test
//! computes each marked figure from the run's `results.csv` and fails when
//! the prose says something else. A second test finds figures that cite a
//! committed run without a marker.
//!
//! Scanned: every Markdown file of the repository outside `bench/runs/`
//! (generated reports), `target/` and test fixtures; in README.md not the
//! generated perf block (`readme_perf.rs` checks that one).

mod markdown;
mod marker;
mod results;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use markdown::{Doc, Number, is_figure, numbers, regions, scopes};
use marker::{Marker, agrees, at_precision, evaluate};
use results::RunData;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().unwrap()
}

const SKIPPED_DIRS: [&str; 6] = ["target", ".git", "bench/runs", "bench/tool/tests/fixtures", "fuzz/corpus", "fuzz/artifacts"];

fn markdown_files(root: &Path, dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    let mut entries: Vec<PathBuf> = entries.map(|e| e.unwrap().path()).collect();
    entries.sort();
    for path in entries {
        let rel = path.strip_prefix(root).unwrap().to_string_lossy().into_owned();
        if path.is_dir() {
            if !SKIPPED_DIRS.contains(&rel.as_str()) && !rel.ends_with("/target") {
                markdown_files(root, &path, out);
            }
        } else if rel.ends_with(".md") {
            out.push(path);
        }
    }
}

/// The committed runs: directories of `bench/runs/` with a `results.csv`
/// (or a soak run's `soak.csv`) that git tracks (every one present outside
/// a git checkout).
fn committed_runs(root: &Path) -> BTreeSet<String> {
    let tracked = Command::new("git")
        .arg("-C")
        .arg(root)
        .args(["ls-files", "--", "bench/runs/*/results.csv", "bench/runs/*/soak.csv"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| {
            String::from_utf8_lossy(&o.stdout).lines().filter_map(|l| l.split('/').nth(2).map(str::to_owned)).collect::<BTreeSet<_>>()
        });
    let present: BTreeSet<String> = std::fs::read_dir(root.join("bench/runs"))
        .map(|d| {
            d.filter_map(|e| e.ok())
                .filter(|e| results::FILES.iter().any(|f| e.path().join(f).is_file()))
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    match tracked {
        Some(t) if !t.is_empty() => present.intersection(&t).cloned().collect(),
        _ => present,
    }
}

/// A marker and the number it follows.
struct Marked {
    line: usize,
    number: Option<Number>,
    comment: String,
    marker: Result<Marker, String>,
}

/// The markers of `doc` (`<!--fig ...-->`), each with the number right
/// before it: at most 24 characters of unit and no digit between them.
fn markers(doc: &Doc) -> Vec<Marked> {
    let nums = numbers(&doc.prose);
    doc.comments()
        .into_iter()
        .filter_map(|(s, e)| {
            let inner = doc.raw[s + 4..e.saturating_sub(3).max(s + 4)].trim();
            let body = inner.strip_prefix("fig ").or_else(|| (inner == "fig").then_some(""))?;
            let number = nums.iter().copied().rfind(|n| n.end <= s).filter(|n| {
                let between = &doc.prose[n.end..s];
                between.chars().count() <= 24 && !between.contains(|c: char| c.is_ascii_digit() || c == '|')
            });
            Some(Marked { line: doc.line_of(s), number, comment: doc.raw[s..e].to_owned(), marker: marker::parse(body) })
        })
        .collect()
}

/// What is wrong with the marked figures of one file: a marker that does
/// not parse, follows no number, names an unknown run, mode or test, or
/// whose figure differs from the run's.
fn check_markers(root: &Path, rel: &str, doc: &Doc, runs: &BTreeSet<String>, cache: &mut BTreeMap<String, RunData>) -> Vec<String> {
    let mut out = Vec::new();
    let aliases = match doc.aliases() {
        Ok(a) => a,
        Err(e) => return vec![format!("{rel}: {e}")],
    };
    for (alias, name) in &aliases {
        if !runs.contains(name) {
            out.push(format!("{rel}: fig-runs {alias}={name}: no committed run bench/runs/{name}/ (with {})", results::FILES.join(" or ")));
        }
    }
    for m in markers(doc) {
        let at = format!("{rel}:{}", m.line);
        let figure = match m.marker {
            Err(e) => {
                out.push(format!("{at}: {}: {e}", m.comment));
                continue;
            }
            Ok(Marker::None) => continue,
            Ok(Marker::Figure(f)) => f,
        };
        let Some(n) = m.number else {
            out.push(format!("{at}: {} follows no figure: put it right after the number (and its unit)", m.comment));
            continue;
        };
        let quoted = &doc.prose[n.start..n.end];
        let name = aliases.get(&figure.run).cloned().unwrap_or_else(|| figure.run.clone());
        if !runs.contains(&name) {
            out.push(format!(
                "{at}: {}: {:?} is neither a committed run under bench/runs/ nor an alias this file declares (<!--fig-runs ALIAS=NAME-->)",
                m.comment, figure.run
            ));
            continue;
        }
        if !cache.contains_key(&name) {
            match RunData::read(&root.join("bench/runs").join(&name)) {
                Ok(r) => {
                    cache.insert(name.clone(), r);
                }
                Err(e) => {
                    out.push(format!("{at}: {e}"));
                    continue;
                }
            }
        }
        match evaluate(&figure, &cache[&name]) {
            Err(e) => out.push(format!("{at}: {quoted} {}: run {name}: {e}", m.comment)),
            Ok(v) if agrees(quoted, v) != Some(true) => out.push(format!(
                "{at}: the prose says {quoted} where bench/runs/{name}/ gives {} ({v:.4}) for {}",
                at_precision(quoted, v),
                m.comment
            )),
            Ok(_) => {}
        }
    }
    out
}

/// Figures in a sentence that cites a committed run (or in a table cell
/// whose column or introduction does) that carry no marker.
fn unmarked_figures(rel: &str, doc: &Doc, runs: &BTreeSet<String>) -> Vec<String> {
    let Ok(aliases) = doc.aliases() else { return Vec::new() };
    let marked: BTreeSet<Number> = markers(doc).into_iter().filter_map(|m| m.number).collect();
    let nums = numbers(&doc.prose);
    let mut out = BTreeMap::new();
    for region in regions(doc, runs, &aliases) {
        for (s, e, run) in scopes(doc, &region, runs, &aliases) {
            for n in nums.iter().filter(|n| n.start >= s && n.end <= e && !marked.contains(n) && is_figure(&doc.prose, **n)) {
                let shown = format!("{}{}", &doc.prose[n.start..n.end], markdown::unit_after(&doc.prose, *n).unwrap_or(""));
                out.entry(n.start).or_insert_with(|| {
                    format!(
                        "{rel}:{}: `{}` in a sentence citing run {run} has no marker: add <!--fig RUN MODE:TEST ...--> right after it, \
                     or <!--fig none--> when it is not that run's figure",
                        doc.line_of(n.start),
                        shown
                    )
                });
            }
        }
    }
    out.into_values().collect()
}

fn docs() -> Vec<(String, Doc)> {
    let root = repo();
    let mut files = Vec::new();
    markdown_files(&root, &root, &mut files);
    files
        .into_iter()
        .map(|p| (p.strip_prefix(&root).unwrap().display().to_string(), Doc::new(&std::fs::read_to_string(&p).unwrap())))
        .collect()
}

#[test]
fn every_marked_figure_equals_its_run() {
    let root = repo();
    let runs = committed_runs(&root);
    assert!(!runs.is_empty(), "no committed run under bench/runs/");
    let mut cache = BTreeMap::new();
    let mut problems = Vec::new();
    let mut checked = 0;
    for (rel, doc) in docs() {
        checked += markers(&doc).len();
        problems.extend(check_markers(&root, &rel, &doc, &runs, &mut cache));
    }
    eprintln!("{checked} markers checked against {} runs", cache.len());
    assert!(problems.is_empty(), "{} figures disagree with their runs:\n{}", problems.len(), problems.join("\n"));
}

#[test]
fn figures_citing_a_committed_run_are_marked() {
    let runs = committed_runs(&repo());
    let problems: Vec<String> = docs().iter().flat_map(|(rel, doc)| unmarked_figures(rel, doc, &runs)).collect();
    assert!(problems.is_empty(), "{} figures cite a committed run without a marker:\n{}", problems.len(), problems.join("\n"));
}

/// The checker on a small run of its own: it must catch a wrong figure, a
/// wrong mode, an unmarked figure, and pass the right ones.
#[test]
fn the_checker_catches_what_it_should() {
    let run = RunData::parse(
        "mode,rep,test,value,unit\n\
         vxlan,1,tcp1,10.0,Gbit/s\nvxlan,2,tcp1,12.0,Gbit/s\nvxlan,3,tcp1,NA,Gbit/s\n\
         uring,1,tcp1,4.0,Gbit/s\nuring,2,tcp1,6.6,Gbit/s\nuring,3,tcp1,5.0,Gbit/s\n\
         uring,1,udp64_pps,90500,pps\nuring,2,udp64_pps,91500,pps\nuring,1,tcp4,8.0,Gbit/s\nuring,2,tcp4,6.6,Gbit/s\n",
    )
    .unwrap();
    let value = |body: &str| match marker::parse(body).unwrap() {
        Marker::Figure(f) => evaluate(&f, &run),
        Marker::None => panic!("{body}"),
    };
    assert_eq!(value("r uring:tcp1").unwrap(), 5.0, "median of 4, 6.6, 5");
    assert_eq!(value("r vxlan-kernel:tcp1").unwrap(), 11.0, "the old name, NA skipped, mean of the middle two");
    assert!((value("r uring/vxlan-kernel:tcp1").unwrap() - 5.0 / 11.0).abs() < 1e-12, "ratio of medians");
    assert!((value("r uring/vxlan:tcp1 paired").unwrap() - 0.475).abs() < 1e-12, "median of 0.4 and 0.55 (repetition 3 has no VXLAN)");
    assert_eq!(value("r uring:tcp1 r2").unwrap(), 6.6);
    assert_eq!(value("r uring:tcp1 min").unwrap(), 4.0);
    assert!((value("r uring:tcp4/tcp1 r1").unwrap() - 2.0).abs() < 1e-12);
    assert_eq!(value("r uring:udp64_pps /1000").unwrap(), 91.0);
    assert!(value("r mmsg:tcp1").unwrap_err().contains("no mode \"mmsg\""));
    assert!(value("r uring:tcp9").unwrap_err().contains("no test \"tcp9\""));
    assert_eq!(value("r uring@veth:tcp1").unwrap(), 5.0, "a run before the profiles is veth");
    let profiled = RunData::parse(
        "mode,underlay,rep,test,value,unit\nuring,veth,1,tcp1,6.0,Gbit/s\nuring,wire,1,tcp1,4.0,Gbit/s\nvxlan-kernel,wire,1,tcp1,5.0,Gbit/s\n",
    )
    .unwrap();
    let in_profiled = |body: &str| match marker::parse(body).unwrap() {
        Marker::Figure(f) => evaluate(&f, &profiled),
        Marker::None => panic!("{body}"),
    };
    assert_eq!(in_profiled("r uring@wire/vxlan-kernel@wire:tcp1").unwrap(), 0.8);
    assert!(in_profiled("r uring:tcp1").unwrap_err().contains("write uring@UNDERLAY"));
    assert!(marker::parse("r uring:tcp1 paired").is_err(), "paired needs a ratio");
    assert!(marker::parse("r uring:tcp1 last").is_err(), "last is for a soak run's columns");
    let mut soak = RunData::default();
    soak.series_from("slice,rss_a_kib,mbit_s\n0,30376,NA\n1,30532,199.8\n2,30552,200.2\n");
    let series = |body: &str| match marker::parse(body).unwrap() {
        Marker::Figure(f) => evaluate(&f, &soak).unwrap(),
        Marker::None => panic!("{body}"),
    };
    assert_eq!(series("s soak:rss_a_kib"), 30376.0);
    assert_eq!(series("s soak:rss_a_kib last /1024"), 30552.0 / 1024.0);
    assert_eq!(series("s soak:mbit_s mean"), 200.0, "NA skipped");
    assert_eq!(series("s soak:mbit_s max"), 200.2);
    assert_eq!(agrees("0.45", 0.4549), Some(true));
    assert_eq!(agrees("0.46", 0.4549), Some(false));
    assert_eq!(agrees("1,022", 1021.6), Some(true));
    assert_eq!(agrees("0.5", 0.45), Some(true), "an exact tie rounds either way");

    let runs: BTreeSet<String> = ["2026-01-01-0000-vm".to_owned()].into();
    let text = "<!--fig-runs 0000=2026-01-01-0000-vm-->\n\
                In run 0000 `uring` moved 5.0 Gbit/s<!--fig 0000 uring:tcp1--> and 0.45×<!--fig 0000 uring/vxlan:tcp1--> VXLAN, \
                with 91.0 kpps<!--fig 0000 uring:udp64_pps /1000--> and 1.5× more. An experiment gave 3.3×.\n\n\
                | mode | run `bench/runs/2026-01-01-0000-vm` |\n|---|---|\n| uring | 7.25 |\n\n\
                An example, `1.0×<!--fig 0000 nope:x-->`, is no marker:\n\n```\n2.0×<!--fig 0000 nope:y-->\n```\n";
    let doc = Doc::new(text);
    let unmarked = unmarked_figures("t.md", &doc, &runs);
    assert_eq!(unmarked.len(), 2, "1.5× in the citing sentence and 7.25 in the run's column: {unmarked:#?}");
    assert!(unmarked[0].contains("`1.5×") && unmarked[1].contains("t.md:6: `7.25"), "{unmarked:#?}");
    let m = markers(&doc);
    assert_eq!(m.iter().map(|m| &doc.prose[m.number.unwrap().start..m.number.unwrap().end]).collect::<Vec<_>>(), ["5.0", "0.45", "91.0"]);
}
