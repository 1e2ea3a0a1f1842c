//! Hand-written SVG charts: no font stack, no script, readable offline and in any browser.

use std::fmt::Write;

pub const PALETTE: [&str; 10] = [
    "#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf",
    "#7f7f7f", "#bcbd22",
];

pub fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// One line of a chart.
pub struct Series {
    pub label: String,
    pub points: Vec<(f64, f64)>,
}

const WIDTH: f64 = 820.0;
const LEFT: f64 = 70.0;
const RIGHT: f64 = 250.0; // legend
const TOP: f64 = 20.0;
const BOTTOM: f64 = 50.0;

struct Frame {
    height: f64,
    x: (f64, f64),
    y: (f64, f64),
}

impl Frame {
    fn plot_width(&self) -> f64 {
        WIDTH - LEFT - RIGHT
    }
    fn plot_height(&self) -> f64 {
        self.height - TOP - BOTTOM
    }
    fn px(&self, x: f64) -> f64 {
        LEFT + (x - self.x.0) / (self.x.1 - self.x.0).max(f64::EPSILON) * self.plot_width()
    }
    fn py(&self, y: f64) -> f64 {
        TOP + self.plot_height()
            - (y - self.y.0) / (self.y.1 - self.y.0).max(f64::EPSILON) * self.plot_height()
    }
}

fn open(out: &mut String, title: &str, height: f64) {
    let _ = write!(
        out,
        r#"<svg class="chart" xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" viewBox="0 0 {WIDTH} {height}" role="img" aria-label="{}" font-family="sans-serif" font-size="11">"#,
        escape(title)
    );
}

fn axes(out: &mut String, frame: &Frame, x_ticks: &[(f64, String)], y_ticks: &[(f64, String)]) {
    let (x0, x1) = (frame.px(frame.x.0), frame.px(frame.x.1));
    let (y0, y1) = (frame.py(frame.y.0), frame.py(frame.y.1));
    for (y, label) in y_ticks {
        let py = frame.py(*y);
        let _ = write!(
            out,
            r##"<line x1="{x0:.1}" y1="{py:.1}" x2="{x1:.1}" y2="{py:.1}" stroke="#ddd"/><text x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"##,
            x0 - 6.0,
            py + 4.0,
            escape(label)
        );
    }
    for (x, label) in x_ticks {
        let px = frame.px(*x);
        let _ = write!(
            out,
            r##"<line x1="{px:.1}" y1="{y0:.1}" x2="{px:.1}" y2="{y1:.1}" stroke="#eee"/><text x="{px:.1}" y="{:.1}" text-anchor="middle">{}</text>"##,
            y0 + 16.0,
            escape(label)
        );
    }
    let _ = write!(
        out,
        r##"<rect x="{x0:.1}" y="{y1:.1}" width="{:.1}" height="{:.1}" fill="none" stroke="#888"/>"##,
        x1 - x0,
        y0 - y1
    );
}

fn labels(out: &mut String, frame: &Frame, x_label: &str, y_label: &str) {
    let _ = write!(
        out,
        r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">{}</text><text transform="translate(14,{:.1}) rotate(-90)" text-anchor="middle">{}</text>"#,
        LEFT + frame.plot_width() / 2.0,
        frame.height - 12.0,
        escape(x_label),
        TOP + frame.plot_height() / 2.0,
        escape(y_label)
    );
}

fn lines_and_legend(out: &mut String, frame: &Frame, series: &[Series]) {
    for (i, s) in series.iter().enumerate() {
        let color = PALETTE[i % PALETTE.len()];
        let dash = if i >= PALETTE.len() {
            r#" stroke-dasharray="5,3""#
        } else {
            ""
        };
        let points: Vec<String> = s
            .points
            .iter()
            .map(|(x, y)| format!("{:.1},{:.1}", frame.px(*x), frame.py(*y)))
            .collect();
        let _ = write!(
            out,
            r#"<polyline fill="none" stroke="{color}" stroke-width="1.6"{dash} points="{}"><title>{}</title></polyline>"#,
            points.join(" "),
            escape(&s.label)
        );
        let ly = TOP + 8.0 + i as f64 * 15.0;
        let lx = WIDTH - RIGHT + 12.0;
        let _ = write!(
            out,
            r#"<line x1="{lx:.1}" y1="{ly:.1}" x2="{:.1}" y2="{ly:.1}" stroke="{color}" stroke-width="2"{dash}/><text x="{:.1}" y="{:.1}">{}</text>"#,
            lx + 18.0,
            lx + 24.0,
            ly + 4.0,
            escape(&s.label)
        );
    }
}

/// Latency by percentile, HdrHistogram's classic plot: x is `-log10(1 - q)` (0 = p0,
/// 2 = p99, 5 = p99.999), y is milliseconds on a log axis. Points are (q, µs).
pub fn percentile_curves(title: &str, series: &[Series]) -> String {
    let height = (TOP + BOTTOM + 260.0).max(TOP + BOTTOM + 15.0 * series.len() as f64 + 20.0);
    let to_plot = |(q, us): (f64, f64)| -> (f64, f64) {
        let x = (-(1.0 - q).max(1e-5).log10()).clamp(0.0, 5.0);
        (x, (us / 1000.0).max(0.001).log10())
    };
    let plotted: Vec<Series> = series
        .iter()
        .map(|s| Series {
            label: s.label.clone(),
            points: s.points.iter().copied().map(to_plot).collect(),
        })
        .collect();
    let (mut lo, mut hi) = (f64::MAX, f64::MIN);
    for (_, y) in plotted.iter().flat_map(|s| s.points.iter()) {
        lo = lo.min(*y);
        hi = hi.max(*y);
    }
    if lo > hi {
        (lo, hi) = (0.0, 1.0);
    }
    let frame = Frame {
        height,
        x: (0.0, 5.0),
        y: (lo.floor(), hi.ceil().max(lo.floor() + 1.0)),
    };
    let mut out = String::new();
    open(&mut out, title, height);
    let x_ticks: Vec<(f64, String)> = ["0 %", "90 %", "99 %", "99.9 %", "99.99 %", "99.999 %"]
        .iter()
        .enumerate()
        .map(|(i, l)| (i as f64, l.to_string()))
        .collect();
    let y_ticks: Vec<(f64, String)> = (frame.y.0 as i32..=frame.y.1 as i32)
        .map(|e| {
            let ms = 10f64.powi(e);
            (
                f64::from(e),
                if ms >= 1.0 {
                    format!("{ms:.0} ms")
                } else {
                    format!("{ms} ms")
                },
            )
        })
        .collect();
    axes(&mut out, &frame, &x_ticks, &y_ticks);
    labels(
        &mut out,
        &frame,
        "percentile (log scale of 1/(1 − q))",
        "end-to-end latency",
    );
    lines_and_legend(&mut out, &frame, &plotted);
    out.push_str("</svg>");
    out
}

/// Plain lines on linear axes, y from zero.
/// A shaded stretch of a timeline: a fault's window, from its start to its end (seconds).
pub struct Window {
    pub from_s: f64,
    pub to_s: f64,
    pub label: String,
}

/// Lines over time, with `windows` shaded behind them and labelled along the top; the x axis
/// ends at a round number of seconds and is ticked at round steps.
pub fn lines(
    title: &str,
    x_label: &str,
    y_label: &str,
    series: &[Series],
    windows: &[Window],
) -> String {
    let height = (TOP + BOTTOM + 220.0).max(TOP + BOTTOM + 15.0 * series.len() as f64 + 20.0);
    let x_max = series
        .iter()
        .flat_map(|s| s.points.iter().map(|p| p.0))
        .chain(windows.iter().map(|w| w.to_s))
        .fold(1.0f64, f64::max);
    let y_max = series
        .iter()
        .flat_map(|s| s.points.iter().map(|p| p.1))
        .fold(1.0f64, f64::max);
    let (x_step, x_end) = round_steps(x_max);
    let y_top = nice_ceiling(y_max);
    let frame = Frame {
        height,
        x: (0.0, x_end),
        y: (0.0, y_top),
    };
    let mut out = String::new();
    open(&mut out, title, height);
    let x_ticks: Vec<(f64, String)> = (0..)
        .map(|i| f64::from(i) * x_step)
        .take_while(|x| *x <= x_end + x_step / 1000.0)
        .map(|x| (x, format!("{x}")))
        .collect();
    let y_ticks: Vec<(f64, String)> = (0..=4)
        .map(|i| {
            let y = y_top * f64::from(i) / 4.0;
            (y, format!("{y:.0}"))
        })
        .collect();
    let (top, bottom) = (frame.py(y_top), frame.py(0.0));
    for (i, window) in windows.iter().enumerate() {
        let (x0, x1) = (
            frame.px(window.from_s),
            frame.px(window.to_s.max(window.from_s)),
        );
        let _ = write!(
            out,
            r##"<rect x="{x0:.1}" y="{top:.1}" width="{:.1}" height="{:.1}" fill="#f4a582" fill-opacity="0.25"><title>{}</title></rect>"##,
            (x1 - x0).max(2.0),
            bottom - top,
            escape(&window.label),
        );
        if !window.label.is_empty() {
            let _ = write!(
                out,
                r##"<text x="{:.1}" y="{:.1}" font-size="10" fill="#a0522d">{}</text>"##,
                x0 + 2.0,
                top + 11.0 + (i % 3) as f64 * 11.0,
                escape(&window.label)
            );
        }
    }
    axes(&mut out, &frame, &x_ticks, &y_ticks);
    labels(&mut out, &frame, x_label, y_label);
    lines_and_legend(&mut out, &frame, series);
    out.push_str("</svg>");
    out
}

/// One point per strategy: `x` (a rate, on a log axis) against `y` (a count, from zero), the
/// label beside the point. Points without an `x` (no capacity) sit on the left edge, hollow.
pub fn scatter(
    title: &str,
    x_label: &str,
    y_label: &str,
    points: &[(String, Option<f64>, f64)],
) -> String {
    let height = TOP + BOTTOM + 240.0;
    let xs: Vec<f64> = points
        .iter()
        .filter_map(|p| p.1)
        .filter(|x| *x > 0.0)
        .collect();
    let lo = xs.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = xs.iter().copied().fold(0.0f64, f64::max);
    let (lo, hi) = if xs.is_empty() {
        (0.0, 1.0)
    } else {
        (
            lo.log10().floor(),
            hi.log10().ceil().max(lo.log10().floor() + 1.0),
        )
    };
    let y_max = points.iter().map(|p| p.2).fold(1.0f64, f64::max);
    let y_top = y_max.ceil() + 1.0;
    let frame = Frame {
        height,
        x: (lo, hi),
        y: (0.0, y_top),
    };
    let mut out = String::new();
    open(&mut out, title, height);
    let x_ticks: Vec<(f64, String)> = (lo as i32..=hi as i32)
        .flat_map(|e| {
            [1.0, 2.0, 5.0].into_iter().map(move |m| {
                let value = m * 10f64.powi(e);
                (value.log10(), format!("{value:.0}"))
            })
        })
        .filter(|(x, _)| *x <= hi + 1e-9)
        .collect();
    let step = (y_top / 6.0).ceil().max(1.0);
    let y_ticks: Vec<(f64, String)> = (0..)
        .map(|i| f64::from(i) * step)
        .take_while(|y| *y <= y_top)
        .map(|y| (y, format!("{y:.0}")))
        .collect();
    axes(&mut out, &frame, &x_ticks, &y_ticks);
    labels(&mut out, &frame, x_label, y_label);
    for (i, (label, x, y)) in points.iter().enumerate() {
        let color = PALETTE[i % PALETTE.len()];
        let (px, fill) = match x.filter(|x| *x > 0.0) {
            Some(x) => (frame.px(x.log10()), color),
            None => (frame.px(lo), "none"),
        };
        let py = frame.py(*y);
        let _ = write!(
            out,
            r#"<circle cx="{px:.1}" cy="{py:.1}" r="5" fill="{fill}" stroke="{color}" stroke-width="1.5"><title>{}</title></circle><text x="{:.1}" y="{:.1}" fill="{color}">{}</text>"#,
            escape(label),
            px + 8.0,
            py - 6.0 - (i % 2) as f64 * 10.0,
            escape(label)
        );
    }
    out.push_str("</svg>");
    out
}

/// A round tick step for an axis from 0 to `max`, and the first multiple of it at or past
/// `max`: about five ticks.
fn round_steps(max: f64) -> (f64, f64) {
    let step = nice_ceiling((max / 5.0).max(f64::EPSILON));
    (step, (max / step).ceil().max(1.0) * step)
}

/// Horizontal bars, two per row (lost, applied twice), each labelled with its count.
pub fn anomaly_bars(title: &str, rows: &[(String, u64, u64)]) -> String {
    let row_height = 26.0;
    let height = TOP + BOTTOM + row_height * rows.len().max(1) as f64;
    let label_width = 230.0;
    let bar_width = WIDTH - label_width - 80.0;
    let max = rows
        .iter()
        .map(|(_, a, b)| (*a).max(*b))
        .max()
        .unwrap_or(0)
        .max(1) as f64;
    let mut out = String::new();
    open(&mut out, title, height);
    for (i, (label, lost, double)) in rows.iter().enumerate() {
        let y = TOP + i as f64 * row_height;
        let _ = write!(
            out,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"#,
            label_width - 8.0,
            y + 15.0,
            escape(label)
        );
        for (j, (count, color)) in [(*lost, "#d62728"), (*double, "#ff7f0e")]
            .iter()
            .enumerate()
        {
            let w = (*count as f64 / max * bar_width).max(if *count > 0 { 2.0 } else { 0.0 });
            let by = y + 3.0 + j as f64 * 10.0;
            let _ = write!(
                out,
                r#"<rect x="{label_width:.1}" y="{by:.1}" width="{w:.1}" height="9" fill="{color}"/><text x="{:.1}" y="{:.1}" font-size="9">{count}</text>"#,
                label_width + w + 4.0,
                by + 8.0
            );
        }
        let _ = write!(
            out,
            r##"<line x1="{label_width:.1}" y1="{:.1}" x2="{label_width:.1}" y2="{:.1}" stroke="#888"/>"##,
            y,
            y + row_height
        );
    }
    let _ = write!(
        out,
        r##"<rect x="{label_width:.1}" y="{:.1}" width="10" height="9" fill="#d62728"/><text x="{:.1}" y="{:.1}">lost</text><rect x="{:.1}" y="{:.1}" width="10" height="9" fill="#ff7f0e"/><text x="{:.1}" y="{:.1}">applied twice</text>"##,
        height - 30.0,
        label_width + 14.0,
        height - 22.0,
        label_width + 60.0,
        height - 30.0,
        label_width + 74.0,
        height - 22.0,
    );
    out.push_str("</svg>");
    out
}

fn nice_ceiling(value: f64) -> f64 {
    let magnitude = 10f64.powf(value.log10().floor());
    for step in [1.0, 2.0, 2.5, 5.0, 10.0] {
        if step * magnitude >= value {
            return step * magnitude;
        }
    }
    10.0 * magnitude
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn curves_place_p99_at_two_decades_and_escape_labels() {
        let svg = percentile_curves(
            "t",
            &[Series {
                label: "a<b".into(),
                points: vec![(0.0, 1_000.0), (0.99, 10_000.0), (0.999, 100_000.0)],
            }],
        );
        assert!(svg.contains("a&lt;b"));
        assert!(!svg.contains("a<b"));
        assert!(svg.starts_with("<svg") && svg.ends_with("</svg>"));
        // 1 ms .. 100 ms: decades 0..2, so the 99 % point sits 2/5 across the plot.
        let frame = Frame {
            height: 330.0,
            x: (0.0, 5.0),
            y: (0.0, 2.0),
        };
        assert!((frame.px(2.0) - (LEFT + 0.4 * (WIDTH - LEFT - RIGHT))).abs() < 1e-9);
    }

    #[test]
    fn round_steps_tick_short_and_long_runs_at_whole_numbers() {
        assert_eq!(round_steps(4.3), (1.0, 5.0));
        assert_eq!(round_steps(37.0), (10.0, 40.0));
        assert_eq!(round_steps(12.0), (2.5, 12.5));
    }

    #[test]
    fn timeline_windows_are_shaded_and_labelled() {
        let svg = lines(
            "t",
            "seconds",
            "messages/s",
            &[Series {
                label: "a".into(),
                points: vec![(1.0, 10.0), (2.0, 20.0)],
            }],
            &[Window {
                from_s: 0.5,
                to_s: 1.5,
                label: "redis-restart <x>".into(),
            }],
        );
        assert!(svg.contains(r##"fill="#f4a582""##), "{svg}");
        assert!(svg.contains("redis-restart &lt;x&gt;"), "{svg}");
    }

    #[test]
    fn scatter_puts_a_point_per_strategy_on_a_log_rate_axis() {
        let svg = scatter(
            "t",
            "capacity",
            "claims refuted",
            &[
                ("db-only".into(), Some(1_000.0), 0.0),
                ("redis-only".into(), Some(100.0), 5.0),
                ("none <x>".into(), None, 9.0),
            ],
        );
        assert_eq!(svg.matches("<circle").count(), 3, "{svg}");
        assert!(svg.contains("none &lt;x&gt;"));
        // 100 and 1 000 msg/s: decades 2..3, so db-only sits at the right edge, redis-only at
        // the left, and the point without a capacity hollow on the left edge.
        let right = LEFT + (WIDTH - LEFT - RIGHT);
        assert!(svg.contains(&format!(r#"cx="{right:.1}""#)), "{svg}");
        assert!(svg.contains(&format!(r#"cx="{LEFT:.1}" cy="#)), "{svg}");
        assert!(svg.contains(r##"fill="none" stroke="#2ca02c""##), "{svg}");
    }

    #[test]
    fn nice_ceilings() {
        assert_eq!(nice_ceiling(430.0), 500.0);
        assert_eq!(nice_ceiling(1.0), 1.0);
        assert_eq!(nice_ceiling(1_001.0), 2_000.0);
    }
}
