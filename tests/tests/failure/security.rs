//! Security against real servers: AUTH with `--requirepass`, ACL users with limited command and
//! key permissions, and `rediss://` TLS with a throwaway CA made by the `openssl` CLI.
//!
//! With the right credentials the cache works; with wrong ones (or missing permissions) every call
//! falls back to its loader, never panics, and the failure is counted. Neither password (right or
//! wrong) nor a cached value ever appears in a log line (captured from `tracing`, with redis-rs's
//! `log` records bridged in), in the `Debug` of `Cache` / `CacheBuilder`, or in the `Display` /
//! `Debug` of a `build()` error.
//!
//! Logs are captured with a thread-local subscriber (`tracing::subscriber::set_default`), so these
//! tests run on a current-thread runtime: every task the cache spawns (retry worker, lease
//! release, redis-rs connection driver) runs on the capturing thread.

use std::io::Write;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cache_runtime::{BreakerState, Cache, CacheBuilder, Error, cached, invalidates};
use cache_tests::tls::make_certificates;
use cache_tests::{RedisServer, ServerSpec, eventually, guard, scratch_dir};
use tracing_subscriber::fmt::MakeWriter;

const PASSWORD: &str = "Right-pw-7f3a9c21";
const WRONG_PASSWORD: &str = "Wrong-pw-0b1e2d55";
const ACL_PASSWORD: &str = "Acl-pw-5e6f7081";
const ACL_WRONG_PASSWORD: &str = "Acl-wrong-pw-93ab";
/// Every cached value contains this: it must never be logged.
const VALUE_SENTINEL: &str = "VALUE-SENTINEL-d41d8cd9";
const SECRETS: [&str; 5] = [
    PASSWORD,
    WRONG_PASSWORD,
    ACL_PASSWORD,
    ACL_WRONG_PASSWORD,
    VALUE_SENTINEL,
];

const GET: &str = "security.get";
const BOUND: Duration = Duration::from_secs(30);

#[cached(key = "sec:{id}", ttl = 300, name = "security.get", cache = cache)]
async fn get(cache: &Cache, id: u64, loads: &AtomicUsize) -> String {
    loads.fetch_add(1, SeqCst);
    format!("{VALUE_SENTINEL}-{id}")
}

#[cached(key = "secf:{id}", ttl = 300, name = "security.fallible", cache = cache)]
async fn fallible(cache: &Cache, id: u64, fail: bool) -> Result<String, String> {
    if fail {
        Err(format!("db error {id}"))
    } else {
        Ok(format!("{VALUE_SENTINEL}-f{id}"))
    }
}

#[invalidates("sec:{id}", cache = cache, name = "security.write")]
async fn write(cache: &Cache, id: u64) -> Result<u64, String> {
    Ok(id)
}

// ---------------------------------------------------------------------------------------------
// Log capture

/// A `MakeWriter` that appends every formatted event to a shared buffer.
#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for Capture {
    type Writer = Capture;
    fn make_writer(&'a self) -> Capture {
        self.clone()
    }
}

impl Capture {
    /// Captures every `tracing` event (and bridged `log` record) on this thread until the guard
    /// is dropped.
    fn install() -> (Capture, tracing::subscriber::DefaultGuard) {
        // Bridge redis-rs's `log` records into `tracing` (once per process; later calls fail).
        let _ = tracing_log::LogTracer::init();
        let capture = Capture::default();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(capture.clone())
            .with_ansi(false)
            .with_max_level(tracing::Level::TRACE)
            .finish();
        let guard = tracing::subscriber::set_default(subscriber);
        (capture, guard)
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }

    /// Asserts no secret appears in the captured lines, and that something was captured (so the
    /// check is not vacuous).
    fn assert_clean(&self, expect_some_line_containing: &str) {
        let text = self.text();
        for line in text.lines() {
            for secret in SECRETS {
                assert!(
                    !line.contains(secret),
                    "a log line leaks {secret:?}: {line}"
                );
            }
        }
        assert!(
            text.contains(expect_some_line_containing),
            "the log capture works (expected a line with {expect_some_line_containing:?}); got:\n{text}"
        );
    }
}

fn assert_no_secret(what: &str, shown: &str) {
    for secret in SECRETS {
        assert!(!shown.contains(secret), "{what} leaks {secret:?}: {shown}");
    }
}

fn assert_debug_clean(cache: &Cache) {
    assert_no_secret("Debug of Cache", &format!("{cache:?} {cache:#?}"));
}

/// Builds with `.require_connection()`, expects an error, and checks it shows no secret.
async fn assert_require_connection_fails(builder: CacheBuilder) {
    assert_no_secret(
        "Debug of CacheBuilder",
        &format!("{builder:?} {builder:#?}"),
    );
    let result = guard(
        "build() with require_connection",
        builder.require_connection().build(),
    )
    .await;
    let err = match result {
        Ok(cache) => panic!("require_connection must fail with these credentials, got {cache:?}"),
        Err(e) => e,
    };
    assert!(matches!(err, Error::Backend(_)), "a backend error: {err:?}");
    assert_no_secret("the build() error", &format!("{err} | {err:?} | {err:#?}"));
    if let Some(source) = std::error::Error::source(&err) {
        assert_no_secret(
            "the build() error's source",
            &format!("{source} | {source:?}"),
        );
    }
}

fn builder(url: String, namespace: &str) -> CacheBuilder {
    Cache::builder()
        .redis(url)
        .namespace(namespace)
        .command_timeout(Duration::from_millis(300))
        .connect_timeout(Duration::from_millis(300))
        .circuit_breaker(3, Duration::from_millis(100))
}

async fn build(builder: CacheBuilder) -> Cache {
    assert_no_secret(
        "Debug of CacheBuilder",
        &format!("{builder:?} {builder:#?}"),
    );
    let cache = guard("build()", builder.build())
        .await
        .unwrap_or_else(|e| panic!("build() without require_connection must not fail: {e}"));
    assert_debug_clean(&cache);
    cache
}

/// Calls that must all be answered by the loader (the backend refuses us), until at least one
/// backend error was counted.
async fn assert_falls_back_to_loader(cache: &Cache) {
    let loads = AtomicUsize::new(0);
    for id in 0..10u64 {
        let value = guard("a call with bad credentials", get(cache, id, &loads)).await;
        assert_eq!(value, format!("{VALUE_SENTINEL}-{id}"));
    }
    assert_eq!(loads.load(SeqCst), 10, "every call ran the loader");
    // A failed probe (after the 100 ms cool-down) or a refused command is counted as an error.
    eventually("a backend error is counted", BOUND, || async {
        assert!(get(cache, 99, &loads).await.ends_with("-99"));
        cache.stats().function(GET).backend_errors > 0
    })
    .await;
    let s = cache.stats().function(GET);
    assert_eq!(s.hits, 0, "nothing can be a hit: {s:?}");
    assert_eq!(
        guard("a write with bad credentials", write(cache, 1)).await,
        Ok(1),
        "a write returns its own result"
    );
    assert_eq!(fallible(cache, 1, true).await, Err("db error 1".to_owned()));
    assert_eq!(
        fallible(cache, 2, false).await,
        Ok(format!("{VALUE_SENTINEL}-f2"))
    );
}

/// Miss, hit, failing loader (lease release), invalidation: all without a backend error.
async fn assert_works(cache: &Cache) {
    let loads = AtomicUsize::new(0);
    assert_eq!(get(cache, 1, &loads).await, format!("{VALUE_SENTINEL}-1"));
    assert_eq!(get(cache, 1, &loads).await, format!("{VALUE_SENTINEL}-1"));
    assert_eq!(loads.load(SeqCst), 1, "the second call is a hit");
    assert_eq!(fallible(cache, 1, true).await, Err("db error 1".to_owned()));
    assert_eq!(
        fallible(cache, 1, false).await,
        Ok(format!("{VALUE_SENTINEL}-f1"))
    );
    assert_eq!(
        fallible(cache, 1, false).await,
        Ok(format!("{VALUE_SENTINEL}-f1"))
    );
    assert_eq!(write(cache, 1).await, Ok(1));
    assert_eq!(get(cache, 1, &loads).await, format!("{VALUE_SENTINEL}-1"));
    assert_eq!(
        loads.load(SeqCst),
        2,
        "the invalidation made the next call load"
    );
    let s = cache.stats();
    let (g, f, w) = (
        s.function(GET),
        s.function("security.fallible"),
        s.function("security.write"),
    );
    assert_eq!(
        (g.hits, g.loads, g.backend_errors, g.backend_skipped),
        (1, 2, 0, 0),
        "{g:?}"
    );
    assert_eq!(
        (f.hits, f.load_errors, f.backend_errors, f.backend_skipped),
        (1, 1, 0, 0),
        "{f:?}"
    );
    assert_eq!(
        (f.lock_waits, f.lock_timeouts),
        (0, 0),
        "the failed load released its lease, so the next call did not wait for it: {f:?}"
    );
    assert_eq!(
        (w.invalidations, w.backend_errors, w.invalidations_pending),
        (1, 0, 0),
        "{w:?}"
    );
    assert_eq!(cache.breaker_state(), BreakerState::Closed);
}

// ---------------------------------------------------------------------------------------------
// (a) --requirepass

#[tokio::test(flavor = "current_thread")]
async fn requirepass_right_password_works_wrong_password_falls_back_and_nothing_leaks() {
    let (logs, _guard) = Capture::install();
    let server = RedisServer::start_with(ServerSpec {
        args: vec!["--requirepass".into(), PASSWORD.into()],
        ..ServerSpec::default()
    });
    let port = server.port();

    // Right password.
    let good = build(builder(
        format!("redis://:{PASSWORD}@127.0.0.1:{port}/"),
        "pw",
    ))
    .await;
    assert_eq!(good.breaker_state(), BreakerState::Closed);
    assert_works(&good).await;
    assert_debug_clean(&good);
    // Also with the user name of the password-only setup (`default`) and a database number.
    let good_default = build(builder(
        format!("redis://default:{PASSWORD}@127.0.0.1:{port}/0"),
        "pw2",
    ))
    .await;
    assert_works(&good_default).await;

    // Wrong password: build() succeeds with the circuit open, calls go to the loader.
    let bad = build(builder(
        format!("redis://:{WRONG_PASSWORD}@127.0.0.1:{port}/"),
        "pw",
    ))
    .await;
    assert_eq!(
        bad.breaker_state(),
        BreakerState::Open,
        "authentication failed at start-up"
    );
    assert_falls_back_to_loader(&bad).await;
    assert_debug_clean(&bad);

    // No password at all against a password-protected server.
    let none = build(builder(format!("redis://127.0.0.1:{port}/"), "pw")).await;
    assert_falls_back_to_loader(&none).await;

    // require_connection: the errors never show a password.
    for url in [
        format!("redis://:{WRONG_PASSWORD}@127.0.0.1:{port}/"),
        format!("redis://default:{WRONG_PASSWORD}@127.0.0.1:{port}/"),
        format!("redis://127.0.0.1:{port}/"),
    ] {
        assert_require_connection_fails(builder(url, "pw")).await;
    }
    // A server that is down, with the right password in the URL.
    let down = cache_tests::reserve_free_port();
    assert_require_connection_fails(builder(
        format!("redis://:{PASSWORD}@127.0.0.1:{down}/"),
        "pw",
    ))
    .await;
    // A malformed URL holding a password.
    assert_require_connection_fails(builder(
        format!("redis://:{PASSWORD}@127.0.0.1:notaport/"),
        "pw",
    ))
    .await;

    logs.assert_clean("circuit");
}

// ---------------------------------------------------------------------------------------------
// (b) ACL users

/// Exactly what the runtime needs, no more: `GET`, `SET` (lease `SET NX PX`), `EVALSHA` (plus
/// `SCRIPT LOAD` on a server that does not know the script yet: redis-rs's `Script`), the
/// commands called inside the three Lua scripts (`GET`, `SET`, `DEL`, `PEXPIRE`: ACLs apply inside
/// scripts),
/// `UNLINK` and `PING`; keys limited to the cache's namespace. (`EVAL` is never issued.)
fn app_rules() -> Vec<String> {
    let mut rules = vec![
        "on".to_owned(),
        format!(">{ACL_PASSWORD}"),
        "~acl:*".to_owned(),
    ];
    let commands = [
        "+get",
        "+set",
        "+del",
        "+pexpire",
        "+evalsha",
        "+script|load",
        "+unlink",
        "+ping",
    ];
    rules.extend(commands.map(String::from));
    rules
}

async fn acl_server() -> RedisServer {
    let server = RedisServer::start();
    let raw = server.raw().await;
    let _: () = raw
        .cmd(redis::cmd("ACL").arg("SETUSER").arg("app").arg(app_rules()))
        .await;
    // A user that may only PING.
    let _: () = raw
        .cmd(redis::cmd("ACL").arg("SETUSER").arg("pinger").arg(&[
            "on",
            &format!(">{ACL_PASSWORD}"),
            "~*",
            "+ping",
        ]))
        .await;
    server
}

#[tokio::test(flavor = "current_thread")]
async fn acl_user_with_the_needed_permissions_works() {
    let (logs, _guard) = Capture::install();
    let server = acl_server().await;
    let port = server.port();
    let cache = build(builder(
        format!("redis://app:{ACL_PASSWORD}@127.0.0.1:{port}/"),
        "acl",
    ))
    .await;
    assert_eq!(cache.breaker_state(), BreakerState::Closed);
    assert_works(&cache).await;
    assert_debug_clean(&cache);
    let raw = server.raw().await;
    assert!(
        raw.get(&cache.full_key("sec:1")).await.is_some(),
        "stored as user `app`"
    );
    let denied: Vec<redis::Value> = raw.cmd(redis::cmd("ACL").arg("LOG")).await;
    assert!(
        denied.is_empty(),
        "no ACL denial for the `app` user: {denied:?}"
    );
    logs.assert_clean("DEBUG");
}

#[tokio::test(flavor = "current_thread")]
async fn acl_user_without_permissions_or_with_wrong_password_falls_back_to_the_loader() {
    let (logs, _guard) = Capture::install();
    let server = acl_server().await;
    let port = server.port();

    // Only +ping: build() succeeds (PING is allowed), every GET is refused (NOPERM).
    let pinger = build(builder(
        format!("redis://pinger:{ACL_PASSWORD}@127.0.0.1:{port}/"),
        "acl",
    ))
    .await;
    assert_eq!(
        pinger.breaker_state(),
        BreakerState::Closed,
        "PING works for this user"
    );
    assert_falls_back_to_loader(&pinger).await;
    assert_debug_clean(&pinger);

    // The right user, but keys outside its `~acl:*` pattern.
    let other_ns = build(builder(
        format!("redis://app:{ACL_PASSWORD}@127.0.0.1:{port}/"),
        "other",
    ))
    .await;
    assert_falls_back_to_loader(&other_ns).await;
    let raw = server.raw().await;
    let dbsize: i64 = raw.cmd(&redis::cmd("DBSIZE")).await;
    assert_eq!(dbsize, 0, "nothing was written outside the permitted keys");

    // Wrong password for an existing user.
    let wrong = build(builder(
        format!("redis://app:{ACL_WRONG_PASSWORD}@127.0.0.1:{port}/"),
        "acl",
    ))
    .await;
    assert_eq!(wrong.breaker_state(), BreakerState::Open);
    assert_falls_back_to_loader(&wrong).await;
    assert_require_connection_fails(builder(
        format!("redis://app:{ACL_WRONG_PASSWORD}@127.0.0.1:{port}/"),
        "acl",
    ))
    .await;
    assert_require_connection_fails(builder(
        format!("redis://nosuchuser:{ACL_PASSWORD}@127.0.0.1:{port}/"),
        "acl",
    ))
    .await;

    logs.assert_clean("cache backend error");
}

/// An ACL user that may not run `DEL` inside the release script: a failing loader's lease
/// cannot be released. The caller still gets the loader's error (never a cache error), and the
/// failed release must be counted like every other failed backend call (README, "Failure
/// behaviour": "the failure is counted (`backend_errors`)").
#[tokio::test(flavor = "current_thread")]
async fn acl_user_without_del_gets_loader_errors_and_the_failed_release_is_counted() {
    let (logs, _guard) = Capture::install();
    let server = RedisServer::start();
    let raw = server.raw().await;
    let rules: Vec<String> = app_rules().into_iter().filter(|r| r != "+del").collect();
    let _: () = raw
        .cmd(redis::cmd("ACL").arg("SETUSER").arg("app").arg(&rules))
        .await;
    let port = server.port();
    let cache = build(
        builder(
            format!("redis://app:{ACL_PASSWORD}@127.0.0.1:{port}/"),
            "acl",
        )
        .lock_ms(300),
    )
    .await;
    assert_eq!(
        guard("a failing loader", fallible(&cache, 1, true)).await,
        Err("db error 1".to_owned()),
        "the loader's own error, unchanged"
    );
    // The next call still gets the loader's value (after waiting out the unreleased lease).
    assert_eq!(
        guard(
            "a call after the failed release",
            fallible(&cache, 1, false)
        )
        .await,
        Ok(format!("{VALUE_SENTINEL}-f1"))
    );
    let f = cache.stats().function("security.fallible");
    assert_eq!(f.load_errors, 1, "{f:?}");
    assert!(
        f.backend_errors >= 1,
        "the refused lease release (NOPERM on DEL inside the script) is a failed backend call \
         and must be counted in backend_errors: {f:?}"
    );
    logs.assert_clean("DEBUG");
}

// ---------------------------------------------------------------------------------------------
// (c) TLS

/// A TLS-only `redis-server` (plain port disabled) with a fresh certificate; returns it and the
/// CA certificate. Fails loudly when this `redis-server` was built without TLS.
fn tls_server() -> (RedisServer, Vec<u8>) {
    let dir = scratch_dir();
    let ca = make_certificates(&dir);
    let file = |name: &str| dir.join(name).to_string_lossy().into_owned();
    let spec = ServerSpec {
        tls: true,
        args: vec![
            "--tls-cert-file".into(),
            file("server.crt"),
            "--tls-key-file".into(),
            file("server.key"),
            "--tls-ca-cert-file".into(),
            file("ca.crt"),
            "--tls-auth-clients".into(),
            "no".into(),
        ],
        dir: Some(dir),
        ..ServerSpec::default()
    };
    match RedisServer::try_start_with(spec) {
        Ok(server) => (server, ca),
        Err(e) => {
            let text = e.to_string();
            if text.contains("Bad directive") || text.contains("TLS") || text.contains("tls") {
                panic!(
                    "this redis-server cannot serve TLS (was it built without BUILD_TLS=yes?); \
                     the rediss:// test needs one that can:\n{text}"
                );
            }
            panic!("the TLS redis-server did not start: {text}");
        }
    }
}

fn tls_builder(port: u16) -> CacheBuilder {
    builder(format!("rediss://127.0.0.1:{port}/"), "tls")
}

#[tokio::test(flavor = "current_thread")]
async fn tls_rediss_cache_with_private_ca_works_end_to_end() {
    let (logs, _guard) = Capture::install();
    let (server, ca) = tls_server();
    let port = server.port();
    let cache = guard(
        "build() over TLS",
        tls_builder(port)
            .tls_root_ca_pem(ca.clone())
            .require_connection()
            .build(),
    )
    .await
    .unwrap_or_else(|e| panic!("a rediss:// cache trusting the test CA must connect: {e}"));
    assert_eq!(cache.breaker_state(), BreakerState::Closed);
    assert_works(&cache).await;

    // The value really is in the TLS server: read it with a separate TLS client.
    let client = redis::Client::build_with_tls(
        format!("rediss://127.0.0.1:{port}/"),
        redis::TlsCertificates {
            client_tls: None,
            root_cert: Some(ca),
        },
    )
    .expect("TLS client");
    let mut conn = guard(
        "raw TLS connection",
        client.get_multiplexed_async_connection(),
    )
    .await
    .expect("raw TLS connection");
    let stored: Option<Vec<u8>> = redis::cmd("GET")
        .arg(cache.full_key("sec:1"))
        .query_async(&mut conn)
        .await
        .expect("raw GET over TLS");
    assert!(stored.is_some(), "the entry is stored in the TLS server");
    logs.assert_clean("DEBUG");
}

#[tokio::test(flavor = "current_thread")]
async fn tls_server_with_an_untrusted_certificate_is_refused() {
    let (logs, _guard) = Capture::install();
    let (server, _ca) = tls_server();
    let port = server.port();
    // The system store does not trust the throwaway CA: the handshake must fail.
    assert_require_connection_fails(tls_builder(port)).await;
    let cache = build(tls_builder(port)).await;
    assert_eq!(
        cache.breaker_state(),
        BreakerState::Open,
        "the handshake failed at start-up"
    );
    assert_falls_back_to_loader(&cache).await;
    // A plain-text client on the TLS port is refused as well.
    let plain = build(builder(format!("redis://127.0.0.1:{port}/"), "tls")).await;
    assert_falls_back_to_loader(&plain).await;
    logs.assert_clean("circuit");
}
