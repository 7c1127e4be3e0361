//! The command line (see the crate documentation for the commands).

use std::path::PathBuf;

/// The parsed command line.
pub(crate) struct Args {
    pub(crate) quick: bool,
    pub(crate) json: Option<PathBuf>,
    pub(crate) svg: Option<PathBuf>,
    pub(crate) rounds: Option<usize>,
    pub(crate) slice_ms: Option<u64>,
    /// Run only the hit-path cases whose name contains one of these (for profiling).
    pub(crate) only: Vec<String>,
    /// Skip the stampede.
    pub(crate) no_stampede: bool,
    /// Skip the hot-key (early refresh) cases.
    pub(crate) no_early_refresh: bool,
    /// Skip the cross-process coherence measurement.
    pub(crate) no_coherence: bool,
    /// Writes of the coherence measurement.
    pub(crate) coherence_writes: Option<usize>,
}

const USAGE: &str = "usage: cargo run --release -p bench -- \
    [--quick] [--json PATH] [--svg PATH] [--rounds N] [--slice-ms MS] \
    [--only NAME-PART]... [--no-stampede] [--no-early-refresh] [--no-coherence] \
    [--coherence-writes N]";

/// Parses `std::env::args()`; `--help` prints the usage and exits.
pub(crate) fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        quick: false,
        json: None,
        svg: None,
        rounds: None,
        slice_ms: None,
        only: Vec::new(),
        no_stampede: false,
        no_early_refresh: false,
        no_coherence: false,
        coherence_writes: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        let mut value = |name: &str| it.next().ok_or(format!("{name} needs a value"));
        match a.as_str() {
            "--quick" => args.quick = true,
            "--json" => args.json = Some(value("--json")?.into()),
            "--svg" => args.svg = Some(value("--svg")?.into()),
            // The default now; still accepted so that the commands recorded with older
            // figures (docs/bench.md) run unchanged.
            "--no-svg" => args.svg = None,
            "--only" => args.only.push(value("--only")?),
            "--no-stampede" => args.no_stampede = true,
            "--no-early-refresh" => args.no_early_refresh = true,
            "--no-coherence" => args.no_coherence = true,
            "--coherence-writes" => {
                args.coherence_writes = Some(
                    value("--coherence-writes")?
                        .parse()
                        .map_err(|e| format!("{e}"))?,
                )
            }
            "--rounds" => {
                args.rounds = Some(value("--rounds")?.parse().map_err(|e| format!("{e}"))?)
            }
            "--slice-ms" => {
                args.slice_ms = Some(value("--slice-ms")?.parse().map_err(|e| format!("{e}"))?)
            }
            "-h" | "--help" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            other => return Err(format!("unknown argument {other:?}\n{USAGE}")),
        }
    }
    Ok(args)
}
