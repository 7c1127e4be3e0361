//! The Redis Cluster connection of a cache: a redis-rs [`ClusterConnection`] that the cache
//! keeps alive and replaces when it is dead or stuck.
//!
//! * **Where it runs.** redis-rs drives a cluster connection (routing, and every node's
//!   connection) from a task spawned on the runtime current when it is created. On a
//!   multi-thread runtime it stays there: that runtime's workers drive it whatever the caller
//!   does, and the hit path has no thread hop (a dedicated thread measured 1.3x-1.7x slower
//!   per hit at one task: 1.26x back to back with the bench at load average 5). Created from a current-thread runtime (a `#[tokio::test]`, a
//!   `block_on` in a sync program), which is only driven while its owner blocks on it and may
//!   end before the cache, it goes to a small runtime of the cache's own instead (one thread,
//!   `cache-redis-cluster`, started on first need and ended with the cache's last handle).
//! * **Replaced when dead.** When the runtime it was spawned on ends, the next command fails
//!   with redis-rs's "Unable to send command" before anything was sent: the connection is
//!   rebuilt (on the caller's runtime, as above) and the command sent once more on the new one,
//!   so the caller sees nothing. A command that was in flight when the runtime ended fails
//!   ("Unable to receive command") and the connection is rebuilt as well.
//! * **Replaced when stuck.** A master that stops answering without closing its connections
//!   (a frozen process, a dead host, a partition) gives redis-rs no error, so it never refreshes
//!   its slot map and keeps sending that master's slots to it, even after its replica took over.
//!   Two operations timing out (`command_timeout`) within [`TIMEOUT_WINDOW`] rebuild the
//!   connection (at most once per [`REBUILD_GAP`], doubling up to [`MAX_REBUILD_GAP`] while
//!   timeouts continue): the new one connects to the nodes that
//!   answer and reads the slot map from one of them, so once the cluster has promoted a replica
//!   the slots go there. A rebuilt connection's node connections have a response timeout
//!   (`command_timeout`), so that a node that does not answer cannot hold up its start (the
//!   first connection has none: a timer per command on the hit path, where every operation
//!   is bounded by `command_timeout` already).
//! * **`-ASK` followed atomically.** An `-ASK` or `-MOVED` that redis-rs hands back after its
//!   redirections (its `ASKING` and the command are two separate sends on a shared connection,
//!   see [`follow_redirect`]) is sent again as one pipeline, `ASKING` + the command, to the
//!   node the redirection names.

use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::time::{Duration, Instant};

use redis::aio::ConnectionLike;
use redis::cluster::{ClusterClient, ClusterConfig};
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::SingleNodeRoutingInfo;
use redis::{Cmd, Pipeline, RedisError, RedisFuture, RedisResult, Value};
use tracing::{error, warn};

/// Two timeouts within this window rebuild the connection.
pub(crate) const TIMEOUT_WINDOW: Duration = Duration::from_secs(10);

/// At most one rebuild per this (on timeouts; a dead connection is rebuilt at once). The gap
/// doubles with each timeout-driven rebuild, up to [`MAX_REBUILD_GAP`], while timeouts keep
/// coming (a master down for the whole failover: rebuilding cannot help until a replica
/// serves its slots, and each rebuild reconnects to every node), and is back to this after
/// [`TIMEOUT_WINDOW`] without a timeout.
pub(crate) const REBUILD_GAP: Duration = Duration::from_secs(1);
/// The longest gap between timeout-driven rebuilds.
pub(crate) const MAX_REBUILD_GAP: Duration = Duration::from_secs(8);

/// A cache's Redis Cluster connection (cheap to clone: one shared state).
#[derive(Clone)]
pub(crate) struct ClusterConn {
    shared: Arc<Shared>,
}

struct Shared {
    /// The connection in use, and its generation (bumped by each rebuild).
    current: RwLock<(u64, ClusterConnection)>,
    client: ClusterClient,
    /// A rebuilt connection's settings (with a response timeout per node).
    rebuild_config: ClusterConfig,
    /// The cache's own runtime, started on first need (`None` inside if its thread could not
    /// be started: the caller's runtime is used then).
    home: OnceLock<Option<Home>>,
    health: Mutex<Health>,
}

struct Health {
    /// The last timeout since the last rebuild.
    last_timeout: Option<Instant>,
    last_rebuild: Instant,
    /// The last timeout at all (a rebuild does not clear it).
    last_seen: Option<Instant>,
    /// The current gap between rebuilds (see [`REBUILD_GAP`]).
    gap: Duration,
}

/// A current-thread Tokio runtime on its own thread, running until this is dropped.
struct Home {
    handle: tokio::runtime::Handle,
    /// Dropping it ends the thread (and the connections' tasks with its runtime).
    _stop: tokio::sync::oneshot::Sender<()>,
}

impl Home {
    fn start() -> std::io::Result<Home> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let handle = rt.handle().clone();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        std::thread::Builder::new()
            .name("cache-redis-cluster".into())
            .spawn(move || {
                rt.block_on(async {
                    let _ = stopped.await;
                });
                rt.shutdown_background();
            })?;
        Ok(Home {
            handle,
            _stop: stop,
        })
    }
}

impl ClusterConn {
    /// Creates the connection (connected lazily, in the background).
    pub(crate) fn new(
        client: ClusterClient,
        config: ClusterConfig,
        response_timeout: Duration,
    ) -> Self {
        let home = OnceLock::new();
        let conn = connect(&client, &config, &home);
        let rebuild_config = config.clone().set_response_timeout(response_timeout);
        ClusterConn {
            shared: Arc::new(Shared {
                current: RwLock::new((0, conn)),
                client,
                rebuild_config,
                home,
                health: Mutex::new(Health {
                    last_timeout: None,
                    last_rebuild: Instant::now(),
                    last_seen: None,
                    gap: REBUILD_GAP,
                }),
            }),
        }
    }

    fn current(&self) -> (u64, ClusterConnection) {
        let cur = self
            .shared
            .current
            .read()
            .unwrap_or_else(|p| p.into_inner());
        (cur.0, cur.1.clone())
    }

    /// Replaces the connection of generation `seen` (if no one did already); returns the
    /// connection now current.
    fn rebuild(&self, seen: u64, why: &str) -> ClusterConnection {
        let mut cur = self
            .shared
            .current
            .write()
            .unwrap_or_else(|p| p.into_inner());
        if cur.0 == seen {
            warn!(reason = why, "rebuilding the Redis Cluster connection");
            let conn = connect(
                &self.shared.client,
                &self.shared.rebuild_config,
                &self.shared.home,
            );
            *cur = (seen + 1, conn);
            let mut h = self.shared.health.lock().unwrap_or_else(|p| p.into_inner());
            h.last_rebuild = Instant::now();
            h.last_timeout = None;
        }
        cur.1.clone()
    }

    /// An operation ran out of `command_timeout`: the second within [`TIMEOUT_WINDOW`]
    /// rebuilds the connection (at most once per [`REBUILD_GAP`]).
    pub(crate) fn timed_out(&self) {
        let now = Instant::now();
        let rebuild = self
            .shared
            .health
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .on_timeout(now);
        if rebuild {
            let (seen, _) = self.current();
            self.rebuild(seen, "commands time out");
        }
    }
}

impl Health {
    /// An operation timed out at `now`: whether to rebuild the connection now.
    fn on_timeout(&mut self, now: Instant) -> bool {
        let recent = self
            .last_timeout
            .is_some_and(|t| now.duration_since(t) < TIMEOUT_WINDOW);
        if self
            .last_seen
            .is_none_or(|t| now.duration_since(t) >= TIMEOUT_WINDOW)
        {
            self.gap = REBUILD_GAP;
        }
        self.last_seen = Some(now);
        self.last_timeout = Some(now);
        let due = recent && now.duration_since(self.last_rebuild) >= self.gap;
        if due {
            self.gap = (self.gap * 2).min(MAX_REBUILD_GAP);
        }
        due
    }
}

/// A new cluster connection, driven on the caller's runtime if it is a multi-thread one, else
/// on `home` (started now if needed).
fn connect(
    client: &ClusterClient,
    config: &ClusterConfig,
    home: &OnceLock<Option<Home>>,
) -> ClusterConnection {
    let multi_thread = tokio::runtime::Handle::try_current()
        .is_ok_and(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread);
    let home = if multi_thread {
        None
    } else {
        home.get_or_init(|| match Home::start() {
            Ok(h) => Some(h),
            Err(e) => {
                error!(error = %e, "could not start the Redis Cluster connection's thread; using the caller's runtime");
                None
            }
        })
        .as_ref()
    };
    let _entered = home.map(|h| h.handle.enter());
    client.get_pending_async_connection_with_config(config.clone())
}

/// redis-rs could not hand the command to the connection's task: it is gone (nothing was sent).
fn unsent(e: &RedisError) -> bool {
    e.is_io_error() && e.to_string().contains("Unable to send command")
}

/// The connection's task went away with the command in flight.
fn unreceived(e: &RedisError) -> bool {
    e.is_io_error() && e.to_string().contains("Unable to receive command")
}

/// The command answered `-ASK` or `-MOVED` after redis-rs's own redirections: sends `ASKING`
/// and the command again to the node named by the redirection, as one pipeline (so nothing
/// can run between the two on that connection). Should that node redirect the pipeline
/// again, redis-rs follows it with the pipeline, `ASKING` included.
///
/// redis-rs follows an `-ASK` by sending `ASKING` on the target node's shared (multiplexed)
/// connection, waiting for its reply, then sending the command: another task's command sent
/// in between takes the `ASKING` flag, the target answers ours with `-MOVED` back to the source,
/// which answers `-ASK` again, and under load a command runs out of redirections on either
/// answer (seen in `resharding_a_slot_under_load_follows_ask_and_moved`: dozens of reads sent
/// to the loader and invalidations queued while one slot was half migrated). `ASKING` in
/// front of a command is harmless on a node that is not importing the slot: after a real
/// `-MOVED` (the slot changed hands) the command simply runs on the new owner.
async fn follow_redirect(
    conn: &mut ClusterConnection,
    cmd: &Cmd,
    err: RedisError,
) -> RedisResult<Value> {
    let Some((host, port)) = err
        .redirect_node()
        .and_then(|(addr, _slot)| addr.rsplit_once(':'))
        .and_then(|(host, port)| Some((host.to_owned(), port.parse::<u16>().ok()?)))
    else {
        return Err(err);
    };
    let mut pipe = redis::pipe();
    pipe.cmd("ASKING").add_command(cmd.clone());
    let mut replies = conn
        .route_pipeline(pipe, 0, 2, SingleNodeRoutingInfo::ByAddress { host, port })
        .await?;
    match replies.pop() {
        Some(reply) if replies.len() == 1 => reply.extract_error(),
        _ => Err(err),
    }
}

fn is_redirect(e: &RedisError) -> bool {
    matches!(
        e.kind(),
        redis::ErrorKind::Server(redis::ServerErrorKind::Ask | redis::ServerErrorKind::Moved)
    )
}

impl ConnectionLike for ClusterConn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        Box::pin(async move {
            let (seen, mut conn) = self.current();
            match conn.req_packed_command(cmd).await {
                Err(e) if unsent(&e) => {
                    let mut conn = self.rebuild(seen, "the connection's task ended");
                    conn.req_packed_command(cmd).await
                }
                Err(e) if is_redirect(&e) => follow_redirect(&mut conn, cmd, e).await,
                Err(e) => {
                    if unreceived(&e) {
                        self.rebuild(seen, "the connection's task ended");
                    }
                    Err(e)
                }
                ok => ok,
            }
        })
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        Box::pin(async move {
            let (seen, mut conn) = self.current();
            let r = conn.req_packed_commands(pipeline, offset, count).await;
            if let Err(e) = &r
                && (unsent(e) || unreceived(e))
            {
                self.rebuild(seen, "the connection's task ended");
            }
            r
        })
    }

    fn get_db(&self) -> i64 {
        0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Timeouts every 100 ms for 40 s (a master down through a failover): rebuilds back off
    /// 1, 2, 4, 8, 8, .. s apart; after a calm `TIMEOUT_WINDOW`, the gap is 1 s again.
    #[test]
    fn rebuilds_back_off_while_timeouts_continue() {
        let t0 = Instant::now();
        let mut h = Health {
            last_timeout: None,
            last_rebuild: t0,
            last_seen: None,
            gap: REBUILD_GAP,
        };
        let mut rebuilds = Vec::new();
        let run = |h: &mut Health, from_ms: u64, to_ms: u64, rebuilds: &mut Vec<u64>| {
            for ms in (from_ms..to_ms).step_by(100) {
                let now = t0 + Duration::from_millis(ms);
                if h.on_timeout(now) {
                    rebuilds.push(ms);
                    // What `rebuild` does.
                    h.last_rebuild = now;
                    h.last_timeout = None;
                }
            }
        };
        run(&mut h, 0, 40_000, &mut rebuilds);
        let gaps: Vec<u64> = rebuilds.windows(2).map(|w| w[1] - w[0]).collect();
        assert!(gaps.len() >= 4, "{rebuilds:?}");
        assert!(
            gaps[..3].windows(2).all(|w| w[1] > w[0]),
            "backs off: {gaps:?}"
        );
        assert!(
            gaps.iter()
                .all(|&g| g <= MAX_REBUILD_GAP.as_millis() as u64 + 200),
            "capped: {gaps:?}"
        );
        // Calm for longer than the window, then timeouts again: rebuilt at the second
        // timeout, then 2 s later (the gap starts over at 1 s, as at the start).
        let mut again = Vec::new();
        run(&mut h, 60_000, 63_000, &mut again);
        assert_eq!(again, vec![60_100, 62_100], "gap reset after a calm window");
        assert_eq!(rebuilds[..4], [1_000, 3_000, 7_000, 15_000], "{rebuilds:?}");
    }
}
