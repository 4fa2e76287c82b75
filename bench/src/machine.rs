//! The machine's own limits, printed beside the figures so that each ratio reads against what
//! the hardware allows.

use std::io::{Seek, SeekFrom, Write};
use std::path::Path;
use std::time::{Duration, Instant};

use crate::BoxError;

/// `fdatasync` calls per second on a file in `dir`, each after rewriting one 4 KiB block, for
/// `window`: the ceiling of one-after-another durable commits (a WAL flush, a redb commit) on
/// that file system. PostgreSQL's WAL may sit on another file system; the figure is this
/// directory's.
pub(crate) async fn fsync_rate(dir: &Path, window: Duration) -> Result<f64, BoxError> {
    std::fs::create_dir_all(dir)?;
    let path = dir.join("fsync-probe");
    let rate = tokio::task::spawn_blocking(move || {
        let mut file = std::fs::File::create(&path)?;
        let block = [7u8; 4096];
        file.write_all(&block)?;
        file.sync_all()?;
        let start = Instant::now();
        let mut syncs = 0u64;
        while start.elapsed() < window {
            file.seek(SeekFrom::Start(0))?;
            file.write_all(&block)?;
            file.sync_data()?;
            syncs += 1;
        }
        let rate = syncs as f64 / start.elapsed().as_secs_f64();
        drop(file);
        std::fs::remove_file(&path)?;
        Ok::<_, BoxError>(rate)
    })
    .await??;
    Ok(rate)
}
