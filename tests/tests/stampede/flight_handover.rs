//! What a flight leader hands its followers on the miss path: never a value or a result that an
//! invalidation completed before the follower started could have voided (a leader that found
//! another process's value, a leader in Degraded mode), and for a value that cannot be encoded,
//! one load per caller and nobody stuck.
//!
//! Synchronisation is by gates (a semaphore the loader waits on, a condvar a decode waits on)
//! and by waiting for counters, never by sleeping. "Processes" are separate `Cache` handles on
//! one Redis server (each has its own in-process flight table).

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
use std::sync::{Arc, Condvar, Mutex};
use std::task::Poll;
use std::time::Duration;

use cache_runtime::{Cache, cached, invalidates};
use cache_tests::{Db, Proxy, RedisServer, eventually, guard};
use serde::{Deserialize, Deserializer, Serialize};

/// A std gate that one decode of [`Ver`] blocks on (decoding is synchronous user code; a large
/// value takes a while to decode, this makes "a while" deterministic).
struct DecodeGate {
    armed: AtomicBool,
    entered: AtomicBool,
    open: Mutex<bool>,
    cv: Condvar,
}

static DECODE_GATE: DecodeGate = DecodeGate {
    armed: AtomicBool::new(false),
    entered: AtomicBool::new(false),
    open: Mutex::new(false),
    cv: Condvar::new(),
};

impl DecodeGate {
    fn hit(&self) {
        if self.armed.swap(false, SeqCst) {
            self.entered.store(true, SeqCst);
            // Hand this worker's queued tasks to another thread while blocked.
            tokio::task::block_in_place(|| {
                let mut open = self.open.lock().unwrap();
                while !*open {
                    open = self.cv.wait(open).unwrap();
                }
            });
        }
    }
    fn release(&self) {
        *self.open.lock().unwrap() = true;
        self.cv.notify_all();
    }
}

/// A version number whose decoding passes through [`DECODE_GATE`].
#[derive(Serialize, Debug, Clone, Copy, PartialEq, Eq)]
struct Ver(u64);

impl<'de> Deserialize<'de> for Ver {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = u64::deserialize(d)?;
        DECODE_GATE.hit();
        Ok(Ver(v))
    }
}

fn stats(cache: &Cache, name: &str) -> cache_runtime::FnStats {
    cache.stats().function(name)
}

/// A call driven by [`drive_until`]: parked at an `.await`, or already finished.
enum Driven<F: Future> {
    Parked(Pin<Box<F>>),
    Done(F::Output),
}

impl<F: Future> Driven<F> {
    /// The call's output (driving it to the end if parked).
    async fn finish(self, what: &str) -> F::Output {
        match self {
            Driven::Parked(fut) => guard(what, fut).await,
            Driven::Done(out) => out,
        }
    }
}

/// Polls `fut` on this task until `ready_to_stop` holds right after a poll that returned
/// `Pending` (so `fut` is parked at its next `.await`), and returns it still pending. A call
/// may also finish first: on a loaded machine the thread polling it can be preempted between
/// sending a request and polling for its reply, so that several round trips complete within
/// one poll. That is fine for the scenarios here: the other call it could wrongly receive a
/// result from is held until this returns, so a call that finished did so without it.
async fn drive_until<F: Future>(
    mut fut: Pin<Box<F>>,
    mut ready_to_stop: impl FnMut() -> bool,
) -> Driven<F> {
    let outer = async {
        loop {
            let p = std::future::poll_fn(|cx| Poll::Ready(fut.as_mut().poll(cx))).await;
            if let Poll::Ready(out) = p {
                return Some(out);
            }
            if ready_to_stop() {
                return None;
            }
            tokio::task::yield_now().await;
        }
    };
    match guard("driving a call to its wait", outer).await {
        Some(out) => Driven::Done(out),
        None => Driven::Parked(fut),
    }
}

// ---------------------------------------------------------------------------------------
// A flight leader that found ANOTHER process's value does not hand it to followers that
// joined after an invalidation (made in another process) had deleted that value.
// ---------------------------------------------------------------------------------------

#[cached(key = "found:{id}", ttl = 300, cache = cache)]
async fn found_read(cache: &Cache, id: u64, db: &Db) -> Ver {
    let _ = id;
    Ver(db.load_version().await)
}

#[invalidates("found:{id}", cache = cache)]
async fn found_write(cache: &Cache, id: u64, db: &Db) {
    let _ = id;
    db.bump();
}

const FOUND: &str = "stampede::flight_handover::found_read";

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn leader_that_found_another_process_value_does_not_hand_it_to_later_callers() {
    let server = RedisServer::start();
    let mk = || async {
        Cache::builder()
            .redis(server.url())
            .namespace("found")
            .build()
            .await
            .unwrap()
    };
    // Process A (the reader under test) and process B (loads first, then writes).
    let (a, b) = (mk().await, mk().await);
    // Whatever fails below, never leave a runtime worker blocked in a decode.
    struct OpenOnDrop;
    impl Drop for OpenOnDrop {
        fn drop(&mut self) {
            DECODE_GATE.release();
        }
    }
    let _open = OpenOnDrop;
    let db = Arc::new(Db::gated());

    // B takes the lease and loads version 0 (stopped at the gate).
    let pb = {
        let (b, db) = (b.clone(), db.clone());
        tokio::spawn(async move { found_read(&b, 1, &db).await })
    };
    let d = db.clone();
    eventually("B is loading", Duration::from_secs(10), move || {
        let d = d.clone();
        async move { d.loads() == 1 }
    })
    .await;
    // A's first call L leads A's flight and waits for B's lease.
    let pl = {
        let (a, db) = (a.clone(), db.clone());
        tokio::spawn(async move { found_read(&a, 1, &db).await })
    };
    let a2 = a.clone();
    eventually(
        "A waits for B's lease",
        Duration::from_secs(10),
        move || {
            let a2 = a2.clone();
            async move { stats(&a2, FOUND).lock_waits == 1 }
        },
    )
    .await;
    // B stores version 0; L finds it and is decoding it (held there).
    DECODE_GATE.armed.store(true, SeqCst);
    db.open();
    assert_eq!(guard("B's call", pb).await.unwrap(), Ver(0));
    eventually(
        "L is decoding B's value",
        Duration::from_secs(10),
        || async { DECODE_GATE.entered.load(SeqCst) },
    )
    .await;

    // The write, in process B: version 1, and the key is deleted in Redis.
    found_write(&b, 1, &db).await;
    assert_eq!(
        stats(&b, "stampede::flight_handover::found_write").invalidations,
        1
    );

    // A call in A that starts after the write returned: its GET finds nothing; it joins L's
    // flight (L has not detached it).
    let a3 = a.clone();
    let x = drive_until(Box::pin(found_read(&a, 1, &db)), move || {
        stats(&a3, FOUND).misses == 2
    })
    .await;
    DECODE_GATE.release();
    assert_eq!(
        guard("L", pl).await.unwrap(),
        Ver(0),
        "L started before the write"
    );
    let got = x.finish("X").await;
    assert_eq!(
        got,
        Ver(1),
        "a call that started after the invalidation returned got the value it deleted \
         (stats A {:?})",
        stats(&a, FOUND)
    );
}

// ---------------------------------------------------------------------------------------
// A Degraded leader (its own backend call failed once) does not hand its lease-less result
// to followers whose own GET reached Redis after another process's invalidation.
// ---------------------------------------------------------------------------------------

#[cached(key = "degraded:{id}", ttl = 300, cache = cache)]
async fn degraded_read(cache: &Cache, id: u64, db: &Db) -> u64 {
    let _ = id;
    db.load_version().await
}

#[invalidates("degraded:{id}", cache = cache)]
async fn degraded_write(cache: &Cache, id: u64, db: &Db) {
    let _ = id;
    db.bump();
}

const DEGRADED: &str = "stampede::flight_handover::degraded_read";

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn degraded_leader_does_not_hand_old_result_to_calls_that_reached_redis_after_a_write() {
    let server = RedisServer::start();
    let proxy = Proxy::start(server.port()).await;
    // Process A reaches Redis through a proxy (to fail one call); process B directly.
    let a = Cache::builder()
        .redis(proxy.url())
        .namespace("degraded")
        .command_timeout(Duration::from_millis(300))
        .build()
        .await
        .unwrap();
    let b = Cache::builder()
        .redis(server.url())
        .namespace("degraded")
        .build()
        .await
        .unwrap();
    a.invalidate("warm").await.unwrap(); // connected
    let db = Arc::new(Db::gated());

    // L's GET is lost (partition; it times out): L leads A's flight in Degraded mode and
    // loads version 0 without a lease (stopped at the gate).
    proxy.partition();
    let pl = {
        let (a, db) = (a.clone(), db.clone());
        tokio::spawn(async move { degraded_read(&a, 1, &db).await })
    };
    let d = db.clone();
    eventually("L is loading", Duration::from_secs(10), move || {
        let d = d.clone();
        async move { d.loads() == 1 }
    })
    .await;
    proxy.heal();
    // A reaches Redis again.
    let a2 = a.clone();
    eventually(
        "A reaches Redis again",
        Duration::from_secs(10),
        move || {
            let a2 = a2.clone();
            async move { a2.invalidate("warm").await.is_ok() }
        },
    )
    .await;
    let faults_before = {
        let s = stats(&a, DEGRADED);
        s.backend_errors + s.backend_skipped
    };

    // The write in process B: version 1; the UNLINK reaches Redis.
    degraded_write(&b, 1, &db).await;
    assert_eq!(
        stats(&b, "stampede::flight_handover::degraded_write").invalidations,
        1
    );

    // X starts after the write returned; its GET reaches Redis (nothing there) and it joins
    // L's flight.
    let a3 = a.clone();
    let x = drive_until(Box::pin(degraded_read(&a, 1, &db)), move || {
        stats(&a3, DEGRADED).misses == 2
    })
    .await;
    db.open();
    assert_eq!(
        guard("L", pl).await.unwrap(),
        0,
        "L started before the write"
    );
    let got = x.finish("X").await;
    let s = stats(&a, DEGRADED);
    assert_eq!(
        s.backend_errors + s.backend_skipped,
        faults_before,
        "X reached Redis without a fault: {s:?}"
    );
    assert_eq!(
        got, 1,
        "a call that reached Redis after the invalidation returned got the result of a load \
         that started before the write ({s:?})"
    );
}

// ---------------------------------------------------------------------------------------
// A value that cannot be serialized (the loader succeeded) cannot be stored nor
// handed over as bytes: it costs one load per caller (documented in the README); no caller
// fails, hangs or gets a wrong value.
// ---------------------------------------------------------------------------------------

/// Serializes to an error (as a `HashMap` with non-string keys does in JSON).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
struct NoJson(u64);

impl Serialize for NoJson {
    fn serialize<S: serde::Serializer>(&self, _s: S) -> Result<S::Ok, S::Error> {
        Err(serde::ser::Error::custom("not representable"))
    }
}

#[cached(key = "unencodable:{id}", ttl = 300, cache = cache)]
async fn unencodable_read(cache: &Cache, id: u64, db: &Db) -> NoJson {
    let _ = id;
    NoJson(db.load_version().await)
}

const UNENCODABLE: &str = "stampede::flight_handover::unencodable_read";

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn unencodable_value_is_loaded_once_per_caller() {
    let server = RedisServer::start();
    let cache = Cache::builder()
        .redis(server.url())
        .namespace("unencodable")
        .build()
        .await
        .unwrap();
    let db = Arc::new(Db::gated());
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let (c, db) = (cache.clone(), db.clone());
        tasks.push(tokio::spawn(
            async move { unencodable_read(&c, 1, &db).await },
        ));
    }
    let c = cache.clone();
    eventually("all callers missed", Duration::from_secs(10), move || {
        let c = c.clone();
        async move { stats(&c, UNENCODABLE).misses == 8 }
    })
    .await;
    db.open();
    for t in tasks {
        assert_eq!(guard("caller", t).await.unwrap(), NoJson(0));
    }
    assert_eq!(
        db.loads(),
        8,
        "each caller loads its own (unshareable) value once ({:?})",
        stats(&cache, UNENCODABLE)
    );
}
