//! Request bodies spooled to disk as they arrive: bounded, never held in memory whole.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use axum::body::Body;
use axum::http::StatusCode;
use futures::StreamExt;
use tokio::io::AsyncWriteExt;

use crate::app::App;
use crate::problem::Problem;

/// A body on disk (`DATA_DIR/spool/…`), removed with its folder when dropped unless kept.
pub struct Spool {
    dir: PathBuf,
    pub path: PathBuf,
}

impl Spool {
    pub async fn create(app: &App, name: &str) -> Result<Spool, Problem> {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        // A folder per upload keeps the file's own name (alerts cite it) without collisions.
        let dir = app
            .config
            .data_dir
            .join("spool")
            .join(format!("{}-{n}", std::process::id()));
        tokio::fs::create_dir_all(&dir)
            .await
            .map_err(Problem::internal)?;
        let path = dir.join(name);
        Ok(Spool { dir, path })
    }

    /// Writes the body, refusing (413, naming the setting `limit_key`) past `limit` bytes.
    /// Each chunk is shown to `inspect` as it is written (to hash it, say). Returns the bytes
    /// written.
    pub async fn fill(
        &self,
        body: Body,
        limit: u64,
        limit_key: &str,
        mut inspect: impl FnMut(&[u8]),
    ) -> Result<u64, Problem> {
        let mut file = tokio::fs::File::create(&self.path)
            .await
            .map_err(Problem::internal)?;
        let mut stream = body.into_data_stream();
        let mut written = 0u64;
        while let Some(chunk) = stream.next().await {
            let chunk =
                chunk.map_err(|e| Problem::bad_request(format!("upload interrupted: {e}")))?;
            written += chunk.len() as u64;
            if written > limit {
                return Err(Problem::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    format!("the body is limited to {limit} bytes (the server's {limit_key})"),
                ));
            }
            inspect(&chunk);
            file.write_all(&chunk).await.map_err(Problem::internal)?;
        }
        file.flush().await.map_err(Problem::internal)?;
        Ok(written)
    }

    /// Moves the file to `to` durably: its data synced, then renamed (atomic: `to` is the old
    /// file or the new one, never a part), then the folder synced so the rename survives a
    /// crash. The spool is on the same file system (both are in the data directory).
    pub async fn keep(&self, to: &Path) -> Result<(), Problem> {
        let folder = to.parent().unwrap_or(Path::new("."));
        tokio::fs::create_dir_all(folder)
            .await
            .map_err(Problem::internal)?;
        let sync =
            |path: PathBuf| async move { tokio::fs::File::open(&path).await?.sync_all().await };
        sync(self.path.clone()).await.map_err(Problem::internal)?;
        tokio::fs::rename(&self.path, to)
            .await
            .map_err(Problem::internal)?;
        sync(folder.to_path_buf()).await.map_err(Problem::internal)
    }
}

impl Drop for Spool {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
