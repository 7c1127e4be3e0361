//! A real Redis Cluster on loopback for one test: [`RedisCluster`].
//!
//! Six `redis-server --cluster-enabled yes` processes on free ports, joined by
//! `redis-cli --cluster create ... --cluster-replicas 1` (three masters, each with one replica),
//! in one temporary directory (node configs and logs) that is removed on drop, when every
//! process is killed. Readiness is polled (`CLUSTER INFO` says `cluster_state:ok` on every
//! node, every node sees all six, every replica's link to its master is up), never slept for.
//!
//! The control methods (failover, kill, "who owns this key") are blocking: call them from a
//! multi-thread Tokio runtime, or through `spawn_blocking` when the runtime must keep serving
//! tasks meanwhile.

use std::fmt;
use std::fs;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::{RedisServer, ServerSpec, StartError, make_temp_dir};

/// Environment variable that overrides the path of the `redis-cli` binary.
pub const REDIS_CLI_ENV: &str = "CACHE_TESTS_REDIS_CLI";

/// Nodes of a test cluster: 3 masters + 3 replicas.
pub const CLUSTER_NODES: usize = 6;

/// `cluster-node-timeout` of a test cluster (ms) started with [`RedisCluster::start`]: how long
/// a silent master takes to be considered failed. Long enough that a node starved of CPU for a
/// moment on a loaded machine is not failed over in a test that does not expect it.
pub const NODE_TIMEOUT_MS: u64 = 5000;

/// `cluster-node-timeout` of a cluster started with [`RedisCluster::start_for_failover`]:
/// short, so a killed or frozen master's replica is promoted in about two seconds.
pub const FAILOVER_NODE_TIMEOUT_MS: u64 = 1000;

/// How long the harness waits for the cluster to form, or to settle after a failover.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(30);

/// One node as seen in `CLUSTER NODES`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeInfo {
    /// The node id.
    pub id: String,
    /// Its port on 127.0.0.1.
    pub port: u16,
    /// Whether it is a master (else a replica).
    pub master: bool,
    /// Flagged `fail` or `fail?` by the node that answered.
    pub failing: bool,
    /// For a replica: its master's id.
    pub master_id: Option<String>,
    /// For a master: the slot ranges it serves (inclusive).
    pub slots: Vec<(u16, u16)>,
}

/// A private 6-node Redis Cluster (3 masters, 3 replicas) on 127.0.0.1 for one test.
///
/// ```no_run
/// # async fn demo() {
/// let cluster = cache_tests::RedisCluster::start();
/// let cache = cache_tests::Cache::builder()
///     .redis_cluster(cluster.urls())
///     .build()
///     .await
///     .unwrap();
/// let master = cluster.master_for_key("cache:user:7");
/// let replica = cluster.replica_of(master);
/// cluster.failover(replica); // CLUSTER FAILOVER on the replica, waits until settled
/// # drop(cache);
/// # }
/// ```
pub struct RedisCluster {
    /// Every node, by start order (a killed one has no process).
    nodes: Vec<RedisServer>,
    ports: Vec<u16>,
    dir: PathBuf,
    /// `user:password@` in every URL (an ACL cluster), else empty.
    userinfo: String,
    /// A TLS cluster's CA certificate (PEM): its nodes serve `rediss://` only.
    tls_ca: Option<Vec<u8>>,
    /// Ports of the nodes paused with [`RedisCluster::pause`] (not live).
    paused: Vec<u16>,
}

impl fmt::Debug for RedisCluster {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisCluster")
            .field("ports", &self.ports)
            .field("dir", &self.dir)
            .finish()
    }
}

impl RedisCluster {
    /// Starts six nodes, creates the cluster and waits until it is ready.
    ///
    /// # Panics
    /// With a message that says what to install when `redis-server` or `redis-cli` is missing,
    /// or with the nodes' output when the cluster does not form.
    pub fn start() -> RedisCluster {
        Self::start_inner(None, NODE_TIMEOUT_MS)
    }

    /// Like [`RedisCluster::start`], with a short `cluster-node-timeout`
    /// ([`FAILOVER_NODE_TIMEOUT_MS`]), for tests that kill or freeze a master and wait for its
    /// replica to take over.
    pub fn start_for_failover() -> RedisCluster {
        Self::start_inner(None, FAILOVER_NODE_TIMEOUT_MS)
    }

    /// Like [`RedisCluster::start`], with ACL: the `default` user is off and `user` (password
    /// `password`) may run every command on every key; replicas authenticate as that user. Its
    /// [`urls`](Self::urls) carry the credentials (`redis://user:password@127.0.0.1:port`).
    pub fn start_with_acl(user: &str, password: &str) -> RedisCluster {
        Self::start_inner(Some((user, password)), NODE_TIMEOUT_MS)
    }

    /// Like [`RedisCluster::start`], over TLS only: every node runs with `--port 0 --tls-port
    /// <port> --tls-cluster yes --tls-replication yes` and a certificate for 127.0.0.1 signed
    /// by a throwaway CA ([`crate::make_certificates`]; clients need no certificate), the
    /// cluster is created with `redis-cli --tls --cacert ..`, and [`urls`](Self::urls) are
    /// `rediss://`. Trust [`tls_ca`](Self::tls_ca) to connect.
    ///
    /// # Panics
    /// Loudly (never a skip) if this `redis-server` cannot serve TLS.
    pub fn start_with_tls() -> RedisCluster {
        Self::start_on(None, None, NODE_TIMEOUT_MS, true)
    }

    /// A TLS cluster's CA certificate (PEM), `None` for a plain one.
    pub fn tls_ca(&self) -> Option<&[u8]> {
        self.tls_ca.as_deref()
    }

    fn scheme(&self) -> &'static str {
        if self.tls_ca.is_some() {
            "rediss"
        } else {
            "redis"
        }
    }

    /// Reserves six ports (each with a free cluster bus port) for a cluster that is started
    /// later with [`PlannedCluster::start`]: its [`urls`](PlannedCluster::urls) are known
    /// before any node runs (for a cache built before its cluster is up).
    pub fn reserve() -> PlannedCluster {
        PlannedCluster {
            ports: (0..CLUSTER_NODES).map(|_| reserve_cluster_port()).collect(),
        }
    }

    fn start_inner(acl: Option<(&str, &str)>, node_timeout_ms: u64) -> RedisCluster {
        Self::start_on(None, acl, node_timeout_ms, false)
    }

    fn start_on(
        planned: Option<&[u16]>,
        acl: Option<(&str, &str)>,
        node_timeout_ms: u64,
        tls: bool,
    ) -> RedisCluster {
        let dir = make_temp_dir().unwrap_or_else(|e| panic!("temporary directory: {e}"));
        let mut extra: Vec<String> = Vec::new();
        let tls_ca = tls.then(|| {
            let ca = crate::make_certificates(&dir);
            let file = |name: &str| dir.join(name).display().to_string();
            extra.extend([
                "--tls-cert-file".to_owned(),
                file("server.crt"),
                "--tls-key-file".to_owned(),
                file("server.key"),
                "--tls-ca-cert-file".to_owned(),
                file("ca.crt"),
                "--tls-auth-clients".to_owned(),
                "no".to_owned(),
                "--tls-cluster".to_owned(),
                "yes".to_owned(),
                "--tls-replication".to_owned(),
                "yes".to_owned(),
            ]);
            ca
        });
        let mut userinfo = String::new();
        if let Some((user, password)) = acl {
            for a in [
                "--user",
                "default",
                "off",
                "--user",
                user,
                "on",
                &format!(">{password}"),
                "~*",
                "&*",
                "+@all",
                "--masteruser",
                user,
                "--masterauth",
                password,
            ] {
                extra.push(a.to_owned());
            }
            userinfo = format!("{user}:{password}@");
        }
        let mut nodes = Vec::with_capacity(CLUSTER_NODES);
        let mut ports = Vec::with_capacity(CLUSTER_NODES);
        for i in 0..CLUSTER_NODES {
            let port = planned.map(|p| p[i]);
            let node = start_node(&dir, port, &extra, node_timeout_ms, tls).unwrap_or_else(|e| {
                let text = e.to_string();
                if tls && (text.contains("Bad directive") || text.contains("TLS")) {
                    panic!(
                        "this redis-server cannot serve TLS (was it built without \
                             BUILD_TLS=yes?); the TLS cluster test needs one that can:\n{text}"
                    );
                }
                panic!("{text}")
            });
            ports.push(node.port());
            nodes.push(node);
        }
        let cluster = RedisCluster {
            nodes,
            ports,
            dir,
            userinfo,
            tls_ca,
            paused: Vec::new(),
        };
        let mut create = Command::new(redis_cli());
        if tls {
            create
                .arg("--tls")
                .arg("--cacert")
                .arg(cluster.dir.join("ca.crt"));
        }
        if let Some((user, password)) = acl {
            create
                .args(["--user", user, "--pass", password])
                .arg("--no-auth-warning");
        }
        create.arg("--cluster").arg("create");
        for p in &cluster.ports {
            create.arg(format!("127.0.0.1:{p}"));
        }
        create
            .args(["--cluster-replicas", "1", "--cluster-yes"])
            .stdin(Stdio::null());
        let out = run_with_deadline(create, SETTLE_TIMEOUT).unwrap_or_else(|e| {
            panic!(
                "could not run `{}` ({e}). The cluster tests need redis-cli (Debian/Ubuntu: \
                 `apt-get install -y redis-tools`; `scripts/test.sh` installs it), or point \
                 {REDIS_CLI_ENV} at the binary.",
                redis_cli()
            )
        });
        match out {
            Some(out) if out.status.success() => {}
            Some(out) => panic!(
                "redis-cli --cluster create failed ({}):\n{}\n{}\n{}",
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr),
                cluster.logs()
            ),
            None => panic!(
                "redis-cli --cluster create did not finish within {SETTLE_TIMEOUT:?} (killed)\n{}",
                cluster.logs()
            ),
        }
        cluster.wait_settled();
        cluster
    }

    /// `redis://127.0.0.1:<port>` of every node started (killed ones included), for
    /// `Cache::builder().redis_cluster(..)`.
    pub fn urls(&self) -> Vec<String> {
        self.ports
            .iter()
            .map(|p| format!("{}://{}127.0.0.1:{p}", self.scheme(), self.userinfo))
            .collect()
    }

    /// The ports of the nodes that run (neither killed nor paused).
    pub fn live_ports(&self) -> Vec<u16> {
        self.nodes
            .iter()
            .filter(|n| n.pid().is_some() && !self.paused.contains(&n.port()))
            .map(RedisServer::port)
            .collect()
    }

    /// A raw cluster connection for looking behind the cache's back.
    ///
    /// # Panics
    /// If the cluster does not accept the connection.
    pub async fn raw(&self) -> RawCluster {
        let urls: Vec<String> = self
            .live_ports()
            .iter()
            .map(|p| format!("{}://{}127.0.0.1:{p}", self.scheme(), self.userinfo))
            .collect();
        RawCluster::connect_with(&urls, self.tls_ca.as_deref()).await
    }

    /// Runs `cmd` on the node at `port` (a plain, blocking connection).
    ///
    /// # Panics
    /// On a connection or Redis error.
    pub fn node_cmd<T: redis::FromRedisValue>(&self, port: u16, cmd: &redis::Cmd) -> T {
        self.try_node_cmd(port, cmd)
            .unwrap_or_else(|e| panic!("command on node {port} failed: {e}"))
    }

    fn try_node_cmd<T: redis::FromRedisValue>(
        &self,
        port: u16,
        cmd: &redis::Cmd,
    ) -> redis::RedisResult<T> {
        let url = format!("{}://{}127.0.0.1:{port}", self.scheme(), self.userinfo);
        let client = match &self.tls_ca {
            None => redis::Client::open(url)?,
            Some(ca) => redis::Client::build_with_tls(
                url,
                redis::TlsCertificates {
                    client_tls: None,
                    root_cert: Some(ca.clone()),
                },
            )?,
        };
        let mut conn = client.get_connection_with_timeout(Duration::from_secs(2))?;
        conn.set_read_timeout(Some(Duration::from_secs(5)))?;
        cmd.query(&mut conn)
    }

    /// `CLUSTER NODES` as seen by the node at `port`.
    pub fn nodes_seen_by(&self, port: u16) -> Vec<NodeInfo> {
        let text: String = self.node_cmd(port, redis::cmd("CLUSTER").arg("NODES"));
        parse_nodes(&text)
    }

    /// Which master serves which slots, as the first live node sees it now (a snapshot: one
    /// `CLUSTER NODES`, then lookups without round trips).
    ///
    /// # Panics
    /// If the node does not answer.
    pub fn slot_map(&self) -> SlotMap {
        let port = self.live_ports()[0];
        SlotMap {
            ranges: self
                .nodes_seen_by(port)
                .into_iter()
                .filter(|n| n.master && !n.failing)
                .flat_map(|n| n.slots.into_iter().map(move |(a, b)| (a, b, n.port)))
                .collect(),
        }
    }

    /// The ports of the masters that serve slots (as the first live node sees it now).
    pub fn slot_map_masters(&self) -> Vec<u16> {
        let mut ports: Vec<u16> = self.slot_map().ranges.iter().map(|r| r.2).collect();
        ports.sort_unstable();
        ports.dedup();
        ports
    }

    /// The hash slot of `key` as the server computes it (`CLUSTER KEYSLOT`; see [`key_slot`]
    /// for the same without a round trip).
    pub fn slot_of(&self, key: &str) -> u16 {
        let port = self.live_ports()[0];
        self.node_cmd(port, redis::cmd("CLUSTER").arg("KEYSLOT").arg(key))
    }

    /// The port of the master serving `key`'s slot (as the first live node sees it).
    ///
    /// # Panics
    /// If no master serves the slot.
    pub fn master_for_key(&self, key: &str) -> u16 {
        self.master_for_slot(self.slot_of(key))
    }

    /// The port of the master serving `slot` (as the first live node sees it).
    ///
    /// # Panics
    /// If no master serves the slot.
    pub fn master_for_slot(&self, slot: u16) -> u16 {
        let port = self.live_ports()[0];
        self.nodes_seen_by(port)
            .into_iter()
            .find(|n| {
                n.master && !n.failing && n.slots.iter().any(|&(a, b)| a <= slot && slot <= b)
            })
            .unwrap_or_else(|| panic!("no master serves slot {slot}"))
            .port
    }

    /// The port of a replica of the master at `master_port`.
    ///
    /// # Panics
    /// If it has none.
    pub fn replica_of(&self, master_port: u16) -> u16 {
        let nodes = self.nodes_seen_by(master_port);
        let id = &nodes
            .iter()
            .find(|n| n.port == master_port)
            .expect("the master itself")
            .id;
        nodes
            .iter()
            .find(|n| n.master_id.as_ref() == Some(id) && !n.failing)
            .unwrap_or_else(|| panic!("node {master_port} has no replica"))
            .port
    }

    /// `CLUSTER FAILOVER` on the replica at `replica_port` (a coordinated failover: its master
    /// stops taking writes until the replica caught up, then the replica takes over), then
    /// waits until the replica is a master in every live node's view and the cluster is ok.
    ///
    /// # Panics
    /// If the failover does not complete.
    pub fn failover(&self, replica_port: u16) {
        // Redis gives a manual failover 5 s (`CLUSTER_MF_TIMEOUT`) and then drops it: asked
        // again until the replica took over.
        let deadline = Instant::now() + SETTLE_TIMEOUT;
        loop {
            let _: () = self.node_cmd(replica_port, redis::cmd("CLUSTER").arg("FAILOVER"));
            let attempt = Instant::now() + Duration::from_secs(6);
            while Instant::now() < attempt {
                if self.is_master_everywhere(replica_port) && self.all_ok() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            if Instant::now() >= deadline {
                panic!(
                    "node {replica_port} did not take over within {SETTLE_TIMEOUT:?}\n{}",
                    self.logs()
                );
            }
        }
    }

    /// The node id of the node at `port` (as it sees itself).
    pub fn node_id(&self, port: u16) -> String {
        self.nodes_seen_by(port)
            .into_iter()
            .find(|n| n.port == port)
            .unwrap_or_else(|| panic!("node {port} not in its own CLUSTER NODES"))
            .id
    }

    /// Starts moving `slot` from the master at `from` to the master at `to` (a resharding
    /// step by step, as `redis-cli --cluster reshard` does it): `CLUSTER SETSLOT slot
    /// IMPORTING` on `to`, then `MIGRATING` on `from`. From now on `from` answers `-ASK` for
    /// the slot's keys it no longer holds. Move the keys with
    /// [`migrate_keys`](Self::migrate_keys) and end with
    /// [`finish_migration`](Self::finish_migration).
    pub fn begin_migration(&self, slot: u16, from: u16, to: u16) {
        let (from_id, to_id) = (self.node_id(from), self.node_id(to));
        let _: () = self.node_cmd(
            to,
            redis::cmd("CLUSTER")
                .arg("SETSLOT")
                .arg(slot)
                .arg("IMPORTING")
                .arg(&from_id),
        );
        let _: () = self.node_cmd(
            from,
            redis::cmd("CLUSTER")
                .arg("SETSLOT")
                .arg(slot)
                .arg("MIGRATING")
                .arg(&to_id),
        );
    }

    /// Moves up to `count` of `slot`'s keys from `from` to `to` (`CLUSTER GETKEYSINSLOT`, then
    /// `MIGRATE .. KEYS`): the number moved (0 when none is left on `from`).
    pub fn migrate_keys(&self, slot: u16, from: u16, to: u16, count: usize) -> usize {
        let keys: Vec<String> = self.node_cmd(
            from,
            redis::cmd("CLUSTER")
                .arg("GETKEYSINSLOT")
                .arg(slot)
                .arg(count),
        );
        if keys.is_empty() {
            return 0;
        }
        let mut migrate = redis::cmd("MIGRATE");
        migrate.arg("127.0.0.1").arg(to).arg("").arg(0).arg(5000);
        if let Some((user, password)) = self.userinfo.trim_end_matches('@').split_once(':') {
            migrate.arg("AUTH2").arg(user).arg(password);
        }
        migrate.arg("KEYS").arg(&keys);
        // `NOKEY` when every key went away meanwhile (deleted by the test's writers).
        let _: redis::Value = self.node_cmd(from, &migrate);
        keys.len()
    }

    /// Ends a migration begun with [`begin_migration`](Self::begin_migration): `CLUSTER
    /// SETSLOT slot NODE <to>` on `to`, `from` and every other master, then waits until every
    /// live node sees `to` as the slot's owner. `from` must hold none of the slot's keys.
    ///
    /// # Panics
    /// If that does not happen within 30 s.
    pub fn finish_migration(&self, slot: u16, from: u16, to: u16) {
        let to_id = self.node_id(to);
        let masters: Vec<u16> = self
            .nodes_seen_by(to)
            .into_iter()
            .filter(|n| n.master && !n.failing && n.port != to && n.port != from)
            .map(|n| n.port)
            .collect();
        for port in [to, from].into_iter().chain(masters) {
            let _: () = self.node_cmd(
                port,
                redis::cmd("CLUSTER")
                    .arg("SETSLOT")
                    .arg(slot)
                    .arg("NODE")
                    .arg(&to_id),
            );
        }
        let deadline = Instant::now() + SETTLE_TIMEOUT;
        loop {
            let agreed = self.live_ports().iter().all(|&p| {
                self.try_node_cmd::<String>(p, redis::cmd("CLUSTER").arg("NODES"))
                    .is_ok_and(|t| {
                        parse_nodes(&t).iter().any(|n| {
                            n.port == to && n.slots.iter().any(|&(a, b)| a <= slot && slot <= b)
                        })
                    })
            });
            if agreed && self.all_ok() {
                return;
            }
            if Instant::now() >= deadline {
                panic!(
                    "slot {slot} not owned by {to} everywhere within {SETTLE_TIMEOUT:?}\n{}",
                    self.logs()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Freezes the node at `port` with `SIGSTOP`: its connections stay open but it answers
    /// nothing (like a hung process or an unreachable host). It no longer counts as live until
    /// [`RedisCluster::resume`]. It is killed on drop like the others (`SIGKILL` also ends a
    /// stopped process).
    pub fn pause(&mut self, port: u16) {
        for node in &mut self.nodes {
            if node.port() == port {
                node.stop();
            }
        }
        self.paused.push(port);
    }

    /// Kills the node at `port` with `SIGKILL` (its log stays until drop).
    pub fn kill(&mut self, port: u16) {
        for node in &mut self.nodes {
            if node.port() == port {
                node.kill();
            }
        }
    }

    /// Resumes a node paused by [`RedisCluster::pause`] (`SIGCONT`).
    pub fn resume(&mut self, port: u16) {
        for node in &mut self.nodes {
            if node.port() == port {
                node.cont();
            }
        }
        self.paused.retain(|&p| p != port);
    }

    /// Waits until the node at `port` is a master in every live node's view (e.g. a replica
    /// promoted after its master was killed) and the cluster is ok again.
    ///
    /// # Panics
    /// If that does not happen within 30 s.
    pub fn wait_master(&self, port: u16) {
        let deadline = Instant::now() + SETTLE_TIMEOUT;
        loop {
            if self.is_master_everywhere(port) && self.all_ok() {
                return;
            }
            if Instant::now() >= deadline {
                panic!(
                    "node {port} did not become a master within {SETTLE_TIMEOUT:?}\n{}",
                    self.logs()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn is_master_everywhere(&self, port: u16) -> bool {
        self.live_ports().iter().all(|&p| {
            self.try_node_cmd::<String>(p, redis::cmd("CLUSTER").arg("NODES"))
                .map(|t| {
                    parse_nodes(&t)
                        .iter()
                        .any(|n| n.port == port && n.master && !n.slots.is_empty())
                })
                .unwrap_or(false)
        })
    }

    /// Waits until every live node reports `cluster_state:ok`.
    ///
    /// # Panics
    /// If that does not happen within 30 s.
    pub fn wait_ok(&self) {
        let deadline = Instant::now() + SETTLE_TIMEOUT;
        while !self.all_ok() {
            if Instant::now() >= deadline {
                panic!("cluster not ok within {SETTLE_TIMEOUT:?}\n{}", self.logs());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn all_ok(&self) -> bool {
        self.live_ports().iter().all(|&p| {
            self.try_node_cmd::<String>(p, redis::cmd("CLUSTER").arg("INFO"))
                .is_ok_and(|info| info.contains("cluster_state:ok"))
        })
    }

    /// Ready: every node says `cluster_state:ok`, knows all six nodes as three masters
    /// covering the slots and three replicas, and every replica's replication link is up (a coordinated
    /// failover needs it).
    fn wait_settled(&self) {
        let deadline = Instant::now() + SETTLE_TIMEOUT;
        loop {
            let settled = self.all_ok()
                && self.ports.iter().all(|&p| {
                    let Ok(text) =
                        self.try_node_cmd::<String>(p, redis::cmd("CLUSTER").arg("NODES"))
                    else {
                        return false;
                    };
                    let nodes = parse_nodes(&text);
                    nodes.len() == CLUSTER_NODES
                        && nodes
                            .iter()
                            .filter(|n| n.master && !n.slots.is_empty())
                            .count()
                            == 3
                        && nodes.iter().filter(|n| n.master_id.is_some()).count() == 3
                        && !nodes.iter().any(|n| n.failing)
                })
                && self.ports.iter().all(|&p| {
                    self.try_node_cmd::<String>(p, redis::cmd("INFO").arg("replication"))
                        .is_ok_and(|i| {
                            i.contains("role:master") || i.contains("master_link_status:up")
                        })
                });
            if settled {
                return;
            }
            if Instant::now() >= deadline {
                panic!(
                    "cluster did not settle within {SETTLE_TIMEOUT:?}\n{}",
                    self.logs()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The tail of every node's log, for failure messages.
    pub fn logs(&self) -> String {
        let mut out = String::new();
        for p in &self.ports {
            let log =
                fs::read_to_string(self.dir.join(format!("redis-{p}.log"))).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(15).collect();
            out.push_str(&format!("--- node {p} ---\n"));
            for l in tail.into_iter().rev() {
                out.push_str(l);
                out.push('\n');
            }
        }
        out
    }
}

impl Drop for RedisCluster {
    fn drop(&mut self) {
        // Each node kills its process on drop (and removes the shared directory).
        self.nodes.clear();
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// A cluster whose ports are reserved but whose nodes are not started yet
/// ([`RedisCluster::reserve`]).
#[derive(Debug, Clone)]
pub struct PlannedCluster {
    ports: Vec<u16>,
}

impl PlannedCluster {
    /// `redis://127.0.0.1:<port>` of every node to be started.
    pub fn urls(&self) -> Vec<String> {
        self.ports
            .iter()
            .map(|p| format!("redis://127.0.0.1:{p}"))
            .collect()
    }

    /// Starts the six nodes on the reserved ports, creates the cluster and waits until it is
    /// ready (blocking), as [`RedisCluster::start`] does.
    ///
    /// # Panics
    /// As [`RedisCluster::start`]; also if a reserved port was taken meanwhile.
    pub fn start(self) -> RedisCluster {
        RedisCluster::start_on(Some(&self.ports), None, NODE_TIMEOUT_MS, false)
    }
}

/// A free port on 127.0.0.1 whose cluster bus port (+10000) is free too.
fn reserve_cluster_port() -> u16 {
    for _ in 0..64 {
        let port = crate::reserve_free_port();
        if bus_free(port) {
            return port;
        }
    }
    panic!("no free port whose cluster bus port (+10000) was free too");
}

/// The cluster bus listens on port + 10000: it must be free too.
fn bus_free(port: u16) -> bool {
    port.checked_add(10_000).is_some_and(|bus| {
        std::net::TcpListener::bind(std::net::SocketAddr::from((
            std::net::Ipv4Addr::LOCALHOST,
            bus,
        )))
        .is_ok()
    })
}

/// Starts one cluster-enabled node in `dir` on `port`, or on a free port (retried on a fresh
/// port if the port was taken meanwhile).
fn start_node(
    dir: &std::path::Path,
    fixed: Option<u16>,
    extra: &[String],
    node_timeout_ms: u64,
    tls: bool,
) -> Result<RedisServer, StartError> {
    let mut last = None;
    let attempts = if fixed.is_some() { 1 } else { 8 };
    for _ in 0..attempts {
        let port = match fixed {
            Some(p) => p,
            None => crate::reserve_free_port(),
        };
        if fixed.is_none() && !bus_free(port) {
            continue;
        }
        let mut args: Vec<String> = vec![
            "--cluster-enabled".into(),
            "yes".into(),
            "--cluster-config-file".into(),
            dir.join(format!("nodes-{port}.conf")).display().to_string(),
            "--cluster-node-timeout".into(),
            node_timeout_ms.to_string(),
            // A replica whose link was down for long may still take over (tests only).
            "--cluster-replica-validity-factor".into(),
            "0".into(),
            // The first full sync starts at once (diskless sync waits 5 s by default).
            "--repl-diskless-sync-delay".into(),
            "0".into(),
        ];
        args.extend_from_slice(extra);
        let spec = ServerSpec {
            port: Some(port),
            args,
            tls,
            dir: Some(dir.to_path_buf()),
        };
        match RedisServer::try_start_with(spec) {
            Ok(s) => return Ok(s),
            Err(e @ StartError::Missing { .. }) => return Err(e),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| {
        StartError::from(std::io::Error::new(
            std::io::ErrorKind::AddrInUse,
            "no free port whose cluster bus port (+10000) was free too",
        ))
    }))
}

/// A snapshot of which master serves which slots ([`RedisCluster::slot_map`]).
#[derive(Debug, Clone)]
pub struct SlotMap {
    /// `(first slot, last slot, master port)`.
    ranges: Vec<(u16, u16, u16)>,
}

impl SlotMap {
    /// The port of the master serving `key`'s slot.
    ///
    /// # Panics
    /// If no master serves it.
    pub fn master_for_key(&self, key: &str) -> u16 {
        let slot = key_slot(key);
        self.ranges
            .iter()
            .find(|&&(a, b, _)| a <= slot && slot <= b)
            .unwrap_or_else(|| panic!("no master serves slot {slot}"))
            .2
    }
}

/// The Redis Cluster hash slot of `key`: CRC16 (XMODEM) of the key, or of its `{hash tag}`
/// when it has a non-empty one, modulo 16384 (the cluster specification's `HASH_SLOT`).
pub fn key_slot(key: &str) -> u16 {
    let bytes = key.as_bytes();
    let hashed = match bytes.iter().position(|&b| b == b'{') {
        Some(open) => match bytes[open + 1..].iter().position(|&b| b == b'}') {
            Some(len) if len > 0 => &bytes[open + 1..open + 1 + len],
            _ => bytes,
        },
        None => bytes,
    };
    let mut crc: u16 = 0;
    for &b in hashed {
        crc ^= u16::from(b) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    crc % 16384
}

/// Runs `cmd` to completion, killing it after `limit` (then `Ok(None)`).
fn run_with_deadline(
    mut cmd: Command,
    limit: Duration,
) -> std::io::Result<Option<std::process::Output>> {
    let mut child = cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn()?;
    // Drain the pipes on threads (a full pipe would block the child).
    let mut out = child.stdout.take();
    let mut err = child.stderr.take();
    let read_out = std::thread::spawn(move || {
        let mut buf = Vec::new();
        if let Some(o) = out.as_mut() {
            let _ = std::io::Read::read_to_end(o, &mut buf);
        }
        buf
    });
    let read_err = std::thread::spawn(move || {
        let mut buf = Vec::new();
        if let Some(e) = err.as_mut() {
            let _ = std::io::Read::read_to_end(e, &mut buf);
        }
        buf
    });
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break Some(status);
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let stdout = read_out.join().unwrap_or_default();
    let stderr = read_err.join().unwrap_or_default();
    Ok(status.map(|status| std::process::Output {
        status,
        stdout,
        stderr,
    }))
}

fn redis_cli() -> String {
    std::env::var(REDIS_CLI_ENV).unwrap_or_else(|_| "redis-cli".to_owned())
}

/// Parses `CLUSTER NODES`: `<id> <ip:port@cport[,host]> <flags> <master|-> <ping> <pong>
/// <epoch> <link> <slot>...`.
fn parse_nodes(text: &str) -> Vec<NodeInfo> {
    text.lines()
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() < 8 {
                return None;
            }
            let addr = f[1].split('@').next()?;
            let port: u16 = addr.rsplit(':').next()?.parse().ok()?;
            let flags: Vec<&str> = f[2].split(',').collect();
            let slots = f[8..]
                .iter()
                .filter(|s| !s.starts_with('['))
                .filter_map(|s| match s.split_once('-') {
                    Some((a, b)) => Some((a.parse().ok()?, b.parse().ok()?)),
                    None => s.parse().ok().map(|x| (x, x)),
                })
                .collect();
            Some(NodeInfo {
                id: f[0].to_owned(),
                port,
                master: flags.contains(&"master"),
                failing: flags.contains(&"fail") || flags.contains(&"fail?"),
                master_id: (f[3] != "-").then(|| f[3].to_owned()),
                slots,
            })
        })
        .collect()
}

/// A raw redis-rs cluster connection, for reading keys behind the cache's back.
///
/// All methods panic on a Redis error: in a test that is a harness failure, not an observation.
#[derive(Clone)]
pub struct RawCluster {
    conn: redis::cluster_async::ClusterConnection,
}

impl fmt::Debug for RawCluster {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("RawCluster")
    }
}

impl RawCluster {
    /// Connects to the cluster through the seed nodes `urls`.
    ///
    /// # Panics
    /// If the cluster does not accept the connection.
    pub async fn connect(urls: &[String]) -> RawCluster {
        Self::connect_with(urls, None).await
    }

    /// Like [`RawCluster::connect`], trusting the CA certificate `tls_ca` (PEM) for
    /// `rediss://` seeds.
    ///
    /// # Panics
    /// If the cluster does not accept the connection.
    pub async fn connect_with(urls: &[String], tls_ca: Option<&[u8]>) -> RawCluster {
        let mut builder = redis::cluster::ClusterClientBuilder::new(urls.to_vec());
        if let Some(ca) = tls_ca {
            builder = builder.certs(redis::TlsCertificates {
                client_tls: None,
                root_cert: Some(ca.to_vec()),
            });
        }
        let client = builder.build().expect("valid cluster urls");
        let conn = client
            .get_async_connection()
            .await
            .unwrap_or_else(|e| panic!("raw cluster connection failed: {e}"));
        RawCluster { conn }
    }

    /// `INCR key`: the new value.
    pub async fn incr(&self, key: &str) -> i64 {
        self.cmd(redis::cmd("INCR").arg(key)).await
    }

    /// `GET key` parsed as an integer (`None` when absent).
    pub async fn get_i64(&self, key: &str) -> Option<i64> {
        self.cmd(redis::cmd("GET").arg(key)).await
    }

    /// Runs any single-slot command.
    ///
    /// # Panics
    /// On a Redis error.
    pub async fn cmd<T: redis::FromRedisValue>(&self, cmd: &redis::Cmd) -> T {
        let mut conn = self.conn.clone();
        cmd.query_async(&mut conn)
            .await
            .unwrap_or_else(|e| panic!("raw cluster command failed: {e}"))
    }

    /// `GET key`.
    pub async fn get(&self, key: &str) -> Option<Vec<u8>> {
        self.cmd(redis::cmd("GET").arg(key)).await
    }

    /// `EXISTS key`.
    pub async fn exists(&self, key: &str) -> bool {
        self.cmd::<i64>(redis::cmd("EXISTS").arg(key)).await == 1
    }

    /// `ZCARD key` (a tag's member set).
    pub async fn zcard(&self, key: &str) -> i64 {
        self.cmd(redis::cmd("ZCARD").arg(key)).await
    }
}
