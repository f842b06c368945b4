//! The manifest: the one file that says which Parquet files are live and which log records
//! they hold.
//!
//! Every change to the set of files (flush, compaction, retention) writes a whole new manifest
//! to `MANIFEST.tmp`, fsyncs it, renames it over `MANIFEST` and fsyncs the directory. The
//! rename is the commit point: before it the old set is live, after it the new one. Files on
//! disk that the manifest does not name are leftovers of an interrupted change and are deleted
//! at open.

use std::io::Write;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::{StoreError, io_err, sync_dir};

pub(crate) const FILE_NAME: &str = "MANIFEST";
const TEMP_NAME: &str = "MANIFEST.tmp";
const FORMAT: &str = "rampart-store/1";

/// The committed state of the Parquet side of the store.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Manifest {
    pub(crate) format: String,
    /// Every log record with a sequence number at or below this is in the files below.
    pub(crate) wal_seq: u64,
    /// Ids below this may have been used; new files take ids from here.
    pub(crate) next_file_id: u64,
    pub(crate) files: Vec<FileMeta>,
}

/// One live Parquet file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct FileMeta {
    pub(crate) id: u64,
    /// Relative to the store's directory.
    pub(crate) path: String,
    pub(crate) tenant: String,
    pub(crate) table: String,
    /// Days since 1970-01-01 (UTC).
    pub(crate) day: i32,
    pub(crate) rows: u64,
    pub(crate) bytes: u64,
    /// Smallest and largest non-null Timestamp, microseconds since the epoch.
    pub(crate) min_ts: Option<i64>,
    pub(crate) max_ts: Option<i64>,
    /// When its newest row was ingested, microseconds since the epoch: the flush that wrote
    /// it, or for a merge the latest of its inputs'. Retention keeps a partition until this
    /// too is past the age, so old events (an EVTX file of 2019) stay as long as new ones.
    /// Manifests written before it have none: 0, their days go by date alone.
    #[serde(default)]
    pub(crate) ingested: i64,
}

impl Manifest {
    pub(crate) fn empty() -> Manifest {
        Manifest {
            format: FORMAT.to_string(),
            wal_seq: 0,
            next_file_id: 1,
            files: Vec::new(),
        }
    }
}

/// Reads the manifest of the store at `dir`, if it has one.
pub(crate) fn load(dir: &Path) -> Result<Option<Manifest>, StoreError> {
    let path = dir.join(FILE_NAME);
    let text = match std::fs::read(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_err(&path, e)),
    };
    let manifest: Manifest = serde_json::from_slice(&text).map_err(|e| StoreError::Corrupt {
        path: path.clone(),
        message: format!("the manifest cannot be read: {e}"),
    })?;
    if manifest.format != FORMAT {
        return Err(StoreError::Corrupt {
            path,
            message: format!(
                "unknown store format '{}' (this build reads '{FORMAT}')",
                manifest.format
            ),
        });
    }
    Ok(Some(manifest))
}

/// Why a commit failed, and whether the old manifest is certainly still the live one.
pub(crate) struct CommitError {
    pub(crate) error: StoreError,
    /// The failure came after the rename started: which manifest is live is unknown until the
    /// store is opened again.
    pub(crate) uncertain: bool,
}

/// Makes `manifest` the live one, durably (see the module documentation).
pub(crate) fn commit(dir: &Path, manifest: &Manifest) -> Result<(), CommitError> {
    let certain = |error| CommitError {
        error,
        uncertain: false,
    };
    let temp = dir.join(TEMP_NAME);
    let text = serde_json::to_vec(manifest).map_err(|e| {
        certain(StoreError::Corrupt {
            path: temp.clone(),
            message: format!("the manifest cannot be written: {e}"),
        })
    })?;
    let written = std::fs::File::create(&temp).and_then(|mut f| {
        f.write_all(&text)?;
        f.sync_all()
    });
    written.map_err(|e| certain(io_err(&temp, e)))?;
    let path = dir.join(FILE_NAME);
    let uncertain = |error| CommitError {
        error,
        uncertain: true,
    };
    std::fs::rename(&temp, &path).map_err(|e| uncertain(io_err(&path, e)))?;
    sync_dir(dir).map_err(uncertain)
}
