//! The report's SVG charts, drawn with plotters' SVG backend. Text is
//! emitted as SVG `<text>` elements (no font files needed: without the
//! `ttf` feature plotters only estimates text extents for layout).

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
const HEIGHT: u32 = 520;
const FONT: &str = "sans-serif";

/// Fixed colours: the same mode has the same colour in every chart.
fn mode_color(mode: &str, index: usize) -> RGBColor {
    match mode {
        "routing" => RGBColor(90, 90, 90),
        super::KERNEL_VXLAN => RGBColor(31, 119, 180),
        "classic" => RGBColor(214, 39, 40),
        "mmsg-nooffload" => RGBColor(255, 187, 120),
        "mmsg" => RGBColor(255, 127, 14),
        "uring-nooffload" => RGBColor(152, 223, 138),
        "uring" => RGBColor(44, 160, 44),
        super::ENCAPD_VXLAN => RGBColor(148, 103, 189),
        super::ENCAPD_VXLAN_MIXED => RGBColor(227, 119, 194),
        _ => SERIES[index % SERIES.len()],
    }
}

const SERIES: [RGBColor; 6] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
];

fn chart_err(name: &str) -> impl Fn(String) -> ReportError + '_ {
    move |message| ReportError::Chart { name: name.to_string(), message }
}

/// Writes every chart and returns them in report order.
pub(crate) fn write_all(dir: &Path, run: &Run) -> Result<Vec<Chart>, ReportError> {
    let mut charts = Vec::new();
    let mut emit = |file: &str, title: String, note: String, svg: String| -> Result<(), ReportError> {
        let path = dir.join(file);
        std::fs::write(&path, svg).map_err(|source| ReportError::Io { path, source })?;
        charts.push(Chart { file: file.to_string(), title, note });
        Ok(())
    };

    let title = "TCP throughput (median)".to_string();
    let svg = bar_chart(run, &title, "Gbit/s", &[("tcp1", "TCP 1 stream"), ("tcp4", "TCP 4 streams")], 1.0, |v| format!("{v:.2}"))
        .map_err(chart_err("throughput.svg"))?;
    emit("throughput.svg", title, "iperf3 receiver throughput, kernel default congestion control.".into(), svg)?;

    let title = "UDP delivered packet rate (median)".to_string();
    let svg = bar_chart(
        run,
        &title,
        "kpps delivered",
        &[("udp64_pps", "64 B payload"), ("udp512_pps", "512 B payload"), ("udp1400_pps", "1400 B payload")],
        1e-3,
        |v| format!("{v:.0}"),
    )
    .map_err(chart_err("udp.svg"))?;
    emit("udp.svg", title, "iperf3 `-u -b 0`: packets per second counted by the receiver.".into(), svg)?;

    for load in run.latency_loads() {
        let file = format!("latency-{load}.svg");
        let title = format!("RTT percentile distribution at {load} % load");
        let (svg, sources) = latency_chart(dir, run, load, &title).map_err(chart_err(&file))?;
        let note = format!(
            "`encapd-bench latency` at {load} % of each mode's UDP 64 B delivered rate; per mode the repetition with the median p50 ({}); \
the legend gives the replies that repetition lost († more than 1 %: not comparable).",
            if sources.is_empty() { "no data".to_string() } else { sources.join(", ") }
        );
        emit(&file, title, note, svg)?;
    }

    let title = "CPU cores per Gbit/s (median)".to_string();
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
    .map_err(chart_err("cpu.svg"))?;
    emit(
        "cpu.svg",
        title,
        "Busy CPU during the TCP test, in cores, per Gbit/s; lower is better. Whole machine: `/proc/stat` (everything that \
ran: both gateways, iperf3 at both ends, the kernel). encapd: user + system time of both encapd processes \
(`/proc/PID/stat`); n/a where no encapd runs."
            .into(),
        svg,
    )?;
    Ok(charts)
}

/// Grouped bars: one group per mode, one bar per test (medians × `scale`).
fn bar_chart(
    run: &Run,
    title: &str,
    y_desc: &str,
    tests: &[(&str, &str)],
    scale: f64,
    label: impl Fn(f64) -> String,
) -> Result<String, String> {
    let modes = &run.modes;
    let values: Vec<Vec<Option<f64>>> =
        tests.iter().map(|(t, _)| modes.iter().map(|m| run.median(m, t).map(|v| v * scale)).collect()).collect();
    let top = values.iter().flatten().flatten().fold(0.0_f64, |a, &b| a.max(b));
    let ymax = if top > 0.0 { top * 1.35 } else { 1.0 };
    let n = modes.len().max(1);

    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (WIDTH, HEIGHT)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| e.to_string())?;
        let mut chart = ChartBuilder::on(&root)
            .caption(title, (FONT, 22))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(70)
            .build_cartesian_2d(0f64..n as f64, 0f64..ymax)
            .map_err(|e| e.to_string())?;
        chart
            .configure_mesh()
            .disable_x_mesh()
            .x_labels(0)
            .light_line_style(WHITE)
            .y_desc(y_desc)
            .y_label_style((FONT, 13))
            .draw()
            .map_err(|e| e.to_string())?;
        let labels: Vec<(f64, String)> = modes.iter().enumerate().map(|(i, m)| (i as f64 + 0.5, m.clone())).collect();
        x_labels(&root, &chart, 0.0, &labels, 14)?;

        let k = tests.len().max(1) as f64;
        let width = 0.8 / k;
        for (si, ((_, name), vals)) in tests.iter().zip(&values).enumerate() {
            let color = SERIES[si % SERIES.len()];
            let bars: Vec<(f64, f64)> =
                vals.iter().enumerate().filter_map(|(i, v)| v.map(|v| (i as f64 + 0.1 + si as f64 * width, v))).collect();
            chart
                .draw_series(bars.iter().map(|&(x0, v)| Rectangle::new([(x0, 0.0), (x0 + width * 0.92, v)], color.filled())))
                .map_err(|e| e.to_string())?
                .label(*name)
                .legend(move |(x, y)| Rectangle::new([(x, y - 6), (x + 14, y + 6)], color.filled()));
            let style = TextStyle::from((FONT, 11).into_font()).pos(Pos::new(HPos::Center, VPos::Bottom));
            chart
                .draw_series(bars.iter().map(|&(x0, v)| Text::new(label(v), (x0 + width * 0.46, v), style.clone())))
                .map_err(|e| e.to_string())?;
            let missing: Vec<f64> =
                vals.iter().enumerate().filter(|(_, v)| v.is_none()).map(|(i, _)| i as f64 + 0.1 + si as f64 * width).collect();
            chart
                .draw_series(missing.iter().map(|&x0| Text::new("n/a", (x0 + width * 0.46, 0.0), style.clone())))
                .map_err(|e| e.to_string())?;
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperRight)
            .background_style(WHITE.mix(0.9))
            .border_style(BLACK)
            .label_font((FONT, 13))
            .draw()
            .map_err(|e| e.to_string())?;
        root.present().map_err(|e| e.to_string())?;
    }
    Ok(svg)
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
        root.draw(&PathElement::new(vec![(px, py), (px, py + 5)], BLACK.stroke_width(1))).map_err(|e| e.to_string())?;
        root.draw(&Text::new(text.clone(), (px, py + 8), style.clone())).map_err(|e| e.to_string())?;
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

/// One line per mode: its median repetition's `.hgrm` at this load.
fn latency_chart(dir: &Path, run: &Run, load: u32, title: &str) -> Result<(String, Vec<String>), String> {
    let test = format!("lat{load}_p50");
    // (mode index, mode, points)
    type Line = (usize, String, Vec<(f64, f64)>);
    let mut lines: Vec<Line> = Vec::new();
    let mut sources = Vec::new();
    for (i, mode) in run.modes.iter().enumerate() {
        let Some(rep) = run.median_rep(mode, &test) else { continue };
        let path = dir.join("raw").join(format!("{}-r{rep}-lat{load}.hgrm", run.recorded_name(mode)));
        let Ok(text) = std::fs::read_to_string(&path) else { continue };
        let d = hgrm::parse(&text).map_err(|e| format!("{}: {e}", path.display()))?;
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

    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (WIDTH, HEIGHT)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| e.to_string())?;
        let mut chart = ChartBuilder::on(&root)
            .caption(title, (FONT, 22))
            .margin(12)
            .margin_right(40)
            .x_label_area_size(45)
            .y_label_area_size(70)
            .build_cartesian_2d(0f64..xmax, (ymin..ymax).log_scale())
            .map_err(|e| e.to_string())?;
        chart
            .configure_mesh()
            .disable_x_mesh()
            .x_labels(0)
            .y_label_formatter(&|y| if *y >= 10.0 { format!("{y:.0}") } else { format!("{y:.1}") })
            .x_desc("percentile")
            .y_desc("RTT µs (log scale)")
            .y_label_style((FONT, 13))
            .draw()
            .map_err(|e| e.to_string())?;
        let grid = RGBColor(200, 200, 200);
        chart
            .draw_series(keys.iter().map(|&x| PathElement::new(vec![(x, ymin), (x, ymax)], grid.stroke_width(1))))
            .map_err(|e| e.to_string())?;
        let labels: Vec<(f64, String)> = keys.iter().map(|&x| (x, percent_label(x))).collect();
        x_labels(&root, &chart, ymin, &labels, 13)?;
        for (i, mode, pts) in &lines {
            let color = mode_color(run.modes[*i].as_str(), *i);
            chart
                .draw_series(LineSeries::new(pts.iter().copied(), color.stroke_width(2)))
                .map_err(|e| e.to_string())?
                .label(mode.as_str())
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(3)));
        }
        if lines.is_empty() {
            root.draw(&Text::new("no latency data", ((WIDTH / 2) as i32, (HEIGHT / 2) as i32), (FONT, 18))).map_err(|e| e.to_string())?;
        } else {
            chart
                .configure_series_labels()
                .position(SeriesLabelPosition::LowerRight)
                .background_style(WHITE.mix(0.9))
                .border_style(BLACK)
                .label_font((FONT, 13))
                .draw()
                .map_err(|e| e.to_string())?;
        }
        root.present().map_err(|e| e.to_string())?;
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
}
