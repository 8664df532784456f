//! `kvctl bench --plot FILE.svg`: the latency distribution of a run as an SVG, optionally beside
//! earlier runs (`--plot-with REPORT.json`), e.g. raftkv and etcd on the same axes.
//!
//! The plot is HdrHistogram's percentile spectrum: latency against percentile on a log axis
//! (`1 / (1 - q)`), so the median, p99 and p99.9 get equal room and the tail is visible instead
//! of squeezed into the last pixel. Both axes are logarithmic. A run's spectrum is also part of
//! its `--json` report (`spectrum`), which is what `--plot-with` reads back. Drawn with plotters'
//! SVG backend only, whose text is left to the viewer's fonts, so no font library is needed.

use std::path::Path;

use hdrhistogram::Histogram;
use plotters::prelude::*;
use serde_json::{Value, json};

use crate::bench_stats::ms;
use crate::exit::Failure;

/// The image size in pixels.
const SIZE: (u32, u32) = (900, 540);

/// Points per halving of the remaining percentiles (HdrHistogram's quantile iteration).
const TICKS_PER_HALF: u32 = 5;

/// One line of the plot: its legend and `(quantile, latency ms)` points, quantile ascending.
pub struct Series {
    /// The legend, e.g. "raftkv write".
    pub name: String,
    /// `(q, ms)` with q in 0..=1.
    pub points: Vec<(f64, f64)>,
}

/// The spectrum of `histogram`: `(q, ms)` at the quantiles HdrHistogram iterates, ending at 1.
pub fn spectrum(histogram: &Histogram<u64>) -> Vec<(f64, f64)> {
    histogram
        .iter_quantiles(TICKS_PER_HALF)
        .map(|step| (step.quantile_iterated_to(), ms(step.value_iterated_to())))
        .collect()
}

/// The spectrum as JSON: `[[q, ms], ...]`.
pub fn spectrum_json(histogram: &Histogram<u64>) -> Value {
    json!(spectrum(histogram))
}

/// The series of an earlier `kvctl bench --json` report: one per operation with a spectrum,
/// named after the report's target.
pub fn load_series(path: &Path) -> Result<Vec<Series>, Failure> {
    let bad = |why: String| Failure::Other(format!("--plot-with {}: {why}", path.display()));
    let text = std::fs::read_to_string(path).map_err(|e| bad(e.to_string()))?;
    let report: Value = serde_json::from_str(&text).map_err(|e| bad(e.to_string()))?;
    let target = report["target"].as_str().unwrap_or("earlier run");
    let Some(spectra) = report["spectrum"].as_object() else {
        return Err(bad("not a `kvctl bench --json` report (no spectrum)".into()));
    };
    let mut series = Vec::new();
    for (op, points) in spectra {
        let Some(points) = points.as_array() else {
            continue;
        };
        let points = points
            .iter()
            .map(|p| match (p[0].as_f64(), p[1].as_f64()) {
                (Some(q), Some(ms)) if (0.0..=1.0).contains(&q) && ms >= 0.0 => Ok((q, ms)),
                _ => Err(bad(format!("bad {op} spectrum point {p}"))),
            })
            .collect::<Result<Vec<_>, _>>()?;
        if !points.is_empty() {
            series.push(Series {
                name: format!("{target} {op}"),
                points,
            });
        }
    }
    Ok(series)
}

/// Draws `series` (the empty ones are skipped) into `path`.
pub fn draw(path: &Path, title: &str, series: &[Series]) -> Result<(), Failure> {
    let fail = |e: &dyn std::fmt::Display| {
        Failure::Other(format!("cannot draw the plot {}: {e}", path.display()))
    };
    let series: Vec<&Series> = series.iter().filter(|s| !s.points.is_empty()).collect();
    if series.is_empty() {
        return Err(Failure::Other(format!(
            "nothing to plot in {}: no request succeeded",
            path.display()
        )));
    }
    // The last point of a spectrum is q = 1 (the maximum), at infinity on this axis: the axis
    // ends at the decade after the highest finite point, and each line's maximum is drawn there.
    let finite_x = series
        .iter()
        .flat_map(|s| s.points.iter())
        .filter(|p| p.0 < 1.0)
        .map(|p| 1.0 / (1.0 - p.0))
        .fold(10.0_f64, f64::max);
    let x_max = 10f64.powf(finite_x.log10().floor() + 1.0).min(1e7);
    let (y_min, y_max) = series
        .iter()
        .flat_map(|s| s.points.iter().map(|p| p.1))
        .fold((f64::MAX, 0.0_f64), |(lo, hi), y| (lo.min(y), hi.max(y)));
    let y_range = (y_min / 1.2).max(0.001)..(y_max * 1.2).max(0.01);

    let root = SVGBackend::new(path, SIZE).into_drawing_area();
    root.fill(&WHITE).map_err(|e| fail(&e))?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 20))
        .margin(15)
        .margin_right(45)
        .x_label_area_size(45)
        .y_label_area_size(70)
        .build_cartesian_2d((1.0..x_max).log_scale(), y_range.log_scale())
        .map_err(|e| fail(&e))?;
    chart
        .configure_mesh()
        .light_line_style(WHITE)
        .x_desc("percentile")
        .y_desc("latency (ms)")
        .x_label_formatter(&percentile_label)
        .y_label_formatter(&|y| format!("{y}"))
        .draw()
        .map_err(|e| fail(&e))?;
    for (index, line) in series.into_iter().enumerate() {
        let color = Palette99::pick(index).to_rgba();
        let points = line.points.iter().map(|&(q, ms)| {
            let x = if q >= 1.0 {
                x_max
            } else {
                (1.0 / (1.0 - q)).min(x_max)
            };
            (x, ms.max(0.001))
        });
        chart
            .draw_series(LineSeries::new(points, color.stroke_width(2)))
            .map_err(|e| fail(&e))?
            .label(line.name.as_str())
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

/// Labels powers of ten as the percentile they stand for (10 -> 90%, 1000 -> 99.9%).
fn percentile_label(x: &f64) -> String {
    let decade = x.log10();
    if (decade - decade.round()).abs() > 1e-9 {
        return String::new();
    }
    match decade.round() as i32 {
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
    fn spectrum_ascends_to_the_maximum() -> Result<(), Failure> {
        let mut h = histogram()?;
        for micros in 1..=5000u64 {
            h.saturating_record(micros * 3);
        }
        let points = spectrum(&h);
        assert!(
            points
                .windows(2)
                .all(|w| w[0].0 <= w[1].0 && w[0].1 <= w[1].1)
        );
        let last = points.last().copied().unwrap_or_default();
        assert_eq!(last.0, 1.0);
        assert!((last.1 - ms(h.max())).abs() < 0.01, "{last:?}");
        Ok(())
    }

    #[test]
    fn writes_an_svg_with_a_series_read_back_from_json() -> Result<(), Failure> {
        let mut h = histogram()?;
        for micros in 1..=5000u64 {
            h.saturating_record(micros * 3);
        }
        let dir = std::env::temp_dir().join(format!("kvctl-plot-{}", std::process::id()));
        let io = |e: std::io::Error| Failure::Other(e.to_string());
        std::fs::create_dir_all(&dir).map_err(io)?;
        let report = dir.join("earlier.json");
        let earlier = json!({ "target": "etcd", "spectrum": { "write": spectrum_json(&h) } });
        std::fs::write(&report, earlier.to_string()).map_err(io)?;
        let mut series = load_series(&report)?;
        assert_eq!(series.len(), 1);
        assert_eq!(series[0].name, "etcd write");
        series.push(Series {
            name: "raftkv write".into(),
            points: spectrum(&h),
        });
        let file = dir.join("plot.svg");
        draw(&file, "test", &series)?;
        let svg = std::fs::read_to_string(&file).map_err(io)?;
        std::fs::write(&report, "{\"target\": \"etcd\"}").map_err(io)?;
        let missing = load_series(&report);
        let _ = std::fs::remove_dir_all(&dir);
        assert!(svg.starts_with("<svg"), "{}", &svg[..svg.len().min(80)]);
        assert!(svg.trim_end().ends_with("</svg>"));
        assert!(
            svg.contains("99.9%") && svg.contains("etcd write") && svg.contains("raftkv write")
        );
        assert!(missing.is_err());
        Ok(())
    }
}
