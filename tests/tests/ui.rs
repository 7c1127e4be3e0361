//! Compile-time checks of `#[cached]` / `#[invalidates]` (trybuild).
//!
//! `ui/fail/*.rs` must fail to compile with exactly the messages in the
//! matching `.stderr` files; `ui/pass/*.rs` must compile. Regenerate the
//! `.stderr` files with `TRYBUILD=overwrite cargo test -p cache-tests --test ui`
//! and review the diff.

#[test]
fn ui() {
    let t = trybuild::TestCases::new();
    t.compile_fail("ui/fail/*.rs");
    t.pass("ui/pass/*.rs");
}
