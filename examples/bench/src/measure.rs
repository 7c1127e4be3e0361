//! The measurements: the hit path (every case in timed slices, round by round, the order
//! rotating so that a slow moment of the machine is spread over all cases) and the cold-key
//! stampede.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use crate::cases::{self, Variant, call, loads};
use crate::stats::Hist;
use crate::{KEYS, STAMPEDE_LOADER_MS, TASKS};

/// One hit-path case: a variant at a concurrency.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Case {
    pub(crate) variant: Variant,
    pub(crate) tasks: usize,
}

/// Everything measured for one case over all rounds.
pub(crate) struct Acc {
    pub(crate) case: Case,
    pub(crate) hist: Hist,
    pub(crate) ops: u64,
    pub(crate) elapsed: Duration,
    pub(crate) errors: u64,
    /// ops/s of each round's slice.
    pub(crate) per_round: Vec<f64>,
}

/// What one variant did in an interleaved sequential slice.
struct SeqPart {
    hist: Hist,
    ops: u64,
    errors: u64,
    /// Sum of this variant's call durations: its share of the slice.
    busy: Duration,
}

/// The sequential (1-task) cases of one group, interleaved call by call: ONE task calls
/// the variants in turn (`order`), each call timed and attributed to its variant.
///
/// Why not one variant per slice: with a single task, a round trip costs ~10 µs or ~70 µs
/// depending on whether the worker thread (and its vCPU) went idle while Redis answered, and
/// which mode a slice lands in is chance that sticks for the whole slice. Calling the
/// variants alternately puts them all under the same conditions.
async fn run_sequential(order: Vec<Variant>, slice: Duration, round: usize) -> Vec<SeqPart> {
    tokio::spawn(async move {
        let mut parts: Vec<SeqPart> = order
            .iter()
            .map(|_| SeqPart {
                hist: Hist::new(),
                ops: 0,
                errors: 0,
                busy: Duration::ZERO,
            })
            .collect();
        let deadline = Instant::now() + slice;
        let mut id = round as u64 % KEYS;
        let mut t0 = Instant::now();
        while t0 < deadline {
            for (i, &v) in order.iter().enumerate() {
                let r = call(v, id).await;
                let t1 = Instant::now();
                let p = &mut parts[i];
                match r {
                    Ok(item) => {
                        std::hint::black_box(item);
                    }
                    Err(_) => p.errors += 1,
                }
                p.hist.record((t1 - t0).as_nanos() as u64);
                p.ops += 1;
                p.busy += t1 - t0;
                t0 = t1;
            }
            id = (id + 1) % KEYS;
        }
        parts
    })
    .await
    .expect("bench task panicked")
}

/// Runs `case` for `slice`: `tasks` tasks, each calling in a loop over the hot keys.
async fn run_slice(case: Case, slice: Duration, round: usize) -> (Hist, u64, u64, Duration) {
    let start = Instant::now();
    let deadline = start + slice;
    let handles: Vec<_> = (0..case.tasks)
        .map(|t| {
            tokio::spawn(async move {
                let mut hist = Hist::new();
                let (mut ops, mut errors) = (0u64, 0u64);
                let mut id = (t as u64 * 13 + round as u64) % KEYS;
                let mut t0 = Instant::now();
                while t0 < deadline {
                    let r = call(case.variant, id).await;
                    let t1 = Instant::now();
                    match r {
                        Ok(item) => {
                            std::hint::black_box(item);
                        }
                        Err(_) => errors += 1,
                    }
                    hist.record((t1 - t0).as_nanos() as u64);
                    ops += 1;
                    id = (id + 1) % KEYS;
                    t0 = t1;
                }
                (hist, ops, errors)
            })
        })
        .collect();
    let mut hist = Hist::new();
    let (mut ops, mut errors) = (0, 0);
    for h in handles {
        let (h, o, e) = h.await.expect("bench task panicked");
        hist.merge(&h);
        ops += o;
        errors += e;
    }
    (hist, ops, errors, start.elapsed())
}

/// The outcome of one stampede.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Stampede {
    pub(crate) loads: u64,
    pub(crate) wall: Duration,
    pub(crate) errors: u64,
}

/// `TASKS` callers released together on one cold key.
async fn stampede(v: Variant, id: u64) -> Stampede {
    let before = loads(v);
    let barrier = Arc::new(tokio::sync::Barrier::new(TASKS + 1));
    let handles: Vec<_> = (0..TASKS)
        .map(|_| {
            let barrier = barrier.clone();
            tokio::spawn(async move {
                barrier.wait().await;
                let r = call(v, id).await;
                (Instant::now(), r.is_err())
            })
        })
        .collect();
    barrier.wait().await;
    let start = Instant::now();
    let mut last = start;
    let mut errors = 0;
    for h in handles {
        let (done, err) = h.await.expect("stampede task panicked");
        last = last.max(done);
        errors += u64::from(err);
    }
    Stampede {
        loads: loads(v) - before,
        wall: last - start,
        errors,
    }
}

/// The hit-path cases selected for this run and what was measured for each.
pub(crate) struct HitPath {
    pub(crate) accs: Vec<Acc>,
}

impl HitPath {
    /// Every variant at 1 and at [`TASKS`] tasks, filtered by `--only` (a case is kept when
    /// `"<backend> <label> x<tasks>"` contains one of `only`; all when `only` is empty).
    pub(crate) fn new(all: &[Variant], only: &[String]) -> HitPath {
        let cases: Vec<Case> = [1, TASKS]
            .into_iter()
            .flat_map(|tasks| all.iter().map(move |&variant| Case { variant, tasks }))
            .filter(|c| {
                let name = format!("{} {} x{}", c.variant.backend(), c.variant.label(), c.tasks);
                only.is_empty() || only.iter().any(|o| name.contains(o.as_str()))
            })
            .collect();
        let accs = cases
            .iter()
            .map(|&case| Acc {
                case,
                hist: Hist::new(),
                ops: 0,
                elapsed: Duration::ZERO,
                errors: 0,
                per_round: Vec::new(),
            })
            .collect();
        HitPath { accs }
    }

    /// One short unrecorded slice per case.
    pub(crate) async fn warm_up(&self) {
        for a in &self.accs {
            run_slice(a.case, Duration::from_millis(30), 0).await;
        }
    }

    /// `rounds` rounds of `slice` per case (prints a dot per round on stderr).
    pub(crate) async fn run(&mut self, rounds: usize, slice: Duration) {
        let accs = &mut self.accs;
        // Cases that are compared with each other (same backend, same concurrency) run next to
        // each other; the order of the groups and inside each group changes every round.
        let groups: Vec<Vec<usize>> = [
            ("redis", 1),
            ("redis", TASKS),
            ("memory", 1),
            ("memory", TASKS),
            ("near", 1),
            ("near", TASKS),
        ]
        .iter()
        .map(|&(backend, tasks)| {
            (0..accs.len())
                .filter(|&i| {
                    accs[i].case.variant.backend() == backend && accs[i].case.tasks == tasks
                })
                .collect()
        })
        .collect();
        for round in 0..rounds {
            for g in 0..groups.len() {
                let group = &groups[(g + round) % groups.len()];
                let n = group.len();
                if n > 0 && accs[group[0]].case.tasks == 1 {
                    // Sequential cases: one task, the variants interleaved call by call, in an
                    // order that changes every round.
                    let mut idx: Vec<usize> = (0..n).map(|k| group[(k + round / 2) % n]).collect();
                    if round % 2 == 1 {
                        idx.reverse();
                    }
                    let order = idx.iter().map(|&i| accs[i].case.variant).collect();
                    let parts = run_sequential(order, slice * n as u32, round).await;
                    for (&i, p) in idx.iter().zip(parts) {
                        let acc = &mut accs[i];
                        acc.hist.merge(&p.hist);
                        acc.ops += p.ops;
                        acc.errors += p.errors;
                        acc.elapsed += p.busy;
                        acc.per_round.push(p.ops as f64 / p.busy.as_secs_f64());
                    }
                    continue;
                }
                for k in 0..n {
                    let k = if round % 2 == 0 { k } else { n - 1 - k };
                    let acc = &mut accs[group[(k + round / 2) % n]];
                    let (hist, ops, errors, elapsed) = run_slice(acc.case, slice, round).await;
                    acc.hist.merge(&hist);
                    acc.ops += ops;
                    acc.errors += errors;
                    acc.elapsed += elapsed;
                    acc.per_round.push(ops as f64 / elapsed.as_secs_f64());
                }
            }
            eprint!(".");
        }
        eprintln!();
    }
}

/// The cold-key stampede: `rounds` cold keys per variant of [`Variant::STAMPEDE`] (the
/// variants alternating), the loader sleeping [`STAMPEDE_LOADER_MS`].
pub(crate) async fn stampedes(rounds: usize) -> Vec<(Variant, Vec<Stampede>)> {
    cases::LOADER_MS.store(STAMPEDE_LOADER_MS, Ordering::SeqCst);
    let mut stampedes: Vec<(Variant, Vec<Stampede>)> =
        Variant::STAMPEDE.iter().map(|&v| (v, Vec::new())).collect();
    for round in 0..rounds {
        let n = stampedes.len();
        for k in 0..n {
            let (v, results) = &mut stampedes[(k + round) % n];
            results.push(stampede(*v, 1_000_000 + round as u64).await);
        }
    }
    cases::LOADER_MS.store(0, Ordering::SeqCst);
    stampedes
}
