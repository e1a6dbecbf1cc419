//! The error type shared by every component.
//!
//! Each variant corresponds to one `eh_status` code of the C ABI (see
//! the `EH_*` constants in [`crate::ffi`]); the message becomes `eh_last_error()`.

use std::fmt;

/// What went wrong, with a human-readable explanation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Error {
    /// An argument was out of range, malformed or not valid UTF-8.
    InvalidArgument(String),
    /// The named item (user, channel...) does not exist.
    NotFound(String),
    /// A bounded structure is full and the operation was refused.
    Full(String),
    /// The event ring is full; the event was dropped and counted.
    QueueFull,
    /// An operating-system I/O operation failed.
    Io(IoError),
    /// Serialized data (snapshot, sketch bytes) failed validation.
    Corrupt(String),
    /// The handle is shutting down or shut down.
    ShutDown,
    /// The handle was closed; the message names it ("leaderboard closed").
    Closed(String),
    /// A blocking operation did not complete in time.
    Timeout(String),
    /// A call that would deadlock (e.g. `flush` from inside a flush callback).
    WouldDeadlock(String),
    /// A worker thread panicked earlier; the handle is poisoned.
    Poisoned(String),
    /// A non-blocking call found the handle in use by another thread.
    Busy(String),
}

/// Shorthand for `std::result::Result<T, Error>`.
pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    /// Builds [`Error::InvalidArgument`] from anything displayable.
    pub fn invalid(msg: impl Into<String>) -> Self {
        Error::InvalidArgument(msg.into())
    }

    /// Builds [`Error::Corrupt`] from anything displayable.
    pub fn corrupt(msg: impl Into<String>) -> Self {
        Error::Corrupt(msg.into())
    }

    /// Wraps an I/O error, naming what was being done; keeps the OS error number.
    pub fn io(context: impl fmt::Display, err: std::io::Error) -> Self {
        Error::Io(IoError {
            message: format!("{context}: {err}"),
            errno: err.raw_os_error(),
        })
    }
}

/// An I/O failure: the message (naming the file and the OS error) and, when the
/// operating system reported one, its error number (`errno`), which the C ABI
/// exposes through `eh_last_error_errno`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IoError {
    /// What was being done, on which file, and the OS error's text.
    pub message: String,
    /// The OS error number, if the failure came from the OS.
    pub errno: Option<i32>,
}

impl fmt::Display for IoError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::InvalidArgument(m) => write!(f, "invalid argument: {m}"),
            Error::NotFound(m) => write!(f, "not found: {m}"),
            Error::Full(m) => write!(f, "full: {m}"),
            Error::QueueFull => f.write_str("queue full: event dropped"),
            Error::Io(m) => write!(f, "I/O error: {m}"),
            Error::Corrupt(m) => write!(f, "corrupt data: {m}"),
            Error::ShutDown => f.write_str("shut down"),
            Error::Closed(m) => write!(f, "shut down: {m}"),
            Error::Timeout(m) => write!(f, "timed out: {m}"),
            Error::WouldDeadlock(m) => write!(f, "refused, would deadlock: {m}"),
            Error::Poisoned(m) => write!(f, "poisoned: {m}"),
            Error::Busy(m) => write!(f, "busy: {m}"),
        }
    }
}

impl std::error::Error for Error {}
