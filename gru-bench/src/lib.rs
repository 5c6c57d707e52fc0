//! The `gru` command's building blocks: the subcommands, the `.npy` helpers and the timing
//! helpers. The binary in `main.rs` only parses arguments.
#![forbid(unsafe_code)]

pub mod commands;
pub mod machine;
pub mod npy_io;
pub mod plot;
pub mod timing;

use std::fmt;
use std::path::Path;

/// An error the `gru` command reports as one plain line before exiting nonzero.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CliError(pub String);

impl CliError {
    /// An error about a file: `path: message`.
    pub fn file(path: &Path, message: impl fmt::Display) -> Self {
        CliError(format!("{}: {message}", path.display()))
    }
}

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for CliError {}

impl From<gru_core::Error> for CliError {
    fn from(e: gru_core::Error) -> Self {
        CliError(e.to_string())
    }
}
