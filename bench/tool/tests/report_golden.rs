//! Golden tests of the benchmark report: rendering each sample run must
//! reproduce its `expected-report.md` byte for byte, write every chart the
//! report embeds as well-formed SVG, and be deterministic (two renders of
//! the same input are byte-identical). The samples:
//! - `tests/fixtures/sample-quick/`: a trimmed real `bench/run.sh --quick`
//!   run from before the underlay profiles (`mode,rep,test,value,unit`,
//!   `raw/`), which the report must keep reading as the veth profile;
//! - `tests/fixtures/sample-profiles/`: a trimmed real `encapd-bench run
//!   --quick` on both profiles, with the kernel path (who carried the
//!   packets).
//!
//! After an intended change to the report, regenerate the expectation with
//! `ENCAPD_UPDATE_GOLDEN=1 cargo test -p encapd-bench --test report_golden`
//! and review the diff.

use std::path::{Path, PathBuf};

use encapd_bench::report;

const QUICK: &str = "sample-quick";
const PROFILES: &str = "sample-profiles";

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name)
}

fn sample_dir() -> PathBuf {
    fixture(QUICK)
}

/// A fresh, empty temporary directory (removed by the guard).
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_nanos();
        let p = std::env::temp_dir().join(format!("encapd-report-{tag}-{}-{nanos}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Copies the sample's inputs (not its rendered outputs) into `to`.
fn copy_inputs(from: &Path, to: &Path) {
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let name = entry.file_name().into_string().unwrap();
        let src = entry.path();
        let dst = to.join(&name);
        if src.is_dir() {
            std::fs::create_dir_all(&dst).unwrap();
            copy_inputs(&src, &dst);
        } else if !(name.ends_with(".svg") || name == "report.md" || name == "expected-report.md") {
            std::fs::copy(&src, &dst).unwrap();
        }
    }
}

fn render_copy(tag: &str) -> (TempDir, report::ReportSummary) {
    render_fixture(QUICK, tag)
}

fn render_fixture(name: &str, tag: &str) -> (TempDir, report::ReportSummary) {
    let tmp = TempDir::new(tag);
    copy_inputs(&fixture(name), &tmp.0);
    let summary = report::render(&tmp.0).unwrap_or_else(|e| panic!("render: {e}"));
    (tmp, summary)
}

/// SVG files the report embeds (`![...](file.svg)`), in order.
fn embedded_svgs(md: &str) -> Vec<String> {
    md.split("](").skip(1).filter_map(|rest| rest.split(')').next()).filter(|f| f.ends_with(".svg")).map(String::from).collect()
}

/// Renders fixture `name` and compares it with its expectation
/// (`ENCAPD_UPDATE_GOLDEN=1` rewrites the expectation and its charts);
/// every embedded chart must be well-formed SVG with text.
fn golden(name: &str) -> (TempDir, report::ReportSummary, String) {
    let (tmp, summary) = render_fixture(name, &format!("golden-{name}"));
    let got = std::fs::read_to_string(&summary.report).unwrap();
    let expected_path = fixture(name).join("expected-report.md");
    if std::env::var_os("ENCAPD_UPDATE_GOLDEN").is_some() {
        std::fs::write(&expected_path, &got).unwrap();
        for c in &summary.charts {
            std::fs::copy(c, fixture(name).join(c.file_name().unwrap())).unwrap();
        }
    }
    let expected = std::fs::read_to_string(&expected_path).unwrap();
    if got != expected {
        let first =
            got.lines().zip(expected.lines()).position(|(a, b)| a != b).unwrap_or(got.lines().count().min(expected.lines().count()));
        panic!(
            "report.md differs from {} at line {}:\n  got:      {:?}\n  expected: {:?}\n(ENCAPD_UPDATE_GOLDEN=1 rewrites the expectation)",
            expected_path.display(),
            first + 1,
            got.lines().nth(first),
            expected.lines().nth(first)
        );
    }
    assert!(!got.contains(tmp.0.to_str().unwrap()), "the report must not name its directory");

    // Every embedded chart exists, was reported, and is well-formed XML
    // with an <svg> root.
    let embedded = embedded_svgs(&got);
    assert!(embedded.len() >= 4, "expected throughput, UDP, latency and CPU charts, got {embedded:?}");
    let written: Vec<String> = summary.charts.iter().map(|c| c.file_name().unwrap().to_str().unwrap().to_string()).collect();
    assert_eq!(embedded, written);
    for name in &embedded {
        let svg = std::fs::read_to_string(tmp.0.join(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
        let root = xml::check(&svg).unwrap_or_else(|e| panic!("{name} is not well-formed XML: {e}"));
        assert_eq!(root, "svg", "{name}: root element");
        assert!(svg.contains("<text"), "{name}: no text (labels) in the chart");
    }
    (tmp, summary, got)
}

#[test]
fn sample_report_matches_golden() {
    let (_tmp, _, md) = golden(QUICK);
    assert!(
        md.contains("- underlay profile: veth (a plain veth pair: the run predates the underlay profiles)"),
        "an old run is read as veth"
    );
}

#[test]
fn a_run_on_both_profiles_shows_them_side_by_side() {
    let (tmp, s, md) = golden(PROFILES);
    assert!(md.contains("TCP 1 stream Gbit/s [veth] | TCP 1 stream Gbit/s [wire]"), "side by side in the headline");
    for c in &s.charts {
        let file = c.file_name().unwrap().to_str().unwrap().to_owned();
        let profile = if file.ends_with("-veth.svg") {
            "veth"
        } else {
            assert!(file.ends_with("-wire.svg"), "{file}: a chart per profile");
            "wire"
        };
        let svg = std::fs::read_to_string(tmp.0.join(&file)).unwrap();
        assert!(svg.contains(&format!("{profile} underlay")), "{file}: the title names the profile");
    }
    assert!(s.targets.iter().all(|(name, _)| name.starts_with("[veth] ") || name.starts_with("[wire] ")), "{:?}", s.targets);
    assert!(md.contains("## Who carried the packets (medians)"));
    let kernel = md.lines().find(|l| l.starts_with("| uring-kernel | TCP 1 stream |")).expect("the kernel path's row");
    assert!(kernel.contains("| 100 / 100 |"), "the kernel path carried every TCP packet: {kernel}");
    let uring = md.lines().find(|l| l.starts_with("| uring | TCP 1 stream |")).expect("uring's row");
    assert!(uring.contains("| 0 / 0 |"), "the workers carried uring's packets: {uring}");
}

#[test]
fn rendering_is_deterministic() {
    for name in [QUICK, PROFILES] {
        let (a, sa) = render_fixture(name, "det-a");
        let (b, _) = render_fixture(name, "det-b");
        let mut files = vec!["report.md".to_string()];
        files.extend(sa.charts.iter().map(|c| c.file_name().unwrap().to_str().unwrap().to_string()));
        for f in &files {
            let x = std::fs::read(a.0.join(f)).unwrap();
            let y = std::fs::read(b.0.join(f)).unwrap();
            assert!(x == y, "{name}: {f} differs between two renders of the same input");
        }
        // Rendering again in place gives the same bytes too.
        let before = std::fs::read(a.0.join("report.md")).unwrap();
        report::render(&a.0).unwrap();
        assert_eq!(before, std::fs::read(a.0.join("report.md")).unwrap());
    }
}

#[test]
fn summary_lists_modes_and_targets() {
    let (_tmp, s) = render_copy("summary");
    // The fixture predates the vxlan backend's modes: its kernel pair,
    // recorded as `vxlan`, is read as `vxlan-kernel`.
    assert_eq!(s.modes, ["routing", "vxlan-kernel", "classic", "mmsg-nooffload", "mmsg", "uring-nooffload", "uring"]);
    assert_eq!(s.targets.len(), 7);
    assert!(s.targets.iter().all(|(_, v)| v.is_some()), "every target computable from a complete run: {:?}", s.targets);
    // A header, a separator, a row per mode and one per family: the
    // references, the udp backend's engines.
    assert!(s.headline.lines().count() == 2 + s.modes.len() + 2, "{}", s.headline);
    assert!(s.headline.contains("| **references** |") && s.headline.contains("| **udp backend, by I/O engine** |"), "{}", s.headline);
}

/// A latency figure measured over more than 1 % lost replies is marked,
/// its ratios are `n/c`, and the latency target is not decided on it; the
/// loss stands next to every headline RTT figure.
#[test]
fn latency_over_lost_replies_is_not_comparable() {
    let tmp = TempDir::new("lossy");
    copy_inputs(&sample_dir(), &tmp.0);
    let csv = tmp.0.join("results.csv");
    let text = std::fs::read_to_string(&csv).unwrap();
    assert!(text.contains("uring,1,lat50_loss,0,%"), "the fixture changed");
    std::fs::write(&csv, text.replace("uring,1,lat50_loss,0,%", "uring,1,lat50_loss,2.5,%")).unwrap();
    let s = report::render(&tmp.0).unwrap();
    let md = std::fs::read_to_string(&s.report).unwrap();
    let uring = md.lines().find(|l| l.starts_with("| uring | ")).unwrap();
    assert!(uring.contains("8279 (2.50 % lost) †"), "{uring}");
    assert!(uring.contains("164 (0.00 % lost) |"), "the 10 % load had no loss: {uring}");
    let ratio = md.lines().skip_while(|l| !l.starts_with("### Ratios of medians to vxlan")).find(|l| l.starts_with("| uring |")).unwrap();
    assert!(ratio.contains("| n/c |"), "{ratio}");
    let (_, verdict) = s.targets.iter().find(|(name, _)| name.contains("RTT p50")).unwrap();
    assert_eq!(*verdict, None, "{:?}", s.targets);
    assert!(md.contains("not comparable: uring lost 2.50 % of the replies"), "target detail");
    let svg = std::fs::read_to_string(tmp.0.join("latency-50.svg")).unwrap();
    assert!(svg.contains("uring (2.50 % lost) †"), "latency chart legend");
}

#[test]
fn bad_inputs_are_errors() {
    let tmp = TempDir::new("bad");
    assert!(matches!(report::render(&tmp.0), Err(report::ReportError::Io { .. })), "missing results.csv");
    std::fs::write(tmp.0.join("results.csv"), "mode,rep,test,value,unit\n").unwrap();
    assert!(matches!(report::render(&tmp.0), Err(report::ReportError::NoData { .. })));
    std::fs::write(tmp.0.join("results.csv"), "mode,rep,test,value,unit\nrouting,1,tcp1,fast,Gbit/s\n").unwrap();
    let e = report::render(&tmp.0).unwrap_err();
    assert!(matches!(e, report::ReportError::Parse { line: 2, .. }), "{e}");
    assert!(e.to_string().contains("results.csv:2"), "{e}");
    // A minimal run (one mode, no metadata, no latency files) renders.
    std::fs::write(tmp.0.join("results.csv"), "mode,rep,test,value,unit\nrouting,1,tcp1,9.5,Gbit/s\nrouting,1,lat50_p50,NA,us\n").unwrap();
    let s = report::render(&tmp.0).unwrap();
    let md = std::fs::read_to_string(&s.report).unwrap();
    assert!(md.contains("| routing | 9.50 |"), "{md}");
    for c in &s.charts {
        xml::check(&std::fs::read_to_string(c).unwrap()).unwrap();
    }
}

#[test]
fn xml_checker_catches_errors() {
    assert_eq!(xml::check("<?xml version=\"1.0\"?>\n<svg a=\"1\"><g><text>a &amp; b</text></g><rect/></svg>\n").unwrap(), "svg");
    for bad in [
        "<svg><g></svg>",
        "<svg></g>",
        "<svg a=1></svg>",
        "<svg>a & b</svg>",
        "<svg></svg><svg></svg>",
        "text<svg></svg>",
        "<svg a=\"1\" a=\"2\"></svg>",
        "<svg><!-- x -- y --></svg>",
        "<svg",
    ] {
        assert!(xml::check(bad).is_err(), "accepted {bad:?}");
    }
}

/// A small well-formedness checker (elements nest and match, attributes are
/// quoted and unique, text has no bare `<` or `&`, one root element).
mod xml {
    pub fn check(s: &str) -> Result<String, String> {
        let b = s.as_bytes();
        let mut i = 0;
        let mut stack: Vec<String> = Vec::new();
        let mut root: Option<String> = None;
        let at = |i: usize| format!("byte {i}");
        while i < b.len() {
            if b[i] != b'<' {
                let end = s[i..].find('<').map_or(b.len(), |k| i + k);
                let text = &s[i..end];
                if stack.is_empty() && !text.trim().is_empty() {
                    return Err(format!("text outside the root element at {}", at(i)));
                }
                check_text(text).map_err(|e| format!("{e} at {}", at(i)))?;
                i = end;
                continue;
            }
            let rest = &s[i..];
            if rest.starts_with("<?") {
                let end = rest.find("?>").ok_or_else(|| format!("unterminated <? at {}", at(i)))?;
                i += end + 2;
            } else if let Some(comment) = rest.strip_prefix("<!--") {
                let end = comment.find("-->").ok_or_else(|| format!("unterminated comment at {}", at(i)))?;
                if comment[..end].contains("--") {
                    return Err(format!("`--` inside a comment at {}", at(i)));
                }
                i += 4 + end + 3;
            } else if let Some(r) = rest.strip_prefix("</") {
                let end = r.find('>').ok_or_else(|| format!("unterminated end tag at {}", at(i)))?;
                let name = r[..end].trim_end();
                match stack.pop() {
                    Some(open) if open == name => {}
                    other => return Err(format!("</{name}> closes {other:?} at {}", at(i))),
                }
                i += 2 + end + 1;
            } else {
                let (name, self_closing, len) = start_tag(rest).map_err(|e| format!("{e} at {}", at(i)))?;
                if stack.is_empty() {
                    if root.is_some() {
                        return Err(format!("second root element <{name}> at {}", at(i)));
                    }
                    root = Some(name.clone());
                }
                if !self_closing {
                    stack.push(name);
                }
                i += len;
            }
        }
        if let Some(open) = stack.pop() {
            return Err(format!("<{open}> never closed"));
        }
        root.ok_or_else(|| "no root element".to_string())
    }

    fn is_name(c: char) -> bool {
        c.is_alphanumeric() || matches!(c, '_' | '-' | '.' | ':')
    }

    /// Parses `<name attr="v" ...>` or `.../>`: (name, self-closing, bytes).
    fn start_tag(s: &str) -> Result<(String, bool, usize), String> {
        let body = &s[1..];
        let name_len = body.find(|c: char| !is_name(c)).unwrap_or(body.len());
        if name_len == 0 {
            return Err("bad tag name".into());
        }
        let name = body[..name_len].to_string();
        let mut rest = &body[name_len..];
        let mut seen = Vec::new();
        loop {
            let trimmed = rest.trim_start();
            let had_space = trimmed.len() < rest.len();
            rest = trimmed;
            if let Some(r) = rest.strip_prefix("/>") {
                return Ok((name, true, s.len() - r.len()));
            }
            if let Some(r) = rest.strip_prefix('>') {
                return Ok((name, false, s.len() - r.len()));
            }
            if rest.is_empty() {
                return Err(format!("unterminated <{name}>"));
            }
            if !had_space {
                return Err(format!("missing space before attribute in <{name}>"));
            }
            let alen = rest.find(|c: char| !is_name(c)).unwrap_or(rest.len());
            if alen == 0 {
                return Err(format!("bad attribute in <{name}>"));
            }
            let attr = &rest[..alen];
            if seen.contains(&attr) {
                return Err(format!("duplicate attribute {attr} in <{name}>"));
            }
            seen.push(attr);
            rest = rest[alen..].trim_start();
            rest = rest.strip_prefix('=').ok_or_else(|| format!("attribute {attr} without value in <{name}>"))?.trim_start();
            let quote = rest.chars().next().filter(|&q| q == '"' || q == '\'').ok_or_else(|| format!("unquoted {attr} in <{name}>"))?;
            let end = rest[1..].find(quote).ok_or_else(|| format!("unterminated {attr} in <{name}>"))?;
            let value = &rest[1..1 + end];
            if value.contains('<') {
                return Err(format!("`<` in attribute {attr}"));
            }
            check_text(value)?;
            rest = &rest[1 + end + 1..];
        }
    }

    /// Every `&` starts an entity or character reference.
    fn check_text(t: &str) -> Result<(), String> {
        let mut rest = t;
        while let Some(k) = rest.find('&') {
            let r = &rest[k + 1..];
            let end = r.find(';').ok_or("bare `&`")?;
            let ent = &r[..end];
            let ok = matches!(ent, "amp" | "lt" | "gt" | "quot" | "apos")
                || ent.strip_prefix("#x").is_some_and(|h| !h.is_empty() && h.chars().all(|c| c.is_ascii_hexdigit()))
                || ent.strip_prefix('#').is_some_and(|d| !d.is_empty() && d.chars().all(|c| c.is_ascii_digit()));
            if !ok {
                return Err(format!("bad entity &{ent};"));
            }
            rest = &r[end + 1..];
        }
        Ok(())
    }
}

/// The README block of a run on both profiles: figures from `wire`, each
/// followed by `veth`'s; who carried the packets; the wire charts.
#[test]
fn the_readme_block_of_a_run_on_both_profiles_quotes_wire_then_veth() {
    let fixtures = fixture("");
    let block = encapd_bench::report::readme::block(&fixtures, Path::new(PROFILES)).unwrap();
    assert!(block.contains("| TCP 1 stream Gbit/s (wire / veth) |"), "{block}");
    assert!(block.contains("| plain routing | 4.11 / 4.31 |"), "routing: wire 4.11, veth 4.31 Gbit/s:\n{block}");
    assert!(block.contains("`uring-kernel` 100 / 100 % by the kernel path"), "{block}");
    assert!(block.contains("![throughput per mode](sample-profiles/throughput-wire.svg)"), "{block}");
}
