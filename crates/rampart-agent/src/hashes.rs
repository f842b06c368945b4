//! Image hashes (SHA-1, SHA-256, MD5, as Defender reports them), computed once per file
//! version: cached by device, inode, size and modification time, so a binary executed a
//! thousand times a second is read once.

use std::collections::HashMap;
use std::fs::{File, Metadata};
use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::Arc;

use md5::Md5;
use sha1::Sha1;
use sha2::{Digest, Sha256};

/// Files larger than this are not hashed (their rows carry the size but no hashes).
pub const DEFAULT_MAX_FILE_BYTES: u64 = 64 << 20;
/// Entries kept; the cache is emptied when it would grow beyond.
const CACHE_ENTRIES: usize = 8192;

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Hashes {
    pub sha1: String,
    pub sha256: String,
    pub md5: String,
    pub size: u64,
}

/// One version of a file: the same file (device, inode) with the same size and times. The
/// change time is in it because no one can set it back: a binary rewritten in place with its
/// size and modification time restored (`touch -d`) is still a new version.
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq)]
pub struct FileVersion {
    dev: u64,
    ino: u64,
    size: u64,
    mtime_ns: i128,
    ctime_ns: i128,
}

impl FileVersion {
    pub fn of(meta: &Metadata) -> FileVersion {
        FileVersion::new(
            (meta.dev(), meta.ino(), meta.size()),
            (meta.mtime(), meta.mtime_nsec()),
            (meta.ctime(), meta.ctime_nsec()),
        )
    }

    /// From (device as `stat` gives it, inode, size) and the modification and change times as
    /// (seconds, nanoseconds): what the kernel sensor reads of an executed image.
    pub fn new((dev, ino, size): (u64, u64, u64), mtime: (i64, i64), ctime: (i64, i64)) -> Self {
        let ns = |(sec, nsec): (i64, i64)| i128::from(sec) * 1_000_000_000 + i128::from(nsec);
        FileVersion {
            dev,
            ino,
            size,
            mtime_ns: ns(mtime),
            ctime_ns: ns(ctime),
        }
    }
}

pub struct HashCache {
    max_file_bytes: u64,
    cache: HashMap<FileVersion, Option<Arc<Hashes>>>,
}

impl HashCache {
    pub fn new(max_file_bytes: u64) -> HashCache {
        HashCache {
            max_file_bytes,
            cache: HashMap::new(),
        }
    }

    /// The hashes of the file at `path` (for a running process, `/proc/PID/exe` reaches its
    /// image even when deleted or in memory only). `None` when unreadable or too large.
    pub fn of(&mut self, path: &Path) -> Option<Arc<Hashes>> {
        self.of_file(&mut File::open(path).ok()?)
    }

    /// The hashes of `path`, whose metadata the caller just read: a file hashed before costs
    /// no `open` (an exec's image is stat'ed anyway to check it is the file the kernel mapped).
    pub fn of_version(&mut self, path: &Path, meta: &Metadata) -> Option<Arc<Hashes>> {
        match self.cache.get(&FileVersion::of(meta)) {
            Some(hit) => hit.clone(),
            None => self.of(path),
        }
    }

    /// The hashes of `version` if it was hashed (or found unhashable) before: `Some(None)`
    /// for a file too large or unreadable then.
    pub fn cached(&self, version: &FileVersion) -> Option<Option<Arc<Hashes>>> {
        self.cache.get(version).cloned()
    }

    /// The hashes of an open file, read from its start.
    pub fn of_file(&mut self, file: &mut File) -> Option<Arc<Hashes>> {
        let meta = file.metadata().ok()?;
        if !meta.is_file() {
            return None;
        }
        let key = FileVersion::of(&meta);
        if let Some(hit) = self.cache.get(&key) {
            return hit.clone();
        }
        let hashes = if meta.size() > self.max_file_bytes {
            None
        } else {
            digest(file, meta.size()).map(Arc::new)
        };
        if self.cache.len() >= CACHE_ENTRIES {
            self.cache.clear();
        }
        self.cache.insert(key, hashes.clone());
        hashes
    }
}

fn digest(file: &mut File, size: u64) -> Option<Hashes> {
    let (mut sha1, mut sha256, mut md5) = (Sha1::new(), Sha256::new(), Md5::new());
    let mut buf = vec![0u8; 256 << 10];
    let mut read = 0u64;
    loop {
        let n = file.read(&mut buf).ok()?;
        if n == 0 {
            break;
        }
        read += n as u64;
        sha1.update(&buf[..n]);
        sha256.update(&buf[..n]);
        md5.update(&buf[..n]);
    }
    // A file that changed under us is not worth a wrong hash.
    (read == size).then(|| Hashes {
        sha1: hex::encode(sha1.finalize()),
        sha256: hex::encode(sha256.finalize()),
        md5: hex::encode(md5.finalize()),
        size,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_digests_cached_by_version() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, b"abc").unwrap();
        let mut cache = HashCache::new(DEFAULT_MAX_FILE_BYTES);
        let h = cache.of(&path).unwrap();
        assert_eq!(
            h.sha256,
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(h.sha1, "a9993e364706816aba3e25717850c26c9cd0d89d");
        assert_eq!(h.md5, "900150983cd24fb0d6963f7d28e17f72");
        assert_eq!(h.size, 3);
        // Rewritten with new content (new size): hashed again, not served from the cache.
        std::fs::write(&path, b"abcd").unwrap();
        assert_ne!(cache.of(&path).unwrap().sha256, h.sha256);
    }

    #[test]
    fn too_large_or_missing_files_have_no_hashes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("big");
        std::fs::write(&path, vec![0u8; 100]).unwrap();
        assert!(HashCache::new(10).of(&path).is_none());
        assert!(HashCache::new(10).of(&dir.path().join("missing")).is_none());
        assert!(HashCache::new(10).of(dir.path()).is_none());
    }
}
