//! The programmatic API and its options: `get_or_load` and friends with `EntryOptions`, every
//! pair of options on every backend, and the options' edges.

mod option_edges;
mod option_pairs;
mod programmatic;
