//! Front plots with `plotters` (PNG or SVG, chosen by the file extension):
//! - 2-D: every method's points as a scatter plus its attainment step line, overlaid, with λ
//!   labels and the reference point drawn;
//! - 3-D: the three pairwise projections (f1–f2, f1–f3, f2–f3) and a legend, in a 2 × 2 grid;
//! - 4-D and up: a scatter matrix of pairwise projections (objective names on the diagonal).
//!
//! Text uses the bundled DejaVu Sans (assets/DejaVuSans.ttf, Bitstream Vera/DejaVu licence, see
//! the crate README) through plotters' `ab_glyph` backend, so no system font library is needed.

use std::path::Path;
use std::sync::Once;

use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::FontStyle;

use crate::error::{EvalError, Result};
use crate::front::Front;
use crate::pareto::{nondominated_mask, Duplicates};
use crate::sense::Sense;

static FONT: &[u8] = include_bytes!("../assets/DejaVuSans.ttf");
static REGISTER: Once = Once::new();

fn register_font() {
    REGISTER.call_once(|| {
        // The bundled font is a valid TrueType file, so registration cannot fail; if it did,
        // text drawing would report a font error that `plot_fronts` returns.
        let _ = plotters::style::register_font("sans-serif", FontStyle::Normal, FONT);
    });
}

/// What to draw besides the points.
#[derive(Debug, Clone, PartialEq)]
pub struct PlotOptions {
    /// Title above the plot.
    pub title: String,
    /// Sense of the objectives (decides the direction of the step lines).
    pub sense: Sense,
    /// Reference point to draw (and to close the step lines at), if any.
    pub reference_point: Option<Vec<f64>>,
    /// Write `λ=(…)` next to each point that has a preference.
    pub pref_labels: bool,
    /// Image size in pixels.
    pub size: (u32, u32),
}

impl Default for PlotOptions {
    fn default() -> Self {
        PlotOptions {
            title: "Pareto front".into(),
            sense: Sense::Max,
            reference_point: None,
            pref_labels: true,
            size: (900, 700),
        }
    }
}

const PALETTE: [RGBColor; 8] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
];

/// Draws `fronts` (method name, front) to `path` (`.png` or `.svg`).
pub fn plot_fronts(path: &Path, fronts: &[(String, Front)], options: &PlotOptions) -> Result<()> {
    let perr = |detail: String| EvalError::Plot { path: path.display().to_string(), detail };
    let dim = fronts
        .iter()
        .map(|(_, f)| f.dim())
        .find(|&d| d > 0)
        .ok_or_else(|| perr("nothing to plot: every front is empty".into()))?;
    for (name, f) in fronts {
        f.validate()?;
        if f.dim() != dim && f.dim() != 0 {
            return Err(perr(format!(
                "front {name:?} has {} objectives but the first has {dim}",
                f.dim()
            )));
        }
    }
    if dim < 2 {
        return Err(perr("plots need at least 2 objectives".into()));
    }
    if let Some(r) = &options.reference_point {
        if r.len() != dim || r.iter().any(|v| !v.is_finite()) {
            return Err(EvalError::DimensionMismatch {
                what: "plot reference point",
                got: r.len(),
                expected: dim,
            });
        }
    }
    register_font();
    let ext = path.extension().and_then(|e| e.to_str()).map(str::to_ascii_lowercase);
    match ext.as_deref() {
        Some("png") => {
            let root = BitMapBackend::new(path, options.size).into_drawing_area();
            draw(&root, fronts, dim, options).map_err(perr)?;
            root.present().map_err(|e| perr(e.to_string()))
        }
        Some("svg") => {
            let root = SVGBackend::new(path, options.size).into_drawing_area();
            draw(&root, fronts, dim, options).map_err(perr)?;
            root.present().map_err(|e| perr(e.to_string()))
        }
        _ => Err(perr("unknown image format (hint: use a .png or .svg file name)".into())),
    }
}

fn draw<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    fronts: &[(String, Front)],
    dim: usize,
    o: &PlotOptions,
) -> std::result::Result<(), String> {
    root.fill(&WHITE).map_err(|e| e.to_string())?;
    let root = root.titled(&o.title, ("sans-serif", 24)).map_err(|e| e.to_string())?;
    if dim == 2 {
        draw_2d(&root, fronts, o, (0, 1), true)
    } else if dim == 3 {
        // Three objectives: the three pairwise projections and a legend, in a 2 × 2 grid.
        let cells = root.split_evenly((2, 2));
        for (cell, axes) in cells.iter().zip([(0, 1), (0, 2), (1, 2)]) {
            draw_2d(cell, fronts, o, axes, false)?;
        }
        draw_legend(&cells[3], fronts, o)
    } else {
        let names = fronts
            .iter()
            .find(|(_, f)| f.dim() == dim)
            .map(|(_, f)| f.objective_names())
            .unwrap_or_default();
        let cells = root.split_evenly((dim, dim));
        for (idx, cell) in cells.iter().enumerate() {
            let (i, j) = (idx / dim, idx % dim);
            if i == j {
                let (w, h) = cell.dim_in_pixel();
                cell.draw(&Text::new(
                    names[i].clone(),
                    (w as i32 / 3, h as i32 / 2),
                    ("sans-serif", 20),
                ))
                .map_err(|e| e.to_string())?;
            } else {
                draw_2d(cell, fronts, o, (j, i), idx == 1)?;
            }
        }
        Ok(())
    }
}

/// A legend panel: one marker and name per method, the reference point's marker when drawn.
fn draw_legend<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    fronts: &[(String, Front)],
    o: &PlotOptions,
) -> std::result::Result<(), String> {
    let (w, h) = area.dim_in_pixel();
    let (x, mut y) = (w as i32 / 6, h as i32 / 5);
    let text = |s: String, at: (i32, i32)| Text::new(s, at, ("sans-serif", 16));
    area.draw(&text("pairwise projections".into(), (x, y))).map_err(|e| e.to_string())?;
    for (mi, (name, _)) in fronts.iter().enumerate() {
        y += 26;
        let color = PALETTE[mi % PALETTE.len()];
        area.draw(&Circle::new((x + 6, y + 8), 5, color.filled())).map_err(|e| e.to_string())?;
        area.draw(&text(name.clone(), (x + 20, y))).map_err(|e| e.to_string())?;
    }
    if o.reference_point.is_some() {
        y += 26;
        area.draw(&Cross::new((x + 6, y + 8), 5, BLACK.stroke_width(2)))
            .map_err(|e| e.to_string())?;
        area.draw(&text("reference point".into(), (x + 20, y))).map_err(|e| e.to_string())?;
    }
    Ok(())
}

fn range(values: impl Iterator<Item = f64>) -> (f64, f64) {
    let (lo, hi) =
        values.fold((f64::INFINITY, f64::NEG_INFINITY), |(l, h), v| (l.min(v), h.max(v)));
    let pad = if hi > lo { 0.08 * (hi - lo) } else { 0.5 * lo.abs().max(1.0) };
    (lo - pad, hi + pad)
}

/// One panel: objective `axes.0` on x, `axes.1` on y.
fn draw_2d<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    fronts: &[(String, Front)],
    o: &PlotOptions,
    axes: (usize, usize),
    legend: bool,
) -> std::result::Result<(), String> {
    let (a, b) = axes;
    let full_2d = fronts.iter().all(|(_, f)| f.dim() <= 2);
    let pts = || fronts.iter().flat_map(|(_, f)| f.points.iter());
    let r = o.reference_point.as_ref();
    let xr = range(pts().map(|p| p[a]).chain(r.map(|r| r[a])));
    let yr = range(pts().map(|p| p[b]).chain(r.map(|r| r[b])));
    // Headroom on the legend's side (above the points for maximisation, below for
    // minimisation), about one legend line per 6.5 % of the span, so the box covers no point.
    let head = if legend {
        0.065 * (fronts.len() + usize::from(r.is_some())) as f64 * (yr.1 - yr.0)
    } else {
        0.0
    };
    let yr = if o.sense == Sense::Max { (yr.0, yr.1 + head) } else { (yr.0 - head, yr.1) };
    let names = fronts
        .iter()
        .find(|(_, f)| f.dim() > 0)
        .map(|(_, f)| f.objective_names())
        .unwrap_or_default();
    let small = !full_2d;
    let mut chart = ChartBuilder::on(area)
        .margin(if small { 6 } else { 16 })
        .x_label_area_size(if small { 28 } else { 44 })
        .y_label_area_size(if small { 40 } else { 60 })
        .build_cartesian_2d(xr.0..xr.1, yr.0..yr.1)
        .map_err(|e| e.to_string())?;
    chart
        .configure_mesh()
        .x_desc(names.get(a).cloned().unwrap_or_default())
        .y_desc(names.get(b).cloned().unwrap_or_default())
        .label_style(("sans-serif", if small { 11 } else { 15 }))
        .axis_desc_style(("sans-serif", if small { 12 } else { 17 }))
        .x_labels(if small { 4 } else { 8 })
        .y_labels(if small { 4 } else { 8 })
        .draw()
        .map_err(|e| e.to_string())?;
    for (mi, (name, f)) in fronts.iter().enumerate() {
        if f.points.is_empty() {
            continue;
        }
        let color = PALETTE[mi % PALETTE.len()];
        // The step line joins the non-dominated points only (in this 2-D projection for the
        // scatter matrix, where it is drawn only for true 2-D fronts).
        if full_2d {
            let mask = nondominated_mask(&f.points, o.sense, Duplicates::KeepOne)
                .map_err(|e| e.to_string())?;
            let mut nd: Vec<(f64, f64)> = f
                .points
                .iter()
                .zip(&mask)
                .filter(|(_, k)| **k)
                .map(|(p, _)| (p[a], p[b]))
                .collect();
            nd.sort_by(|p, q| p.0.total_cmp(&q.0));
            let step = step_line(&nd, o.sense, r.map(|r| (r[a], r[b])));
            chart
                .draw_series(LineSeries::new(step, color.stroke_width(2)))
                .map_err(|e| e.to_string())?;
        }
        let series = chart
            .draw_series(
                f.points
                    .iter()
                    .map(|p| Circle::new((p[a], p[b]), if small { 3 } else { 5 }, color.filled())),
            )
            .map_err(|e| e.to_string())?;
        if legend {
            series
                .label(name.clone())
                .legend(move |(x, y)| Circle::new((x + 8, y), 5, color.filled()));
        }
        if o.pref_labels && full_2d {
            let labels: Vec<_> = (0..f.points.len())
                .filter_map(|k| f.pref_label(k).map(|l| (l, f.points[k][a], f.points[k][b])))
                .collect();
            chart
                .draw_series(labels.into_iter().map(|(l, x, y)| {
                    EmptyElement::at((x, y))
                        + Text::new(l, (6, -14), ("sans-serif", 12).into_font().color(&color))
                }))
                .map_err(|e| e.to_string())?;
        }
    }
    if let Some(r) = r {
        let series = chart
            .draw_series(std::iter::once(Cross::new((r[a], r[b]), 7, BLACK.stroke_width(2))))
            .map_err(|e| e.to_string())?;
        if legend {
            series
                .label("reference point")
                .legend(|(x, y)| Cross::new((x + 8, y), 5, BLACK.stroke_width(2)));
        }
    }
    if legend {
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .label_font(("sans-serif", if small { 12 } else { 15 }))
            // The legend sits in the headroom added above (max) or below (min) the points,
            // away from the reference point.
            .position(if o.sense == Sense::Max {
                SeriesLabelPosition::UpperRight
            } else {
                SeriesLabelPosition::LowerLeft
            })
            .draw()
            .map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// Attainment-surface step line through non-dominated points sorted by x ascending, closed at
/// the reference point's coordinates when given.
fn step_line(nd: &[(f64, f64)], sense: Sense, r: Option<(f64, f64)>) -> Vec<(f64, f64)> {
    let mut out = Vec::with_capacity(2 * nd.len() + 2);
    let (Some(&first), Some(&last)) = (nd.first(), nd.last()) else {
        return out;
    };
    match sense {
        // Maximisation: sorted by x ↑ means y ↓; the dominated region lies below-left.
        Sense::Max => {
            if let Some(r) = r {
                out.push((r.0, first.1));
            }
            for (i, p) in nd.iter().enumerate() {
                if i > 0 {
                    out.push((nd[i - 1].0, p.1));
                }
                out.push(*p);
            }
            if let Some(r) = r {
                out.push((last.0, r.1));
            }
        }
        // Minimisation: the dominated region lies above-right.
        Sense::Min => {
            if let Some(r) = r {
                out.push((first.0, r.1));
            }
            for (i, p) in nd.iter().enumerate() {
                if i > 0 {
                    out.push((p.0, nd[i - 1].1));
                }
                out.push(*p);
            }
            if let Some(r) = r {
                out.push((r.0, last.1));
            }
        }
    }
    out
}
