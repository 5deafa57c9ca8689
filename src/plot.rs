//! PNG pictures of a run: the cross-correlation matrix as a heatmap and the training curves.

use anyhow::{Context, Result, bail};
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::register_font;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use std::path::Path;
use std::sync::Once;

/// One row of training history: step rows carry the loss and its terms, epoch rows may carry
/// kNN accuracy.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Record {
    pub step: usize,
    pub epoch: usize,
    pub loss: Option<f64>,
    /// The method's terms by legend label (Barlow Twins: on- and off-diagonal).
    pub terms: Vec<(String, Option<f64>)>,
    /// Percent, as the kNN monitor reports it.
    pub knn_top1: Option<f64>,
}

/// How the loss panel is labelled.
#[derive(Clone, Debug)]
pub struct LossLabels {
    pub title: String,
    /// The legend of the total.
    pub total: String,
    /// A log axis (for losses that stay positive).
    pub log_scale: bool,
}

impl Default for LossLabels {
    fn default() -> Self {
        LossLabels { title: "Barlow Twins loss".into(), total: "loss = on + λ·off".into(), log_scale: true }
    }
}

type Area<'a> = DrawingArea<BitMapBackend<'a>, Shift>;

pub(crate) const FONT: &str = "sans-serif";
const LOSS_COLOURS: [RGBColor; 4] =
    [RGBColor(20, 20, 20), RGBColor(214, 39, 40), RGBColor(31, 119, 180), RGBColor(148, 103, 189)];

/// Plotters' `ab_glyph` backend knows no fonts until told; an embedded one keeps the pictures
/// identical everywhere and needs no fontconfig or system fonts.
fn ensure_font() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // The embedded file is a valid font, so this cannot fail in practice; if it did, text
        // drawing would report the missing font as an ordinary error.
        let _ = register_font(FONT, FontStyle::Normal, dejavu::sans::regular());
        let _ = register_font(FONT, FontStyle::Bold, dejavu::sans::bold());
    });
}

/// Draws into an RGB buffer and encodes it with the `image` crate, so plotters needs no image
/// encoder of its own and every failure names the file.
pub(crate) fn render(out: &Path, size: (u32, u32), draw: impl FnOnce(Area) -> Result<()>) -> Result<()> {
    ensure_font();
    let (w, h) = size;
    let mut buf = vec![255u8; w as usize * h as usize * 3];
    {
        let root = BitMapBackend::with_buffer(&mut buf, size).into_drawing_area();
        let drawn = draw(root.clone()).and_then(|()| Ok(root.present()?));
        drawn.with_context(|| format!("drawing {}", out.display()))?;
    }
    image::save_buffer_with_format(out, &buf, w, h, image::ExtendedColorType::Rgb8, image::ImageFormat::Png)
        .with_context(|| format!("writing {}", out.display()))
}

/// Diverging blue–white–red map, clamped to [-1, 1]; white at 0 so that a decorrelated matrix
/// looks empty and only structure stands out.
pub fn diverging(v: f64) -> RGBColor {
    const STOPS: [(f64, [f64; 3]); 5] = [
        (-1.0, [33.0, 102.0, 172.0]),
        (-0.5, [146.0, 197.0, 222.0]),
        (0.0, [255.0, 255.0, 255.0]),
        (0.5, [244.0, 165.0, 130.0]),
        (1.0, [178.0, 24.0, 43.0]),
    ];
    if !v.is_finite() {
        return RGBColor(128, 128, 128);
    }
    let v = v.clamp(-1.0, 1.0);
    let i = STOPS.windows(2).position(|w| v <= w[1].0).unwrap_or(3);
    let ((a, ca), (b, cb)) = (STOPS[i], STOPS[i + 1]);
    let t = (v - a) / (b - a);
    let mix = |j: usize| (ca[j] + t * (cb[j] - ca[j])).round() as u8;
    RGBColor(mix(0), mix(1), mix(2))
}

/// Heatmap of the top-left k×k block (k ≤ D) of the D×D row-major cross-correlation matrix `c`.
/// Non-finite entries are drawn grey rather than as a colour they don't have.
pub fn correlation_heatmap(c: &[f32], d: usize, k: usize, title: &str, out: &Path) -> Result<()> {
    let k = k.min(d);
    if c.len() != d * d {
        bail!("heatmap {}: matrix has {} values, expected {d}×{d}", out.display(), c.len());
    }
    if k == 0 {
        bail!("heatmap {}: nothing to draw (k = 0)", out.display());
    }
    render(out, (640, 560), |root| {
        root.fill(&WHITE)?;
        let root = root.titled(title, (FONT, 20).into_font().style(FontStyle::Bold))?;
        const MARGIN: i32 = 10;
        const X_LABELS: i32 = 40;
        const Y_LABELS: i32 = 50;
        // Square cells: the plot is as wide as it is tall, and the colour bar takes what is left.
        let side = root.dim_in_pixel().1 as i32 - 2 * MARGIN - X_LABELS;
        let (main, bar) = root.split_horizontally(side + 2 * MARGIN + Y_LABELS);
        let kf = k as f64;
        // Rows run downwards, as in the matrix, so the diagonal goes from top-left to bottom-right.
        let mut chart = ChartBuilder::on(&main)
            .margin(MARGIN)
            .x_label_area_size(X_LABELS)
            .y_label_area_size(Y_LABELS)
            .build_cartesian_2d(0f64..kf, kf..0f64)?;
        chart
            .configure_mesh()
            .disable_mesh()
            .x_desc("j (branch B feature)")
            .y_desc("i (branch A feature)")
            .x_labels((k + 1).min(9))
            .y_labels((k + 1).min(9))
            .x_label_formatter(&whole)
            .y_label_formatter(&whole)
            .label_style((FONT, 13))
            .axis_desc_style((FONT, 14))
            .draw()?;
        chart.draw_series((0..k * k).map(|n| {
            let (i, j) = (n / k, n % k);
            let colour = diverging(c[i * d + j] as f64);
            Rectangle::new([(j as f64, i as f64), (j as f64 + 1.0, i as f64 + 1.0)], colour.filled())
        }))?;
        chart.plotting_area().draw(&Rectangle::new([(0.0, 0.0), (kf, kf)], BLACK.stroke_width(1)))?;

        let mut bar = ChartBuilder::on(&bar)
            .margin_top(MARGIN)
            .margin_bottom(MARGIN + X_LABELS)
            .margin_left(2 * MARGIN)
            .margin_right(30)
            .y_label_area_size(0)
            .right_y_label_area_size(30)
            .build_cartesian_2d(0f64..1f64, -1f64..1f64)?;
        bar.configure_mesh()
            .disable_mesh()
            .disable_x_axis()
            .y_labels(3)
            .y_label_formatter(&|v| format!("{v:.0}"))
            .label_style((FONT, 13))
            .draw()?;
        const STEPS: usize = 200;
        bar.draw_series((0..STEPS).map(|s| {
            let lo = -1.0 + 2.0 * s as f64 / STEPS as f64;
            let hi = lo + 2.0 / STEPS as f64;
            Rectangle::new([(0.0, lo), (1.0, hi)], diverging((lo + hi) / 2.0).filled())
        }))?;
        bar.plotting_area().draw(&Rectangle::new([(0.0, -1.0), (1.0, 1.0)], BLACK.stroke_width(1)))?;
        Ok(())
    })
}

/// The loss and its terms against step (log scale, unless `labels` says otherwise) beside kNN
/// top-1 accuracy against epoch.
pub fn training_curves(records: &[Record], labels: &LossLabels, out: &Path) -> Result<()> {
    // The terms in order of first appearance; the total first.
    let mut names: Vec<&str> = vec![];
    for (name, _) in records.iter().flat_map(|r| &r.terms) {
        if !names.contains(&name.as_str()) {
            names.push(name);
        }
    }
    let value = |r: &Record, name: Option<&str>| match name {
        None => r.loss,
        Some(name) => r.terms.iter().find(|(n, _)| n == name).and_then(|(_, v)| *v),
    };
    // A log axis has no place for zero or negative values, so those are skipped with NaN and inf.
    let keep = |v: f64| v.is_finite() && (v > 0.0 || !labels.log_scale);
    let series: Vec<(&str, Vec<(f64, f64)>)> = std::iter::once(None)
        .chain(names.iter().map(|n| Some(*n)))
        .take(LOSS_COLOURS.len())
        .map(|name| {
            let pts = records.iter().filter_map(|r| value(r, name).map(|v| (r.step as f64, v)));
            (name.unwrap_or(&labels.total), pts.filter(|&(_, v)| keep(v)).collect())
        })
        .collect();
    let knn: Vec<(f64, f64)> = records
        .iter()
        .filter_map(|r| r.knn_top1.map(|v| (r.epoch as f64, v)))
        .filter(|&(_, v)| v.is_finite())
        .collect();

    render(out, (1200, 450), |root| {
        root.fill(&WHITE)?;
        let (left, right) = root.split_horizontally(620);
        match labels.log_scale {
            true => draw_losses_log(&left, &labels.title, &series)?,
            false => draw_losses_linear(&left, &labels.title, &series)?,
        }
        draw_knn(&right, &knn)
    })
}

type Series<'a> = [(&'a str, Vec<(f64, f64)>)];

fn draw_losses_log(area: &Area, title: &str, series: &Series) -> Result<()> {
    let all = series.iter().flat_map(|(_, pts)| pts.iter().copied());
    let Some((x, y)) = bounds(all) else {
        return empty_panel(area, title, "no loss values recorded");
    };
    let (x0, x1) = widen(x, 1.0);
    // Whole decades give the log axis round tick labels.
    let (lo, hi) = (y.0.log10().floor(), y.1.log10().ceil());
    let (y0, y1) = (10f64.powf(lo), 10f64.powf(hi.max(lo + 1.0)));
    let mut chart = ChartBuilder::on(area)
        .caption(title, (FONT, 18))
        .margin(15)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(x0..x1, (y0..y1).log_scale())?;
    chart
        .configure_mesh()
        .x_desc("step")
        .y_desc("value (log scale)")
        .x_labels(((x1 - x0).ceil() as usize + 1).clamp(2, 10))
        .x_label_formatter(&whole)
        .y_label_formatter(&|v| short(*v))
        .label_style((FONT, 13))
        .axis_desc_style((FONT, 14))
        .light_line_style(WHITE.mix(0.0))
        .draw()?;
    draw_loss_series(&mut chart, series)
}

fn draw_losses_linear(area: &Area, title: &str, series: &Series) -> Result<()> {
    let all = series.iter().flat_map(|(_, pts)| pts.iter().copied());
    let Some((x, y)) = bounds(all) else {
        return empty_panel(area, title, "no loss values recorded");
    };
    let (x0, x1) = widen(x, 1.0);
    let pad = ((y.1 - y.0) * 0.05).max(1e-3);
    let mut chart = ChartBuilder::on(area)
        .caption(title, (FONT, 18))
        .margin(15)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(x0..x1, (y.0 - pad)..(y.1 + pad))?;
    chart
        .configure_mesh()
        .x_desc("step")
        .y_desc("value")
        .x_labels(((x1 - x0).ceil() as usize + 1).clamp(2, 10))
        .x_label_formatter(&whole)
        .y_label_formatter(&|v| format!("{v:.2}"))
        .label_style((FONT, 13))
        .axis_desc_style((FONT, 14))
        .light_line_style(WHITE.mix(0.0))
        .draw()?;
    draw_loss_series(&mut chart, series)
}

fn draw_loss_series<'a, Y>(
    chart: &mut ChartContext<'a, BitMapBackend<'a>, Cartesian2d<plotters::coord::types::RangedCoordf64, Y>>,
    series: &Series,
) -> Result<()>
where
    Y: plotters::coord::ranged1d::Ranged<ValueType = f64>,
{
    for ((name, pts), colour) in series.iter().zip(LOSS_COLOURS) {
        if pts.is_empty() {
            continue;
        }
        chart
            .draw_series(LineSeries::new(pts.iter().copied(), colour.stroke_width(2)))?
            .label(*name)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], colour.stroke_width(2)));
        if pts.len() == 1 {
            chart.draw_series(pts.iter().map(|&p| Circle::new(p, 4, colour.filled())))?;
        }
    }
    legend(chart, SeriesLabelPosition::UpperRight)?;
    Ok(())
}

fn draw_knn(area: &Area, pts: &[(f64, f64)]) -> Result<()> {
    let title = "kNN top-1 accuracy (monitor set)";
    let Some((x, y)) = bounds(pts.iter().copied()) else {
        return empty_panel(area, title, "no kNN evaluations recorded");
    };
    // Room beside the end points for the markers and the last value's label.
    let (x0, x1) = widen(x, 0.5);
    let pad = (x1 - x0) * 0.06;
    let (x0, x1) = (x0 - pad, x1 + pad);
    // At least a 10-point window so that noise between epochs doesn't look like a trend.
    let mid = (y.0 + y.1) / 2.0;
    let half = ((y.1 - y.0) / 2.0 * 1.2).max(5.0);
    let (y0, y1) = ((mid - half).max(0.0).min(y.0), (mid + half).min(100.0).max(y.1));
    let mut chart = ChartBuilder::on(area)
        .caption(title, (FONT, 18))
        .margin(15)
        .x_label_area_size(40)
        .y_label_area_size(50)
        .build_cartesian_2d(x0..x1, y0..y1)?;
    chart
        .configure_mesh()
        .x_desc("epoch")
        .y_desc("top-1 accuracy (%)")
        .x_labels(((x1 - x0).ceil() as usize + 1).clamp(2, 10))
        .x_label_formatter(&whole)
        .y_label_formatter(&|v| format!("{v:.0}"))
        .label_style((FONT, 13))
        .axis_desc_style((FONT, 14))
        .light_line_style(WHITE.mix(0.0))
        .draw()?;
    let colour = RGBColor(44, 160, 44);
    chart
        .draw_series(LineSeries::new(pts.iter().copied(), colour.stroke_width(2)))?
        .label("kNN top-1 (%)")
        .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], colour.stroke_width(2)));
    chart.draw_series(pts.iter().map(|&p| Circle::new(p, 4, colour.filled())))?;
    if let Some(&(lx, ly)) = pts.last() {
        let style = TextStyle::from((FONT, 13).into_font()).pos(Pos::new(HPos::Center, VPos::Bottom));
        let label = EmptyElement::at((lx, ly)) + Text::new(format!("{ly:.1}%"), (0, -8), style);
        chart.draw_series(std::iter::once(label))?;
    }
    legend(&mut chart, SeriesLabelPosition::LowerRight)?;
    Ok(())
}

/// The series' legend, the same in every picture: a translucent white box at `position`.
pub(crate) fn legend<'a, CT: plotters::coord::CoordTranslate>(
    chart: &mut ChartContext<'a, BitMapBackend<'a>, CT>,
    position: SeriesLabelPosition,
) -> Result<()> {
    chart
        .configure_series_labels()
        .position(position)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK.mix(0.4))
        .label_font((FONT, 13))
        .draw()?;
    Ok(())
}

pub(crate) fn empty_panel(area: &Area, title: &str, message: &str) -> Result<()> {
    let area = area.margin(15, 15, 15, 15).titled(title, (FONT, 18))?;
    let (w, h) = area.dim_in_pixel();
    let style = TextStyle::from((FONT, 16).into_font()).color(&RGBColor(110, 110, 110));
    let style = style.pos(Pos::new(HPos::Center, VPos::Center));
    area.draw_text(message, &style, (w as i32 / 2, h as i32 / 2))?;
    Ok(())
}

/// Ranges of x and y over the points, or `None` when there are none.
pub(crate) fn bounds(pts: impl Iterator<Item = (f64, f64)>) -> Option<((f64, f64), (f64, f64))> {
    pts.fold(None, |acc, (x, y)| match acc {
        None => Some(((x, x), (y, y))),
        Some(((a, b), (c, d))) => Some(((a.min(x), b.max(x)), (c.min(y), d.max(y)))),
    })
}

/// Plotters needs a non-empty range; a single point gets `pad` either side.
pub(crate) fn widen((lo, hi): (f64, f64), pad: f64) -> (f64, f64) {
    if hi - lo < 1e-9 { (lo - pad, hi + pad) } else { (lo, hi) }
}

/// Steps and epochs are whole numbers; a fractional tick would suggest otherwise.
fn whole(v: &f64) -> String {
    if (v - v.round()).abs() < 1e-9 { format!("{v:.0}") } else { String::new() }
}

/// Tick labels for a log axis: plain numbers where short, exponents where not.
fn short(v: f64) -> String {
    if (1e-2..1e5).contains(&v.abs()) {
        let s = format!("{v:.2}");
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        format!("{v:.0e}")
    }
}
