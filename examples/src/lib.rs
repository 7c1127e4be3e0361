//! Runnable examples for `cache-runtime`.
//!
//! * `src/bin/quickstart.rs`: hits, a stampede coalesced into one load, negative caching and
//!   invalidation, printed step by step (`cargo run -p examples --bin quickstart`).
//! * [`catalog`] and `src/bin/catalog.rs`: a product-catalog HTTP service (axum + SQLite)
//!   with `#[cached]` reads and an `#[invalidates]` write (`cargo run -p examples --bin catalog`).
//! * `src/bin/bench.rs`: the benchmark harness
//!   (`cargo run --release -p examples --bin bench`); see `docs/bench.md`.

pub mod catalog;
