//! The error type shared by every component of the core.

use std::fmt;

/// What went wrong in a core call. The C ABI turns each into its documented
/// error value and keeps the message for `cllm_last_error()`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Error {
    /// An argument is out of its documented range (bad id, size, level, …).
    InvalidArgument(String),
    /// An index or address lies outside the object it refers to (a tensor
    /// id, a tile coordinate, an SRAM address). C++ wrappers throw
    /// `std::out_of_range` for it, Python raises `IndexError`.
    OutOfRange(String),
    /// The call is not allowed in the object's current state (e.g. start twice).
    WrongState(String),
    /// A bounded resource is full (e.g. a mailbox at capacity).
    Full(String),
    /// A wait ran out of time before its condition held.
    Timeout(String),
    /// An operating-system call failed.
    System(String),
}

impl Error {
    /// The human-readable message without the category prefix.
    pub fn message(&self) -> &str {
        match self {
            Error::InvalidArgument(m)
            | Error::OutOfRange(m)
            | Error::WrongState(m)
            | Error::Full(m)
            | Error::Timeout(m)
            | Error::System(m) => m,
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self {
            Error::InvalidArgument(_) => "invalid argument",
            Error::OutOfRange(_) => "out of range",
            Error::WrongState(_) => "wrong state",
            Error::Full(_) => "full",
            Error::Timeout(_) => "timeout",
            Error::System(_) => "system error",
        };
        write!(f, "{kind}: {}", self.message())
    }
}

impl std::error::Error for Error {}

/// Result alias used across the core.
pub type Result<T> = std::result::Result<T, Error>;

/// Shorthand for an [`Error::InvalidArgument`] built with `format!`.
macro_rules! invalid {
    ($($arg:tt)*) => { $crate::error::Error::InvalidArgument(format!($($arg)*)) };
}
pub(crate) use invalid;

/// Shorthand for an [`Error::OutOfRange`] built with `format!`.
macro_rules! out_of_range {
    ($($arg:tt)*) => { $crate::error::Error::OutOfRange(format!($($arg)*)) };
}
pub(crate) use out_of_range;
