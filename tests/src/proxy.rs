//! Network faults: TCP proxies between a cache and its server. [`Proxy`] injects a partition
//! (requests swallowed) or cut connections while the server keeps its data; [`HoldProxy`]
//! holds the traffic at a chosen command, to force one interleaving without sleeping.

use std::fmt;
use std::io;
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// A loopback TCP proxy in front of a Redis server, for network faults that keep the server's
/// data (a restarted server is empty, which would hide a lost write or invalidation).
///
/// Point the cache at [`Proxy::url`] instead of the server. A healthy proxy forwards both
/// directions byte for byte (each connection gets its own upstream connection; an end of stream
/// in one direction is passed on as a half-close). Two faults can be injected:
///
/// * [`Proxy::partition`]: bytes from clients towards the server are silently dropped, on open
///   connections and on new ones (which are still accepted). Replies still flow back and no
///   connection is closed, so a command sent meanwhile never reaches the server and its caller
///   waits for a reply that never comes.
/// * [`Proxy::cut`]: every open connection is closed (without forwarding anything more) and new
///   connections are closed as soon as they are accepted, like an unreachable server.
///
/// [`Proxy::heal`] ends either fault. Dropping the proxy stops it and closes its connections.
///
/// ```no_run
/// # async fn demo() {
/// let server = cache_tests::RedisServer::start();
/// let proxy = cache_tests::Proxy::start(server.port()).await;
/// let cache = cache_tests::Cache::builder()
///     .redis(proxy.url())
///     .build()
///     .await
///     .unwrap();
/// proxy.partition(); // commands are lost on the way to the server
/// proxy.heal(); // connections are reset, new ones work again
/// # drop(cache);
/// # }
/// ```
pub struct Proxy {
    port: u16,
    /// False while [`Proxy::cut`]: new connections are closed at once.
    reachable: Arc<AtomicBool>,
    /// True while [`Proxy::partition`]: client bytes are dropped.
    blackhole: Arc<AtomicBool>,
    /// Bumped to close every connection open at that moment.
    reset: tokio::sync::watch::Sender<u64>,
    accept: tokio::task::JoinHandle<()>,
}

impl fmt::Debug for Proxy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Proxy")
            .field("port", &self.port)
            .field("reachable", &self.reachable.load(Ordering::SeqCst))
            .field("partitioned", &self.blackhole.load(Ordering::SeqCst))
            .finish()
    }
}

impl Proxy {
    /// Starts a healthy proxy on a free loopback port that forwards to `127.0.0.1:<upstream>`.
    /// Needs a Tokio runtime (its tasks run there).
    ///
    /// # Panics
    /// If no loopback port can be bound.
    pub async fn start(upstream: u16) -> Proxy {
        let listener = tokio::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .await
            .expect("bind proxy");
        let port = listener.local_addr().expect("proxy addr").port();
        let reachable = Arc::new(AtomicBool::new(true));
        let blackhole = Arc::new(AtomicBool::new(false));
        let (reset, _) = tokio::sync::watch::channel(0u64);
        let accept = tokio::spawn({
            let (reachable, blackhole, reset) =
                (reachable.clone(), blackhole.clone(), reset.clone());
            async move {
                loop {
                    let Ok((client, _)) = listener.accept().await else {
                        continue;
                    };
                    // Subscribe before looking at `reachable`: a `cut` that this connection
                    // slips past still resets it.
                    let reset_rx = reset.subscribe();
                    if !reachable.load(Ordering::SeqCst) {
                        drop(client);
                        continue;
                    }
                    tokio::spawn(proxy_connection(
                        client,
                        upstream,
                        reachable.clone(),
                        blackhole.clone(),
                        reset_rx,
                    ));
                }
            }
        });
        Proxy {
            port,
            reachable,
            blackhole,
            reset,
            accept,
        }
    }

    /// The port the proxy listens on (on 127.0.0.1).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `redis://127.0.0.1:<port>/`, for `Cache::builder().redis(...)`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// Starts a partition: from now on every byte a client sends is read and dropped (on open
    /// and on new connections), while replies still flow back and no connection is closed.
    /// Undo with [`Proxy::heal`].
    pub fn partition(&self) {
        self.blackhole.store(true, Ordering::SeqCst);
    }

    /// Makes the server unreachable: every open connection is closed (without forwarding
    /// anything more) and new connections are closed as soon as they are accepted.
    /// Undo with [`Proxy::heal`].
    pub fn cut(&self) {
        self.reachable.store(false, Ordering::SeqCst);
        self.reset.send_modify(|n| *n += 1);
    }

    /// Ends a [`Proxy::partition`] or a [`Proxy::cut`]: every connection open at this moment is
    /// closed (so no client keeps a stream that lost bytes) and new connections are forwarded
    /// again.
    pub fn heal(&self) {
        self.reachable.store(true, Ordering::SeqCst);
        self.blackhole.store(false, Ordering::SeqCst);
        self.reset.send_modify(|n| *n += 1);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        // Stops accepting; the open connections see the reset channel close and end too.
        self.accept.abort();
    }
}

/// Forwards one proxied connection until either side closes both directions, an I/O error, or a
/// reset (see [`Proxy::heal`]).
async fn proxy_connection(
    mut client: tokio::net::TcpStream,
    upstream: u16,
    reachable: Arc<AtomicBool>,
    blackhole: Arc<AtomicBool>,
    mut reset: tokio::sync::watch::Receiver<u64>,
) {
    use tokio::io::AsyncWriteExt;

    let Ok(mut server) = tokio::net::TcpStream::connect((Ipv4Addr::LOCALHOST, upstream)).await
    else {
        return; // dropping the client closes it
    };
    let (mut client_rx, mut client_tx) = client.split();
    let (mut server_rx, mut server_tx) = server.split();
    let up = forward_unless_partitioned(&mut client_rx, &mut server_tx, &reachable, &blackhole);
    let down = async {
        tokio::io::copy(&mut server_rx, &mut client_tx).await?;
        client_tx.shutdown().await
    };
    tokio::select! {
        biased;
        // Also ends when the proxy is dropped (the sender is gone).
        _ = reset.changed() => {}
        _ = async { tokio::try_join!(up, down) } => {}
    }
}

/// Copies `from` to `to`, dropping what is read while `blackhole` is set; passes the end of
/// stream on as a half-close. Ends (without forwarding) at the first bytes read after a
/// [`Proxy::cut`]: the reset that `cut` sends may reach this connection only after a poll that
/// already started reads a command sent after the cut.
async fn forward_unless_partitioned(
    from: &mut tokio::net::tcp::ReadHalf<'_>,
    to: &mut tokio::net::tcp::WriteHalf<'_>,
    reachable: &AtomicBool,
    blackhole: &AtomicBool,
) -> io::Result<()> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let mut buf = [0u8; 4096];
    loop {
        let n = from.read(&mut buf).await?;
        if n == 0 {
            return to.shutdown().await;
        }
        if !reachable.load(Ordering::SeqCst) {
            return Err(io::Error::new(
                io::ErrorKind::ConnectionAborted,
                "proxy cut",
            ));
        }
        if blackhole.load(Ordering::SeqCst) {
            continue; // lost in the partition
        }
        to.write_all(&buf[..n]).await?;
    }
}

// ---------------------------------------------------------------------------------------------
// Holding traffic at a chosen command.

/// A loopback proxy in front of a Redis server that can hold traffic at a chosen point (to force
/// one interleaving of a cache's commands with another cache's, without sleeping).
///
/// * [`HoldProxy::hold_after`]`(cmd)`: the next client chunk containing `cmd` is forwarded,
///   [`HoldProxy::reached`] fires, and every later client byte waits until
///   [`HoldProxy::release`] (the command itself has been applied by the server; what the
///   client sends next has not).
/// * [`HoldProxy::hold_reply_to`]`(cmd)`: the next client chunk containing `cmd` is forwarded,
///   but the server's reply to it waits (with everything after it) until `release`, so the
///   client's command times out after the server applied it.
pub struct HoldProxy {
    port: u16,
    shared: Arc<Hold>,
    accept: tokio::task::JoinHandle<()>,
}

struct Hold {
    /// The command to watch for (armed while `Some`).
    cmd: std::sync::Mutex<Option<(Vec<u8>, bool)>>,
    /// Set when the reply to the watched command must be held.
    hold_reply: AtomicBool,
    reached: tokio::sync::Notify,
    release: tokio::sync::Semaphore,
}

impl HoldProxy {
    pub async fn start(upstream: u16) -> HoldProxy {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0))
            .await
            .expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let shared = Arc::new(Hold {
            cmd: std::sync::Mutex::new(None),
            hold_reply: AtomicBool::new(false),
            reached: tokio::sync::Notify::new(),
            release: tokio::sync::Semaphore::new(0),
        });
        let accept = tokio::spawn({
            let shared = shared.clone();
            async move {
                loop {
                    let Ok((client, _)) = listener.accept().await else {
                        continue;
                    };
                    tokio::spawn(Self::connection(client, upstream, shared.clone()));
                }
            }
        });
        HoldProxy {
            port,
            shared,
            accept,
        }
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    pub fn hold_after(&self, cmd: &str) {
        *self.shared.cmd.lock().unwrap() = Some((cmd.as_bytes().to_vec(), false));
    }

    pub fn hold_reply_to(&self, cmd: &str) {
        *self.shared.cmd.lock().unwrap() = Some((cmd.as_bytes().to_vec(), true));
    }

    pub async fn reached(&self) {
        crate::guard(
            "the proxy saw the watched command",
            self.shared.reached.notified(),
        )
        .await;
    }

    pub fn release(&self) {
        self.shared.release.add_permits(1);
    }

    async fn connection(mut client: tokio::net::TcpStream, upstream: u16, hold: Arc<Hold>) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};

        let Ok(mut server) = tokio::net::TcpStream::connect(("127.0.0.1", upstream)).await else {
            return;
        };
        let (mut crx, mut ctx) = client.split();
        let (mut srx, mut stx) = server.split();
        let up = async {
            let mut buf = vec![0u8; 64 * 1024];
            loop {
                let n = crx.read(&mut buf).await?;
                if n == 0 {
                    return stx.shutdown().await;
                }
                let armed = {
                    let mut cmd = hold.cmd.lock().unwrap();
                    match cmd.as_ref() {
                        Some((c, reply)) if contains(&buf[..n], c) => {
                            let reply = *reply;
                            *cmd = None;
                            Some(reply)
                        }
                        _ => None,
                    }
                };
                match armed {
                    Some(true) => {
                        hold.hold_reply.store(true, Ordering::SeqCst);
                        stx.write_all(&buf[..n]).await?;
                    }
                    Some(false) => {
                        stx.write_all(&buf[..n]).await?;
                        stx.flush().await?;
                        hold.reached.notify_one();
                        hold.release.acquire().await.expect("open").forget();
                    }
                    None => stx.write_all(&buf[..n]).await?,
                }
            }
        };
        let down = async {
            let mut buf = vec![0u8; 64 * 1024];
            loop {
                let n = srx.read(&mut buf).await?;
                if n == 0 {
                    return ctx.shutdown().await;
                }
                if hold.hold_reply.swap(false, Ordering::SeqCst) {
                    hold.reached.notify_one();
                    hold.release.acquire().await.expect("open").forget();
                }
                ctx.write_all(&buf[..n]).await?;
            }
        };
        let _: std::io::Result<((), ())> = tokio::try_join!(up, down);
    }
}

impl Drop for HoldProxy {
    fn drop(&mut self) {
        self.accept.abort();
        self.shared.release.add_permits(1000);
    }
}

impl fmt::Debug for HoldProxy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HoldProxy")
            .field("port", &self.port)
            .finish()
    }
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}
