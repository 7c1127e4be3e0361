//! Cache-aside basics and what a user sees of them: hits and loads, negative entries, where
//! `#[cached]` goes (shapes), injective keys, limits, stats, tracing spans, startup with Redis
//! down, and the commands sent to the server.

mod basic;
mod commandstats;
mod key_injectivity;
mod limits;
mod negative;
mod shapes;
mod startup;
mod stats;
mod telemetry;
