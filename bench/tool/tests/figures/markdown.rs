//! Just enough Markdown for the figure check: where the prose is (code,
//! comments, link targets and the generated perf block masked out), its
//! numbers, its markers, its sentences and which of them cite a committed
//! run. Offsets are byte offsets into the file's text throughout: masking
//! replaces every byte but a newline with a space, so positions and line
//! numbers stay those of the file.

use std::collections::{BTreeMap, BTreeSet};

pub struct Doc {
    pub raw: String,
    /// Comments, fenced and inline code, link targets and the perf block
    /// blanked: what a reader sees as prose.
    pub prose: String,
    /// Only comments, fences and the perf block blanked: prose with its
    /// code spans, where a run is often cited (`bench/runs/...`).
    pub cites: String,
    /// Code (fenced and inline) and the perf block: their comments are
    /// examples or generated, not markers.
    skipped: Vec<(usize, usize)>,
}

fn blank(bytes: &mut [u8], from: usize, to: usize) {
    for b in &mut bytes[from..to] {
        if *b != b'\n' {
            *b = b' ';
        }
    }
}

/// The `[start, end)` of every `<!-- ... -->` comment.
pub fn comments(text: &str) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let mut at = 0;
    while let Some(s) = text[at..].find("<!--").map(|s| s + at) {
        let e = text[s + 4..].find("-->").map_or(text.len(), |e| s + 4 + e + 3);
        out.push((s, e));
        at = e;
    }
    out
}

impl Doc {
    pub fn new(raw: &str) -> Doc {
        let mut cites = raw.as_bytes().to_vec();
        let mut skipped = Vec::new();
        let mut offset = 0;
        let (mut fence, mut perf) = (false, false);
        for line in raw.split_inclusive('\n') {
            let t = line.trim_start();
            let toggles = t.starts_with("```") || t.starts_with("~~~");
            if t.starts_with("<!-- perf:begin -->") {
                perf = true;
            }
            if fence || toggles || perf {
                blank(&mut cites, offset, offset + line.len());
                skipped.push((offset, offset + line.len()));
            }
            if t.starts_with("<!-- perf:end -->") {
                perf = false;
            }
            fence ^= toggles;
            offset += line.len();
        }
        for (s, e) in comments(raw) {
            blank(&mut cites, s, e);
        }
        let mut prose = cites.clone();
        // Inline code: a run of k backticks up to the next run of exactly k.
        let mut i = 0;
        while i < prose.len() {
            if prose[i] != b'`' {
                i += 1;
                continue;
            }
            let k = prose[i..].iter().take_while(|b| **b == b'`').count();
            let mut j = i + k;
            let close = loop {
                match prose[j..].iter().position(|b| *b == b'`') {
                    None => break None,
                    Some(p) => {
                        let run = prose[j + p..].iter().take_while(|b| **b == b'`').count();
                        if run == k {
                            break Some(j + p + k);
                        }
                        j += p + run;
                    }
                }
            };
            match close {
                Some(c) => {
                    blank(&mut prose, i, c);
                    skipped.push((i, c));
                    i = c;
                }
                None => i += k,
            }
        }
        // Link targets: `](...)`.
        let mut i = 0;
        while let Some(p) = find(&prose, b"](", i) {
            let end = prose[p..].iter().position(|b| *b == b')' || *b == b'\n').map_or(prose.len(), |e| p + e + 1);
            blank(&mut prose, p + 1, end);
            i = end;
        }
        let text = |v: Vec<u8>| String::from_utf8(v).expect("only whole characters are blanked");
        Doc { raw: raw.to_owned(), prose: text(prose), cites: text(cites), skipped }
    }

    /// The comments of the prose (not those in code blocks or the perf block).
    pub fn comments(&self) -> Vec<(usize, usize)> {
        comments(&self.raw).into_iter().filter(|(s, _)| !self.skipped.iter().any(|(a, b)| a <= s && s < b)).collect()
    }

    pub fn line_of(&self, offset: usize) -> usize {
        self.raw[..offset].matches('\n').count() + 1
    }

    /// Aliases declared by `<!--fig-runs ALIAS=NAME ...-->` comments.
    pub fn aliases(&self) -> Result<BTreeMap<String, String>, String> {
        let mut out = BTreeMap::new();
        for (s, e) in self.comments() {
            let body = self.raw[s + 4..e.saturating_sub(3).max(s + 4)].trim();
            let Some(list) = body.strip_prefix("fig-runs") else { continue };
            for pair in list.trim_start_matches(':').split_whitespace() {
                let (alias, name) =
                    pair.split_once('=').ok_or_else(|| format!("line {}: {pair:?} in fig-runs is not ALIAS=NAME", self.line_of(s)))?;
                out.insert(alias.to_owned(), name.to_owned());
            }
        }
        Ok(out)
    }
}

fn find(hay: &[u8], needle: &[u8], from: usize) -> Option<usize> {
    hay.get(from..)?.windows(needle.len()).position(|w| w == needle).map(|p| p + from)
}

/// A number as prose writes it: `17.24`, `1,022`, `0.42` (not part of a
/// word, a date, a version such as 6.18.44, or a hash such as 6903b45).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Number {
    pub start: usize,
    pub end: usize,
}

pub fn numbers(text: &str) -> Vec<Number> {
    let b = text.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if !b[i].is_ascii_digit() || (i > 0 && (b[i - 1].is_ascii_alphanumeric() || matches!(b[i - 1], b'_' | b'.' | b'-' | b','))) {
            i += 1;
            continue;
        }
        let start = i;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        // Thousands groups: `,ddd` not followed by another digit.
        while i + 3 < b.len() + 1 && b.get(i) == Some(&b',') && b[i + 1..].iter().take(3).filter(|c| c.is_ascii_digit()).count() == 3 {
            if b.get(i + 4).is_some_and(u8::is_ascii_digit) {
                break;
            }
            i += 4;
        }
        if b.get(i) == Some(&b'.') && b.get(i + 1).is_some_and(u8::is_ascii_digit) {
            i += 1;
            while i < b.len() && b[i].is_ascii_digit() {
                i += 1;
            }
        }
        let next = b.get(i).copied();
        let dotted = next == Some(b'.') && b.get(i + 1).is_some_and(u8::is_ascii_digit);
        let word = next.is_some_and(|c| c.is_ascii_alphanumeric() || c == b'_');
        if dotted || word {
            while i < b.len() && (b[i].is_ascii_alphanumeric() || matches!(b[i], b'.' | b'_')) {
                i += 1;
            }
            continue;
        }
        out.push(Number { start, end: i });
    }
    out
}

/// Units after which a number is a measured figure.
const UNITS: [&str; 9] = ["×", "µs", "ms", "kpps", "pps", "cores", "%", "Gbit/s", "GiB/s"];

/// The unit right after the number at `n` (after one space), if any.
pub fn unit_after(prose: &str, n: Number) -> Option<&'static str> {
    let after = prose[n.end..].trim_start_matches([' ', '\u{a0}']);
    let space = &prose[n.end..n.end + (prose.len() - n.end - after.len())];
    UNITS
        .iter()
        .find(|u| {
            after.starts_with(**u) && !after[u.len()..].chars().next().is_some_and(|c| c.is_ascii_alphabetic() && **u != "×" && **u != "%")
        })
        .map(|u| if space.is_empty() { *u } else { SPACED.iter().find(|s| s.ends_with(*u)).copied().unwrap_or(*u) })
}

/// [`UNITS`] with the space prose puts before them.
const SPACED: [&str; 9] = [" ×", " µs", " ms", " kpps", " pps", " cores", " %", " Gbit/s", " GiB/s"];

/// Whether the number at `n` reads as a measured figure: a decimal, or an
/// integer followed by ×, µs, ms, kpps, pps, cores or % (not a load, `at
/// 50 %`, `50 % load`) — and not a bound (`≥ 0.8×`), an approximation
/// (`~65`, `about 0.4×`) or a version (`Linux 6.6`).
pub fn is_figure(prose: &str, n: Number) -> bool {
    let before = prose[..n.start].trim_end_matches(' ');
    let after = prose[n.end..].trim_start_matches([' ', '\u{a0}']);
    let unit = unit_after(prose, n).map(str::trim_start);
    let decimal = prose[n.start..n.end].contains('.');
    let bound = ["≥", "≤", "<", ">", "@", "~", "±"].iter().any(|p| before.ends_with(p));
    let word_before = before.rsplit(|c: char| !c.is_alphanumeric()).next().unwrap_or("");
    let context = ["about", "Linux", "kernel", "kernels", "iperf3", "etcd", "version", "lever", "levers", "section", "issue"];
    let load = unit == Some("%")
        && (after[1..].trim_start().starts_with("load") || word_before == "at" || after[1..].trim_start().starts_with("/ "));
    if bound || load || context.contains(&word_before) {
        return false;
    }
    match unit {
        Some("Gbit/s") | Some("GiB/s") => decimal,
        Some(_) => true,
        None => decimal,
    }
}

/// Where a sentence of `text` ends: after `.`, `?` or `!` followed by white
/// space and a capital, an opening parenthesis, `*`, `` ` `` or `[` (not
/// after `e.g.`, `i.e.`, `vs.`, `cf.`). Offsets are relative to `text`.
pub fn sentence_ends(text: &str) -> Vec<usize> {
    let b = text.as_bytes();
    let mut out = Vec::new();
    for i in 0..b.len() {
        if !matches!(b[i], b'.' | b'?' | b'!') {
            continue;
        }
        let rest = &text[i + 1..];
        let trimmed = rest.trim_start();
        if trimmed.len() == rest.len() && !rest.is_empty() {
            continue;
        }
        let next = trimmed.chars().next();
        let abbrev = ["e.g", "i.e", " vs", " cf"].iter().any(|a| text[..i].ends_with(a));
        if !abbrev && next.is_none_or(|c| c.is_uppercase() || matches!(c, '(' | '*' | '`' | '[')) {
            out.push(i + 1);
        }
    }
    out
}

/// The committed runs a span of text cites, with where: `bench/runs/NAME`,
/// or `run NAME` / `runs NAME` with NAME a run's directory or a declared
/// alias (in backticks or not).
pub fn citations(text: &str, runs: &BTreeSet<String>, aliases: &BTreeMap<String, String>) -> Vec<(usize, String)> {
    let token = |s: &str| {
        s.split(|c: char| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')))
            .next()
            .unwrap_or("")
            .trim_end_matches('.')
            .to_owned()
    };
    let mut out = Vec::new();
    for (at, _) in text.match_indices("bench/runs/") {
        let name = token(&text[at + 11..]);
        if runs.contains(&name) {
            out.push((at, name));
        }
    }
    for word in ["run ", "runs ", "Run ", "Runs "] {
        for (at, _) in text.match_indices(word) {
            if at > 0 && text[..at].chars().next_back().is_some_and(|c| c.is_alphanumeric()) {
                continue;
            }
            let name = token(text[at + word.len()..].trim_start_matches('`'));
            if let Some(run) = aliases.get(&name).cloned().or_else(|| runs.contains(&name).then_some(name)) {
                out.push((at, run));
            }
        }
    }
    out.sort();
    out
}

/// A stretch of prose the unmarked-figure check looks at: a paragraph, a
/// list item or a table cell; `whole` when the whole of it is about a run
/// (a column whose header cites one, a table introduced by a sentence that
/// does).
#[derive(Debug, Clone)]
pub struct Region {
    pub start: usize,
    pub end: usize,
    pub whole: Option<String>,
}

/// The doc's regions, in order.
pub fn regions(doc: &Doc, runs: &BTreeSet<String>, aliases: &BTreeMap<String, String>) -> Vec<Region> {
    let mut out = Vec::new();
    let mut block: Option<usize> = None;
    let mut last_paragraph: Option<(usize, usize)> = None;
    let mut table: Vec<(usize, usize)> = Vec::new();
    let mut offset = 0;
    let lines: Vec<&str> = doc.prose.split_inclusive('\n').collect();
    let flush_table = |table: &mut Vec<(usize, usize)>, out: &mut Vec<Region>, intro: Option<(usize, usize)>| {
        if table.is_empty() {
            return;
        }
        let intro_run = intro.and_then(|(s, e)| {
            let text = &doc.cites[s..e];
            let last = sentence_ends(text.trim_end()).into_iter().rfind(|p| *p < text.trim_end().len()).unwrap_or(0);
            citations(&text[last..], runs, aliases).into_iter().next().map(|c| c.1)
        });
        let row_cells = |(s, e): (usize, usize)| -> Vec<(usize, usize)> {
            let line = &doc.prose[s..e];
            let b = line.as_bytes();
            let mut cells = Vec::new();
            let mut cell_start = None;
            for (i, c) in b.iter().enumerate() {
                if *c == b'|' && (i == 0 || b[i - 1] != b'\\') {
                    if let Some(cs) = cell_start {
                        cells.push((s + cs, s + i));
                    }
                    cell_start = Some(i + 1);
                }
            }
            cells
        };
        let header = row_cells(table[0]);
        let column_runs: Vec<Option<String>> =
            header.iter().map(|&(s, e)| citations(&doc.cites[s..e], runs, aliases).into_iter().next().map(|c| c.1)).collect();
        for (k, &row) in table.iter().enumerate() {
            if k < 2 {
                continue; // the header (its figures are names) and the |---| line
            }
            for (col, cell) in row_cells(row).into_iter().enumerate() {
                let whole = column_runs.get(col).cloned().flatten().or_else(|| intro_run.clone());
                out.push(Region { start: cell.0, end: cell.1, whole });
            }
        }
        table.clear();
    };
    for line in lines {
        let t = line.trim();
        let start = offset;
        offset += line.len();
        let is_row = t.starts_with('|');
        let is_item = t.starts_with("- ") || t.starts_with("* ") || t.starts_with("+ ") || {
            let d = t.bytes().take_while(u8::is_ascii_digit).count();
            d > 0 && t[d..].starts_with(". ")
        };
        let ends_block = t.is_empty() || t.starts_with('#') || is_row || is_item;
        if ends_block && let Some(s) = block.take() {
            out.push(Region { start: s, end: start, whole: None });
            last_paragraph = Some((s, start));
        }
        if is_row {
            table.push((start, offset));
            continue;
        }
        flush_table(&mut table, &mut out, last_paragraph);
        if t.is_empty() {
            continue;
        }
        if t.starts_with('#') {
            last_paragraph = None;
            continue;
        }
        if block.is_none() {
            block = Some(start);
        }
    }
    if let Some(s) = block {
        out.push(Region { start: s, end: doc.prose.len(), whole: None });
    }
    flush_table(&mut table, &mut out, last_paragraph);
    out
}

/// The parts of `region` that are about a committed run, with the run:
/// all of it when `whole`, else from each citation to the end of its
/// sentence.
pub fn scopes(doc: &Doc, region: &Region, runs: &BTreeSet<String>, aliases: &BTreeMap<String, String>) -> Vec<(usize, usize, String)> {
    if let Some(run) = &region.whole {
        return vec![(region.start, region.end, run.clone())];
    }
    let text = &doc.cites[region.start..region.end];
    let ends = sentence_ends(text);
    citations(text, runs, aliases)
        .into_iter()
        .map(|(at, run)| {
            let end = ends.iter().copied().find(|e| *e > at).unwrap_or(text.len());
            (region.start + at, region.start + end, run)
        })
        .collect()
}
