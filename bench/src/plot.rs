//! The latency plot as SVG: latency (log scale) by percentile (spaced by "nines": 0, 90, 99,
//! 99.9 ...), one curve per scenario — fast path solid, legacy dashed, baselines dotted — so
//! the gap between the two paths and the shape of each tail are visible at a glance.

use std::fmt::Write;

use crate::report::{Group, Report, ScenarioResult};

const WIDTH: f64 = 960.0;
const HEIGHT: f64 = 540.0;
const LEFT: f64 = 70.0;
const RIGHT: f64 = 250.0;
const TOP: f64 = 50.0;
const BOTTOM: f64 = 60.0;
/// Where "max" sits, past the last nine.
const MAX_GAP: f64 = 0.35;

/// Colour per scenario family, so a fast curve and its legacy counterpart match.
fn colour(name: &str) -> &'static str {
    let family = name.trim_start_matches("legacy-");
    match family {
        "get" | "get-cold" => "#1f77b4",
        "search" => "#2ca02c",
        "search-cold" => "#17becf",
        "create" => "#ff7f0e",
        "redis-get" => "#7f7f7f",
        "http-floor" => "#bcbd22",
        "upstream-direct" => "#8c564b",
        "vector-search" => "#9467bd",
        _ => "#333333",
    }
}

fn dash(result: &ScenarioResult) -> &'static str {
    match (result.group, result.name.as_str()) {
        (Group::Fast, "get-cold") => " stroke-dasharray=\"2 3\"",
        (Group::Fast, _) => "",
        (Group::Legacy, _) => " stroke-dasharray=\"8 4\"",
        (Group::Baseline, _) => " stroke-dasharray=\"1 3\"",
    }
}

/// Baselines are drawn thinner than the two paths.
fn stroke_width(result: &ScenarioResult) -> f64 {
    if result.group == Group::Baseline {
        1.5
    } else {
        2.0
    }
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

fn nines(percentile: f64) -> f64 {
    if percentile >= 100.0 {
        f64::INFINITY
    } else {
        -(1.0 - percentile / 100.0).log10()
    }
}

struct Axes {
    max_nines: f64,
    low_decade: i32,
    high_decade: i32,
}

impl Axes {
    fn of(report: &Report) -> Self {
        let points = report.scenarios.iter().flat_map(|s| s.curve.iter());
        let (mut low, mut high, mut max_nines) = (f64::INFINITY, 0.0f64, 1.0f64);
        for point in points {
            low = low.min(point.ms.max(0.001));
            high = high.max(point.ms);
            let n = nines(point.percentile);
            if n.is_finite() {
                max_nines = max_nines.max(n);
            }
        }
        if !low.is_finite() {
            low = 0.01;
            high = 1.0;
        }
        Self {
            max_nines: max_nines.ceil(),
            low_decade: low.log10().floor() as i32,
            high_decade: (high.max(low * 10.0)).log10().ceil() as i32,
        }
    }

    fn x(&self, percentile: f64) -> f64 {
        let n = nines(percentile);
        let n = if n.is_finite() {
            n.min(self.max_nines)
        } else {
            self.max_nines + MAX_GAP
        };
        LEFT + n / (self.max_nines + MAX_GAP) * (WIDTH - LEFT - RIGHT)
    }

    fn y(&self, ms: f64) -> f64 {
        let span = f64::from(self.high_decade - self.low_decade).max(1.0);
        let fraction = (ms.max(1e-3).log10() - f64::from(self.low_decade)) / span;
        HEIGHT - BOTTOM - fraction.clamp(0.0, 1.0) * (HEIGHT - TOP - BOTTOM)
    }
}

/// The plot of every scenario in `report`.
pub fn svg(report: &Report) -> String {
    let axes = Axes::of(report);
    let mut out = String::new();
    let _ = writeln!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" viewBox="0 0 {WIDTH} {HEIGHT}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(out, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(
        out,
        r#"<text x="{LEFT}" y="28" font-size="16">memgate latency by percentile: fast path (solid) against legacy (dashed), {} memories</text>"#,
        report.settings.dataset_size
    );
    grid(&mut out, &axes);
    for (index, result) in report.scenarios.iter().enumerate() {
        curve(&mut out, &axes, result);
        legend(&mut out, index, result);
    }
    out.push_str("</svg>\n");
    out
}

fn grid(out: &mut String, axes: &Axes) {
    let bottom = HEIGHT - BOTTOM;
    let right = WIDTH - RIGHT;
    for decade in axes.low_decade..=axes.high_decade {
        let ms = 10f64.powi(decade);
        let y = axes.y(ms);
        let label = if decade < 0 {
            format!("{ms:.*}", (-decade) as usize)
        } else {
            format!("{ms:.0}")
        };
        let _ = writeln!(
            out,
            r##"<line x1="{LEFT}" y1="{y:.1}" x2="{right}" y2="{y:.1}" stroke="#ddd"/><text x="{:.1}" y="{:.1}" text-anchor="end">{label}</text>"##,
            LEFT - 6.0,
            y + 4.0
        );
    }
    let mut ticks: Vec<(f64, String)> = (0..=axes.max_nines as i32)
        .map(|n| {
            let percentile = 100.0 * (1.0 - 10f64.powi(-n));
            let label = match n {
                0 => "0%".to_string(),
                _ => format!("{}%", trim_float(percentile)),
            };
            (percentile, label)
        })
        .collect();
    ticks.push((100.0, "max".into()));
    for (percentile, label) in ticks {
        let x = axes.x(percentile);
        let _ = writeln!(
            out,
            r##"<line x1="{x:.1}" y1="{TOP}" x2="{x:.1}" y2="{bottom}" stroke="#eee"/><text x="{x:.1}" y="{:.1}" text-anchor="middle">{label}</text>"##,
            bottom + 18.0
        );
    }
    let _ = writeln!(
        out,
        r##"<rect x="{LEFT}" y="{TOP}" width="{:.1}" height="{:.1}" fill="none" stroke="#999"/>"##,
        right - LEFT,
        bottom - TOP
    );
    let _ = writeln!(
        out,
        r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">percentile</text>"#,
        (LEFT + right) / 2.0,
        HEIGHT - 18.0
    );
    let _ = writeln!(
        out,
        r#"<text transform="translate(18 {:.1}) rotate(-90)" text-anchor="middle">latency, ms (log scale)</text>"#,
        (TOP + bottom) / 2.0
    );
}

fn curve(out: &mut String, axes: &Axes, result: &ScenarioResult) {
    if result.curve.is_empty() {
        return;
    }
    let points: Vec<String> = result
        .curve
        .iter()
        .map(|p| format!("{:.1},{:.1}", axes.x(p.percentile), axes.y(p.ms)))
        .collect();
    let width = stroke_width(result);
    let _ = writeln!(
        out,
        r#"<polyline data-scenario="{}" fill="none" stroke="{}" stroke-width="{width}"{} points="{}"/>"#,
        escape(&result.name),
        colour(&result.name),
        dash(result),
        points.join(" ")
    );
}

fn legend(out: &mut String, index: usize, result: &ScenarioResult) {
    let x = WIDTH - RIGHT + 16.0;
    let y = TOP + 10.0 + index as f64 * 20.0;
    let width = stroke_width(result);
    let _ = writeln!(
        out,
        r#"<line x1="{x}" y1="{y}" x2="{:.1}" y2="{y}" stroke="{}" stroke-width="{width}"{}/><text x="{:.1}" y="{:.1}">{} (p50 {})</text>"#,
        x + 28.0,
        colour(&result.name),
        dash(result),
        x + 34.0,
        y + 4.0,
        escape(&result.name),
        short_ms(result.p50_ms)
    );
}

fn short_ms(ms: f64) -> String {
    if ms >= 10.0 {
        format!("{ms:.0} ms")
    } else {
        format!("{ms:.2} ms")
    }
}

fn trim_float(value: f64) -> String {
    let text = format!("{value:.4}");
    text.trim_end_matches('0').trim_end_matches('.').to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_map_left_to_right_and_latency_bottom_to_top() {
        let axes = Axes {
            max_nines: 3.0,
            low_decade: -2,
            high_decade: 3,
        };
        assert!(axes.x(0.0) < axes.x(90.0));
        assert!(axes.x(99.0) < axes.x(99.9));
        assert!(axes.x(99.9) < axes.x(100.0), "max sits past the last nine");
        assert!((axes.x(0.0) - LEFT).abs() < 1e-9);
        assert!(axes.y(0.1) > axes.y(1.0), "higher latency is higher up");
        assert!((axes.y(0.01) - (HEIGHT - BOTTOM)).abs() < 1e-9);
        assert!((axes.y(1000.0) - TOP).abs() < 1e-9);
    }

    #[test]
    fn labels_are_escaped_and_ticks_read_as_percentiles() {
        assert_eq!(escape("a<b&c"), "a&lt;b&amp;c");
        assert_eq!(trim_float(99.9), "99.9");
        assert_eq!(trim_float(90.0), "90");
    }
}
