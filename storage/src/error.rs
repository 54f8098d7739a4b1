//! The crate's error type.

use std::io;
use std::path::{Path, PathBuf};

/// What can go wrong opening or writing the storage.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// A file-system call failed. After any failed write, sync or snapshot the in-memory view may be ahead of
    /// the disk, so the storage refuses further writes ([`StorageError::Failed`]): reopen it to recover.
    #[error("I/O error on {}: {source}", path.display())]
    Io {
        /// The file or directory the call was about.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// A file holds data that cannot have been written by this crate and is not a torn tail: a bad record
    /// followed by valid ones, a bad record in a segment that is not the last, a bad snapshot file, or a gap
    /// in the log's indices. Recovery refuses to guess.
    #[error("corrupt {} at offset {offset}: {reason}", file.display())]
    Corrupt {
        /// The file holding the bad data.
        file: PathBuf,
        /// The byte offset, within `file`, of the bad record (or of the field that is wrong).
        offset: u64,
        /// What is wrong.
        reason: String,
    },
    /// An earlier write failed; the storage must be reopened before it accepts more.
    #[error("storage is unusable after an earlier I/O error; reopen it to recover")]
    Failed,
}

impl StorageError {
    pub(crate) fn io(path: &Path) -> impl FnOnce(io::Error) -> StorageError + '_ {
        move |source| StorageError::Io {
            path: path.to_path_buf(),
            source,
        }
    }

    pub(crate) fn corrupt(file: &Path, offset: u64, reason: impl Into<String>) -> StorageError {
        StorageError::Corrupt {
            file: file.to_path_buf(),
            offset,
            reason: reason.into(),
        }
    }
}
