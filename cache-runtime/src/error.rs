//! Errors returned by the cache's own API (building, installing, manual invalidation).
//!
//! A cached function never returns these: a cache failure makes the call go to the
//! loader and is counted in [`Stats`](crate::Stats).

use std::fmt;

/// An error from the cache's own API.
#[derive(Debug)]
#[non_exhaustive]
pub enum Error {
    /// The builder was given an invalid setting (message says which).
    Config(String),
    /// A global cache is already installed; [`install`](crate::install) can be called once.
    AlreadyInstalled,
    /// The backend failed (connection refused, timeout, protocol error).
    Backend(BackendError),
    /// [`Cache::shutdown`](crate::Cache::shutdown) could not deliver every queued invalidation
    /// (its timeout passed, or the server refused them): `keys` entries may stay stale until
    /// their TTL ends. They are also counted in `invalidations_failed`.
    Undelivered {
        /// Keys whose deletion was given up.
        keys: u64,
    },
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Config(m) => write!(f, "invalid cache configuration: {m}"),
            Error::AlreadyInstalled => f.write_str("a global cache is already installed"),
            Error::Backend(e) => write!(f, "cache backend error: {e}"),
            Error::Undelivered { keys } => write!(
                f,
                "{keys} queued invalidation key(s) were not delivered before the cache shut down"
            ),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Backend(e) => Some(e),
            _ => None,
        }
    }
}

impl From<BackendError> for Error {
    fn from(e: BackendError) -> Self {
        Error::Backend(e)
    }
}

/// A failure talking to the storage backend.
///
/// The message never contains credentials or cached values.
#[derive(Debug, Clone)]
pub struct BackendError {
    kind: BackendErrorKind,
    message: String,
}

/// What kind of backend failure happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum BackendErrorKind {
    /// Could not connect or the connection dropped.
    Connection,
    /// The command did not answer in time.
    Timeout,
    /// The server answered that it cannot serve the command for now: `-LOADING` (loading its
    /// dataset), `-BUSY` (running a slow script), `-TRYAGAIN`, `-CLUSTERDOWN`, `-MASTERDOWN`,
    /// `-READONLY` (a replica, e.g. a master demoted by a failover), a Redis Cluster's
    /// `-MOVED`/`-ASK` when redirections ran out during a reconfiguration, and `-NOSCRIPT`
    /// left after the script was reloaded (a node that missed the reload).
    Unavailable,
    /// Any other error reported by the server or the client library (e.g. `-NOPERM`,
    /// `-WRONGTYPE`): retrying will not change it.
    Other,
}

impl BackendErrorKind {
    /// Whether the same call may succeed later: the backend could not be reached, did not
    /// answer in time, or answered "try again later" ([`Unavailable`](Self::Unavailable)).
    /// Queued invalidations are retried on these (and given up on the others); they also count
    /// as failures for the circuit breaker.
    pub fn is_transient(self) -> bool {
        matches!(
            self,
            BackendErrorKind::Connection
                | BackendErrorKind::Timeout
                | BackendErrorKind::Unavailable
        )
    }
}

impl BackendError {
    /// Creates an error of the given kind.
    pub fn new(kind: BackendErrorKind, message: impl Into<String>) -> Self {
        BackendError {
            kind,
            message: message.into(),
        }
    }

    /// The kind of failure.
    pub fn kind(&self) -> BackendErrorKind {
        self.kind
    }
}

impl fmt::Display for BackendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}: {}", self.kind, self.message)
    }
}

impl std::error::Error for BackendError {}

impl From<redis::RedisError> for BackendError {
    fn from(e: redis::RedisError) -> Self {
        let kind = if e.is_timeout() {
            BackendErrorKind::Timeout
        } else if e.is_io_error()
            || e.is_connection_refusal()
            || e.is_connection_dropped()
            // A cluster connection with no reachable node for the slot (e.g. its master was
            // just killed and the replica is not promoted yet).
            || e.kind() == redis::ErrorKind::ClusterConnectionNotFound
        {
            BackendErrorKind::Connection
        } else if matches!(
            e.code(),
            Some(
                "LOADING"
                    | "BUSY"
                    | "TRYAGAIN"
                    | "CLUSTERDOWN"
                    | "MASTERDOWN"
                    | "READONLY"
                    | "MOVED"
                    | "ASK"
                    | "NOSCRIPT"
            )
        ) {
            // "Try again later" replies (redis-rs has no kind for BUSY: match the code). A
            // MOVED/ASK reaching us means redis-rs ran out of redirections while the cluster
            // was being reconfigured: also a "try again later". NOSCRIPT reaching us means
            // redis-rs's reload (`SCRIPT LOAD`, sent to every node it is connected to) missed
            // the node that ran the script, e.g. a just-promoted master whose connection was
            // being re-established: the next attempt loads it again.
            BackendErrorKind::Unavailable
        } else {
            BackendErrorKind::Other
        };
        // redis-rs error messages do not include the URL or password.
        BackendError::new(kind, e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The error redis-rs gives for a server reply such as `-LOADING ...`.
    fn from_reply(reply: &str) -> BackendError {
        let value = redis::parse_redis_value(format!("{reply}\r\n").as_bytes()).expect("RESP");
        BackendError::from(value.extract_error().expect_err("an error reply"))
    }

    #[test]
    fn try_again_later_replies_are_transient_refusals_are_not() {
        for reply in [
            "-LOADING Redis is loading the dataset in memory",
            "-BUSY Redis is busy running a script. You can only call SCRIPT KILL or SHUTDOWN NOSAVE.",
            "-TRYAGAIN Multiple keys request during rehashing of slot",
            "-CLUSTERDOWN The cluster is down",
            "-MASTERDOWN Link with MASTER is down and replica-serve-stale-data is set to 'no'.",
            "-READONLY You can't write against a read only replica.",
            "-MOVED 3999 127.0.0.1:6381",
            "-ASK 3999 127.0.0.1:6381",
            "-NOSCRIPT No matching script. Please use EVAL.",
        ] {
            let e = from_reply(reply);
            assert_eq!(e.kind(), BackendErrorKind::Unavailable, "{reply}: {e}");
            assert!(e.kind().is_transient(), "{reply}");
        }
        for reply in [
            "-NOPERM User cache has no permissions to run the 'unlink' command",
            "-WRONGTYPE Operation against a key holding the wrong kind of value",
            "-ERR unknown command 'UNLINK'",
            "-BUSYKEY Target key name already exists.",
            "-CROSSSLOT Keys in request don't hash to the same slot",
        ] {
            let e = from_reply(reply);
            assert_eq!(e.kind(), BackendErrorKind::Other, "{reply}: {e}");
            assert!(!e.kind().is_transient(), "{reply}");
        }
        for kind in [BackendErrorKind::Connection, BackendErrorKind::Timeout] {
            assert!(kind.is_transient(), "{kind:?}");
        }
    }
}
