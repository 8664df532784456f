//! `kvctl bench --plot FILE.svg`: the latency distribution of a run as an SVG.
//!
//! The plot is HdrHistogram's percentile spectrum: latency against percentile on a log axis
//! (`1 / (1 - q)`), so the median, p99 and p99.9 get equal room and the tail is visible instead
//! of squeezed into the last pixel. Both axes are logarithmic. Drawn with plotters' SVG backend
//! only, whose text is left to the viewer's fonts, so no font library is needed to build.

use std::path::Path;

use hdrhistogram::Histogram;
use plotters::prelude::*;

use crate::bench_stats::ms;
use crate::exit::Failure;

/// The image size in pixels.
const SIZE: (u32, u32) = (900, 540);

/// Draws the percentile spectrum of each non-empty `(name, histogram)` into `path`.
pub fn draw(path: &Path, title: &str, series: &[(&str, &Histogram<u64>)]) -> Result<(), Failure> {
    let fail = |e: &dyn std::fmt::Display| {
        Failure::Other(format!("cannot draw the plot {}: {e}", path.display()))
    };
    let series: Vec<(&str, Vec<(f64, f64)>)> = series
        .iter()
        .filter(|(_, h)| !h.is_empty())
        .map(|(name, h)| (*name, spectrum(h)))
        .collect();
    if series.is_empty() {
        return Err(Failure::Other(format!(
            "nothing to plot in {}: no request succeeded",
            path.display()
        )));
    }
    let x_max = series
        .iter()
        .flat_map(|(_, points)| points.iter().map(|p| p.0))
        .fold(100.0_f64, f64::max);
    let (y_min, y_max) = series
        .iter()
        .flat_map(|(_, points)| points.iter().map(|p| p.1))
        .fold((f64::MAX, 0.0_f64), |(lo, hi), y| (lo.min(y), hi.max(y)));
    let y_range = (y_min / 1.5).max(0.001)..(y_max * 1.5).max(0.01);

    let root = SVGBackend::new(path, SIZE).into_drawing_area();
    root.fill(&WHITE).map_err(|e| fail(&e))?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 20))
        .margin(15)
        .x_label_area_size(45)
        .y_label_area_size(70)
        .build_cartesian_2d((1.0..x_max).log_scale(), y_range.log_scale())
        .map_err(|e| fail(&e))?;
    chart
        .configure_mesh()
        .x_desc("percentile")
        .y_desc("latency (ms)")
        .x_label_formatter(&percentile_label)
        .y_label_formatter(&|y| format!("{y}"))
        .draw()
        .map_err(|e| fail(&e))?;
    for (index, (name, points)) in series.into_iter().enumerate() {
        let color = Palette99::pick(index).to_rgba();
        chart
            .draw_series(LineSeries::new(points, color.stroke_width(2)))
            .map_err(|e| fail(&e))?
            .label(name)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(|e| fail(&e))?;
    root.present().map_err(|e| fail(&e))?;
    Ok(())
}

/// `(1 / (1 - q), latency ms)` at each recorded value, up to the last one. The last point
/// (q = 1, the maximum) is placed one decade past the count's resolution instead of at infinity.
fn spectrum(histogram: &Histogram<u64>) -> Vec<(f64, f64)> {
    // Beyond 1 - 1/len a percentile is just the maximum; that decade is where it is drawn.
    let x_limit = 10f64.powf((histogram.len().max(10) as f64).log10().ceil());
    histogram
        .iter_quantiles(1)
        .map(|step| {
            let q = step.quantile_iterated_to();
            let x = if q >= 1.0 {
                x_limit
            } else {
                (1.0 / (1.0 - q)).min(x_limit)
            };
            (x, ms(step.value_iterated_to()).max(0.001))
        })
        .collect()
}

/// Labels powers of ten as the percentile they stand for (10 -> 90%, 1000 -> 99.9%).
fn percentile_label(x: &f64) -> String {
    let decade = x.log10();
    if (decade - decade.round()).abs() > 1e-9 {
        return String::new();
    }
    let nines = decade.round() as i32;
    match nines {
        i32::MIN..=0 => "0%".to_owned(),
        1 => "90%".to_owned(),
        2 => "99%".to_owned(),
        n => format!("99.{}%", "9".repeat((n - 2) as usize)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench_stats::histogram;

    #[test]
    fn percentile_labels() {
        assert_eq!(percentile_label(&1.0), "0%");
        assert_eq!(percentile_label(&10.0), "90%");
        assert_eq!(percentile_label(&100.0), "99%");
        assert_eq!(percentile_label(&1000.0), "99.9%");
        assert_eq!(percentile_label(&100_000.0), "99.999%");
        assert_eq!(percentile_label(&20.0), "");
    }

    #[test]
    fn writes_an_svg() -> Result<(), Failure> {
        let mut h = histogram()?;
        for micros in 1..=5000u64 {
            h.saturating_record(micros * 3);
        }
        let dir = std::env::temp_dir().join(format!("kvctl-plot-{}", std::process::id()));
        std::fs::create_dir_all(&dir).map_err(|e| Failure::Other(e.to_string()))?;
        let file = dir.join("plot.svg");
        draw(&file, "test", &[("read", &h), ("write", &h)])?;
        let svg = std::fs::read_to_string(&file).map_err(|e| Failure::Other(e.to_string()))?;
        let _ = std::fs::remove_dir_all(&dir);
        assert!(svg.starts_with("<svg"), "{}", &svg[..svg.len().min(80)]);
        assert!(svg.trim_end().ends_with("</svg>"));
        assert!(svg.contains("99.9%") && svg.contains("write"));
        Ok(())
    }
}
