use std::path::PathBuf;

use crate::Revision;

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("store {path} is already open in another process or handle")]
    AlreadyOpen { path: PathBuf },

    #[error("cannot create data directory {path}: {source}")]
    CreateDataDir {
        path: PathBuf,
        source: std::io::Error,
    },

    #[error("store {path}: {operation} failed: {source}")]
    Backend {
        path: PathBuf,
        operation: &'static str,
        source: Box<redb::Error>,
    },

    #[error("invalid key {key:?}: {reason}")]
    InvalidKey { key: String, reason: &'static str },

    #[error("key {key} appears in more than one operation of a transaction")]
    DuplicateKeyInTxn { key: String },

    #[error("cannot encode the value for key {key} as json: {source}")]
    Encode {
        key: String,
        source: serde_json::Error,
    },

    #[error("cannot decode the value of key {key} as json: {source}")]
    Decode {
        key: String,
        source: serde_json::Error,
    },

    #[error(
        "watch on prefix {prefix:?} from revision {from}: changes up to revision {compacted} are compacted, re-list and watch from the listing's revision"
    )]
    Compacted {
        prefix: String,
        from: Revision,
        compacted: Revision,
    },

    #[error(
        "watch on prefix {prefix:?} lagged {missed} commits behind, re-list and watch from the listing's revision"
    )]
    WatchLagged { prefix: String, missed: u64 },

    #[error("watch on prefix {prefix:?} has ended: the store closed or the watch already failed")]
    WatchClosed { prefix: String },
}
