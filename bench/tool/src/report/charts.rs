//! The report's SVG charts, drawn with plotters' SVG backend, one set per
//! underlay profile (every title names it). Text is emitted as SVG
//! `<text>` elements (no font files needed: without the `ttf` feature
//! plotters only estimates text extents for layout).
//!
//! Readable with many modes (a run of 12 or more is common):
//! - bar charts are horizontal, one row per mode with its name on the
//!   left, so names never collide however many modes there are; the
//!   chart grows with the number of modes;
//! - latency lines give every mode its own colour and dash pattern
//!   ([`mode_style`]: 10 colours, solid, then dashed, then dotted), and
//!   the legend sits in a panel of its own beside the plot, where it
//!   cannot cover a line.

use std::path::Path;

use plotters::coord::Shift;
use plotters::coord::types::RangedCoordf64;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use super::{ReportError, Run, hgrm};

/// A chart written into the run directory.
pub(crate) struct Chart {
    pub(crate) file: String,
    pub(crate) title: String,
    pub(crate) note: String,
}

const WIDTH: u32 = 1000;
const FONT: &str = "sans-serif";

/// Ten colours that stay apart from each other (Tableau 10).
const PALETTE: [RGBColor; 10] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
    RGBColor(188, 189, 34),
    RGBColor(23, 190, 207),
];

/// How a line is drawn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Dash {
    Solid,
    Dashed,
    Dotted,
}

/// The colour and dash of the `index`-th mode of a report: distinct for
/// the first 30 modes.
pub(crate) fn mode_style(index: usize) -> (RGBColor, Dash) {
    let dash = match index / PALETTE.len() {
        0 => Dash::Solid,
        1 => Dash::Dashed,
        _ => Dash::Dotted,
    };
    (PALETTE[index % PALETTE.len()], dash)
}

/// Colours of a bar chart's series (its tests), apart from each other.
const SERIES: [RGBColor; 4] = [RGBColor(31, 119, 180), RGBColor(255, 127, 14), RGBColor(44, 160, 44), RGBColor(148, 103, 189)];

fn chart_err(name: &str) -> impl Fn(String) -> ReportError + '_ {
    move |message| ReportError::Chart { name: name.to_string(), message }
}

/// Writes every chart of `run` (one profile) with `suffix` in the file
/// names (`-wire`; empty for a run from before the profiles) and returns
/// them in report order.
pub(crate) fn write_all(dir: &Path, run: &Run, suffix: &str) -> Result<Vec<Chart>, ReportError> {
    let mut charts = Vec::new();
    let on = format!(", {} underlay", run.profile);
    let mut emit = |file: String, title: String, note: String, svg: String| -> Result<(), ReportError> {
        let path = dir.join(&file);
        std::fs::write(&path, svg).map_err(|source| ReportError::Io { path, source })?;
        charts.push(Chart { file, title, note });
        Ok(())
    };

    let file = format!("throughput{suffix}.svg");
    let title = format!("TCP throughput (median){on}");
    let svg = bar_chart(run, &title, "Gbit/s", &[("tcp1", "TCP 1 stream"), ("tcp4", "TCP 4 streams")], 1.0, |v| format!("{v:.2}"))
        .map_err(chart_err(&file))?;
    emit(file, title, "iperf3 receiver throughput, kernel default congestion control.".into(), svg)?;

    let file = format!("udp{suffix}.svg");
    let title = format!("UDP delivered packet rate (median){on}");
    let svg = bar_chart(
        run,
        &title,
        "kpps delivered",
        &[("udp64_pps", "64 B payload"), ("udp512_pps", "512 B payload"), ("udp1400_pps", "1400 B payload")],
        1e-3,
        |v| format!("{v:.0}"),
    )
    .map_err(chart_err(&file))?;
    emit(file, title, "iperf3 `-u -b 0`: packets per second counted by the receiver.".into(), svg)?;

    for load in run.latency_loads() {
        let file = format!("latency-{load}{suffix}.svg");
        let title = format!("RTT percentile distribution at {load} % load{on}");
        let (svg, sources) = latency_chart(dir, run, load, &title).map_err(chart_err(&file))?;
        let note = format!(
            "`encapd-bench latency` at {load} % of each mode's UDP 64 B delivered rate; per mode the repetition with the median p50 ({}); \
the legend gives the replies that repetition lost († more than 1 %: not comparable).",
            if sources.is_empty() { "no data".to_string() } else { sources.join(", ") }
        );
        emit(file, title, note, svg)?;
    }

    let file = format!("cpu{suffix}.svg");
    let title = format!("CPU cores per Gbit/s (median){on}");
    let svg = bar_chart(
        run,
        &title,
        "busy cores per Gbit/s",
        &[
            ("tcp1_cpu_per_gbps", "TCP 1 stream, whole machine"),
            ("tcp1_encapd_cpu_per_gbps", "TCP 1 stream, encapd"),
            ("tcp4_cpu_per_gbps", "TCP 4 streams, whole machine"),
            ("tcp4_encapd_cpu_per_gbps", "TCP 4 streams, encapd"),
        ],
        1.0,
        |v| format!("{v:.3}"),
    )
    .map_err(chart_err(&file))?;
    emit(
        file,
        title,
        "Busy CPU during the TCP test, in cores, per Gbit/s; lower is better. Whole machine: `/proc/stat` (everything that \
ran: both gateways, iperf3 at both ends, the kernel). encapd: user + system time of the encapd processes \
(`/proc/PID/stat`); n/a where no encapd runs."
            .into(),
        svg,
    )?;
    Ok(charts)
}

/// Pixels a label of `text` needs at `size` (plotters estimates text
/// extents without fonts; this is the same estimate, a little generous).
fn text_width(text: &str, size: u32) -> i32 {
    (text.chars().count() as f64 * f64::from(size) * 0.6).ceil() as i32
}

fn e(err: impl std::fmt::Display) -> String {
    err.to_string()
}

/// Horizontal grouped bars: one row per mode (its name on the left), one
/// bar per test (medians × `scale`), the value at the end of each bar;
/// the series legend is a row under the title.
fn bar_chart(
    run: &Run,
    title: &str,
    x_desc: &str,
    tests: &[(&str, &str)],
    scale: f64,
    label: impl Fn(f64) -> String,
) -> Result<String, String> {
    let modes = &run.modes;
    let values: Vec<Vec<Option<f64>>> =
        tests.iter().map(|(t, _)| modes.iter().map(|m| run.median(m, t).map(|v| v * scale)).collect()).collect();
    let top = values.iter().flatten().flatten().fold(0.0_f64, |a, &b| a.max(b));
    // Room on the right for the last bar's value.
    let xmax = if top > 0.0 { top * 1.22 } else { 1.0 };
    let n = modes.len().max(1);
    let k = tests.len().max(1);
    let bar_px = 12;
    let row_px = (k as u32 * bar_px + 12).max(26);
    let caption_px = 40;
    let label_w = modes.iter().map(|m| text_width(m, 14)).max().unwrap_or(60).max(60) + 20;
    // The series legend, left to right under the title, wrapped.
    let mut legend: Vec<(i32, i32, &str, RGBColor)> = Vec::new();
    let (mut x, mut y) = (label_w + 12, caption_px as i32 + 12);
    for (si, (_, name)) in tests.iter().enumerate() {
        let w = 20 + text_width(name, 13) + 24;
        if x + w > WIDTH as i32 - 10 && !legend.is_empty() {
            (x, y) = (label_w + 12, y + 22);
        }
        legend.push((x, y, name, SERIES[si % SERIES.len()]));
        x += w;
    }
    let legend_px = (y - caption_px as i32 + 18) as u32;
    let axis_px = 50;
    let height = caption_px + legend_px + n as u32 * row_px + axis_px + 20;

    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (WIDTH, height)).into_drawing_area();
        root.fill(&WHITE).map_err(e)?;
        let (head, body) = root.split_vertically(caption_px + legend_px);
        head.draw(&Text::new(
            title.to_owned(),
            (WIDTH as i32 / 2, 12),
            TextStyle::from((FONT, 22).into_font()).pos(Pos::new(HPos::Center, VPos::Top)),
        ))
        .map_err(e)?;
        for &(x, y, name, color) in &legend {
            head.draw(&Rectangle::new([(x, y - 6), (x + 14, y + 6)], color.filled())).map_err(e)?;
            head.draw(&Text::new(
                name.to_owned(),
                (x + 20, y),
                TextStyle::from((FONT, 13).into_font()).pos(Pos::new(HPos::Left, VPos::Center)),
            ))
            .map_err(e)?;
        }
        let mut chart = ChartBuilder::on(&body)
            .margin(10)
            .margin_right(30)
            .x_label_area_size(axis_px)
            .y_label_area_size(label_w as u32)
            .build_cartesian_2d(0f64..xmax, 0f64..n as f64)
            .map_err(e)?;
        chart
            .configure_mesh()
            .disable_y_mesh()
            .y_labels(0)
            .light_line_style(WHITE)
            .x_desc(x_desc)
            .x_label_style((FONT, 13))
            .draw()
            .map_err(e)?;
        // Row i from the top: y from n-i-1 to n-i.
        let row = |i: usize| (n - i - 1) as f64;
        let labels: Vec<(f64, String)> = modes.iter().enumerate().map(|(i, m)| (row(i) + 0.5, m.clone())).collect();
        y_labels(&body, &chart, &labels, 14)?;
        let slot = 0.8 / k as f64;
        for (si, vals) in values.iter().enumerate() {
            let color = SERIES[si % SERIES.len()];
            // Series 0 at the top of the row.
            let y0 = |i: usize| row(i) + 0.9 - (si as f64 + 1.0) * slot;
            let bars: Vec<(f64, f64)> = vals.iter().enumerate().filter_map(|(i, v)| v.map(|v| (y0(i), v))).collect();
            chart
                .draw_series(bars.iter().map(|&(y, v)| Rectangle::new([(0.0, y + slot * 0.08), (v, y + slot * 0.92)], color.filled())))
                .map_err(e)?;
            let style = TextStyle::from((FONT, 11).into_font()).pos(Pos::new(HPos::Left, VPos::Center));
            chart
                .draw_series(bars.iter().map(|&(y, v)| Text::new(format!(" {}", label(v)), (v, y + slot / 2.0), style.clone())))
                .map_err(e)?;
            let missing: Vec<f64> = vals.iter().enumerate().filter(|(_, v)| v.is_none()).map(|(i, _)| y0(i)).collect();
            chart.draw_series(missing.iter().map(|&y| Text::new(" n/a", (0.0, y + slot / 2.0), style.clone()))).map_err(e)?;
        }
        root.present().map_err(e)?;
    }
    Ok(svg)
}

/// Draws y-axis labels (right-aligned beside data y positions) on the
/// area: plotters' own labels cannot be placed at arbitrary positions.
fn y_labels(
    area: &DrawingArea<SVGBackend<'_>, Shift>,
    chart: &ChartContext<'_, SVGBackend<'_>, Cartesian2d<RangedCoordf64, RangedCoordf64>>,
    labels: &[(f64, String)],
    size: u32,
) -> Result<(), String> {
    let style = TextStyle::from((FONT, size).into_font()).pos(Pos::new(HPos::Right, VPos::Center));
    let x0 = chart.x_range().start;
    let offset = area.get_base_pixel();
    for (y, text) in labels {
        let (px, py) = chart.backend_coord(&(x0, *y));
        let (px, py) = (px - offset.0, py - offset.1);
        area.draw(&PathElement::new(vec![(px - 5, py), (px, py)], BLACK.stroke_width(1))).map_err(e)?;
        area.draw(&Text::new(text.clone(), (px - 8, py), style.clone())).map_err(e)?;
    }
    Ok(())
}

/// Draws x-axis labels (centred under data x positions) on the root area:
/// plotters' own labels cannot be placed at arbitrary positions on an f64
/// axis.
fn x_labels<Y: Ranged>(
    root: &DrawingArea<SVGBackend<'_>, Shift>,
    chart: &ChartContext<'_, SVGBackend<'_>, Cartesian2d<RangedCoordf64, Y>>,
    y_axis: Y::ValueType,
    labels: &[(f64, String)],
    size: u32,
) -> Result<(), String>
where
    Y::ValueType: Clone,
{
    let style = TextStyle::from((FONT, size).into_font()).pos(Pos::new(HPos::Center, VPos::Top));
    for (x, text) in labels {
        let (px, py) = chart.backend_coord(&(*x, y_axis.clone()));
        root.draw(&PathElement::new(vec![(px, py), (px, py + 5)], BLACK.stroke_width(1))).map_err(e)?;
        root.draw(&Text::new(text.clone(), (px, py + 8), style.clone())).map_err(e)?;
    }
    Ok(())
}

/// log10(1 / (1 − p)): the usual x axis of a percentile distribution.
fn nines(p: f64) -> f64 {
    (1.0 / (1.0 - p)).log10()
}

fn percent_label(x: f64) -> String {
    let p = 100.0 * (1.0 - 10f64.powf(-x));
    let decimals = if x <= 2.0 { 0 } else { (x.round() as usize).saturating_sub(2) };
    format!("{p:.decimals$} %")
}

/// A latency line's legend: the mode and the replies its repetition lost.
fn legend(run: &Run, mode: &str, rep: u32, load: u32) -> String {
    match run.value(mode, rep, &format!("lat{load}_loss")) {
        Some(loss) if loss > super::LATENCY_LOSS_LIMIT_PCT => format!("{mode} ({loss:.2} % lost) †"),
        Some(loss) => format!("{mode} ({loss:.2} % lost)"),
        None => mode.to_string(),
    }
}

/// A line (or a legend sample) in the mode's style.
fn draw_styled<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    pts: Vec<(i32, i32)>,
    color: RGBColor,
    dash: Dash,
    width: u32,
) -> Result<(), String> {
    let style = color.stroke_width(width);
    match dash {
        Dash::Solid => area.draw(&PathElement::new(pts, style)),
        Dash::Dashed => area.draw(&plotters::element::DashedPathElement::new(pts, 9, 5, style)),
        Dash::Dotted => area.draw(&plotters::element::DashedPathElement::new(pts, 2, 4, style)),
    }
    .map_err(|err| err.to_string())
}

/// One line per mode: its median repetition's `.hgrm` at this load.
fn latency_chart(dir: &Path, run: &Run, load: u32, title: &str) -> Result<(String, Vec<String>), String> {
    let test = format!("lat{load}_p50");
    // (mode index, legend, points)
    type Line = (usize, String, Vec<(f64, f64)>);
    let mut lines: Vec<Line> = Vec::new();
    let mut sources = Vec::new();
    for (i, mode) in run.modes.iter().enumerate() {
        let Some(rep) = run.median_rep(mode, &test) else { continue };
        let path = dir.join(&run.raw_dir).join(format!("{}-r{rep}-lat{load}.hgrm", run.recorded_name(mode)));
        let Ok(text) = std::fs::read_to_string(&path) else { continue };
        let d = hgrm::parse(&text).map_err(|err| format!("{}: {err}", path.display()))?;
        let pts: Vec<(f64, f64)> =
            d.rows.iter().filter(|r| r.percentile < 1.0 && r.value > 0.0).map(|r| (nines(r.percentile), r.value)).collect();
        if !pts.is_empty() {
            sources.push(format!("{mode} r{rep}"));
            lines.push((i, legend(run, mode, rep, load), pts));
        }
    }
    let xmax = lines.iter().flat_map(|l| l.2.iter().map(|p| p.0)).fold(3.0_f64, f64::max).ceil();
    let (ymin, ymax) =
        lines.iter().flat_map(|l| l.2.iter().map(|p| p.1)).fold((f64::INFINITY, 0.0_f64), |(lo, hi), v| (lo.min(v), hi.max(v)));
    let (ymin, ymax) = if ymax > 0.0 { ((ymin * 0.8).max(0.5), ymax * 1.25) } else { (1.0, 1000.0) };
    let mut keys = vec![0.0, 2f64.log10()];
    keys.extend((1..=xmax as i32).map(f64::from));

    let legend_w = lines.iter().map(|l| text_width(&l.1, 13)).max().unwrap_or(100).max(100) + 50;
    let entry_px = 20;
    let height = (520).max(90 + lines.len() as u32 * entry_px);
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (WIDTH, height)).into_drawing_area();
        root.fill(&WHITE).map_err(e)?;
        let (plot, panel) = root.split_horizontally(WIDTH as i32 - legend_w);
        let mut chart = ChartBuilder::on(&plot)
            .caption(title, (FONT, 20))
            .margin(12)
            .margin_right(20)
            .x_label_area_size(45)
            .y_label_area_size(70)
            .build_cartesian_2d(0f64..xmax, (ymin..ymax).log_scale())
            .map_err(e)?;
        chart
            .configure_mesh()
            .disable_x_mesh()
            .x_labels(0)
            .y_label_formatter(&|y| if *y >= 10.0 { format!("{y:.0}") } else { format!("{y:.1}") })
            .x_desc("percentile")
            .y_desc("RTT µs (log scale)")
            .y_label_style((FONT, 13))
            .draw()
            .map_err(e)?;
        let grid = RGBColor(200, 200, 200);
        chart.draw_series(keys.iter().map(|&x| PathElement::new(vec![(x, ymin), (x, ymax)], grid.stroke_width(1)))).map_err(e)?;
        let labels: Vec<(f64, String)> = keys.iter().map(|&x| (x, percent_label(x))).collect();
        x_labels(&plot, &chart, ymin, &labels, 13)?;
        for (i, _, pts) in &lines {
            let (color, dash) = mode_style(*i);
            let px: Vec<(i32, i32)> = pts.iter().map(|p| chart.backend_coord(p)).collect();
            draw_styled(&plot, px, color, dash, 2)?;
        }
        if lines.is_empty() {
            plot.draw(&Text::new("no latency data", ((WIDTH / 2) as i32 - 60, (height / 2) as i32), (FONT, 18))).map_err(e)?;
        } else {
            // The legend, in its own panel: one entry per line, in mode order.
            let style = TextStyle::from((FONT, 13).into_font()).pos(Pos::new(HPos::Left, VPos::Center));
            panel.draw(&Text::new("mode (replies lost)", (8, 30), style.clone())).map_err(e)?;
            for (row, (i, text, _)) in lines.iter().enumerate() {
                let y = 56 + row as i32 * entry_px as i32;
                let (color, dash) = mode_style(*i);
                draw_styled(&panel, vec![(8, y), (38, y)], color, dash, 3)?;
                panel.draw(&Text::new(text.clone(), (46, y), style.clone())).map_err(e)?;
            }
        }
        root.present().map_err(e)?;
    }
    Ok((svg, sources))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentile_axis_labels() {
        assert_eq!(percent_label(0.0), "0 %");
        assert_eq!(percent_label(2f64.log10()), "50 %");
        assert_eq!(percent_label(1.0), "90 %");
        assert_eq!(percent_label(2.0), "99 %");
        assert_eq!(percent_label(3.0), "99.9 %");
        assert_eq!(percent_label(4.0), "99.99 %");
        assert!((nines(0.999) - 3.0).abs() < 1e-9);
    }

    #[test]
    fn every_mode_of_a_large_run_has_its_own_style() {
        let styles: std::collections::BTreeSet<(u8, u8, u8, u8)> = (0..30)
            .map(|i| {
                let (c, d) = mode_style(i);
                (c.0, c.1, c.2, d as u8)
            })
            .collect();
        assert_eq!(styles.len(), 30);
    }
}
