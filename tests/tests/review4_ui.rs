//! Review of issue 10: typed-invalidation forms a user would write that do not compile
//! (see `ui/review4/*.rs`).

#[test]
fn review4_ui() {
    let t = trybuild::TestCases::new();
    t.pass("ui/review4/*.rs");
}
