//! The picture of a run (`run --plot FILE.svg`): the latency distribution and the convergence
//! over time, Grapevine and the baseline on the same axes, since two curves side by side say at
//! a glance what a table of percentiles hides (long tails, stragglers, late catch-up).

use std::path::{Path, PathBuf};

use plotters::prelude::*;

use crate::metrics::Curves;
use crate::runner::RunReport;

/// Points drawn per curve at most: enough for a smooth line, few enough for a small file.
const MAX_POINTS: usize = 2_000;
/// The picture's size in pixels: two panels side by side.
const SIZE: (u32, u32) = (1200, 480);
/// The name of Grapevine's curves in the legend.
pub const GRAPEVINE: &str = "Grapevine";
/// The name of the baseline's curves in the legend.
pub const BASELINE: &str = "raw gossipsub";

/// The picture could not be drawn or written.
#[derive(Debug, thiserror::Error)]
#[error("plot {}: {reason}", path.display())]
pub struct PlotError {
    /// The file being written.
    pub path: PathBuf,
    /// What failed.
    pub reason: String,
}

/// One side's curves and its name in the legend.
#[derive(Debug, Clone, Copy)]
pub struct Series<'a> {
    /// The legend's name.
    pub name: &'a str,
    /// The deliveries to draw.
    pub curves: &'a Curves,
}

/// The series of a run: Grapevine's, then the baseline's when there is one.
pub fn series_of(report: &RunReport) -> Vec<Series<'_>> {
    let mut series = vec![Series {
        name: GRAPEVINE,
        curves: &report.delivery.curves,
    }];
    if let Some(baseline) = &report.baseline {
        series.push(Series {
            name: BASELINE,
            curves: &baseline.delivery.curves,
        });
    }
    series
}

/// Writes an SVG to `path` with two panels: (a) the share of deliveries made within each
/// latency (the CDF of per-delivery latency) and (b) the share of (record, member) pairs
/// delivered against the time since the first record was published.
pub fn write_svg(path: &Path, series: &[Series<'_>]) -> Result<(), PlotError> {
    draw(path, series).map_err(|reason| PlotError {
        path: path.to_path_buf(),
        reason,
    })
}

fn draw(path: &Path, series: &[Series<'_>]) -> Result<(), String> {
    let root = SVGBackend::new(path, SIZE).into_drawing_area();
    root.fill(&WHITE).map_err(|e| e.to_string())?;
    let (left, right) = root.split_horizontally(SIZE.0 / 2);
    let latency: Vec<(&str, Vec<(f64, f64)>)> = series
        .iter()
        .map(|s| (s.name, latency_cdf(s.curves)))
        .collect();
    panel(
        &left,
        "(a) latency per delivery (CDF)",
        "latency (ms)",
        "share of deliveries",
        &latency,
    )?;
    let convergence: Vec<(&str, Vec<(f64, f64)>)> = series
        .iter()
        .map(|s| (s.name, convergence(s.curves)))
        .collect();
    panel(
        &right,
        "(b) convergence over time",
        "time since the first record was published (s)",
        "share of (record, member) pairs delivered",
        &convergence,
    )?;
    root.present().map_err(|e| e.to_string())
}

/// One panel: each named line on axes from zero to the largest x, and from zero to one.
fn panel(
    area: &DrawingArea<SVGBackend<'_>, plotters::coord::Shift>,
    caption: &str,
    x_label: &str,
    y_label: &str,
    lines: &[(&str, Vec<(f64, f64)>)],
) -> Result<(), String> {
    let x_max = lines
        .iter()
        .flat_map(|(_, points)| points.iter().map(|(x, _)| *x))
        .fold(0.0, f64::max)
        .max(f64::EPSILON);
    let mut chart = ChartBuilder::on(area)
        .caption(caption, ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(50)
        .build_cartesian_2d(0.0..x_max, 0.0..1.0)
        .map_err(|e| e.to_string())?;
    chart
        .configure_mesh()
        .x_desc(x_label)
        .y_desc(y_label)
        .draw()
        .map_err(|e| e.to_string())?;
    for (i, (name, points)) in lines.iter().enumerate() {
        let color = Palette99::pick(i).to_rgba();
        chart
            .draw_series(LineSeries::new(
                points.iter().copied(),
                color.stroke_width(2),
            ))
            .map_err(|e| e.to_string())?
            .label(*name)
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 20, y)], color.stroke_width(2)));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(|e| e.to_string())
}

/// (latency in ms, share of deliveries made within it).
fn latency_cdf(curves: &Curves) -> Vec<(f64, f64)> {
    let n = curves.latencies_ms.len();
    thin(
        curves
            .latencies_ms
            .iter()
            .enumerate()
            .map(|(i, ms)| (*ms, (i + 1) as f64 / n as f64)),
        n,
    )
}

/// (seconds since the first publication, share of the expected deliveries made by then),
/// from the origin.
fn convergence(curves: &Curves) -> Vec<(f64, f64)> {
    let expected = curves.expected.max(1) as f64;
    let n = curves.delivered_at_s.len();
    let mut points = vec![(0.0, 0.0)];
    points.extend(thin(
        curves
            .delivered_at_s
            .iter()
            .enumerate()
            .map(|(i, s)| (*s, (i + 1) as f64 / expected)),
        n,
    ));
    points
}

/// At most [`MAX_POINTS`] of the `n` points, evenly spread, the last one always kept.
fn thin(points: impl Iterator<Item = (f64, f64)>, n: usize) -> Vec<(f64, f64)> {
    let step = n.div_ceil(MAX_POINTS).max(1);
    points
        .enumerate()
        .filter(|(i, _)| i % step == 0 || i + 1 == n)
        .map(|(_, point)| point)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn curves(latencies_ms: Vec<f64>, delivered_at_s: Vec<f64>, expected: usize) -> Curves {
        Curves {
            latencies_ms,
            delivered_at_s,
            expected,
        }
    }

    #[test]
    fn the_svg_holds_both_panels_and_both_series() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("run.svg");
        let grapevine = curves(vec![20.0, 35.0, 80.0], vec![0.02, 0.5, 1.1], 4);
        let baseline = curves(vec![15.0, 25.0], vec![0.01, 0.4], 4);
        write_svg(
            &path,
            &[
                Series {
                    name: GRAPEVINE,
                    curves: &grapevine,
                },
                Series {
                    name: BASELINE,
                    curves: &baseline,
                },
            ],
        )?;
        let svg = std::fs::read_to_string(&path)?;
        assert!(svg.trim_start().starts_with("<svg") || svg.starts_with("<?xml"));
        for text in [GRAPEVINE, BASELINE, "latency per delivery", "convergence"] {
            assert!(svg.contains(text), "{text:?} missing from the SVG");
        }
        Ok(())
    }

    #[test]
    fn a_run_without_deliveries_still_plots() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("empty.svg");
        let empty = Curves::default();
        write_svg(
            &path,
            &[Series {
                name: GRAPEVINE,
                curves: &empty,
            }],
        )?;
        assert!(std::fs::read_to_string(&path)?.contains(GRAPEVINE));
        Ok(())
    }

    #[test]
    fn curves_are_thinned_to_a_bounded_number_of_points_ending_at_the_last() {
        let many = curves(
            (0..10_000).map(f64::from).collect(),
            (0..10_000).map(|i| f64::from(i) / 100.0).collect(),
            10_000,
        );
        let cdf = latency_cdf(&many);
        assert!(cdf.len() <= MAX_POINTS + 1);
        assert_eq!(cdf.last(), Some(&(9_999.0, 1.0)));
        let over_time = convergence(&many);
        assert_eq!(over_time.first(), Some(&(0.0, 0.0)));
        assert_eq!(over_time.last(), Some(&(99.99, 1.0)));
    }
}
