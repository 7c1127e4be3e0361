//! Runnable examples for `cache-runtime`; see `src/bin/`.
