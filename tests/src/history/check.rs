//! The checks (a) to (d) over a merged history (see the parent module), and their [`Report`].

use super::*;

/// A freshness violation.
#[derive(Clone, Debug)]
pub struct Stale {
    /// The read.
    pub read: Event,
    /// The completed write with the highest version that ended before the read started.
    pub write: Event,
    /// Whether a completed write in another cache with a newer version than the read returned
    /// (one that ended before the read started) is suspect (its invalidation may have failed or
    /// been queued), overlaps a fault window, or the reader's circuit was open.
    pub after_failed_invalidation: bool,
    /// Context: the row's other writes and the loads that read the returned version.
    pub context: Vec<Event>,
    /// Near-cache reads: which rule the read broke (see [`check`]); empty otherwise.
    pub rule: &'static str,
}

/// A violation of (c) (two loader runs of one key at once) or (d) (a second miss load without
/// a cause).
#[derive(Clone, Debug)]
pub struct Violation {
    /// What happened.
    pub what: String,
    /// Both loads' read calls ran in clean histories (no cancellations, no faults).
    pub clean: bool,
    /// The loads and the key's invalidating writes around them.
    pub events: Vec<Event>,
}

/// What [`check`] found.
#[derive(Clone, Debug, Default)]
pub struct Report {
    /// Histories checked.
    pub histories: usize,
    /// Completed reads.
    pub reads: usize,
    /// Of `reads`, per reader kind.
    pub reads_by_func: BTreeMap<Func, usize>,
    /// Of `reads`, of the freshness-layer functions.
    pub fresh_reads: usize,
    /// Of `reads`, those that returned `Err` (a loader failure reached the caller).
    pub read_errors: usize,
    /// Writes (completed and in doubt).
    pub writes: usize,
    /// Of `writes`, of the fresh rows, by how they invalidated: keys, keys + tag, tag only,
    /// `invalidate_tag` by hand.
    pub fresh_writes: [usize; 4],
    /// Loader runs logged.
    pub loads: usize,
    /// Of `loads`, background refreshes.
    pub refresh_loads: usize,
    /// Of `loads`, those that returned `Err`.
    pub failed_loads: usize,
    /// Cancelled calls (reads and writes).
    pub cancellations: usize,
    /// Faults injected.
    pub faults: usize,
    /// Histories without cancellations or faults (where (b), (c) and (d) are strict).
    pub clean_histories: usize,
    /// Freshness violations, per function.
    pub stale: Vec<Stale>,
    /// (b) in clean histories: generations by number of loads (read call started inside).
    pub loads_clean: BTreeMap<usize, usize>,
    /// (b) in all histories, same counting.
    pub loads_all: BTreeMap<usize, usize>,
    /// Broader count in all histories: loader entry (not the read call) inside the generation.
    pub loads_entry_all: BTreeMap<usize, usize>,
    /// Clean generations with more than one load, with their loads.
    pub double_loads: Vec<(String, Vec<Event>)>,
    /// (c): most loader runs of one fresh key at once (not separated by an invalidation), in
    /// clean histories and in all.
    pub max_concurrent_clean: usize,
    /// See `max_concurrent_clean`.
    pub max_concurrent_all: usize,
    /// (c): overlapping loader runs of one key that an invalidation between them explains.
    pub overlaps_invalidated: usize,
    /// Loader runs of fresh keys that an invalidation of their key overlapped (the race the
    /// refresh and miss leases must win), and of those, background refreshes.
    pub loads_raced: (usize, usize),
    /// (c): `read_rowe` early refreshes overlapping a miss load (the entry's TTL ran out while
    /// the early refresh ran; not a failure).
    pub overlaps_at_expiry: usize,
    /// (c): overlapping loader runs where one of them ran alone after two failed loads of
    /// the key in its process (see `check`).
    pub overlaps_after_failures: usize,
    /// (c) violations.
    pub overlaps: Vec<Violation>,
    /// (d): successful miss loads of `stale` keys, and those that followed an earlier one.
    pub miss_loads: usize,
    /// (d): second miss loads explained by an invalidation of the key between them.
    pub reloads_invalidated: usize,
    /// (d): second miss loads that ran alone after two failed loads.
    pub reloads_after_failures: usize,
    /// (d) violations.
    pub reloads: Vec<Violation>,
    /// Counters summed over caches.
    pub counts: Counts,
    /// Near-cache run (a'): completed reads of the near functions.
    pub near_reads: usize,
    /// (a'): the bound, ms (`NEAR_BOUND_MS`).
    pub near_bound_ms: u64,
    /// (a'): reads that returned an older version than a write completed before they
    /// started, in another cache, within the bound and before that cache processed the
    /// write's push: the coherence delay (allowed).
    pub near_within_bound: usize,
    /// (a'): the largest such lag, from the write's return to the read's start, µs.
    pub near_max_lag_us: u64,
    /// (a'): reads the exact rule applied to (the newest write of another cache that completed
    /// before the read started had its marker push processed by the reader's cache before).
    pub near_after_push: usize,
    /// (a'): reads the bound rule applied to (the newest write of another cache completed at
    /// least the bound before the read started).
    pub near_past_bound: usize,
    /// Marker pushes logged (over all caches).
    pub pushes: usize,
    /// (a') stale near reads by rule they break (a read may break several): a newer write in
    /// the reader's own cache, the exact rule, the bound rule.
    pub near_broken: [usize; 3],
}

impl Report {
    /// Most loads of one clean generation.
    pub fn max_loads_clean(&self) -> usize {
        self.loads_clean.keys().max().copied().unwrap_or(0)
    }

    /// Most loads of one generation, in any history.
    pub fn max_loads_all(&self) -> usize {
        self.loads_all.keys().max().copied().unwrap_or(0)
    }

    /// Stale reads per function.
    pub fn stale_by_func(&self, func: Func) -> usize {
        self.stale.iter().filter(|s| s.read.func == func).count()
    }

    /// Stale reads that a suspect invalidation or a fault excuses in fault runs.
    pub fn stale_after_failed(&self) -> usize {
        self.stale
            .iter()
            .filter(|s| s.after_failed_invalidation)
            .count()
    }

    /// (c) violations in clean histories.
    pub fn overlaps_clean(&self) -> usize {
        self.overlaps.iter().filter(|f| f.clean).count()
    }

    /// (d) violations in clean histories.
    pub fn reloads_clean(&self) -> usize {
        self.reloads.iter().filter(|f| f.clean).count()
    }

    /// The figures, one paragraph.
    pub fn figures(&self, test: &str, backend: &str, seed: u64) -> String {
        let by_func: Vec<String> = Func::ALL
            .iter()
            .map(|f| format!("{}: {}", f.label(), self.stale_by_func(*f)))
            .collect();
        let c = &self.counts;
        format!(
            "[{test}] backend={backend} seed={seed}: histories={} (clean {}), reads={} (fresh \
             functions {}, Err {}), writes={} (fresh rows: keys {}, keys+tag {}, tag only {}, \
             invalidate_tag {}), loads={} (refreshes {}, Err {}), cancellations={}, faults={}, \
             stale reads={} ({}; after a suspect/failed invalidation or a fault: {}), \
             (b) max loads per generation: clean={} all={} (loader-entry count: {}), \
             distribution clean={:?} all={:?} entry={:?}; (c) max loads of one fresh key at \
             once: clean={} all={} (loads overlapped by an invalidation of their key {}, of which \
             refreshes {}; overlaps explained by an invalidation {}, early refresh \
             at expiry {}, after two failed loads {}, unexplained {} of which clean {}); (d) miss \
             loads of stale keys {} (after an invalidation {}, after two failed loads {}, \
             unexplained {} of which clean {}); refreshes: \
             refreshes={} early={} errors={} stale_served={} soft_timeouts={} \
             tag_invalidations={}; counters: {:?}",
            self.histories,
            self.clean_histories,
            self.reads,
            self.fresh_reads,
            self.read_errors,
            self.writes,
            self.fresh_writes[0],
            self.fresh_writes[1],
            self.fresh_writes[2],
            self.fresh_writes[3],
            self.loads,
            self.refresh_loads,
            self.failed_loads,
            self.cancellations,
            self.faults,
            self.stale.len(),
            by_func.join(", "),
            self.stale_after_failed(),
            self.max_loads_clean(),
            self.max_loads_all(),
            self.loads_entry_all.keys().max().copied().unwrap_or(0),
            self.loads_clean,
            self.loads_all,
            self.loads_entry_all,
            self.max_concurrent_clean,
            self.max_concurrent_all,
            self.loads_raced.0,
            self.loads_raced.1,
            self.overlaps_invalidated,
            self.overlaps_at_expiry,
            self.overlaps_after_failures,
            self.overlaps.len(),
            self.overlaps_clean(),
            self.miss_loads,
            self.reloads_invalidated,
            self.reloads_after_failures,
            self.reloads.len(),
            self.reloads_clean(),
            c.refreshes,
            c.early_refreshes,
            c.refresh_errors,
            c.stale_served,
            c.soft_timeouts,
            c.tag_invalidations,
            self.counts,
        )
    }

    /// Per reader kind that ran: completed reads, of them `Err`, and stale reads (one line).
    pub fn reader_figures(&self) -> String {
        let per: Vec<String> = self
            .reads_by_func
            .iter()
            .map(|(f, n)| {
                let excused = self
                    .stale
                    .iter()
                    .filter(|s| s.read.func == *f && s.after_failed_invalidation)
                    .count();
                format!(
                    "{}: reads {n}, stale {} (after a suspect invalidation {excused})",
                    f.label(),
                    self.stale_by_func(*f)
                )
            })
            .collect();
        format!("per reader kind: {}", per.join("; "))
    }

    /// The near-cache figures (a'), one line.
    pub fn near_figures(&self) -> String {
        let c = &self.counts;
        let near: Vec<Func> = Func::ALL.into_iter().filter(|f| f.is_near()).collect();
        format!(
            "near cache (a'): reads={} (near hits {}), stale reads={} (by function: {}; \
             breaking the own-cache rule {}, the exact rule {}, the bound rule {}), within the coherence delay={} (largest lag {:.1} ms, bound {} \
             ms), reads the exact rule applied to={}, reads the bound rule applied to={}, \
             marker pushes logged={}, local evictions={}, tracking resets={}",
            self.near_reads,
            c.local_hits,
            near.iter().map(|f| self.stale_by_func(*f)).sum::<usize>(),
            near.iter()
                .map(|f| format!("{} {}", f.label(), self.stale_by_func(*f)))
                .collect::<Vec<_>>()
                .join(", "),
            self.near_broken[0],
            self.near_broken[1],
            self.near_broken[2],
            self.near_within_bound,
            self.near_max_lag_us as f64 / 1e3,
            self.near_bound_ms,
            self.near_after_push,
            self.near_past_bound,
            self.pushes,
            c.local_evictions,
            c.tracking_resets,
        )
    }

    /// The header of [`Report::table_row`].
    pub fn table_header() -> &'static str {
        "| test | histories | reads | writes | cancellations | faults | stale reads (excused) | \
         max loads/generation (clean) | max loads of a key at once (clean) | refreshes (early, \
         Err) | stale served | soft timeouts |\n|---|---|---|---|---|---|---|---|---|---|---|---|"
    }

    /// One Markdown table row of the figures.
    pub fn table_row(&self, test: &str) -> String {
        let c = &self.counts;
        format!(
            "| {test} | {} | {} | {} | {} | {} | {} ({}) | {} | {} | {} ({}, {}) | {} | {} |",
            self.histories,
            self.reads,
            self.writes,
            self.cancellations,
            self.faults,
            self.stale.len(),
            self.stale_after_failed(),
            self.max_loads_clean(),
            self.max_concurrent_clean,
            c.refreshes,
            c.early_refreshes,
            c.refresh_errors,
            c.stale_served,
            c.soft_timeouts,
        )
    }

    /// Excerpts of up to `n` stale reads of each function.
    pub fn stale_excerpt(&self, n: usize) -> String {
        let mut s = String::new();
        // Reads after delivered invalidations first: they are the failures.
        let mut ordered: Vec<&Stale> = self.stale.iter().collect();
        ordered.sort_by_key(|v| v.after_failed_invalidation);
        let shown = Func::ALL.into_iter().flat_map(|f| {
            ordered
                .clone()
                .into_iter()
                .filter(move |v| v.read.func == f)
                .take(n)
        });
        for v in shown {
            let _ = writeln!(
                s,
                "STALE READ (history {}): read started at {} after the write of version {} completed at {}, \
                 but returned version {}{}:",
                v.read.history,
                v.read.start,
                v.write.version,
                v.write.end.unwrap_or(0),
                v.read.version,
                if v.after_failed_invalidation {
                    " (a newer write's invalidation was suspect or overlapped a fault)"
                } else {
                    ""
                }
            );
            if !v.rule.is_empty() {
                let _ = writeln!(s, "  broken: {}", v.rule);
            }
            let _ = writeln!(s, "  {}   <- the stale read", v.read);
            let _ = writeln!(s, "  {}   <- the completed write", v.write);
            for e in &v.context {
                let _ = writeln!(s, "  {e}");
            }
        }
        s
    }

    /// Excerpts of up to `n` generations loaded more than once.
    pub fn double_load_excerpt(&self, n: usize) -> String {
        let mut s = String::new();
        for (what, loads) in self.double_loads.iter().take(n) {
            let _ = writeln!(s, "{what}:");
            for e in loads {
                let _ = writeln!(s, "  {e}");
            }
        }
        s
    }

    pub(super) fn violations_excerpt(violations: &[Violation], n: usize) -> String {
        let mut s = String::new();
        for f in violations.iter().filter(|f| f.clean).take(n) {
            let _ = writeln!(s, "{}:", f.what);
            for e in &f.events {
                let _ = writeln!(s, "  {e}");
            }
        }
        s
    }

    /// Panics with the figures and excerpts when (a) or, in clean histories, (b), (c) or (d)
    /// failed.
    pub fn assert_ok(&self, test: &str, backend: &str, seed: u64) {
        self.assert_ok_with(test, backend, seed, false)
    }

    /// Like [`Report::assert_ok`]; with `excuse_undelivered`, a stale read whose newer write's
    /// invalidation could not be delivered (a backend error or a queued retry during the
    /// write, or a write overlapping a fault window) is reported but not a failure: the
    /// README's promise covers invalidations that reached Redis; a queued one holds for other
    /// processes from its delivery on.
    pub fn assert_ok_with(&self, test: &str, backend: &str, seed: u64, excuse_undelivered: bool) {
        let mut problems = Vec::new();
        let failing = self
            .stale
            .iter()
            .filter(|s| !(excuse_undelivered && s.after_failed_invalidation))
            .count();
        eprintln!("{}", self.figures(test, backend, seed));
        if failing > 0 {
            problems.push(format!(
                "(a) freshness: {} stale reads ({failing} after delivered invalidations)\n{}",
                self.stale.len(),
                self.stale_excerpt(2)
            ));
        }
        if self.max_loads_clean() > 1 {
            problems.push(format!(
                "(b) one load per generation: {} generations loaded more than once in histories \
                 without cancellations or faults\n{}",
                self.double_loads.len(),
                self.double_load_excerpt(2)
            ));
        }
        if self.overlaps_clean() > 0 {
            problems.push(format!(
                "(c) one loader at a time per key: {} overlapping loader runs without an \
                 invalidation between them in histories without cancellations or faults\n{}",
                self.overlaps_clean(),
                Self::violations_excerpt(&self.overlaps, 2)
            ));
        }
        if self.reloads_clean() > 0 {
            problems.push(format!(
                "(d) no miss without a cause: {} miss loads of a `stale` key without an \
                 invalidation since its previous miss load, in histories without cancellations \
                 or faults\n{}",
                self.reloads_clean(),
                Self::violations_excerpt(&self.reloads, 2)
            ));
        }
        assert!(
            problems.is_empty(),
            "history checker failed; replay with CHECKER_SEED={seed}\n{}\n{}",
            self.figures(test, backend, seed),
            problems.join("\n")
        );
    }
}

/// Checks (a), (b), (c) and (d) on the merged records of a run.
pub fn check(records: &[Record]) -> Report {
    let mut report = Report::default();
    let mut events = Vec::new();
    let mut faults = Vec::new();
    for r in records {
        match r {
            Record::Event(e) => events.push(e.clone()),
            Record::Fault(f) => faults.push(f.clone()),
            Record::Counts(c) => report.counts.add(c),
            Record::Push { .. } => {}
        }
    }
    // Near-cache run: when each cache first processed each marker's push.
    let mut pushes: HashMap<(u32, &str), u64> = HashMap::new();
    for r in records {
        if let Record::Push {
            cache, key, clock, ..
        } = r
        {
            report.pushes += 1;
            let p = pushes.entry((*cache, key.as_str())).or_insert(u64::MAX);
            *p = (*p).min(*clock);
        }
    }
    let near_bound_ms = near_bound_from_env();
    report.near_bound_ms = near_bound_ms;
    // Whether `reader` had processed the push of `w`'s marker before clock `at`.
    let pushed_before = |reader: u32, w: &Event, at: u64| {
        w.marker
            .as_deref()
            .and_then(|m| pushes.get(&(reader, m)))
            .is_some_and(|&p| p < at)
    };
    report.faults = faults.len();
    for e in &events {
        match e.kind {
            Kind::Read if e.end.is_some() => {
                report.reads += 1;
                *report.reads_by_func.entry(e.func).or_default() += 1;
                report.fresh_reads += usize::from(e.func.is_fresh());
                report.read_errors += usize::from(e.failed);
            }
            Kind::Read => {}
            Kind::Write => {
                report.writes += 1;
                if let Some(i) = e.inval {
                    report.fresh_writes[i as usize] += 1;
                }
            }
            Kind::Load => {
                report.loads += 1;
                report.refresh_loads += usize::from(e.refresh);
                report.failed_loads += usize::from(e.failed);
            }
        }
    }
    report.cancellations = events.iter().filter(|e| e.end.is_none()).count();

    let overlaps_fault =
        |start: u64, end: u64| faults.iter().any(|f| f.start <= end && start <= f.end);

    // Histories: their clock span, and whether they are clean.
    let mut spans: BTreeMap<u32, (u64, u64, bool)> = BTreeMap::new();
    for e in &events {
        let span = spans.entry(e.history).or_insert((u64::MAX, 0, false));
        span.0 = span.0.min(e.start);
        span.1 = span.1.max(e.end.unwrap_or(e.start));
        span.2 |= e.end.is_none();
    }
    let clean: BTreeSet<u32> = spans
        .iter()
        // A fault's effects outlast its window (open breakers, reconnections, queued
        // invalidations), so a run with faults has no clean history.
        .filter(|(_, (_, _, cancelled))| !cancelled && faults.is_empty())
        .map(|(h, _)| *h)
        .collect();
    report.histories = spans.len();
    report.clean_histories = clean.len();

    // Writes by row; loads by (function, row).
    let mut writes: BTreeMap<u64, Vec<&Event>> = BTreeMap::new();
    for e in events.iter().filter(|e| e.kind == Kind::Write) {
        writes.entry(e.row).or_default().push(e);
    }
    let mut loads_by: HashMap<(Func, u64), Vec<&Event>> = HashMap::new();
    // By key: a programmatic reader's loads count with its attribute counterpart's.
    for e in events.iter().filter(|e| e.kind == Kind::Load) {
        loads_by.entry((e.func.base(), e.row)).or_default().push(e);
    }
    for loads in loads_by.values_mut() {
        loads.sort_by_key(|e| e.start);
    }
    let no_writes = Vec::new();
    let no_loads = Vec::new();

    // (a) Freshness.
    for read in events
        .iter()
        .filter(|e| e.kind == Kind::Read && e.end.is_some() && !e.failed)
    {
        let row_writes = writes.get(&read.row).unwrap_or(&no_writes);
        // (a') Near-cache reads. A write in the reader's own cache is strict, as in (a): it
        // evicts this process's copy before it returns. A write in another cache must be seen
        // (exact rule) by every read that starts after the reader's cache processed the push
        // of the write's marker (set right after the write returned, so pushed after the
        // write's own invalidation), and (bound rule) by every read that starts at least
        // the bound after the write returned (wall clock). A read that breaks neither rule is
        // within the coherence delay.
        let mut rule = "";
        if read.func.is_near() {
            report.near_reads += 1;
            let done_before =
                |w: &&&Event| w.end.is_some_and(|end| end < read.start) && w.cache != read.cache;
            if let Some(newest) = row_writes
                .iter()
                .filter(done_before)
                .max_by_key(|w| w.version)
            {
                report.near_after_push +=
                    usize::from(pushed_before(read.cache, newest, read.start));
                report.near_past_bound +=
                    usize::from(read.start_us >= newest.end_us + near_bound_ms * 1000);
            }
            let newer: Vec<&&Event> = row_writes
                .iter()
                .filter(|w| w.version > read.version && w.end.is_some_and(|end| end < read.start))
                .collect();
            if newer.is_empty() {
                continue;
            }
            let broken = |w: &Event| {
                if w.cache == read.cache {
                    Some("(a') own: a write in the reader's own cache")
                } else if pushed_before(read.cache, w, read.start) {
                    Some("(a') exact: the reader's cache had processed the write's push")
                } else if read.start_us >= w.end_us + near_bound_ms * 1000 {
                    Some("(a') bound: the read started the bound or more after the write returned")
                } else {
                    None
                }
            };
            // Each rule on its own (`broken` names the first one a write breaks).
            let rules: [&dyn Fn(&Event) -> bool; 3] = [
                &|w| w.cache == read.cache,
                &|w| w.cache != read.cache && pushed_before(read.cache, w, read.start),
                &|w| w.cache != read.cache && read.start_us >= w.end_us + near_bound_ms * 1000,
            ];
            for (i, rule) in rules.iter().enumerate() {
                report.near_broken[i] += usize::from(newer.iter().any(|w| rule(w)));
            }
            match newer.iter().find_map(|w| broken(w)) {
                Some(r) => rule = r,
                None => {
                    report.near_within_bound += 1;
                    let lag = newer
                        .iter()
                        .map(|w| read.start_us.saturating_sub(w.end_us))
                        .max()
                        .unwrap_or(0);
                    report.near_max_lag_us = report.near_max_lag_us.max(lag);
                    continue;
                }
            }
        }
        let latest = row_writes
            .iter()
            .filter(|w| w.end.is_some_and(|end| end < read.start))
            .max_by_key(|w| w.version);
        let Some(latest) = latest else { continue };
        if read.version >= latest.version {
            continue;
        }
        let newer: Vec<&&Event> = row_writes
            .iter()
            .filter(|w| w.version > read.version && w.end.is_some_and(|end| end < read.start))
            .collect();
        // Excused (in fault runs) only through a write in ANOTHER cache (process) whose
        // invalidation may not have been delivered, or that this cache could not see because
        // its own circuit was open: the writing process itself must always see its writes
        // (a failed `#[invalidates]` is queued, and delivered before this process reads the
        // key). Except `Cache::invalidate_tag` by hand: it returns its failure to the caller
        // and queues nothing, so after an `Err` no process is promised the invalidation.
        let after_failed_invalidation = newer.iter().any(|w| {
            (w.inval == Some(Inval::TagByHand) && w.suspect)
                || (w.cache != read.cache
                    && (w.suspect
                        || overlaps_fault(w.start, w.end.unwrap_or(u64::MAX))
                        || read.suspect))
        });
        // Context (for the first stale reads only: a broken build may have thousands):
        // the write that made the returned version and the newer writes up to the read's end
        // (other than `latest`, shown separately; at most 5), and the last 4 loads that read
        // the returned version before the read ended.
        let mut context = Vec::new();
        if report.stale.len() < 200 {
            let read_end = read.end.unwrap_or(u64::MAX);
            context = row_writes
                .iter()
                .filter(|w| {
                    w.version == read.version || (w.version > read.version && w.start <= read_end)
                })
                .filter(|w| !std::ptr::eq(**w, *latest))
                .take(5)
                .map(|w| (*w).clone())
                .collect();
            let loads: Vec<&Event> = loads_by
                .get(&(read.func.base(), read.row))
                .unwrap_or(&no_loads)
                .iter()
                .filter(|e| e.version == read.version && e.start <= read_end)
                .copied()
                .collect();
            context.extend(loads.iter().rev().take(4).map(|e| (*e).clone()));
            context.sort_by_key(|e| e.start);
        }
        report.stale.push(Stale {
            read: read.clone(),
            write: (*latest).clone(),
            after_failed_invalidation,
            context,
            rule,
        });
    }

    // (b) Loads per generation (`row`, `row0`).
    let mut rows: BTreeSet<(u32, u64)> = BTreeSet::new();
    for e in events.iter().filter(|e| !is_fresh_row(e.row)) {
        rows.insert((e.history, e.row));
    }
    for &(history, row) in &rows {
        let row_writes = writes.get(&row).unwrap_or(&no_writes);
        // Versions whose generation can be bounded: every write of a version <= v has a known
        // version and end. (In-doubt writes with an unknown version end the analysis.)
        let max_version = row_writes.iter().map(|w| w.version).max().unwrap_or(0);
        // A write whose version is unknown (cancelled, possibly mid-`INCR`) leaves the row's
        // generations unknown.
        if row_writes.iter().any(|w| w.version == 0) {
            continue;
        }
        for func in [Func::Row, Func::Row0, Func::RowN, Func::RowN0] {
            let func_loads = loads_by.get(&(func, row)).unwrap_or(&no_loads);
            for v in 0..=max_version {
                if matches!(func, Func::Row0 | Func::RowN0) && v == 0 {
                    continue;
                }
                let mut from = 0u64;
                let mut to = u64::MAX;
                let mut bounded = true;
                for w in row_writes {
                    if w.version <= v {
                        match w.end {
                            Some(end) => from = from.max(end),
                            None => bounded = false,
                        }
                    } else {
                        to = to.min(w.start);
                    }
                }
                if v > 0 && !row_writes.iter().any(|w| w.version == v) {
                    continue;
                }
                if !bounded || from >= to {
                    continue;
                }
                let loads = func_loads
                    .iter()
                    .filter(|e| e.version == v && e.end.is_some_and(|end| end < to));
                let by_call: Vec<&Event> = loads
                    .clone()
                    .filter(|e| e.call_start > from)
                    .copied()
                    .collect();
                let by_entry = loads.filter(|e| e.start > from).count();
                if by_entry > 0 {
                    *report.loads_entry_all.entry(by_entry).or_default() += 1;
                }
                if by_call.is_empty() {
                    continue;
                }
                *report.loads_all.entry(by_call.len()).or_default() += 1;
                if clean.contains(&history) {
                    *report.loads_clean.entry(by_call.len()).or_default() += 1;
                    if by_call.len() > 1 {
                        let what = format!(
                            "history {history}: {}:{row} version {v}, generation ({from}, {to}): {} loads",
                            func.prefix(),
                            by_call.len()
                        );
                        let mut shown: Vec<Event> = row_writes
                            .iter()
                            .filter(|w| w.version == v || w.version == v + 1)
                            .map(|w| (*w).clone())
                            .collect();
                        shown.extend(by_call.into_iter().cloned());
                        shown.sort_by_key(|e| e.start);
                        report.double_loads.push((what, shown));
                    }
                }
            }
        }
    }

    // (c) and (d) on the fresh functions' keys.
    let fresh_writes: Vec<&Event> = events
        .iter()
        .filter(|e| e.kind == Kind::Write && e.inval.is_some())
        .collect();
    let mut keys: Vec<&(Func, u64)> = loads_by.keys().filter(|(f, _)| f.is_fresh()).collect();
    keys.sort();
    for &(func, row) in keys {
        let loads = &loads_by[&(func, row)];
        let invalidators: Vec<&Event> = fresh_writes
            .iter()
            .filter(|w| w.invalidates_fresh(row))
            .copied()
            .collect();
        // An invalidation of the key that may have deleted it (and the lease or refresh lease
        // in it) after `first`'s read call started and before `second`'s loader began.
        let invalidated_between = |first: &Event, second: &Event| {
            invalidators
                .iter()
                .any(|w| w.start < second.start && w.end.unwrap_or(u64::MAX) > first.call_start)
        };
        let context = |first: &Event, second: &Event| {
            let mut shown: Vec<Event> = invalidators
                .iter()
                .filter(|w| {
                    w.end.unwrap_or(u64::MAX) >= first.call_start.saturating_sub(50)
                        && w.start <= second.end.unwrap_or(u64::MAX)
                })
                .take(6)
                .map(|w| (*w).clone())
                .collect();
            shown.extend(
                loads
                    .iter()
                    .filter(|e| {
                        e.failed
                            && e.end.unwrap_or(0) > first.call_start.min(second.call_start)
                            && e.start < second.start
                    })
                    .take(4)
                    .map(|e| (*e).clone()),
            );
            shown.push(first.clone());
            shown.push(second.clone());
            shown.sort_by_key(|e| e.start);
            shown.dedup();
            shown
        };
        let both_clean =
            |a: &Event, b: &Event| clean.contains(&a.history) && clean.contains(&b.history);
        // A load run "alone": its read call saw two loads of the key in its process fail
        // (`Err`) while it waited, before its loader began. The runtime's waiters then stop
        // electing leaders and each runs its own loader (`Mode::Alone` in the protocol: a
        // failing loader is not queued behind), so loads at once are expected.
        let failed: Vec<&Event> = loads.iter().filter(|e| e.failed).copied().collect();
        let alone = |load: &Event| {
            failed
                .iter()
                .filter(|f| {
                    f.cache == load.cache
                        && f.end
                            .is_some_and(|end| load.call_start < end && end < load.start)
                })
                .count()
                >= 2
        };

        for &load in loads {
            let end = load.end.unwrap_or(u64::MAX);
            if invalidators
                .iter()
                .any(|w| w.start < end && w.end.unwrap_or(u64::MAX) > load.start)
            {
                report.loads_raced.0 += 1;
                report.loads_raced.1 += usize::from(load.refresh);
            }
        }
        // (c) Sweep in start order, keeping the loads still running.
        let mut active: Vec<&Event> = Vec::new();
        for &second in loads {
            active.retain(|first| first.end.unwrap_or(u64::MAX) > second.start);
            let (mut at_once, mut at_once_clean) = (1usize, 1usize);
            for &first in &active {
                if invalidated_between(first, second) {
                    report.overlaps_invalidated += 1;
                    continue;
                }
                if func == Func::RowE && first.refresh != second.refresh {
                    report.overlaps_at_expiry += 1;
                    continue;
                }
                if alone(first) || alone(second) {
                    report.overlaps_after_failures += 1;
                    continue;
                }
                let is_clean = both_clean(first, second);
                at_once += 1;
                at_once_clean += usize::from(is_clean);
                if report.overlaps.len() < 1000 {
                    report.overlaps.push(Violation {
                        what: format!(
                            "{}:{row} (group {}): two loader runs at once without an \
                             invalidation between them",
                            func.prefix(),
                            group_of(row)
                        ),
                        clean: is_clean,
                        events: context(first, second),
                    });
                }
            }
            report.max_concurrent_all = report.max_concurrent_all.max(at_once);
            if clean.contains(&second.history) {
                report.max_concurrent_clean = report.max_concurrent_clean.max(at_once_clean);
            }
            active.push(second);
        }

        // (d) Miss loads of `stale` keys.
        if !func.has_grace() {
            continue;
        }
        let mut previous: Option<&Event> = None;
        for &load in loads.iter().filter(|e| !e.refresh) {
            if !load.failed {
                report.miss_loads += 1;
            }
            if let Some(prev) = previous
                && prev.end.unwrap_or(u64::MAX) < load.start
            {
                if invalidated_between(prev, load) {
                    report.reloads_invalidated += 1;
                } else if alone(load) {
                    report.reloads_after_failures += 1;
                } else if load.wall_ms < prev.wall_ms + GRACE_END_MS && report.reloads.len() < 1000
                {
                    report.reloads.push(Violation {
                        what: format!(
                            "{}:{row} (group {}): a miss load after a successful one, without \
                             an invalidation between them (within the grace window)",
                            func.prefix(),
                            group_of(row)
                        ),
                        clean: both_clean(prev, load),
                        events: context(prev, load),
                    });
                }
            }
            // A load that ran alone does not store its result: the next call misses again.
            previous = (!load.failed && !alone(load)).then_some(load);
        }
    }
    report
}
