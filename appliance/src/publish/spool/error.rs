//! What goes wrong in the spool, and how much of it is worth a log line.

use std::io;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    #[error("spool {}: {source}", .path.display())]
    Io { path: PathBuf, source: io::Error },
    #[error(
        "spool {}: cannot append a record ({source}): dropped and counted in spool_dropped \
         ({in_a_row} in a row)", .path.display()
    )]
    Append {
        path: PathBuf,
        source: io::Error,
        /// Consecutive failed appends, this one included.
        in_a_row: u64,
    },
    #[error("spool max size {max_bytes} bytes is too small: it must be at least 4096")]
    TooSmall { max_bytes: u64 },
}

impl SpoolError {
    /// False for the repeats of a run of failed appends (only the 1st, 10th, 100th, … are
    /// worth a log line: a full disk at 30 fps would otherwise write 30 lines a second).
    pub fn worth_logging(&self) -> bool {
        match self {
            SpoolError::Append { in_a_row, .. } => {
                let mut n = *in_a_row;
                while n >= 10 && n % 10 == 0 {
                    n /= 10;
                }
                n == 1
            }
            _ => true,
        }
    }
}

/// Logs a spool error on stderr unless it repeats a run of failed appends.
pub fn report(e: &SpoolError) {
    if e.worth_logging() {
        log_error!("{e}");
    }
}

pub(super) fn io_err(path: &Path) -> impl FnOnce(io::Error) -> SpoolError + '_ {
    move |source| SpoolError::Io {
        path: path.to_path_buf(),
        source,
    }
}
