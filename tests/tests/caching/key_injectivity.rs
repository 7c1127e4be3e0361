//! Key rendering is injective: different argument tuples never render to the same key, even
//! with separators, `%`, braces, spaces, unicode and empty strings inside the values.
//!
//! Keys are rendered exactly as the macro does (`__private::KeyBuf` with the template's literals
//! and parts), and end to end through `#[cached]` functions.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};

use cache_runtime::__private::KeyBuf;
use cache_runtime::{Cache, KeyPart, cached};
use proptest::prelude::*;

/// `"a:{x}:{y}"`
fn render_colon<A: KeyPart + ?Sized, B: KeyPart + ?Sized>(x: &A, y: &B) -> String {
    let mut k = KeyBuf::new();
    k.lit("a:");
    k.part(x);
    k.lit(":");
    k.part(y);
    k.finish()
}

/// `"{x}-{y}"`: a separator outside `[A-Za-z0-9_.]` other than `:`.
fn render_dash<A: KeyPart + ?Sized, B: KeyPart + ?Sized>(x: &A, y: &B) -> String {
    let mut k = KeyBuf::new();
    k.part(x);
    k.lit("-");
    k.part(y);
    k.finish()
}

/// `"t:{{{x}}}/{y}"` (literal braces around a part).
fn render_braces<A: KeyPart + ?Sized, B: KeyPart + ?Sized>(x: &A, y: &B) -> String {
    let mut k = KeyBuf::new();
    k.lit("t:{");
    k.part(x);
    k.lit("}/");
    k.part(y);
    k.finish()
}

/// Strings built from the pieces most likely to collide: separators, escapes, encodings of
/// separators (`%3A`), braces, spaces, unicode, and the empty string.
fn tricky_string() -> impl Strategy<Value = String> {
    let pieces = vec![
        "", ":", "%", "%3A", "%25", "3A", "{", "}", "{}", " ", "-", "%2D", "~", "é", "🙂", "中",
        "a", "Z", "0", "_", ".", "None", "\0", "\n", "/",
    ];
    prop::collection::vec(prop::sample::select(pieces), 0..5).prop_map(|v| v.concat())
}

fn any_string() -> impl Strategy<Value = String> {
    prop_oneof![tricky_string(), any::<String>()]
}

/// Asserts that `render` maps distinct inputs to distinct keys.
fn assert_injective<T: std::fmt::Debug + Eq + std::hash::Hash + Clone>(
    inputs: &[T],
    render: impl Fn(&T) -> String,
) -> Result<(), TestCaseError> {
    let mut seen: HashMap<String, T> = HashMap::new();
    for input in inputs {
        let key = render(input);
        if let Some(prev) = seen.get(&key) {
            prop_assert_eq!(
                prev,
                input,
                "two different argument tuples rendered to the same key {:?}",
                key
            );
        }
        seen.insert(key, input.clone());
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn string_string_keys_are_injective(inputs in prop::collection::vec((any_string(), any_string()), 1..40)) {
        assert_injective(&inputs, |(a, b)| render_colon(a, b))?;
        assert_injective(&inputs, |(a, b)| render_dash(a.as_str(), b.as_str()))?;
        assert_injective(&inputs, |(a, b)| render_braces(a, b))?;
    }

    #[test]
    fn option_string_u64_keys_are_injective(
        inputs in prop::collection::vec((prop::option::of(any_string()), prop_oneof![0u64..3, any::<u64>()]), 1..40)
    ) {
        assert_injective(&inputs, |(a, b)| render_colon(a, b))?;
        assert_injective(&inputs, |(a, b)| render_dash(a, b))?;
    }

    #[test]
    fn string_i64_keys_are_injective(
        inputs in prop::collection::vec((any_string(), prop_oneof![-3i64..3, any::<i64>()]), 1..40)
    ) {
        assert_injective(&inputs, |(a, b)| render_colon(a, b))?;
        assert_injective(&inputs, |(a, b)| render_dash(a, b))?;
    }

    #[test]
    fn nested_option_keys_are_injective(
        inputs in prop::collection::vec((prop::option::of(prop::option::of(any_string())), any_string()), 1..40)
    ) {
        assert_injective(&inputs, |(a, b)| render_colon(a, b))?;
    }

    #[test]
    fn rendered_parts_never_contain_the_separator(s in any_string(), n in any::<i64>()) {
        let mut out = String::new();
        s.write_key_part(&mut out);
        n.write_key_part(&mut out);
        prop_assert!(!out.contains(':') && !out.contains('-') && !out.contains('{') && !out.contains(' '), "{out:?}");
    }
}

#[test]
fn known_collision_candidates_render_differently() {
    type Pair = (&'static str, &'static str);
    let pairs: &[(Pair, Pair)] = &[
        (("a:b", "c"), ("a", "b:c")),
        (("", ":"), (":", "")),
        (("%3A", ""), (":", "")),
        (("a%", "3Ab"), ("a", "%3Ab")),
        (("{x}", ""), ("{", "x}")),
        (("a b", ""), ("a", " b")),
        (("é", ""), ("%C3%A9", "")),
    ];
    for ((a1, b1), (a2, b2)) in pairs {
        assert_ne!(
            render_colon(*a1, *b1),
            render_colon(*a2, *b2),
            "({a1:?},{b1:?}) vs ({a2:?},{b2:?})"
        );
        assert_ne!(
            render_dash(*a1, *b1),
            render_dash(*a2, *b2),
            "({a1:?},{b1:?}) vs ({a2:?},{b2:?})"
        );
    }
    let none: Option<&str> = None;
    let options = [
        render_colon(&none, &0u64),
        render_colon(&Some(""), &0u64),
        render_colon(&Some("~"), &0u64),
        render_colon(&Some("None"), &0u64),
    ];
    let unique: std::collections::HashSet<_> = options.iter().collect();
    assert_eq!(
        unique.len(),
        options.len(),
        "None and Some(..) render apart: {options:?}"
    );
    assert_ne!(render_colon("x", &-1i64), render_colon("x", &1i64));
    assert_ne!(render_colon("x-1", &0i64), render_colon("x", &-10i64));
}

// ---- end to end through #[cached] ----

#[cached(key = "pair:{a}:{b}", ttl = 60, cache = cache)]
async fn pair(cache: &Cache, a: &str, b: &str, loads: &AtomicUsize) -> String {
    loads.fetch_add(1, SeqCst);
    format!("{a}|{b}")
}

#[cached(key = "opt:{a}:{b}", ttl = 60, cache = cache)]
async fn opt_pair(cache: &Cache, a: Option<&str>, b: u64, loads: &AtomicUsize) -> String {
    loads.fetch_add(1, SeqCst);
    format!("{a:?}|{b}")
}

#[tokio::test]
async fn cached_fns_keep_distinct_arguments_apart() {
    let cache = Cache::builder().memory().build().await.unwrap();
    let loads = AtomicUsize::new(0);
    let tuples = [
        ("a:b", "c"),
        ("a", "b:c"),
        ("", "a:b:c"),
        ("a:b:c", ""),
        ("%3A", "x"),
        (":", "x"),
        ("{", "}"),
        ("", ""),
    ];
    for (a, b) in tuples {
        assert_eq!(pair(&cache, a, b, &loads).await, format!("{a}|{b}"));
    }
    assert_eq!(
        loads.load(SeqCst),
        tuples.len(),
        "every distinct tuple is its own entry"
    );
    for (a, b) in tuples {
        assert_eq!(
            pair(&cache, a, b, &loads).await,
            format!("{a}|{b}"),
            "and each reads back its own value"
        );
    }
    assert_eq!(loads.load(SeqCst), tuples.len());

    let loads = AtomicUsize::new(0);
    let opts = [
        (None, 1),
        (Some(""), 1),
        (Some("~"), 1),
        (Some("None"), 1),
        (None, 2),
    ];
    for (a, b) in opts {
        assert_eq!(opt_pair(&cache, a, b, &loads).await, format!("{a:?}|{b}"));
    }
    for (a, b) in opts {
        assert_eq!(opt_pair(&cache, a, b, &loads).await, format!("{a:?}|{b}"));
    }
    assert_eq!(loads.load(SeqCst), opts.len());
}
