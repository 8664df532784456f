//! Small file-system helpers whose only job is durability.

use std::fs::{self, File};
use std::path::Path;

use super::error::{Result, StorageError};

/// Fsyncs a directory, so that file creations, renames and deletions in it survive a crash. A new
/// file's data can be durable while its directory entry is not; POSIX requires both fsyncs.
pub(crate) fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(StorageError::io("fsync directory", dir))
}

/// Creates `dir` if it is missing, and makes its creation durable by syncing its parent.
pub(crate) fn ensure_dir(dir: &Path) -> Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    fs::create_dir_all(dir).map_err(StorageError::io("create directory", dir))?;
    match dir.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => sync_dir(parent),
        _ => Ok(()),
    }
}

/// Removes a file, treating "already gone" as success.
pub(crate) fn remove_file(path: &Path) -> Result<()> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(StorageError::io("remove", path)(e))
        }
        _ => Ok(()),
    }
}
