//! The report: the rows (hit path, stampede), the ratios of compared cases with their targets,
//! the JSON document (`--json`), and the tables printed at the end of a run.

use serde::Serialize;

use crate::cases::Variant;
use crate::cases::hot::HotRow;
use crate::checks::{NearCheck, StaleCheck};
use crate::coherence::{Coherence, Quantiles};
use crate::measure::{Acc, Case, Stampede};
use crate::stats::median;
use crate::value::{Item, sample_item};
use crate::{HOT_LOADER_MS, HOT_TASKS, HOT_WAIT_MS, STAMPEDE_LOADER_MS, TASKS};

/// Everything a run measured (what `--json` writes).
#[derive(Debug, Serialize)]
pub(crate) struct Report {
    pub(crate) meta: Meta,
    pub(crate) hit_path: Vec<HitRow>,
    pub(crate) stampede: Vec<StampedeRow>,
    pub(crate) ratios: Vec<Ratio>,
    pub(crate) serve_stale: Vec<StaleCheck>,
    pub(crate) near_hits: NearCheck,
    pub(crate) coherence: Option<Coherence>,
    pub(crate) early_refresh: Vec<HotRow>,
}

#[derive(Debug, Serialize)]
pub(crate) struct Meta {
    pub(crate) command: String,
    pub(crate) mode: &'static str,
    pub(crate) rounds: usize,
    pub(crate) slice_ms: u64,
    pub(crate) tasks: usize,
    pub(crate) hot_keys: u64,
    pub(crate) cpus: usize,
    /// `/proc/loadavg` (1 min) before and after the run: other work on the machine.
    pub(crate) load_average_before: Option<f64>,
    pub(crate) load_average_after: Option<f64>,
    pub(crate) redis: String,
    pub(crate) redis_version: String,
    pub(crate) value_bytes_json: usize,
    pub(crate) value_bytes_msgpack_named: usize,
    pub(crate) value_bytes_msgpack_compact: usize,
    /// Size of one call's future (what each call initialises and moves), per implementation.
    pub(crate) future_bytes: Vec<(String, usize)>,
    pub(crate) seconds: f64,
}

#[derive(Debug, Serialize)]
pub(crate) struct HitRow {
    pub(crate) case: String,
    pub(crate) backend: &'static str,
    pub(crate) implementation: &'static str,
    pub(crate) codec: &'static str,
    pub(crate) tasks: usize,
    pub(crate) ops: u64,
    pub(crate) errors: u64,
    pub(crate) ops_per_sec: f64,
    /// Wall time per operation: 1 / throughput.
    pub(crate) ns_per_op: f64,
    pub(crate) p50_us: f64,
    pub(crate) p99_us: f64,
}

#[derive(Debug, Serialize)]
pub(crate) struct StampedeRow {
    pub(crate) case: String,
    pub(crate) implementation: &'static str,
    pub(crate) callers: usize,
    pub(crate) loader_ms: u64,
    pub(crate) runs: usize,
    pub(crate) loader_runs_min: u64,
    pub(crate) loader_runs_max: u64,
    pub(crate) loader_runs_mean: f64,
    pub(crate) wall_ms_p50: f64,
    pub(crate) wall_ms_max: f64,
    pub(crate) errors: u64,
}

#[derive(Debug, Serialize)]
pub(crate) struct Ratio {
    pub(crate) what: String,
    /// Time per op of the first over the second, from each one's total over all rounds.
    pub(crate) time_ratio: f64,
    /// The median over rounds of the per-round ratio: the two cases run next to each other
    /// in every round, so this is robust to the machine being busier in some rounds. The
    /// targets are checked on this figure.
    pub(crate) time_ratio_median_round: f64,
    /// Time per op of the first minus the second, in ns (from the totals).
    pub(crate) ns_per_op_difference: f64,
    /// p50 latency of the first over the second: the centre of the distributions, which a
    /// busy machine's scheduling delays (the long tail of the 1-task cases) barely move.
    pub(crate) p50_ratio: f64,
    pub(crate) target: Option<String>,
    pub(crate) met: Option<bool>,
}

fn hit_row(a: &Acc) -> HitRow {
    let secs = a.elapsed.as_secs_f64();
    let ops_per_sec = a.ops as f64 / secs;
    HitRow {
        case: format!("{} {}", a.case.variant.backend(), a.case.variant.label()),
        backend: a.case.variant.backend(),
        implementation: a.case.variant.implementation(),
        codec: a.case.variant.codec(),
        tasks: a.case.tasks,
        ops: a.ops,
        errors: a.errors,
        ops_per_sec,
        ns_per_op: 1e9 / ops_per_sec,
        p50_us: a.hist.quantile(0.50) as f64 / 1e3,
        p99_us: a.hist.quantile(0.99) as f64 / 1e3,
    }
}

/// The hit-path rows: by backend (Redis, memory, near), then 1 task before [`TASKS`].
pub(crate) fn hit_rows(accs: &[Acc]) -> Vec<HitRow> {
    let mut hit_path: Vec<HitRow> = Vec::new();
    for backend in ["redis", "memory", "near"] {
        for tasks in [1, TASKS] {
            hit_path.extend(
                accs.iter()
                    .filter(|a| a.case.variant.backend() == backend && a.case.tasks == tasks)
                    .map(hit_row),
            );
        }
    }
    hit_path
}

/// The stampede rows: one per variant that ran.
pub(crate) fn stampede_rows(stampedes: &[(Variant, Vec<Stampede>)]) -> Vec<StampedeRow> {
    stampedes
        .iter()
        .filter(|(_, rs)| !rs.is_empty())
        .map(|(v, rs)| {
            let l: Vec<u64> = rs.iter().map(|s| s.loads).collect();
            let walls: Vec<f64> = rs.iter().map(|s| s.wall.as_secs_f64() * 1e3).collect();
            StampedeRow {
                case: v.label().to_owned(),
                implementation: v.implementation(),
                callers: TASKS,
                loader_ms: STAMPEDE_LOADER_MS,
                runs: rs.len(),
                loader_runs_min: l.iter().copied().min().unwrap_or(0),
                loader_runs_max: l.iter().copied().max().unwrap_or(0),
                loader_runs_mean: l.iter().sum::<u64>() as f64 / l.len().max(1) as f64,
                wall_ms_p50: median(walls.clone()),
                wall_ms_max: walls.iter().copied().fold(0.0, f64::max),
                errors: rs.iter().map(|s| s.errors).sum(),
            }
        })
        .collect()
}

/// The compared pairs (time per op of the first over the second), with their targets.
pub(crate) fn ratios(accs: &[Acc]) -> Vec<Ratio> {
    let c = |variant, tasks| Case { variant, tasks };
    use Variant::*;
    let mut ratios: Vec<Option<Ratio>> = Vec::new();
    for tasks in [1, TASKS] {
        let t = Some((1.05, "<= 1.05x"));
        ratios.push(ratio(
            accs,
            c(RedisOursJson, tasks),
            c(RedisHandJson, tasks),
            t,
        ));
        ratios.push(ratio(
            accs,
            c(RedisOursMsgpack, tasks),
            c(RedisHandMsgpack, tasks),
            t,
        ));
        let t = (tasks == TASKS).then_some((1.0, "<= 1.00x"));
        ratios.push(ratio(
            accs,
            c(RedisOursMsgpack, tasks),
            c(RedisCachedCrate, tasks),
            t,
        ));
        ratios.push(ratio(
            accs,
            c(RedisOursMsgpack, tasks),
            c(RedisOursJson, tasks),
            None,
        ));
        // The programmatic API against the attribute over the same engine, and against the
        // hand-written code.
        ratios.push(ratio(
            accs,
            c(RedisApiMsgpack, tasks),
            c(RedisOursMsgpack, tasks),
            Some((1.05, "<= 1.05x")),
        ));
        ratios.push(ratio(
            accs,
            c(RedisApiMsgpack, tasks),
            c(RedisHandMsgpack, tasks),
            None,
        ));
    }
    for tasks in [1, TASKS] {
        ratios.push(ratio(
            accs,
            c(MemOursJson, tasks),
            c(MemHandJson, tasks),
            None,
        ));
        ratios.push(ratio(
            accs,
            c(MemOursMsgpack, tasks),
            c(MemHandMsgpack, tasks),
            None,
        ));
    }

    // The freshness layer: `stale` + `tags` on a fresh hit, and a grace-window hit, against
    // the plain function.
    for tasks in [1, TASKS] {
        let t = Some((1.05, "<= 1.05x"));
        ratios.push(ratio(
            accs,
            c(RedisOursFresh, tasks),
            c(RedisOursMsgpack, tasks),
            t,
        ));
        ratios.push(ratio(
            accs,
            c(MemOursFresh, tasks),
            c(MemOursMsgpack, tasks),
            t,
        ));
        ratios.push(ratio(
            accs,
            c(RedisOursStale, tasks),
            c(RedisOursMsgpack, tasks),
            None,
        ));
        ratios.push(ratio(
            accs,
            c(MemOursStale, tasks),
            c(MemOursMsgpack, tasks),
            None,
        ));
    }

    // The near cache: a near hit against a bare moka map of decoded values, and against the
    // Redis hit path of the same value (the speed-up: second over first).
    for tasks in [1, TASKS] {
        let t = (tasks == 1).then_some((1.5, "<= 1.5x"));
        ratios.push(ratio(accs, c(NearOurs, tasks), c(NearMoka, tasks), t));
        let t = (tasks == TASKS).then_some((20.0, ">= 20x"));
        ratios.push(ratio(
            accs,
            c(RedisOursMsgpack, tasks),
            c(NearOurs, tasks),
            t,
        ));
        ratios.push(ratio(
            accs,
            c(RedisOursMsgpack, tasks),
            c(NearOursArc, tasks),
            None,
        ));
        ratios.push(ratio(accs, c(NearOurs, tasks), c(NearOursArc, tasks), None));
    }

    ratios.into_iter().flatten().collect()
}

/// Time-per-op ratio `a / b` (= throughput of `b` over throughput of `a`).
fn ratio(accs: &[Acc], a: Case, b: Case, target: Option<(f64, &str)>) -> Option<Ratio> {
    let find = |c: Case| accs.iter().find(|x| x.case == c && x.ops > 0);
    let (x, y) = (find(a)?, find(b)?);
    let tput = |z: &Acc| z.ops as f64 / z.elapsed.as_secs_f64();
    let time_ratio = tput(y) / tput(x);
    let rounds = x
        .per_round
        .iter()
        .zip(&y.per_round)
        .map(|(p, q)| q / p)
        .collect();
    let time_ratio_median_round = median(rounds);
    let ns_per_op_difference = 1e9 / tput(x) - 1e9 / tput(y);
    let p50_ratio = x.hist.quantile(0.5) as f64 / y.hist.quantile(0.5).max(1) as f64;
    let what = format!(
        "{} {} vs {} {}, {} task{}",
        a.variant.backend(),
        a.variant.label(),
        b.variant.backend(),
        b.variant.label(),
        a.tasks,
        if a.tasks == 1 { "" } else { "s" }
    );
    let (target, met) = match target {
        // ">= N": the first is at least N times slower (a speed-up of the second).
        Some((limit, text)) if text.starts_with(">=") => (
            Some(text.to_owned()),
            Some(time_ratio_median_round >= limit),
        ),
        Some((limit, text)) => (
            Some(text.to_owned()),
            Some(time_ratio_median_round <= limit),
        ),
        None => (None, None),
    };
    Some(Ratio {
        what,
        time_ratio,
        time_ratio_median_round,
        ns_per_op_difference,
        p50_ratio,
        target,
        met,
    })
}

pub(crate) fn print_report(r: &Report) {
    let m = &r.meta;
    println!();
    println!(
        "value: {} B json, {} B msgpack (named fields, ours and hand-written), {} B msgpack \
         (compact, cached crate)",
        m.value_bytes_json, m.value_bytes_msgpack_named, m.value_bytes_msgpack_compact
    );
    println!(
        "future size per call: {}",
        m.future_bytes
            .iter()
            .map(|(k, v)| format!("{k} {v} B"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    println!(
        "{} mode: {} rounds x {} ms per case, {} hot keys, {} cpus, redis {} at {}",
        m.mode, m.rounds, m.slice_ms, m.hot_keys, m.cpus, m.redis_version, m.redis
    );
    let fmt_load = |l: Option<f64>| l.map_or("?".to_owned(), |l| format!("{l:.2}"));
    println!(
        "load average before/after: {} / {}",
        fmt_load(m.load_average_before),
        fmt_load(m.load_average_after)
    );
    println!();
    println!(
        "{:<36} {:>5} {:>12} {:>10} {:>9} {:>9}",
        "hit path", "tasks", "ops/s", "ns/op", "p50 µs", "p99 µs"
    );
    for h in &r.hit_path {
        println!(
            "{:<36} {:>5} {:>12.0} {:>10.0} {:>9.1} {:>9.1}{}",
            h.case,
            h.tasks,
            h.ops_per_sec,
            h.ns_per_op,
            h.p50_us,
            h.p99_us,
            if h.errors > 0 {
                format!("  ({} errors)", h.errors)
            } else {
                String::new()
            }
        );
    }
    println!();
    println!(
        "{:<32} {:>7} {:>22} {:>12} {:>12}",
        "cold-key stampede", "callers", "loader runs min/mean/max", "wall p50 ms", "wall max ms"
    );
    for s in &r.stampede {
        println!(
            "{:<32} {:>7} {:>8}/{:>6.1}/{:<7} {:>12.1} {:>12.1}{}",
            s.case,
            s.callers,
            s.loader_runs_min,
            s.loader_runs_mean,
            s.loader_runs_max,
            s.wall_ms_p50,
            s.wall_ms_max,
            if s.errors > 0 {
                format!("  ({} errors)", s.errors)
            } else {
                String::new()
            }
        );
    }
    println!();
    println!(
        "time per op, first / second: median over rounds (each round runs the two side by \
         side), the ratio of the totals, and the difference; targets are checked on the median:"
    );
    for q in &r.ratios {
        let verdict = match (&q.target, q.met) {
            (Some(t), Some(true)) => format!("  target {t}: met"),
            (Some(t), Some(false)) => format!("  target {t}: MISSED"),
            _ => String::new(),
        };
        println!(
            "  {:<76} {:>6.3}x  (totals {:>6.3}x, {:>+7.0} ns/op, p50 {:>5.3}x){}",
            q.what,
            q.time_ratio_median_round,
            q.time_ratio,
            q.ns_per_op_difference,
            q.p50_ratio,
            verdict
        );
    }
    println!();
    println!("grace-window hits (every measured call must be served stale):");
    for c in &r.serve_stale {
        println!(
            "  {:<32} {} calls: stale_served {}, hits {}, misses {}; refreshes held {}{}",
            c.case,
            c.calls,
            c.stale_served,
            c.hits,
            c.misses,
            c.refreshes,
            if c.stale_served == c.calls && c.hits == 0 && c.misses == 0 {
                ""
            } else {
                "  NOT ALL GRACE-WINDOW HITS"
            }
        );
    }
    if let Some(h) = r
        .hit_path
        .iter()
        .find(|h| h.case == "near #[cached] local_ttl hit" && h.tasks == 1)
    {
        println!(
            "near hit of the 1 KB value, 1 task: {:.0} ns/op  target <= 1000 ns: {}",
            h.ns_per_op,
            if h.ns_per_op <= 1000.0 {
                "met"
            } else {
                "MISSED"
            }
        );
    }
    let n = &r.near_hits;
    println!(
        "near hits (every measured call must be a near hit): {} calls: local_hits {}, redis \
         hits {}, misses {}{}",
        n.calls,
        n.local_hits,
        n.redis_hits,
        n.misses,
        if n.local_hits == n.calls {
            ""
        } else {
            "  NOT ALL NEAR HITS"
        }
    );
    if let Some(c) = &r.coherence {
        print_coherence(c);
    }
    println!();
    println!(
        "early refresh: {HOT_TASKS} tasks on one hot key, ttl 1 s, {HOT_LOADER_MS} ms loader; \
         calls that waited for a loader: misses (exact), and calls >= {HOT_WAIT_MS} ms"
    );
    println!(
        "{:<36} {:>10} {:>20} {:>20} {:>9} {:>9} {:>8}",
        "",
        "calls",
        "misses / calls",
        format!("calls >= {HOT_WAIT_MS} ms"),
        "refreshes",
        "p99.9 µs",
        "max ms"
    );
    for h in &r.early_refresh {
        println!(
            "{:<36} {:>10} {:>7} ({:>9.5} %) {:>7} ({:>9.5} %) {:>9} {:>9.0} {:>8.1}",
            h.case,
            h.calls,
            h.misses,
            h.miss_fraction * 100.0,
            h.waited,
            h.waited_fraction * 100.0,
            h.refreshes,
            h.p999_us,
            h.max_ms
        );
    }
    println!();
    println!("total {:.1} s", m.seconds);
}

fn print_coherence(c: &Coherence) {
    println!();
    println!(
        "near-cache coherence across processes: {} #[invalidates] writes here, the key \
         near-cached in a second process on the same redis-server; delay from the write \
         returning to the start of the other process's first read of the new value (µs):",
        c.writes
    );
    let row = |name: &str, q: &Quantiles| {
        println!(
            "  {name:<52} p50 {:>8.1}  p99 {:>8.1}  max {:>8.1}  min {:>8.1}",
            q.p50_us, q.p99_us, q.max_us, q.min_us
        )
    };
    row(
        "round trip (A's clock; includes one pipe hop)",
        &c.round_trip,
    );
    row("wall clock (SystemTime of both processes)", &c.wall_clock);
    println!(
        "  pipe round trip p50 {:.1} µs; #[invalidates] call p50 {:.1} µs; new value read \
         before the write returned: {}",
        c.pipe_rtt_p50_us, c.write_p50_us, c.before_return
    );
}

/// The stampede summary line printed after the report.
pub(crate) fn print_stampede_summary(r: &Report, stampede_rounds: usize) {
    let s = &r.stampede;
    println!(
        "stampede loader runs (mean of {} cold keys): {}",
        stampede_rounds,
        s.iter()
            .map(|r| format!("{} {:.1}", r.case, r.loader_runs_mean))
            .collect::<Vec<_>>()
            .join(", ")
    );
}

/// Encoded sizes of the value: JSON, MessagePack with field names (ours and hand-written),
/// MessagePack compact in the `cached` crate's envelope.
pub(crate) fn value_sizes() -> Result<(usize, usize, usize), Box<dyn std::error::Error>> {
    let item = sample_item(1);
    #[derive(Serialize)]
    struct CompactEnvelope<'a>(&'a Item, u32);
    Ok((
        serde_json::to_vec(&item)?.len(),
        rmp_serde::to_vec_named(&item)?.len(),
        rmp_serde::to_vec(&CompactEnvelope(&item, 1))?.len(),
    ))
}
