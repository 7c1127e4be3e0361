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
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Config(m) => write!(f, "invalid cache configuration: {m}"),
            Error::AlreadyInstalled => f.write_str("a global cache is already installed"),
            Error::Backend(e) => write!(f, "cache backend error: {e}"),
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
    /// Any other error reported by the server or the client library.
    Other,
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
        } else if e.is_io_error() || e.is_connection_refusal() || e.is_connection_dropped() {
            BackendErrorKind::Connection
        } else {
            BackendErrorKind::Other
        };
        // redis-rs error messages do not include the URL or password.
        BackendError::new(kind, e.to_string())
    }
}
