//! Charts of hunting results, drawn on the server as SVG so that they need no script: a line
//! chart over time (or over categories) or grouped bars. Colours come from the stylesheet's
//! `series-N` classes, so a chart follows the theme; every label goes through maud and is
//! escaped.

use crate::portal::text::truncate;
use std::collections::HashMap;

use chrono::{DateTime, Utc};
use maud::{Markup, html};
use serde_json::Value;

/// Series drawn at most (the stylesheet has this many colours): the largest are kept.
pub const MAX_SERIES: usize = 6;
/// Categories of a bar chart at most: the first ones are kept.
pub const MAX_CATEGORIES: usize = 60;
/// Points per series up to which each point gets a dot (and a tooltip).
const MAX_DOTS: usize = 250;

const WIDTH: f64 = 760.0;
const PLOT_LEFT: f64 = 64.0;
const PLOT_RIGHT: f64 = 16.0;
const PLOT_HEIGHT: f64 = 220.0;
const X_AXIS_SPACE: f64 = 44.0;
const LEGEND_ROW: f64 = 20.0;
/// Rough width of a label character at the labels' font size (SVG text cannot be measured on
/// the server).
const CHAR_WIDTH: f64 = 6.6;

/// What the query asked to see.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Request<'a> {
    /// A trailing `render` with this chart type (`timechart`, `columnchart`, …).
    Render(&'a str),
    /// No `render`, but the query summarizes: drawn when the result is a series over time.
    SummaryOverTime,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Line,
    Bar,
}

/// The x positions of a chart's points, in order.
#[derive(Debug, Clone, PartialEq)]
pub enum Points {
    /// Times (unix microseconds), ascending: the axis is to scale.
    Time(Vec<i64>),
    /// Category labels, evenly spaced.
    Labels(Vec<String>),
}

impl Points {
    fn len(&self) -> usize {
        match self {
            Points::Time(t) => t.len(),
            Points::Labels(l) => l.len(),
        }
    }
}

/// One line or one colour of bars: a value (or a gap) per point.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    pub name: String,
    pub values: Vec<Option<f64>>,
}

/// A chart ready to draw.
#[derive(Debug, Clone, PartialEq)]
pub struct Chart {
    pub kind: Kind,
    /// The column along the x axis.
    pub x_title: String,
    pub x: Points,
    pub series: Vec<Series>,
    /// Series and categories left out to keep the chart readable (the page says so).
    pub series_left_out: usize,
    pub categories_left_out: usize,
}

/// Line or bars for a Kusto chart type; `None` for `table`, `card` and types not drawn.
fn kind_of(render: &str) -> Option<Kind> {
    match render {
        "timechart" | "linechart" | "areachart" | "stackedareachart" | "scatterchart"
        | "anomalychart" => Some(Kind::Line),
        "columnchart" | "barchart" | "piechart" | "ladderchart" | "pivotchart" => Some(Kind::Bar),
        _ => None,
    }
}

fn is_numeric(kind: &str) -> bool {
    matches!(kind, "long" | "int" | "real" | "double" | "decimal")
}

/// The chart of a result (columns, their Kusto types, rows), or `None` when there is nothing
/// to draw: no rows, no numeric column, or a result that is not a series over time when no
/// `render` asked for a chart. As in Kusto, the x axis is the first datetime column of a line
/// chart (else the first non-numeric column), every other numeric column is a series, and a
/// string column splits the series by its values.
pub fn from_results(
    columns: &[String],
    types: &[String],
    rows: &[Vec<Value>],
    request: Request<'_>,
) -> Option<Chart> {
    let kind_at = |i: usize| types.get(i).map_or("", String::as_str);
    let all = 0..columns.len().min(types.len());
    let time_col = all.clone().find(|&i| kind_at(i) == "datetime");
    let first_other = all.clone().find(|&i| !is_numeric(kind_at(i)));
    let (kind, x_col) = match request {
        Request::Render(render) => {
            let kind = kind_of(render)?;
            let x = match kind {
                Kind::Line => time_col.or(first_other),
                Kind::Bar => first_other,
            };
            (kind, x.unwrap_or(0))
        }
        Request::SummaryOverTime => {
            let x = time_col?;
            // A summary over time has its time, its numbers and at most one column to split by.
            let others = all
                .clone()
                .filter(|&i| i != x && !is_numeric(kind_at(i)))
                .count();
            if others > 1 {
                return None;
            }
            (Kind::Line, x)
        }
    };
    let value_cols: Vec<usize> = all
        .clone()
        .filter(|&i| i != x_col && is_numeric(kind_at(i)))
        .collect();
    if value_cols.is_empty() {
        return None;
    }
    let split_col = all.clone().find(|&i| i != x_col && kind_at(i) == "string");
    let timed = kind == Kind::Line && kind_at(x_col) == "datetime";
    let series_name = |split: Option<&str>, col: usize| match split {
        None => columns[col].clone(),
        Some(s) => {
            let s = if s.is_empty() { "(empty)" } else { s };
            if value_cols.len() == 1 {
                s.to_string()
            } else {
                format!("{s} · {}", columns[col])
            }
        }
    };

    // Sum every row's numbers into (x, series) cells, keeping the order things first appear.
    let mut x_keys: Vec<XKey> = Vec::new();
    let mut x_index: HashMap<XKey, usize> = HashMap::new();
    let mut names: Vec<String> = Vec::new();
    let mut name_index: HashMap<String, usize> = HashMap::new();
    let mut cells: HashMap<(usize, usize), f64> = HashMap::new();
    for row in rows {
        let Some(cell) = row.get(x_col) else { continue };
        let key = if timed {
            match time_of(cell) {
                Some(t) => XKey::Time(t),
                None => continue,
            }
        } else {
            XKey::Label(label_of(cell, kind_at(x_col)))
        };
        let xi = *x_index.entry(key.clone()).or_insert_with(|| {
            x_keys.push(key);
            x_keys.len() - 1
        });
        let split = split_col.map(|c| {
            row.get(c)
                .map(crate::portal::html::value_text)
                .unwrap_or_default()
        });
        for &col in &value_cols {
            let Some(number) = row.get(col).and_then(number_of) else {
                continue;
            };
            let name = series_name(split.as_deref(), col);
            let si = *name_index.entry(name.clone()).or_insert_with(|| {
                names.push(name);
                names.len() - 1
            });
            *cells.entry((xi, si)).or_insert(0.0) += number;
        }
    }
    if x_keys.is_empty() || names.is_empty() {
        return None;
    }

    // The x order: by time, or as the categories came (cut to the first ones).
    let mut order: Vec<usize> = (0..x_keys.len()).collect();
    if timed {
        order.sort_by_key(|&i| match &x_keys[i] {
            XKey::Time(t) => *t,
            XKey::Label(_) => 0,
        });
    }
    let categories_left_out = if timed {
        0
    } else {
        order.len().saturating_sub(MAX_CATEGORIES)
    };
    order.truncate(if timed { order.len() } else { MAX_CATEGORIES });
    let x = if timed {
        Points::Time(
            order
                .iter()
                .filter_map(|&i| match &x_keys[i] {
                    XKey::Time(t) => Some(*t),
                    XKey::Label(_) => None,
                })
                .collect(),
        )
    } else {
        Points::Labels(
            order
                .iter()
                .map(|&i| match &x_keys[i] {
                    XKey::Label(l) => l.clone(),
                    XKey::Time(t) => t.to_string(),
                })
                .collect(),
        )
    };

    // The largest series by total, at most as many as there are colours.
    let mut series: Vec<(f64, Series)> = names
        .into_iter()
        .enumerate()
        .map(|(si, name)| {
            let values: Vec<Option<f64>> = order
                .iter()
                .map(|&xi| cells.get(&(xi, si)).copied())
                .collect();
            let total = values.iter().flatten().map(|v| v.abs()).sum::<f64>();
            (total, Series { name, values })
        })
        .filter(|(_, s)| s.values.iter().any(Option::is_some))
        .collect();
    series.sort_by(|a, b| b.0.total_cmp(&a.0));
    let series_left_out = series.len().saturating_sub(MAX_SERIES);
    series.truncate(MAX_SERIES);
    if series.is_empty() {
        return None;
    }
    Some(Chart {
        kind,
        x_title: columns[x_col].clone(),
        x,
        series: series.into_iter().map(|(_, s)| s).collect(),
        series_left_out,
        categories_left_out,
    })
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum XKey {
    Time(i64),
    Label(String),
}

fn time_of(value: &Value) -> Option<i64> {
    let text = value.as_str()?;
    DateTime::parse_from_rfc3339(text)
        .ok()
        .map(|t| t.timestamp_micros())
}

fn number_of(value: &Value) -> Option<f64> {
    let n = match value {
        Value::Number(n) => n.as_f64()?,
        Value::String(s) => s.trim().parse().ok()?,
        _ => return None,
    };
    n.is_finite().then_some(n)
}

/// A category's label: times shortened to the minute (to the day at midnight).
fn label_of(value: &Value, kind: &str) -> String {
    if kind == "datetime"
        && let Some(t) = time_of(value).and_then(DateTime::<Utc>::from_timestamp_micros)
    {
        let midnight = t.timestamp_micros() % 86_400_000_000 == 0;
        return t
            .format(if midnight {
                "%Y-%m-%d"
            } else {
                "%Y-%m-%d %H:%M"
            })
            .to_string();
    }
    crate::portal::html::value_text(value)
}

/// The y axis: from `lo` to `hi` in steps of `step`, always including zero, with "nice" steps
/// (1, 2 or 5 times a power of ten; whole numbers for whole-number data).
fn y_scale(values: impl Iterator<Item = f64> + Clone) -> (f64, f64, f64) {
    let min = values.clone().fold(0.0_f64, f64::min);
    let max = values.clone().fold(0.0_f64, f64::max);
    let whole = values.into_iter().all(|v| v.fract() == 0.0);
    let span = if max > min { max - min } else { 1.0 };
    let mut step = nice_step(span / 5.0);
    if whole {
        step = step.max(1.0);
    }
    let lo = (min / step).floor() * step;
    let hi = ((max / step).ceil() * step).max(lo + step);
    (lo, hi, step)
}

fn nice_step(raw: f64) -> f64 {
    let magnitude = 10f64.powi(raw.log10().floor() as i32);
    let f = raw / magnitude;
    let nice = if f < 1.5 {
        1.0
    } else if f < 3.0 {
        2.0
    } else if f < 7.0 {
        5.0
    } else {
        10.0
    };
    nice * magnitude
}

/// A number for an axis: short (`1.5k`, `2M`), at most two decimals.
fn number_label(v: f64) -> String {
    let a = v.abs();
    let (scaled, unit) = if a >= 1e9 {
        (v / 1e9, "G")
    } else if a >= 1e6 {
        (v / 1e6, "M")
    } else if a >= 1e4 {
        (v / 1e3, "k")
    } else {
        (v, "")
    };
    let text = format!("{scaled:.2}");
    let text = text.trim_end_matches('0').trim_end_matches('.');
    let text = if text == "-0" { "0" } else { text };
    format!("{text}{unit}")
}

/// Steps of a time axis, in seconds: the smallest giving at most 8 ticks is used.
const TIME_STEPS: [i64; 25] = [
    1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10_800, 21_600, 43_200, 86_400,
    172_800, 604_800, 1_209_600, 2_592_000, 7_776_000, 15_552_000, 31_536_000,
];

/// Ticks of a time axis from `min` to `max` (microseconds), at round times, with their labels:
/// dates for steps of a day or more, clock times (with the date when the range spans days)
/// below that, seconds below a minute.
fn time_ticks(min: i64, max: i64) -> Vec<(i64, String)> {
    const SEC: i64 = 1_000_000;
    let label = |t: i64, format: &str| {
        DateTime::<Utc>::from_timestamp_micros(t)
            .map(|t| t.format(format).to_string())
            .unwrap_or_default()
    };
    if max <= min {
        return vec![(min, label(min, "%Y-%m-%d %H:%M:%S"))];
    }
    let span_secs = (max - min) / SEC;
    let step_secs = TIME_STEPS
        .iter()
        .copied()
        .find(|s| span_secs <= 8 * s)
        .unwrap_or_else(|| (span_secs / 8 / 31_536_000 + 1) * 31_536_000);
    let format = if step_secs >= 86_400 {
        "%Y-%m-%d"
    } else if step_secs >= 60 {
        if span_secs >= 86_400 || label(min, "%F") != label(max, "%F") {
            "%m-%d %H:%M"
        } else {
            "%H:%M"
        }
    } else {
        "%H:%M:%S"
    };
    let step = step_secs * SEC;
    let first = min.div_euclid(step) * step + if min.rem_euclid(step) == 0 { 0 } else { step };
    (0..)
        .map(|k| first + k * step)
        .take_while(|&t| t <= max)
        .map(|t| (t, label(t, format)))
        .collect()
}

/// Legend entries laid out in rows across the chart's width: (x, y, series index).
fn legend_layout(series: &[Series]) -> (Vec<(f64, f64, usize)>, f64) {
    let mut out = Vec::new();
    let (mut x, mut y) = (PLOT_LEFT, 14.0);
    for (i, s) in series.iter().enumerate() {
        let width = 22.0 + truncate(&s.name, 40).chars().count() as f64 * CHAR_WIDTH + 18.0;
        if x + width > WIDTH - PLOT_RIGHT && x > PLOT_LEFT {
            x = PLOT_LEFT;
            y += LEGEND_ROW;
        }
        out.push((x, y, i));
        x += width;
    }
    (out, y + LEGEND_ROW - 8.0)
}

/// The chart as an `svg` element with `id`, scaled to its container's width.
pub fn svg(chart: &Chart, id: &str) -> Markup {
    let (legend, legend_height) = legend_layout(&chart.series);
    let top = legend_height + 10.0;
    let bottom = top + PLOT_HEIGHT;
    let height = bottom + X_AXIS_SPACE;
    let plot_width = WIDTH - PLOT_LEFT - PLOT_RIGHT;
    let (lo, hi, step) = y_scale(
        chart
            .series
            .iter()
            .flat_map(|s| s.values.iter().flatten().copied()),
    );
    let y_of = |v: f64| bottom - (v - lo) / (hi - lo) * PLOT_HEIGHT;
    let y_ticks: Vec<f64> = (0..=((hi - lo) / step).round() as usize)
        .map(|k| lo + k as f64 * step)
        .collect();
    let n = chart.x.len();
    let band = plot_width / n.max(1) as f64;
    // Where each point sits along x.
    let x_of: Vec<f64> = match &chart.x {
        Points::Time(times) => {
            let (min, max) = (
                times.first().copied().unwrap_or(0),
                times.last().copied().unwrap_or(0),
            );
            times
                .iter()
                .map(|&t| {
                    if max > min {
                        PLOT_LEFT + (t - min) as f64 / (max - min) as f64 * plot_width
                    } else {
                        PLOT_LEFT + plot_width / 2.0
                    }
                })
                .collect()
        }
        Points::Labels(_) => (0..n)
            .map(|i| PLOT_LEFT + (i as f64 + 0.5) * band)
            .collect(),
    };
    let point_label = |i: usize| match &chart.x {
        Points::Time(times) => DateTime::<Utc>::from_timestamp_micros(times[i])
            .map(|t| t.format("%Y-%m-%d %H:%M:%S").to_string())
            .unwrap_or_default(),
        Points::Labels(labels) => labels[i].clone(),
    };
    // x labels: time ticks, or every k-th category so that they do not overlap.
    let x_labels: Vec<(f64, String)> = match &chart.x {
        Points::Time(times) => {
            let (min, max) = (
                times.first().copied().unwrap_or(0),
                times.last().copied().unwrap_or(0),
            );
            time_ticks(min, max)
                .into_iter()
                .map(|(t, label)| {
                    let x = if max > min {
                        PLOT_LEFT + (t - min) as f64 / (max - min) as f64 * plot_width
                    } else {
                        PLOT_LEFT + plot_width / 2.0
                    };
                    (x, label)
                })
                .collect()
        }
        Points::Labels(labels) => {
            let fits = (plot_width / 90.0).max(1.0) as usize;
            let every = n.div_ceil(fits).max(1);
            labels
                .iter()
                .enumerate()
                .filter(|(i, _)| i % every == 0)
                .map(|(i, l)| (x_of[i], truncate(l, 14)))
                .collect()
        }
    };
    let kind = match chart.kind {
        Kind::Line => "Line chart",
        Kind::Bar => "Bar chart",
    };
    let names: Vec<&str> = chart.series.iter().map(|s| s.name.as_str()).collect();
    let title = format!("{kind} of {} by {}", names.join(", "), chart.x_title);
    let title_id = format!("{id}-title");
    let f = |v: f64| format!("{v:.1}");
    html! {
        svg id=(id) class="drawing chart" viewBox={"0 0 " (WIDTH) " " (f(height))}
            role="img" aria-labelledby=(title_id) xmlns="http://www.w3.org/2000/svg" {
            title id=(title_id) { (title) }
            g.legend {
                @for (x, y, i) in &legend {
                    rect class={"series-" (i)} x=(f(*x)) y=(f(y - 9.0)) width="14" height="10" rx="2" {}
                    text.label x=(f(x + 20.0)) y=(f(*y)) { (truncate(&chart.series[*i].name, 40)) }
                }
            }
            g.y-axis {
                @for v in &y_ticks {
                    line.gridline x1=(f(PLOT_LEFT)) x2=(f(WIDTH - PLOT_RIGHT)) y1=(f(y_of(*v))) y2=(f(y_of(*v))) {}
                    text.label x=(f(PLOT_LEFT - 8.0)) y=(f(y_of(*v) + 4.0)) text-anchor="end" { (number_label(*v)) }
                }
            }
            line.axis x1=(f(PLOT_LEFT)) x2=(f(WIDTH - PLOT_RIGHT)) y1=(f(bottom)) y2=(f(bottom)) {}
            line.axis x1=(f(PLOT_LEFT)) x2=(f(PLOT_LEFT)) y1=(f(top)) y2=(f(bottom)) {}
            g.x-axis {
                @for (x, label) in &x_labels {
                    line.axis x1=(f(*x)) x2=(f(*x)) y1=(f(bottom)) y2=(f(bottom + 4.0)) {}
                    text.label x=(f(*x)) y=(f(bottom + 18.0)) text-anchor="middle" { (label) }
                }
                text.label.axis-title x=(f(PLOT_LEFT + plot_width / 2.0)) y=(f(height - 6.0)) text-anchor="middle" { (chart.x_title) }
            }
            @match chart.kind {
                Kind::Line => {
                    @for (si, s) in chart.series.iter().enumerate() {
                        g {
                            path class={"line series-" (si)} d=(line_path(&x_of, &s.values, &y_of)) {}
                            @if n <= MAX_DOTS {
                                @for (i, v) in s.values.iter().enumerate() {
                                    @if let Some(v) = v {
                                        circle class={"dot series-" (si)} cx=(f(x_of[i])) cy=(f(y_of(*v))) r="3" {
                                            title { (point_label(i)) " · " (s.name) ": " (number_label(*v)) }
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
                Kind::Bar => {
                    @let group = band * 0.8;
                    @let width = group / chart.series.len() as f64;
                    @for (si, s) in chart.series.iter().enumerate() {
                        g {
                            @for (i, v) in s.values.iter().enumerate() {
                                @if let Some(v) = v {
                                    @let (y0, y1) = (y_of(0.0_f64.clamp(lo, hi)), y_of(*v));
                                    rect class={"bar series-" (si)}
                                        x=(f(x_of[i] - group / 2.0 + si as f64 * width)) y=(f(y0.min(y1)))
                                        width=(f((width - 1.0).max(1.0))) height=(f((y1 - y0).abs())) {
                                        title { (point_label(i)) " · " (s.name) ": " (number_label(*v)) }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

/// An SVG path through the points that have values, broken where a value is missing.
fn line_path(xs: &[f64], values: &[Option<f64>], y_of: &impl Fn(f64) -> f64) -> String {
    let mut d = String::new();
    let mut pen_down = false;
    for (x, v) in xs.iter().zip(values) {
        match v {
            Some(v) => {
                let command = if pen_down { 'L' } else { 'M' };
                d.push_str(&format!("{command}{x:.1} {:.1} ", y_of(*v)));
                pen_down = true;
            }
            None => pen_down = false,
        }
    }
    d.trim_end().to_string()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn strings(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| s.to_string()).collect()
    }

    fn over_time(rows: Vec<Vec<Value>>) -> Option<Chart> {
        from_results(
            &strings(&["Timestamp", "Processes"]),
            &strings(&["datetime", "long"]),
            &rows,
            Request::Render("timechart"),
        )
    }

    #[test]
    fn a_timechart_is_a_line_over_sorted_times_with_sums_per_time() {
        let chart = over_time(vec![
            vec![json!("2024-05-02T00:00:00Z"), json!(5)],
            vec![json!("2024-05-01T00:00:00Z"), json!(2)],
            vec![json!("2024-05-02T00:00:00Z"), json!(1)],
            vec![Value::Null, json!(9)],
        ])
        .expect("a chart");
        assert_eq!(chart.kind, Kind::Line);
        assert_eq!(chart.x_title, "Timestamp");
        let day = 86_400_000_000;
        let may1 = 1_714_521_600_000_000;
        assert_eq!(chart.x, Points::Time(vec![may1, may1 + day]));
        assert_eq!(chart.series.len(), 1);
        assert_eq!(chart.series[0].name, "Processes");
        assert_eq!(chart.series[0].values, vec![Some(2.0), Some(6.0)]);
    }

    #[test]
    fn a_string_column_splits_the_series_and_the_largest_are_kept() {
        let mut rows = Vec::new();
        for (i, host) in ["a", "b", "c", "d", "e", "f", "g", "h"].iter().enumerate() {
            rows.push(vec![
                json!("2024-05-01T00:00:00Z"),
                json!(host),
                json!(i + 1),
            ]);
            rows.push(vec![
                json!("2024-05-01T01:00:00Z"),
                json!(host),
                json!(i + 1),
            ]);
        }
        let chart = from_results(
            &strings(&["Timestamp", "DeviceName", "Count"]),
            &strings(&["datetime", "string", "long"]),
            &rows,
            Request::SummaryOverTime,
        )
        .expect("a chart");
        assert_eq!(chart.series.len(), MAX_SERIES);
        assert_eq!(chart.series_left_out, 2);
        let names: Vec<&str> = chart.series.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["h", "g", "f", "e", "d", "c"]);
        let svg = svg(&chart, "chart").into_string();
        for i in 0..MAX_SERIES {
            assert!(
                svg.contains(&format!("line series-{i}")),
                "series {i} drawn"
            );
        }
        assert!(!svg.contains("series-6"));
    }

    #[test]
    fn several_numeric_columns_are_several_series_and_bars_group_by_category() {
        let chart = from_results(
            &strings(&["FileName", "Runs", "Devices"]),
            &strings(&["string", "long", "long"]),
            &[
                vec![json!("cmd.exe"), json!(10), json!(2)],
                vec![json!("powershell.exe"), json!(4), json!(3)],
            ],
            Request::Render("columnchart"),
        )
        .expect("a chart");
        assert_eq!(chart.kind, Kind::Bar);
        assert_eq!(
            chart.x,
            Points::Labels(strings(&["cmd.exe", "powershell.exe"]))
        );
        assert_eq!(chart.series.len(), 2);
        let svg = svg(&chart, "chart").into_string();
        assert_eq!(svg.matches("<rect class=\"bar series-0\"").count(), 2);
        assert_eq!(svg.matches("<rect class=\"bar series-1\"").count(), 2);
        assert!(svg.contains(">cmd.exe</text>"));
    }

    #[test]
    fn nothing_to_draw_is_no_chart() {
        assert_eq!(over_time(vec![]), None);
        assert_eq!(
            over_time(vec![vec![json!("2024-05-01T00:00:00Z"), Value::Null]]),
            None
        );
        // A table, or no numbers.
        let table = from_results(
            &strings(&["Timestamp", "Count"]),
            &strings(&["datetime", "long"]),
            &[vec![json!("2024-05-01T00:00:00Z"), json!(1)]],
            Request::Render("table"),
        );
        assert_eq!(table, None);
        let words = from_results(
            &strings(&["Timestamp", "FileName"]),
            &strings(&["datetime", "string"]),
            &[vec![json!("2024-05-01T00:00:00Z"), json!("a")]],
            Request::SummaryOverTime,
        );
        assert_eq!(words, None);
        // Raw events are not a summary: too many other columns.
        let raw = from_results(
            &strings(&["Timestamp", "DeviceName", "FileName", "ProcessId"]),
            &strings(&["datetime", "string", "string", "long"]),
            &[vec![
                json!("2024-05-01T00:00:00Z"),
                json!("a"),
                json!("b"),
                json!(1),
            ]],
            Request::SummaryOverTime,
        );
        assert_eq!(raw, None);
    }

    #[test]
    fn a_single_point_is_drawn_in_the_middle_with_a_dot() {
        let chart =
            over_time(vec![vec![json!("2024-05-01T10:00:00Z"), json!(3)]]).expect("a chart");
        let svg = svg(&chart, "chart").into_string();
        assert!(
            svg.contains("<circle class=\"dot series-0\" cx=\"404.0\""),
            "{svg}"
        );
        assert!(
            svg.contains(">2024-05-01 10:00:00</text>"),
            "the one time is labelled"
        );
        assert!(!svg.contains("NaN") && !svg.contains("inf"), "{svg}");
    }

    #[test]
    fn axes_scale_to_nice_steps_from_zero() {
        assert_eq!(y_scale([3.0, 1.0].into_iter()), (0.0, 3.0, 1.0));
        assert_eq!(y_scale([0.0].into_iter()), (0.0, 1.0, 1.0));
        assert_eq!(y_scale([1234.0].into_iter()), (0.0, 1400.0, 200.0));
        assert_eq!(y_scale([-5.0, 5.0].into_iter()), (-6.0, 6.0, 2.0));
        let (lo, hi, step) = y_scale([0.25, 0.5].into_iter());
        assert_eq!(
            (lo, (hi * 10.0).round(), (step * 10.0).round()),
            (0.0, 5.0, 1.0)
        );
        assert_eq!(number_label(0.0), "0");
        assert_eq!(number_label(1500.0), "1500");
        assert_eq!(number_label(25_000.0), "25k");
        assert_eq!(number_label(2_500_000.0), "2.5M");
        assert_eq!(number_label(0.1 + 0.2), "0.3");

        let chart = over_time(vec![
            vec![json!("2024-05-01T00:00:00Z"), json!(0)],
            vec![json!("2024-05-01T06:00:00Z"), json!(1234)],
        ])
        .expect("a chart");
        let svg = svg(&chart, "chart").into_string();
        // Gridlines at 0, 200, …, 1400; the highest value sits below the top of the axis.
        for label in ["0", "200", "1400"] {
            assert!(svg.contains(&format!(">{label}</text>")), "y label {label}");
        }
        assert!(
            svg.contains("<path class=\"line series-0\" d=\"M64.0 "),
            "{svg}"
        );
        assert!(
            svg.contains("L744.0 "),
            "the last time is at the right edge: {svg}"
        );
    }

    #[test]
    fn time_axis_labels_follow_the_span() {
        let at = |s: &str| {
            DateTime::parse_from_rfc3339(s)
                .map(|t| t.timestamp_micros())
                .unwrap_or(0)
        };
        let labels = |a: &str, b: &str| -> Vec<String> {
            time_ticks(at(a), at(b))
                .into_iter()
                .map(|(_, l)| l)
                .collect()
        };
        assert_eq!(
            labels("2024-05-01T00:00:00Z", "2024-05-01T06:00:00Z"),
            [
                "00:00", "01:00", "02:00", "03:00", "04:00", "05:00", "06:00"
            ]
        );
        assert_eq!(
            labels("2024-05-01T23:00:00Z", "2024-05-02T01:00:00Z"),
            [
                "05-01 23:00",
                "05-01 23:15",
                "05-01 23:30",
                "05-01 23:45",
                "05-02 00:00",
                "05-02 00:15",
                "05-02 00:30",
                "05-02 00:45",
                "05-02 01:00",
            ]
        );
        assert_eq!(
            labels("2024-05-01T10:00:00Z", "2024-05-01T10:00:30Z"),
            [
                "10:00:00", "10:00:05", "10:00:10", "10:00:15", "10:00:20", "10:00:25", "10:00:30"
            ]
        );
        assert_eq!(
            labels("2024-05-01T00:00:00Z", "2024-05-05T12:00:00Z"),
            [
                "2024-05-01",
                "2024-05-02",
                "2024-05-03",
                "2024-05-04",
                "2024-05-05"
            ]
        );
        let years = labels("2017-01-01T00:00:00Z", "2021-06-01T00:00:00Z");
        assert!(years.len() <= 8 && years.len() >= 2, "{years:?}");
        assert!(years.iter().all(|l| l.len() == 10), "{years:?}");
    }

    #[test]
    fn labels_are_escaped() {
        let chart = from_results(
            &strings(&["Name", "N"]),
            &strings(&["string", "long"]),
            &[vec![json!("<script>alert(1)</script>"), json!(1)]],
            Request::Render("barchart"),
        )
        .expect("a chart");
        let svg = svg(&chart, "chart").into_string();
        assert!(!svg.contains("<script>"), "{svg}");
        assert!(svg.contains(">&lt;script&gt;alert…</text>"), "{svg}");
        assert!(
            svg.contains("&lt;script&gt;alert(1)&lt;/script&gt; · N: 1"),
            "{svg}"
        );
    }
}
