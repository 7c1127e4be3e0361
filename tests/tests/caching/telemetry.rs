//! The `metrics` feature's tracing side: every call of a `#[cached]` function runs in one
//! span (`cached`, target `cache_runtime::call`) whose fields say which function it was and
//! how it was answered. A layer records every closed span; each test runs on a current-thread
//! runtime with that subscriber as the thread's default, so it sees only its own calls.
//! (The counters of the same feature are scraped over HTTP in the catalog's
//! `tests/catalog_metrics.rs`.)

use std::sync::{Arc, Mutex};
use std::time::Duration;

use cache_runtime::{Cache, cached};
use cache_tests::{Backend, TestEnv, eventually};
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing_subscriber::layer::{Context, Layer, SubscriberExt as _};
use tracing_subscriber::registry::LookupSpan;

/// The fields of one closed `cached` span.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
struct Call {
    function: String,
    outcome: Option<String>,
    degraded: bool,
}

impl Visit for Call {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.record_str(field, &format!("{value:?}"));
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        match field.name() {
            "fn" => self.function = value.to_owned(),
            "outcome" => self.outcome = Some(value.to_owned()),
            _ => {}
        }
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        if field.name() == "degraded" {
            self.degraded = value;
        }
    }
}

#[derive(Clone, Default)]
struct Calls(Arc<Mutex<Vec<Call>>>);

impl Calls {
    fn take(&self) -> Vec<Call> {
        std::mem::take(&mut *self.0.lock().unwrap())
    }
}

impl<S: tracing::Subscriber + for<'a> LookupSpan<'a>> Layer<S> for Calls {
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        if attrs.metadata().target() != "cache_runtime::call" {
            return;
        }
        let mut call = Call::default();
        attrs.record(&mut call);
        if let Some(span) = ctx.span(id) {
            span.extensions_mut().insert(call);
        }
    }
    fn on_record(&self, id: &Id, values: &Record<'_>, ctx: Context<'_, S>) {
        if let Some(span) = ctx.span(id)
            && let Some(call) = span.extensions_mut().get_mut::<Call>()
        {
            values.record(call);
        }
    }
    fn on_close(&self, id: Id, ctx: Context<'_, S>) {
        if let Some(span) = ctx.span(&id)
            && let Some(call) = span.extensions_mut().remove::<Call>()
        {
            self.0.lock().unwrap().push(call);
        }
    }
}

fn record() -> (Calls, tracing::subscriber::DefaultGuard) {
    let calls = Calls::default();
    let subscriber = tracing_subscriber::registry().with(calls.clone());
    (calls, tracing::subscriber::set_default(subscriber))
}

fn call(function: &str, outcome: &str, degraded: bool) -> Call {
    Call {
        function: function.into(),
        outcome: Some(outcome.into()),
        degraded,
    }
}

#[cached(key = "t:user:{id}", ttl = 300, cache = cache, name = "t.user")]
async fn user(cache: &Cache, id: u64) -> Option<String> {
    (id != 0).then(|| format!("user {id}"))
}

#[cached(key = "t:fails:{id}", ttl = 300, cache = cache, name = "t.fails")]
async fn fails(cache: &Cache, id: u64) -> Result<u64, String> {
    Err(format!("no {id}"))
}

#[cached(key = "t:stale:{id}", ttl = 1, stale = 300, cache = cache, name = "t.stale")]
async fn stale(cache: &Cache, id: u64) -> u64 {
    id
}

async fn outcomes_on(backend: Backend) {
    let env = TestEnv::new(backend).await;
    let cache = &env.cache;
    let (calls, _guard) = record();

    assert_eq!(user(cache, 1).await.as_deref(), Some("user 1"));
    assert_eq!(user(cache, 1).await.as_deref(), Some("user 1"));
    assert_eq!(user(cache, 0).await, None);
    assert_eq!(user(cache, 0).await, None);
    assert!(fails(cache, 1).await.is_err());
    assert_eq!(
        calls.take(),
        [
            call("t.user", "miss", false),
            call("t.user", "hit", false),
            call("t.user", "miss", false),
            call("t.user", "negative_hit", false),
            call("t.fails", "load_error", false),
        ]
    );

    // In the grace window (after `ttl = 1`), the stale value is served at once.
    assert_eq!(stale(cache, 7).await, 7);
    eventually(
        "a call in the grace window",
        Duration::from_secs(10),
        || async {
            stale(cache, 7).await;
            calls
                .take()
                .iter()
                .any(|c| c.function == "t.stale" && c.outcome.as_deref() == Some("stale"))
        },
    )
    .await;
}

#[tokio::test]
async fn one_span_per_call_with_its_outcome_memory() {
    outcomes_on(Backend::Memory).await;
}

#[tokio::test]
async fn one_span_per_call_with_its_outcome_redis() {
    outcomes_on(Backend::Redis).await;
}

#[tokio::test]
async fn a_call_without_the_backend_is_marked_degraded() {
    let mut env = TestEnv::new(Backend::Redis).await;
    let (calls, _guard) = record();
    assert_eq!(user(&env.cache, 5).await.as_deref(), Some("user 5"));
    env.server().kill();
    // The loader answers; the span says the backend was not there.
    assert_eq!(user(&env.cache, 5).await.as_deref(), Some("user 5"));
    assert_eq!(
        calls.take(),
        [call("t.user", "miss", false), call("t.user", "miss", true)]
    );
}

mod callers_span {
    use std::sync::{Arc, Mutex};

    use cache_runtime::{Cache, cached, invalidates};
    use cache_tests::{Backend, TestEnv};

    // ---------------------------------------------------------------------------------------
    // With the `metrics` feature, the library records only into the spans it creates: a backend
    // fault in an `#[invalidates]` call records nothing into the caller's span (`degraded`), and
    // with the `cached` span disabled (a subscriber at INFO, the usual production level; the span
    // is DEBUG) a call's `outcome` is not written into the caller's span either.

    #[invalidates("span:{id}", cache = cache, name = "span.inv")]
    async fn forget(cache: &Cache, id: u64) {}

    #[cached(key = "span:{id}", ttl = 60, cache = cache, name = "span.get")]
    async fn remember(cache: &Cache, id: u64) -> u64 {
        id
    }

    mod capture {
        use super::*;
        use tracing::field::{Field, Visit};
        use tracing::span::{Id, Record};
        use tracing_subscriber::layer::{Context, Layer};
        use tracing_subscriber::registry::LookupSpan;

        /// Every value recorded (after creation) into a span named `request`.
        #[derive(Clone, Default)]
        pub struct Recorded(pub Arc<Mutex<Vec<String>>>);

        struct V<'a>(&'a mut Vec<String>);
        impl Visit for V<'_> {
            fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
                self.0.push(format!("{}={value:?}", field.name()));
            }
        }

        impl<S: tracing::Subscriber + for<'a> LookupSpan<'a>> Layer<S> for Recorded {
            fn on_record(&self, id: &Id, values: &Record<'_>, ctx: Context<'_, S>) {
                if let Some(span) = ctx.span(id)
                    && span.name() == "request"
                {
                    let mut out = Vec::new();
                    values.record(&mut V(&mut out));
                    self.0.lock().unwrap().extend(out);
                }
            }
        }
    }

    #[tokio::test]
    async fn invalidation_failure_is_not_recorded_into_the_callers_span() {
        use tracing::Instrument as _;
        use tracing_subscriber::layer::SubscriberExt as _;

        let recorded = capture::Recorded::default();
        let subscriber = tracing_subscriber::registry().with(recorded.clone());
        let _guard = tracing::subscriber::set_default(subscriber);

        let mut env = TestEnv::new(Backend::Redis).await;
        assert_eq!(remember(&env.cache, 1).await, 1);
        env.server().kill();

        // The application's own request span, which happens to have these fields.
        let request = tracing::info_span!(
            "request",
            outcome = tracing::field::Empty,
            degraded = tracing::field::Empty
        );
        async {
            forget(&env.cache, 1).await;
            forget(&env.cache, 2).await;
            forget(&env.cache, 3).await;
            forget(&env.cache, 4).await;
        }
        .instrument(request)
        .await;
        let stats = env.cache.stats();
        let s = stats.function("span.inv");
        assert!(s.backend_errors + s.backend_skipped > 0, "{s:?}");
        // The library wrote nothing into a span it did not create.
        assert_eq!(*recorded.0.lock().unwrap(), Vec::<String>::new());
    }

    #[tokio::test]
    async fn outcome_is_not_recorded_into_the_callers_span_when_the_call_span_is_disabled() {
        use tracing::Instrument as _;
        use tracing_subscriber::layer::SubscriberExt as _;

        let recorded = capture::Recorded::default();
        let subscriber = tracing_subscriber::registry()
            .with(recorded.clone())
            .with(tracing_subscriber::filter::LevelFilter::INFO);
        let _guard = tracing::subscriber::set_default(subscriber);

        let env = TestEnv::new(Backend::Memory).await;
        let request = tracing::info_span!(
            "request",
            outcome = tracing::field::Empty,
            degraded = tracing::field::Empty
        );
        async {
            assert_eq!(remember(&env.cache, 7).await, 7);
            assert_eq!(remember(&env.cache, 7).await, 7);
        }
        .instrument(request)
        .await;
        assert_eq!(*recorded.0.lock().unwrap(), Vec::<String>::new());
    }
}
