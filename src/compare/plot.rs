//! `compare.png`: kNN accuracy against batch size, one line per method.

use crate::plot::{FONT, bounds, empty_panel, legend, render, widen};
use anyhow::Result;
use plotters::prelude::*;
use std::path::Path;

/// Accuracy against batch size (a log₂ axis), one line per named series, with the random
/// network's accuracy as a dashed grey line when given.
pub fn accuracy_by_batch(series: &[(String, Vec<(usize, f64)>)], baseline: Option<f64>, title: &str, out: &Path) -> Result<()> {
    const COLOURS: [RGBColor; 6] = [
        RGBColor(214, 39, 40),
        RGBColor(31, 119, 180),
        RGBColor(255, 127, 14),
        RGBColor(44, 160, 44),
        RGBColor(148, 103, 189),
        RGBColor(140, 86, 75),
    ];
    let log2 = |b: usize| (b.max(1) as f64).log2();
    let pts = series.iter().flat_map(|(_, p)| p.iter().map(|&(b, a)| (log2(b), a)));
    let pts = pts.chain(baseline.map(|b| (f64::NAN, b))).filter(|p| p.1.is_finite());
    render(out, (900, 560), |root| {
        root.fill(&WHITE)?;
        let Some((x, y)) = bounds(pts.clone().filter(|p| p.0.is_finite())) else {
            return empty_panel(&root, title, "no finished runs yet");
        };
        let y = pts.fold(y, |(lo, hi), (_, v)| (lo.min(v), hi.max(v)));
        let (x0, x1) = widen(x, 0.5);
        let (x0, x1) = (x0 - 0.25, x1 + 0.25);
        let pad = ((y.1 - y.0) * 0.1).max(2.0);
        let mut chart = ChartBuilder::on(&root)
            .caption(title, (FONT, 18))
            .margin(15)
            .x_label_area_size(45)
            .y_label_area_size(55)
            .build_cartesian_2d(x0..x1, (y.0 - pad).max(0.0)..(y.1 + pad).min(100.0))?;
        chart
            .configure_mesh()
            .x_desc("batch size (log scale)")
            .y_desc("kNN top-1 (%)")
            .x_labels(((x1 - x0).ceil() as usize + 1).clamp(2, 12))
            .x_label_formatter(&|v| if (v - v.round()).abs() < 1e-9 { format!("{}", 2f64.powf(*v).round()) } else { String::new() })
            .y_label_formatter(&|v| format!("{v:.0}"))
            .label_style((FONT, 13))
            .axis_desc_style((FONT, 14))
            .light_line_style(WHITE.mix(0.0))
            .draw()?;
        for ((name, pts), colour) in series.iter().zip(COLOURS.iter().cycle()) {
            let line: Vec<(f64, f64)> = pts.iter().map(|&(b, a)| (log2(b), a)).collect();
            chart
                .draw_series(LineSeries::new(line.clone(), colour.stroke_width(2)))?
                .label(name.as_str())
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], colour.stroke_width(2)));
            chart.draw_series(line.iter().map(|&p| Circle::new(p, 4, colour.filled())))?;
        }
        if let Some(b) = baseline {
            let grey = RGBColor(130, 130, 130);
            let dashes = (0..40).map(|i| {
                let (a, c) = (x0 + (x1 - x0) * i as f64 / 40.0, x0 + (x1 - x0) * (i as f64 + 0.5) / 40.0);
                PathElement::new(vec![(a, b), (c, b)], grey.stroke_width(1))
            });
            chart
                .draw_series(dashes)?
                .label("random init")
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], grey.stroke_width(1)));
        }
        legend(&mut chart, SeriesLabelPosition::LowerRight)
    })
}
