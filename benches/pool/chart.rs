//! `throughput.svg`: tasks per second against the work in each task (`count(n)`), for
//! wasmpool and for wasmtime in one process (the limit), both on log scales.

use std::path::Path;

use anyhow::anyhow;
use plotters::prelude::*;

use crate::report::Figures;

/// The task sizes: `count(n)` runs `n` loop iterations.
pub const SIZES: &[i64] = &[1, 1_000, 10_000, 100_000, 1_000_000];

/// The figure name of one point: `<impl>/count_<n>/tasks_per_s`.
pub fn bench(n: i64) -> String {
    format!("count_{n}")
}

/// Draws the chart from the recorded points.
pub fn draw(path: &Path, figs: &Figures, workers: usize) -> anyhow::Result<()> {
    let series = [
        (
            "wasmpool (map over worker processes)".to_string(),
            "wasmpool",
            BLUE,
        ),
        (
            format!("wasmtime in one process, {workers} threads (limit)"),
            "wasmtime-in-process",
            RED,
        ),
    ]
    .map(|(label, imp, color)| {
        let points: Vec<(f64, f64)> = SIZES
            .iter()
            .filter_map(|&n| {
                let v = figs.get(&format!("{imp}/{}/tasks_per_s", bench(n)))?;
                Some((n as f64, v))
            })
            .collect();
        (label, points, color)
    });
    let ys = series.iter().flat_map(|s| s.1.iter().map(|p| p.1));
    let (lo, hi) = ys.fold((f64::MAX, f64::MIN), |(lo, hi), y| (lo.min(y), hi.max(y)));
    if lo > hi {
        return Err(anyhow!("no throughput points to draw"));
    }
    let err = |e: DrawingAreaErrorKind<_>| anyhow!("drawing {}: {e}", path.display());

    let root = SVGBackend::new(path, (860, 520)).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            "wasmpool throughput against task size (fresh instance per task)",
            ("sans-serif", 20),
        )
        .margin(20)
        .x_label_area_size(50)
        .y_label_area_size(80)
        .build_cartesian_2d((0.5f64..2e6).log_scale(), (lo / 2.0..hi * 2.0).log_scale())
        .map_err(err)?;
    chart
        .configure_mesh()
        .x_desc("work per task: count(n), n loop iterations")
        .y_desc("tasks/s")
        .x_label_formatter(&|x| format!("{x:.0e}"))
        .y_label_formatter(&|y| format!("{y:.0e}"))
        .draw()
        .map_err(err)?;
    for (label, points, color) in series {
        chart
            .draw_series(LineSeries::new(points.clone(), color.stroke_width(2)))
            .map_err(err)?
            .label(label)
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 20, y)], color.stroke_width(2)));
        chart
            .draw_series(
                points
                    .into_iter()
                    .map(|p| Circle::new(p, 4, color.filled())),
            )
            .map_err(err)?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.9))
        .border_style(BLACK)
        .draw()
        .map_err(err)?;
    root.present().map_err(err)?;
    Ok(())
}
