//! Test harness for the `cache-runtime` integration tests.
//!
//! The tests are grouped by area, one test binary each (`tests/tests/<area>/main.rs` and its
//! modules): `caching` (hits, negative entries, shapes, keys, limits, stats, spans, startup,
//! the commands sent), `stampede` (one load per key, flights, leases, the two promises),
//! `freshness`, `invalidation` (and tags), `near`, `failure` (breaker, outages, security),
//! `cluster`, `api` (the programmatic API and the option matrix), `policies`, `history` (the
//! randomized checker) and `ui` (trybuild).
//!
//! The harness, by module (the main items are re-exported here):
//!
//! * [`server`]: [`RedisServer`] starts a private `redis-server` process on a free loopback
//!   port, with its own temporary directory and no persistence, waits until it answers `PING`,
//!   and kills it on drop. Every test starts its own server, so tests run in parallel and never
//!   touch a Redis that happens to listen on 6379. The server can be killed, paused
//!   (`SIGSTOP`), resumed and restarted on the same port to exercise failure behaviour.
//! * [`raw`]: [`Raw`] is a plain redis-rs connection for looking behind the cache's back
//!   (`GET`, `PTTL`, `INCR`, ...).
//! * [`proxy`]: [`Proxy`] is a loopback TCP proxy between a cache and its server that injects
//!   network faults (a partition that swallows requests, or cut connections) while the server
//!   keeps its data; [`HoldProxy`] holds the traffic at a chosen command.
//! * [`waits`]: [`guard`] and [`eventually`] are hang guards: they bound how long a test may
//!   wait for something that must happen, without asserting anything about speed;
//!   [`until_near`] and [`pushes_settled`] wait for the near cache.
//! * [`fixtures`]: [`TestEnv`] bundles a [`Cache`] with the server behind it (or none, for the
//!   in-memory backend), [`backend_tests!`] turns one scenario function into a test per
//!   backend, and [`Db`] is the database stand-in the loaders read.
//! * [`cluster`]: [`RedisCluster`] builds a real 6-node Redis Cluster (3 masters, 3 replicas)
//!   on loopback with `redis-cli --cluster create`, with failover and kill controls, and
//!   [`RawCluster`] reads it behind the cache's back.
//! * [`source`]: a data source for the freshness and tag tests; [`tls`]: throwaway TLS
//!   material; [`history`]: the randomized history checker (model, workload, run, check).
//!
//! The `redis-server` binary is looked up on `PATH`, or taken from the `CACHE_TESTS_REDIS_SERVER`
//! environment variable when that is set. `scripts/test.sh` installs it when it is missing.

pub use cache_runtime::{Cache, CacheBuilder};

pub mod cluster;
pub mod fixtures;
pub mod history;
pub mod proxy;
pub mod raw;
pub mod server;
pub mod source;
pub mod tls;
pub mod waits;

pub use cluster::{PlannedCluster, RawCluster, RedisCluster, SlotMap, key_slot};
pub use fixtures::{Backend, Db, HelperReport, TEST_NAMESPACE, TestEnv, unix_ms};
pub use proxy::{HoldProxy, Proxy};
pub use raw::{FORBIDDEN_COMMANDS, Raw};
pub(crate) use server::make_temp_dir;
pub use server::{
    REDIS_SERVER_ENV, RedisServer, ServerSpec, StartError, reserve_free_port, scratch_dir,
};
pub use tls::make_certificates;
pub use waits::{HANG_GUARD, NEAR_BOUND, eventually, guard, guard_for, pushes_settled, until_near};
