//! The `--svg` plot: GFLOP/s against hidden size, per cell and kernel, at each batch size, with
//! the measured FMA peak as a line.

use plotters::prelude::*;

use crate::commands::bench::Measurement;

/// The plot of `results` as an SVG document.
pub fn render_svg(results: &[Measurement], peak_flops: f64) -> Result<String, String> {
    let mut svg = String::new();
    draw(&mut svg, results, peak_flops)?;
    Ok(svg)
}

fn draw(svg: &mut String, results: &[Measurement], peak_flops: f64) -> Result<(), String> {
    let mut batches: Vec<usize> = results.iter().map(|m| m.shape.batch).collect();
    batches.sort_unstable();
    batches.dedup();
    let panels = batches.len().max(1) as u32;
    let root = SVGBackend::with_string(svg, (560 * panels, 420)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| e.to_string())?;
    let areas = root.split_evenly((1, panels as usize));
    let max_hidden = results.iter().map(|m| m.shape.hidden).max().unwrap_or(1) as f64;
    let peak = peak_flops / 1e9;
    // Every measurement of a run has the same thread count; said once per panel.
    let threads = results.first().map_or(1, |m| m.threads);
    let thread_word = if threads == 1 { "thread" } else { "threads" };
    for (area, &batch) in areas.iter().zip(&batches) {
        let mut chart = ChartBuilder::on(area)
            .caption(
                format!("B = {batch}, {threads} {thread_word}"),
                ("sans-serif", 20),
            )
            .margin(12)
            .x_label_area_size(36)
            .y_label_area_size(48)
            .build_cartesian_2d(0f64..max_hidden * 1.05, 0f64..peak * 1.1)
            .map_err(|e| e.to_string())?;
        chart
            .configure_mesh()
            .x_desc("hidden size (I = H)")
            .y_desc("GFLOP/s")
            .x_label_formatter(&|x| format!("{x:.0}"))
            .y_label_formatter(&|y| format!("{y:.0}"))
            .draw()
            .map_err(|e| e.to_string())?;
        chart
            .draw_series(LineSeries::new(
                [(0.0, peak), (max_hidden * 1.05, peak)],
                BLACK.stroke_width(1),
            ))
            .map_err(|e| e.to_string())?
            .label(format!("FMA peak {peak:.0}"))
            .legend(|(x, y)| PathElement::new([(x, y), (x + 16, y)], BLACK));
        let series = [
            ("simd", "gru", RED),
            ("simd", "lstm", BLUE),
            ("ref", "gru", GREEN),
        ];
        for (kernel, cell, color) in series {
            let mut points: Vec<(f64, f64)> = results
                .iter()
                .filter(|m| m.shape.batch == batch && m.kernel == kernel && m.cell.name() == cell)
                .map(|m| (m.shape.hidden as f64, m.gflops()))
                .collect();
            if points.is_empty() {
                continue;
            }
            points.sort_by(|a, b| a.0.total_cmp(&b.0));
            chart
                .draw_series(LineSeries::new(points.clone(), color.stroke_width(2)))
                .map_err(|e| e.to_string())?
                .label(format!("{cell} {kernel}"))
                .legend(move |(x, y)| {
                    PathElement::new([(x, y), (x + 16, y)], color.stroke_width(2))
                });
            chart
                .draw_series(
                    points
                        .into_iter()
                        .map(|p| Circle::new(p, 3, color.filled())),
                )
                .map_err(|e| e.to_string())?;
        }
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .position(SeriesLabelPosition::UpperLeft)
            .draw()
            .map_err(|e| e.to_string())?;
    }
    root.present().map_err(|e| e.to_string())
}
