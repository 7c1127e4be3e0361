//! The chart (`--svg PATH`): four panels drawn with plotters — the Redis hit path at 1 and at
//! [`TASKS`] tasks (ops/s), the memory backend (ns/op), the cold-key stampede (loader runs).

use std::path::Path;

use crate::report::Report;
use crate::{STAMPEDE_LOADER_MS, TASKS};

/// Draws the chart of `r` into the SVG file `path` (creating its directory).
pub(crate) fn svg_chart(r: &Report, path: &Path) -> Result<(), Box<dyn std::error::Error>> {
    use plotters::prelude::*;

    const OURS: RGBColor = RGBColor(31, 119, 180);
    const HAND: RGBColor = RGBColor(140, 140, 140);
    const CACHED: RGBColor = RGBColor(255, 127, 14);
    let color = |implementation: &str| match implementation {
        "cache-runtime" => OURS,
        "hand-written" => HAND,
        _ => CACHED,
    };

    if let Some(dir) = path.parent()
        && !dir.as_os_str().is_empty()
    {
        std::fs::create_dir_all(dir)?;
    }
    let root = SVGBackend::new(path, (1200, 820)).into_drawing_area();
    root.fill(&WHITE)?;
    let (title, body) = root.split_vertically(40);
    title.draw(&Text::new(
        format!(
            "cache-runtime benchmark: ~{} B value, redis {}, {} cpus ({} mode)",
            r.meta.value_bytes_json, r.meta.redis_version, r.meta.cpus, r.meta.mode
        ),
        (20, 12),
        ("sans-serif", 20).into_font(),
    ))?;
    let panels = body.split_evenly((2, 2));

    type Bar = (String, f64, RGBColor, String);
    let bars_for = |backend: &str, tasks: usize, ns: bool| -> Vec<Bar> {
        r.hit_path
            .iter()
            .filter(|h| h.backend == backend && h.tasks == tasks)
            .map(|h| {
                let v = if ns { h.ns_per_op } else { h.ops_per_sec };
                let label = if ns {
                    format!("{v:.0} ns")
                } else {
                    format!("{:.1}k/s", v / 1e3)
                };
                (h.case.clone(), v, color(h.implementation), label)
            })
            .collect()
    };
    let mut memory = bars_for("memory", 1, true);
    for b in &mut memory {
        b.0 = format!("{}, 1 task", b.0.trim_start_matches("memory "));
    }
    for mut b in bars_for("memory", TASKS, true) {
        b.0 = format!("{}, {TASKS} tasks", b.0.trim_start_matches("memory "));
        memory.push(b);
    }
    let strip = |bars: Vec<Bar>| -> Vec<Bar> {
        bars.into_iter()
            .map(|mut b| {
                b.0 = b.0.trim_start_matches("redis ").to_owned();
                b
            })
            .collect()
    };
    let stampede: Vec<Bar> = r
        .stampede
        .iter()
        .map(|s| {
            (
                s.case.clone(),
                s.loader_runs_mean,
                color(s.implementation),
                format!("{:.1} runs, {:.0} ms", s.loader_runs_mean, s.wall_ms_p50),
            )
        })
        .collect();
    let specs: [(String, &str, Vec<Bar>); 4] = [
        (
            "Redis hit path, 1 task (ops/s, higher is better)".into(),
            "ops/s",
            strip(bars_for("redis", 1, false)),
        ),
        (
            format!("Redis hit path, {TASKS} tasks (ops/s, higher is better)"),
            "ops/s",
            strip(bars_for("redis", TASKS, false)),
        ),
        (
            "Memory backend hit path (ns/op, lower is better)".into(),
            "ns/op",
            memory,
        ),
        (
            format!(
                "Cold-key stampede: {TASKS} callers, {STAMPEDE_LOADER_MS} ms loader (loader runs)"
            ),
            "loader runs (mean)",
            stampede,
        ),
    ];

    for (area, (caption, unit, bars)) in panels.iter().zip(specs) {
        let max = bars.iter().map(|b| b.1).fold(0.0, f64::max).max(1.0) * 1.3;
        let n = bars.len();
        let mut chart = ChartBuilder::on(area)
            .caption(caption, ("sans-serif", 16).into_font())
            .margin(12)
            .x_label_area_size(32)
            .y_label_area_size(190)
            .build_cartesian_2d(0f64..max, (0usize..n).into_segmented())?;
        // The first bar at the top.
        let row = |i: usize| n - 1 - i;
        let names: Vec<String> = bars.iter().rev().map(|b| b.0.clone()).collect();
        chart
            .configure_mesh()
            .disable_y_mesh()
            .light_line_style(WHITE)
            .x_desc(unit)
            .x_labels(6)
            .y_labels(n)
            .x_label_formatter(&|v| {
                if *v >= 1e3 && (v / 1e3).fract().abs() < 1e-9 {
                    format!("{:.0}k", v / 1e3)
                } else if *v >= 1e3 {
                    format!("{:.1}k", v / 1e3)
                } else {
                    format!("{v:.0}")
                }
            })
            .y_label_formatter(&|v| match v {
                SegmentValue::CenterOf(i) => names.get(*i).cloned().unwrap_or_default(),
                SegmentValue::Exact(_) | SegmentValue::Last => String::new(),
            })
            .label_style(("sans-serif", 13))
            .draw()?;
        chart.draw_series(bars.iter().enumerate().map(|(i, b)| {
            let i = row(i);
            let mut rect = Rectangle::new(
                [
                    (0.0, SegmentValue::Exact(i)),
                    (b.1, SegmentValue::Exact(i + 1)),
                ],
                b.2.filled(),
            );
            rect.set_margin(5, 5, 0, 0);
            rect
        }))?;
        chart.draw_series(bars.iter().enumerate().map(|(i, b)| {
            let i = row(i);
            Text::new(
                format!(" {}", b.3),
                (b.1, SegmentValue::CenterOf(i)),
                ("sans-serif", 12).into_font(),
            )
        }))?;
    }
    root.present()?;
    Ok(())
}
