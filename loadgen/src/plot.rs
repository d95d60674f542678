//! Latency-by-percentile plot (SVG) with one curve per op.
//!
//! The x axis is the usual HdrHistogram one: x = log10(1 / (1 - p)), so
//! 90%, 99%, 99.9%, 99.99% are evenly spaced. The y axis is latency in
//! milliseconds on a log scale.

use std::path::Path;

use plotters::prelude::*;

use crate::stats::Stats;

const MAX_X: f64 = 5.0; // 99.999%

fn x_of(q: f64) -> f64 {
    if q >= 1.0 {
        MAX_X
    } else {
        (1.0 / (1.0 - q)).log10().min(MAX_X)
    }
}

fn label_of(x: f64) -> String {
    match x.round() as i32 {
        0 => "0%".into(),
        1 => "90%".into(),
        2 => "99%".into(),
        3 => "99.9%".into(),
        4 => "99.99%".into(),
        _ => "99.999%".into(),
    }
}

/// Curves (name, points (x, latency ms)) from the histograms.
pub fn curves(parts: &[(&str, &Stats)]) -> Vec<(String, Vec<(f64, f64)>)> {
    let mut out = Vec::new();
    for (prefix, st) in parts {
        for (op, h) in &st.hists {
            if h.is_empty() {
                continue;
            }
            let mut pts: Vec<(f64, f64)> = Vec::new();
            for v in h.iter_quantiles(2) {
                let q = v.quantile_iterated_to();
                pts.push((x_of(q), v.value_iterated_to().max(1) as f64 / 1000.0));
            }
            pts.push((MAX_X, h.max().max(1) as f64 / 1000.0));
            out.push((format!("{prefix}{op}"), pts));
        }
    }
    out
}

pub fn draw(path: &Path, title: &str, parts: &[(&str, &Stats)]) -> Result<(), String> {
    let cs = curves(parts);
    if cs.is_empty() {
        return Err("nothing to plot (no latencies recorded)".into());
    }
    let (mut lo, mut hi) = (f64::MAX, 0.0f64);
    for (_, pts) in &cs {
        for &(_, y) in pts {
            lo = lo.min(y);
            hi = hi.max(y);
        }
    }
    let lo = (lo * 0.8).max(0.001);
    let hi = (hi * 1.5).max(lo * 10.0);
    let root = SVGBackend::new(path, (1000, 650)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| e.to_string())?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 22))
        .margin(15)
        .x_label_area_size(45)
        .y_label_area_size(70)
        .build_cartesian_2d(0.0..MAX_X, (lo..hi).log_scale())
        .map_err(|e| e.to_string())?;
    chart
        .configure_mesh()
        .x_desc("percentile")
        .y_desc("latency (ms)")
        .x_labels(6)
        .x_label_formatter(&|x| label_of(*x))
        .y_label_formatter(&|y| format!("{y}"))
        .draw()
        .map_err(|e| e.to_string())?;
    for (i, (name, pts)) in cs.iter().enumerate() {
        let color = Palette99::pick(i).to_rgba();
        chart
            .draw_series(LineSeries::new(pts.iter().copied(), color.stroke_width(2)))
            .map_err(|e| e.to_string())?
            .label(name.clone())
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2))
            });
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()
        .map_err(|e| e.to_string())?;
    root.present().map_err(|e| e.to_string())?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    #[test]
    fn percentile_axis() {
        assert_eq!(x_of(0.0), 0.0);
        assert!((x_of(0.9) - 1.0).abs() < 1e-9);
        assert!((x_of(0.999) - 3.0).abs() < 1e-6);
        assert_eq!(x_of(1.0), MAX_X);
    }

    #[test]
    fn svg_is_written() {
        let t0 = Instant::now();
        let mut st = Stats::new(t0);
        for i in 1..5000u64 {
            st.record_dur("message", t0, Duration::from_micros(100 + i % 700));
            st.record_dur("connect", t0, Duration::from_micros(20 + i % 13));
        }
        let p = std::env::temp_dir().join(format!("loadgen-plot-{}.svg", std::process::id()));
        draw(&p, "test", &[("", &st)]).unwrap();
        let s = std::fs::read_to_string(&p).unwrap();
        assert!(s.starts_with("<svg") && s.contains("message") && s.contains("99.9%"));
        std::fs::remove_file(&p).ok();
    }
}
