//! The near cache's tracking connections: one to a single server, or one to **every node** of a
//! Redis Cluster (masters and replicas), each in RESP3 with
//! `CLIENT TRACKING ON BCAST PREFIX <namespace>:`, and the task that keeps them.
//!
//! # When the near cache is used
//!
//! Only while the last check found every *required* node with a live tracking connection,
//! and no connection was lost since. On a cluster the required nodes are read each tick from
//! `CLUSTER NODES` as seen by every tracked node: every master (serving slots or not, unless
//! it is flagged `fail` and serves none) and every replica not flagged `fail`. Replicas are
//! tracked because a replica can be promoted at any moment: a promoted replica's own writes
//! are pushed on the connection this process already had to it (Redis keeps normal clients
//! and their tracking state across a role change, and a replica pushes invalidations for the
//! writes replicated to it; both checked on Redis 7.0). So a failover among known nodes
//! leaves no window in which a write goes unreported. (What a write cannot report is data the
//! promoted replica never received, replication being asynchronous: its delete of such a key
//! changes nothing and pushes nothing. A copy of it lives until the old master's loss is
//! noticed: at once if its connection closed, at its next check if it hangs.)
//!
//! Any of these flushes the near cache (and bypasses it until the next complete check):
//! a tracking connection closing (at once, from redis-rs's disconnection push), a node not
//! answering its check within [`HEALTH_TIMEOUT`], a required node without a connection (it
//! cannot be reached, or it just appeared), and a change of the topology: some node's own
//! view of itself (its id, role, master and slots) differs from the last check's. The last
//! one is belt and braces (the tracked connections already report every write): it bounds
//! what a node that joined and took writes between two checks can leave behind.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::AtomicBool;
use std::sync::atomic::Ordering::SeqCst;
use std::sync::{Arc, Weak};
use std::time::Duration;

use redis::aio::MultiplexedConnection;
use redis::{ConnectionAddr, PushInfo, Value};
use tracing::{debug, warn};

use super::Near;

/// How long a tracking connection's check (`PING`, `CLUSTER NODES`) may take.
pub(super) const HEALTH_TIMEOUT: Duration = Duration::from_secs(1);
/// Reconnect backoff of the tracking connections.
const FIRST_BACKOFF: Duration = Duration::from_millis(50);
const MAX_BACKOFF: Duration = Duration::from_secs(2);
/// Most cluster nodes tracked (Redis Cluster is designed for up to about 1000 nodes); a larger
/// topology leaves the near cache bypassed.
const MAX_NODES: usize = 1000;
/// Rounds of "connect to the nodes the views name, read their views" in one check.
const ROUNDS: usize = 3;
/// Incomplete checks in a row after which the reason is logged as a warning (once per streak).
const WARN_AFTER: u32 = 10;

pub(crate) use crate::backend::TrackingTarget;

/// One tracking connection. `live` turns false when the connection closes (its disconnection
/// push) or when it is dropped on purpose (so its late disconnection push is ignored).
struct Tracked {
    conn: MultiplexedConnection,
    live: Arc<AtomicBool>,
}

impl Tracked {
    fn is_live(&self) -> bool {
        self.live.load(SeqCst)
    }
}

impl Drop for Tracked {
    fn drop(&mut self) {
        self.live.store(false, SeqCst);
    }
}

/// What one check found.
#[derive(Default)]
struct Check {
    /// A connection that was established failed (closed, or did not answer its check).
    lost: bool,
    /// The topology differs from the last complete check's.
    changed: bool,
    /// Every required node has a live tracking connection.
    complete: bool,
    /// Why it is not complete (for the debug log).
    why: String,
}

/// A node's own line of `CLUSTER NODES`: what a topology change is compared on.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Own {
    id: String,
    master: bool,
    master_id: String,
    /// The slot fields as printed (ranges, and migrating / importing slots).
    slots: Vec<String>,
}

/// One line of `CLUSTER NODES`: `<id> <ip:port@cport[,hostname]> <flags> <master|-> <ping>
/// <pong> <epoch> <link> <slot>...`.
struct Line<'a> {
    id: &'a str,
    /// `host:port` (the announced hostname if any, else the IP), `None` if not known.
    addr: Option<String>,
    myself: bool,
    master: bool,
    failed: bool,
    handshake: bool,
    master_id: &'a str,
    slots: Vec<&'a str>,
}

fn parse_line(line: &str) -> Option<Line<'_>> {
    let f: Vec<&str> = line.split_whitespace().collect();
    if f.len() < 8 {
        return None;
    }
    let (ipport, hostname) = match f[1].split_once(',') {
        Some((a, h)) => (a, h),
        None => (f[1], ""),
    };
    let ipport = ipport.split('@').next().unwrap_or("");
    let addr = ipport.rsplit_once(':').and_then(|(ip, port)| {
        let port: u16 = port.parse().ok().filter(|&p| p != 0)?;
        let host = if hostname.is_empty() { ip } else { hostname };
        let host = host.trim_start_matches('[').trim_end_matches(']');
        (!host.is_empty()).then(|| format!("{host}:{port}"))
    });
    let flags: Vec<&str> = f[2].split(',').collect();
    Some(Line {
        id: f[0],
        addr: if flags.contains(&"noaddr") {
            None
        } else {
            addr
        },
        myself: flags.contains(&"myself"),
        master: flags.contains(&"master"),
        failed: flags.contains(&"fail"),
        handshake: flags.contains(&"handshake"),
        master_id: f[3],
        slots: f[8..].to_vec(),
    })
}

/// The nodes that must be tracked, by `host:port`, from the views (`CLUSTER NODES` text by the
/// address of the node that answered). `Err` names a required node whose address is unknown.
fn required(views: &BTreeMap<String, String>) -> Result<BTreeMap<String, ()>, String> {
    let mut out = BTreeMap::new();
    for (queried, text) in views {
        for line in text.lines().filter_map(parse_line) {
            if line.handshake {
                continue;
            }
            let serving = line.master && !line.slots.is_empty();
            // A failed replica or a failed master without slots cannot take writes.
            if line.failed && !serving {
                continue;
            }
            // A node that does not know its own IP yet prints `:port` for itself: it is the
            // node that answered.
            let addr = match line.addr {
                None if line.myself => Some(queried.clone()),
                a => a,
            };
            match addr {
                Some(a) => {
                    out.insert(a, ());
                }
                None => return Err(format!("node {} has no address", line.id)),
            }
        }
    }
    Ok(out)
}

/// The node's own line in its view.
fn own(text: &str) -> Option<Own> {
    let line = text.lines().filter_map(parse_line).find(|l| l.myself)?;
    Some(Own {
        id: line.id.to_owned(),
        master: line.master,
        master_id: line.master_id.to_owned(),
        slots: line.slots.iter().map(|s| (*s).to_owned()).collect(),
    })
}

/// A client for the node at `addr` (`host:port`) with the settings of `template` (a seed's
/// client: credentials, RESP3, TLS).
fn node_client(template: &redis::Client, addr: &str) -> Option<redis::Client> {
    let (host, port) = addr.rsplit_once(':')?;
    let port: u16 = port.parse().ok()?;
    let info = template.get_connection_info().clone();
    let node = match info.addr().clone() {
        ConnectionAddr::TcpTls {
            insecure,
            tls_params,
            ..
        } => ConnectionAddr::TcpTls {
            host: host.to_owned(),
            port,
            insecure,
            tls_params,
        },
        _ => ConnectionAddr::Tcp(host.to_owned(), port),
    };
    redis::Client::open(info.set_addr(node)).ok()
}

/// The tracking state of one near cache (owned by its task).
struct Tracker {
    me: Weak<Near>,
    prefix: String,
    /// By `host:port` (a single server: one entry under `""`). Bounded by [`MAX_NODES`].
    conns: HashMap<String, Tracked>,
    /// Every tracked node's own line at the last complete check.
    topology: Option<BTreeMap<String, Own>>,
}

impl Tracker {
    /// A tracked connection failed its check: bypass now, before the reconnects of this
    /// check (a hung node makes each of them wait for its timeout).
    fn lost_now(&self, why: &str) {
        if let Some(near) = self.me.upgrade() {
            near.drop_tracking(why);
        }
    }

    /// Opens a RESP3 connection whose pushes go to the near cache and turns tracking on.
    async fn connect(&self, client: &redis::Client) -> Result<Tracked, String> {
        let live = Arc::new(AtomicBool::new(true));
        let sender = {
            let me = self.me.clone();
            let live = live.clone();
            move |info: PushInfo| -> Result<(), redis::aio::SendError> {
                match me.upgrade() {
                    Some(near) => {
                        near.on_push(&live, info);
                        Ok(())
                    }
                    None => Err(redis::aio::SendError),
                }
            }
        };
        let config = redis::AsyncConnectionConfig::new()
            .set_push_sender(sender)
            .set_connection_timeout(Some(HEALTH_TIMEOUT))
            .set_response_timeout(Some(HEALTH_TIMEOUT));
        let opened = tokio::time::timeout(
            HEALTH_TIMEOUT * 2,
            client.get_multiplexed_async_connection_with_config(&config),
        )
        .await;
        let conn = match opened {
            Ok(Ok(conn)) => conn,
            Ok(Err(e)) => {
                live.store(false, SeqCst);
                return Err(format!("connect: {e}"));
            }
            Err(_) => {
                live.store(false, SeqCst);
                return Err("connect: timed out".to_owned());
            }
        };
        // From here on, an early return drops `tracked` (live = false) before its connection.
        let tracked = Tracked { conn, live };
        let mut conn = tracked.conn.clone();
        let mut cmd = redis::cmd("CLIENT");
        cmd.arg("TRACKING")
            .arg("ON")
            .arg("BCAST")
            .arg("PREFIX")
            .arg(&self.prefix);
        match tokio::time::timeout(HEALTH_TIMEOUT, cmd.query_async::<Value>(&mut conn)).await {
            Ok(Ok(_)) => Ok(tracked),
            Ok(Err(e)) => Err(format!("CLIENT TRACKING: {e}")),
            Err(_) => Err("CLIENT TRACKING: timed out".to_owned()),
        }
    }

    /// A single server: `PING` the connection, or (re)connect.
    async fn check_server(&mut self, client: &redis::Client) -> Check {
        let mut c = Check::default();
        if let Some(t) = self.conns.get("") {
            let mut conn = t.conn.clone();
            let ping = tokio::time::timeout(
                HEALTH_TIMEOUT,
                redis::cmd("PING").query_async::<Value>(&mut conn),
            )
            .await;
            if t.is_live() && matches!(ping, Ok(Ok(_))) {
                c.complete = true;
                return c;
            }
            self.conns.remove("");
            c.lost = true;
            self.lost_now("a tracking connection failed its check");
        }
        match self.connect(client).await {
            Ok(t) => {
                self.conns.insert(String::new(), t);
                c.complete = true;
            }
            Err(e) => c.why = e,
        }
        c
    }

    /// A cluster: read every tracked node's `CLUSTER NODES` (the health check), connect to the
    /// required nodes not tracked yet, drop the others, compare the topology.
    async fn check_cluster(&mut self, seeds: &[redis::Client]) -> Check {
        let mut c = Check::default();
        let before = self.conns.len();
        self.conns.retain(|_, t| t.is_live());
        c.lost |= self.conns.len() != before;

        let mut views: BTreeMap<String, String> = BTreeMap::new();
        let reads = self.conns.iter().map(|(addr, t)| {
            let conn = t.conn.clone();
            async move { (addr.clone(), cluster_nodes(conn).await) }
        });
        for (addr, view) in futures_util::future::join_all(reads).await {
            match view {
                Ok(text) => {
                    views.insert(addr, text);
                }
                Err(e) => {
                    debug!(node = %addr, error = %e, "near cache: tracked node failed its check");
                    self.conns.remove(&addr);
                    c.lost = true;
                }
            }
        }
        if c.lost {
            self.lost_now("a tracking connection failed its check");
        }
        if views.is_empty() {
            match seed_view(seeds).await {
                Ok((addr, text)) => {
                    views.insert(addr, text);
                }
                Err(e) => {
                    c.why = e;
                    return c;
                }
            }
        }

        let Some(template) = seeds.first() else {
            c.why = "no seed node".to_owned();
            return c;
        };
        let mut want = BTreeMap::new();
        for _ in 0..ROUNDS {
            want = match required(&views) {
                Ok(w) => w,
                Err(e) => {
                    c.why = e;
                    return c;
                }
            };
            if want.len() > MAX_NODES {
                c.why = format!("{} nodes: more than {MAX_NODES}", want.len());
                return c;
            }
            let missing: Vec<String> = BTreeMap::keys(&want)
                .filter(|a| !self.conns.contains_key(*a))
                .cloned()
                .collect();
            if missing.is_empty() {
                break;
            }
            let this = &*self;
            let opened = missing.iter().map(|addr| async move {
                let Some(client) = node_client(template, addr) else {
                    return (addr, Err(format!("bad node address {addr}")));
                };
                let t = match this.connect(&client).await {
                    Ok(t) => t,
                    Err(e) => return (addr, Err(e)),
                };
                let view = cluster_nodes(t.conn.clone()).await;
                (addr, view.map(|v| (t, v)))
            });
            for (addr, r) in futures_util::future::join_all(opened).await {
                match r {
                    Ok((t, view)) => {
                        self.conns.insert(addr.clone(), t);
                        views.insert(addr.clone(), view);
                    }
                    Err(e) => c.why = format!("node {addr}: {e}"),
                }
            }
        }
        // Nodes that left the topology (or failed replicas) are not tracked any more.
        self.conns.retain(|a, _| want.contains_key(a));
        let mut topology = BTreeMap::new();
        for addr in BTreeMap::keys(&want) {
            match (self.conns.get(addr), views.get(addr).and_then(|v| own(v))) {
                (Some(t), Some(o)) if t.is_live() => {
                    topology.insert(addr.clone(), o);
                }
                _ => {
                    if c.why.is_empty() {
                        c.why = format!("node {addr} is not tracked");
                    }
                    return c;
                }
            }
        }
        c.changed = self.topology.as_ref().is_some_and(|t| *t != topology);
        if c.changed {
            debug!(
                "near cache: cluster topology changed: {:?} -> {:?}",
                self.topology, topology
            );
        }
        self.topology = Some(topology);
        c.complete = true;
        c
    }
}

/// `CLUSTER NODES` on one node, bounded by [`HEALTH_TIMEOUT`].
async fn cluster_nodes(mut conn: MultiplexedConnection) -> Result<String, String> {
    let mut cmd = redis::cmd("CLUSTER");
    cmd.arg("NODES");
    let read = cmd.query_async::<String>(&mut conn);
    match tokio::time::timeout(HEALTH_TIMEOUT, read).await {
        Ok(Ok(text)) => Ok(text),
        Ok(Err(e)) => Err(format!("CLUSTER NODES: {e}")),
        Err(_) => Err("CLUSTER NODES: timed out".to_owned()),
    }
}

/// `CLUSTER NODES` from the first seed that answers (a plain connection, closed after), with
/// the address it answered on.
async fn seed_view(seeds: &[redis::Client]) -> Result<(String, String), String> {
    let mut last = "no seed node".to_owned();
    for seed in seeds {
        let config = redis::AsyncConnectionConfig::new()
            .set_connection_timeout(Some(HEALTH_TIMEOUT))
            .set_response_timeout(Some(HEALTH_TIMEOUT));
        let opened = tokio::time::timeout(
            HEALTH_TIMEOUT * 2,
            seed.get_multiplexed_async_connection_with_config(&config),
        )
        .await;
        match opened {
            Ok(Ok(conn)) => match cluster_nodes(conn).await {
                Ok(text) => return Ok((seed.get_connection_info().addr().to_string(), text)),
                Err(e) => last = format!("seed: {e}"),
            },
            Ok(Err(e)) => last = format!("seed: connect: {e}"),
            Err(_) => last = "seed: connect: timed out".to_owned(),
        }
    }
    Err(last)
}

/// The tracking task: check (and connect) every tick; the near cache is active only after a
/// complete check with no connection lost meanwhile; any loss, gap or topology change flushes
/// and bypasses it. Ends when the cache is dropped (its connections close with it).
pub(super) async fn track(me: Weak<Near>) {
    let (target, prefix, interval, wake) = match me.upgrade() {
        Some(near) => (
            near.target.clone(),
            near.prefix.clone(),
            near.interval,
            near.wake.clone(),
        ),
        None => return,
    };
    let mut t = Tracker {
        me: me.clone(),
        prefix,
        conns: HashMap::new(),
        topology: None,
    };
    let mut backoff = FIRST_BACKOFF;
    let mut incomplete = 0u32;
    loop {
        let Some(losses) = me.upgrade().map(|n| n.losses.load(SeqCst)) else {
            return;
        };
        let check = match &target {
            TrackingTarget::Server(client) => t.check_server(client).await,
            TrackingTarget::Cluster(seeds) => t.check_cluster(seeds).await,
        };
        let Some(near) = me.upgrade() else { return };
        if check.changed {
            near.drop_tracking("the cluster topology changed");
        }
        if check.lost {
            near.drop_tracking("a tracking connection was lost");
        }
        let mut ok = false;
        if check.complete {
            // Copies kept through the loss (for the fail-safe) are dropped now that Redis,
            // which has the truth, answers again: a write made while nobody tracked must not
            // reach a later fail-safe answer either.
            if !near.is_active() {
                near.map.invalidate_all();
            }
            let was = near.active.swap(true, SeqCst);
            // A connection lost during the check: its push may have found the near cache
            // still inactive (nothing to flush), then the swap above activated it.
            if near.losses.load(SeqCst) != losses {
                // Already counted (and flushed) by the push that reported the loss: undo
                // this activation and flush what a fill may have kept meanwhile.
                near.active.store(false, SeqCst);
                near.reset();
            } else {
                ok = true;
                if !was {
                    debug!("near cache: tracking established");
                }
            }
        } else {
            near.drop_tracking("a node is not tracked");
            incomplete = incomplete.saturating_add(1);
            if incomplete == WARN_AFTER {
                warn!(why = %check.why, "near cache: tracking still not complete; the near cache stays bypassed until it is");
            } else {
                debug!(why = %check.why, "near cache: tracking not complete; retrying");
            }
        }
        if check.complete {
            incomplete = 0;
        }
        drop(near);
        if ok {
            backoff = FIRST_BACKOFF;
            tokio::select! {
                _ = wake.notified() => {}
                _ = tokio::time::sleep(interval) => {}
            }
        } else {
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const VIEW: &str = "\
a1 127.0.0.1:7001@17001 myself,master - 0 0 1 connected 0-5460
a2 127.0.0.1:7002@17002 master - 0 0 2 connected 5461-10922
a3 127.0.0.1:7003@17003 master - 0 0 3 connected 10923-16383 [16000->-a2]
r1 127.0.0.1:7004@17004 slave a1 0 0 1 connected
r2 127.0.0.1:7005@17005,node5.example slave a2 0 0 2 connected
r3 127.0.0.1:7006@17006 slave,fail a3 0 0 3 disconnected
x1 :0@0 master,fail,noaddr - 0 0 0 disconnected
h1 127.0.0.1:7008@17008 handshake - 0 0 0 connected
";

    #[test]
    fn required_nodes_are_masters_and_live_replicas() {
        let views = BTreeMap::from([("seed:7001".to_owned(), VIEW.to_owned())]);
        let want: Vec<String> = required(&views).unwrap().into_keys().collect();
        assert_eq!(
            want,
            [
                "127.0.0.1:7001",
                "127.0.0.1:7002",
                "127.0.0.1:7003",
                "127.0.0.1:7004",
                "node5.example:7005",
            ]
        );
        let o = own(VIEW).unwrap();
        assert_eq!((o.id.as_str(), o.master), ("a1", true));
        assert_eq!(o.slots, ["0-5460"]);
    }

    /// A node's client has the seed's credentials, protocol (RESP3) and TLS settings, and the
    /// node's address.
    #[test]
    fn node_clients_keep_the_seed_settings() {
        let info =
            redis::IntoConnectionInfo::into_connection_info("redis://app:pw@seed.example:7000")
                .unwrap();
        let settings = info
            .redis_settings()
            .clone()
            .set_protocol(redis::ProtocolVersion::RESP3);
        let seed = redis::Client::open(info.set_redis_settings(settings)).unwrap();
        let node = node_client(&seed, "10.0.0.2:7001").unwrap();
        let info = node.get_connection_info();
        assert!(
            matches!(info.addr(), ConnectionAddr::Tcp(h, 7001) if h == "10.0.0.2"),
            "{:?}",
            info.addr()
        );
        let r = info.redis_settings();
        assert_eq!((r.username(), r.password()), (Some("app"), Some("pw")));
        assert_eq!(r.protocol(), redis::ProtocolVersion::RESP3);
        assert!(node_client(&seed, "no-port").is_none());
    }

    #[cfg(feature = "tls")]
    #[test]
    fn node_clients_of_a_tls_seed_use_tls() {
        let seed = redis::Client::open("rediss://app:pw@seed.example:7000").unwrap();
        let node = node_client(&seed, "10.0.0.2:7001").unwrap();
        assert!(
            matches!(
                node.get_connection_info().addr(),
                ConnectionAddr::TcpTls { host, port: 7001, insecure: false, .. } if host == "10.0.0.2"
            ),
            "{:?}",
            node.get_connection_info().addr()
        );
    }

    #[test]
    fn a_failed_master_still_serving_slots_is_required() {
        let view = "a1 127.0.0.1:7001@17001 myself,master - 0 0 1 connected 0-100\n\
                    a2 127.0.0.1:7002@17002 master,fail - 0 0 2 disconnected 101-200\n\
                    a3 :0@0 master,fail,noaddr - 0 0 2 disconnected 201-300\n";
        let views = BTreeMap::from([("127.0.0.1:7001".to_owned(), view.to_owned())]);
        assert!(
            required(&views).is_err(),
            "a serving master without an address"
        );
        let view = view.lines().take(2).collect::<Vec<_>>().join("\n");
        let views = BTreeMap::from([("127.0.0.1:7001".to_owned(), view)]);
        assert!(required(&views).unwrap().contains_key("127.0.0.1:7002"));
        // A node that does not know its own IP: the address it answered on.
        let view = "a1 :7001@17001 myself,master - 0 0 1 connected 0-16383\n";
        let views = BTreeMap::from([("seed.example:7001".to_owned(), view.to_owned())]);
        let want: Vec<String> = required(&views).unwrap().into_keys().collect();
        assert_eq!(want, ["seed.example:7001"]);
    }
}
