//! Hand-written SVG charts: a plot frame with linear axes, lines, points, bars with
//! whiskers, heatmap cells and legends. All text is escaped.

use std::fmt::Write;

use super::escape_html;

/// A plot area mapping data coordinates to pixels, collecting SVG elements.
pub(crate) struct Plot {
    width: f64,
    height: f64,
    left: f64,
    right: f64,
    top: f64,
    bottom: f64,
    x_range: (f64, f64),
    y_range: (f64, f64),
    y_ticks: bool,
    body: String,
}

/// Evenly spaced "nice" tick values covering `[low, high]`.
pub(crate) fn ticks(low: f64, high: f64, target: usize) -> Vec<f64> {
    let span = high - low;
    if span.is_nan() || span <= 0.0 || !span.is_finite() {
        return vec![low];
    }
    let raw = span / target.max(1) as f64;
    let magnitude = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 2.5, 5.0, 10.0].iter().map(|m| m * magnitude).find(|&s| s >= raw).unwrap_or(raw);
    let first = (low / step).ceil() as i64;
    let last = (high / step).floor() as i64;
    (first..=last).map(|i| i as f64 * step).collect()
}

fn tick_label(v: f64) -> String {
    if v == 0.0 {
        "0".to_owned()
    } else if v.abs() >= 1000.0 || v.abs() < 0.01 {
        format!("{v:.1e}")
    } else {
        let s = format!("{v:.3}");
        s.trim_end_matches('0').trim_end_matches('.').to_owned()
    }
}

impl Plot {
    pub(crate) fn new(width: f64, height: f64, x_range: (f64, f64), y_range: (f64, f64)) -> Plot {
        let widen = |(lo, hi): (f64, f64)| if hi > lo { (lo, hi) } else { (lo - 0.5, hi + 0.5) };
        Plot {
            width,
            height,
            left: 56.0,
            right: 16.0,
            top: 34.0,
            bottom: 44.0,
            x_range: widen(x_range),
            y_range: widen(y_range),
            y_ticks: true,
            body: String::new(),
        }
    }

    /// A categorical y axis: no y grid or tick labels, and room for row labels on the left.
    pub(crate) fn categorical_y(mut self, left: f64) -> Plot {
        self.left = left;
        self.y_ticks = false;
        self
    }

    pub(crate) fn x(&self, v: f64) -> f64 {
        let (lo, hi) = self.x_range;
        self.left + (v - lo) / (hi - lo) * (self.width - self.left - self.right)
    }

    pub(crate) fn y(&self, v: f64) -> f64 {
        let (lo, hi) = self.y_range;
        self.height - self.bottom - (v - lo) / (hi - lo) * (self.height - self.top - self.bottom)
    }

    /// Grid, tick labels and axis titles.
    pub(crate) fn axes(&mut self, x_title: &str, y_title: &str) {
        let (x0, x1, y0, y1) = (self.left, self.width - self.right, self.top, self.height - self.bottom);
        let mut s = String::new();
        let y_ticks = if self.y_ticks { ticks(self.y_range.0, self.y_range.1, 5) } else { Vec::new() };
        for t in y_ticks {
            let y = self.y(t);
            let _ = write!(
                s,
                r##"<line x1="{x0:.1}" y1="{y:.1}" x2="{x1:.1}" y2="{y:.1}" class="grid"/><text x="{:.1}" y="{:.1}" class="tick" text-anchor="end">{}</text>"##,
                x0 - 6.0,
                y + 4.0,
                tick_label(t)
            );
        }
        for t in ticks(self.x_range.0, self.x_range.1, 5) {
            let x = self.x(t);
            let _ = write!(
                s,
                r##"<line x1="{x:.1}" y1="{y0:.1}" x2="{x:.1}" y2="{y1:.1}" class="grid"/><text x="{x:.1}" y="{:.1}" class="tick" text-anchor="middle">{}</text>"##,
                y1 + 16.0,
                tick_label(t)
            );
        }
        let _ = write!(
            s,
            r##"<rect x="{x0:.1}" y="{y0:.1}" width="{:.1}" height="{:.1}" class="frame"/><text x="{:.1}" y="{:.1}" class="axis-title" text-anchor="middle">{}</text><text transform="translate(14 {:.1}) rotate(-90)" class="axis-title" text-anchor="middle">{}</text>"##,
            x1 - x0,
            y1 - y0,
            (x0 + x1) / 2.0,
            self.height - 8.0,
            escape_html(x_title),
            (y0 + y1) / 2.0,
            escape_html(y_title)
        );
        self.body.insert_str(0, &s);
    }

    /// A polyline through data points; non-finite points are skipped.
    pub(crate) fn line(&mut self, points: &[(f64, f64)], color: &str, dashed: bool) {
        let coords: Vec<String> = points
            .iter()
            .filter(|(x, y)| x.is_finite() && y.is_finite())
            .map(|&(x, y)| format!("{:.1},{:.1}", self.x(x), self.y(y)))
            .collect();
        if coords.is_empty() {
            return;
        }
        let dash = if dashed { r#" stroke-dasharray="5 4""# } else { "" };
        let _ = write!(
            self.body,
            r#"<polyline points="{}" fill="none" stroke="{color}" stroke-width="2"{dash}/>"#,
            coords.join(" ")
        );
    }

    pub(crate) fn point(&mut self, x: f64, y: f64, radius: f64, color: &str, tooltip: &str) {
        if x.is_finite() && y.is_finite() {
            let _ = write!(
                self.body,
                r#"<circle cx="{:.1}" cy="{:.1}" r="{radius:.1}" fill="{color}" fill-opacity="0.85"><title>{}</title></circle>"#,
                self.x(x),
                self.y(y),
                escape_html(tooltip)
            );
        }
    }

    /// Raw SVG appended to the body (callers escape their text).
    pub(crate) fn raw(&mut self, svg: &str) {
        self.body.push_str(svg);
    }

    /// Legend entries in the top margin.
    pub(crate) fn legend(&mut self, entries: &[(&str, &str)]) {
        let mut x = self.left;
        for (label, color) in entries {
            let _ = write!(
                self.body,
                r#"<rect x="{x:.1}" y="10" width="12" height="12" rx="2" fill="{color}"/><text x="{:.1}" y="20" class="legend">{}</text>"#,
                x + 16.0,
                escape_html(label)
            );
            x += 28.0 + 7.0 * label.chars().count() as f64;
        }
    }

    pub(crate) fn finish(self, title: &str, kind: &str) -> String {
        format!(
            r#"<svg xmlns="http://www.w3.org/2000/svg" class="chart chart-{kind}" width="{w}" height="{h}" viewBox="0 0 {w} {h}" role="img"><title>{}</title>{}</svg>"#,
            escape_html(title),
            self.body,
            w = self.width,
            h = self.height
        )
    }
}

/// A colour for a heatmap cell: white to deep blue as `t` goes 0 to 1.
pub(crate) fn heat_color(t: f64) -> String {
    let t = if t.is_finite() { t.clamp(0.0, 1.0) } else { 0.0 };
    let mix = |a: f64, b: f64| (a + (b - a) * t).round() as u8;
    format!("rgb({},{},{})", mix(247.0, 24.0), mix(251.0, 78.0), mix(255.0, 150.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_are_nice_and_cover_range() {
        assert_eq!(ticks(0.0, 1.0, 5), vec![0.0, 0.2, 0.4, 0.6000000000000001, 0.8, 1.0]);
        assert_eq!(ticks(3.0, 3.0, 5), vec![3.0]);
        let p = Plot::new(200.0, 100.0, (0.0, 1.0), (0.0, 1.0));
        assert!(p.x(0.0) < p.x(1.0) && p.y(0.0) > p.y(1.0));
        assert_eq!(heat_color(0.0), "rgb(247,251,255)");
    }
}
