//! Changes to the set of Parquet files, each committed under the maintenance lock: flush
//! (in-memory batches to files), compaction (small files merged) and retention (old days
//! dropped). Each writes its new files and fsyncs them, commits a manifest, and only then
//! changes what readers see and deletes anything. A merge writes its file without the lock
//! (it can take seconds to minutes, and appends at the memory limit wait on the lock to flush)
//! and commits only if its inputs are still live by then.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;

use chrono::{DateTime, Utc};
use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::compute::interleave_record_batch;
use rampart_schema::Table;

use crate::files::{
    self, DataFile, RowRef, Written, day_start_micros, relative_path, time_order, write_file,
};
use crate::manifest::{self, FileMeta, Manifest};
use crate::merge::merge_files;
use crate::record::{self, MemBatch};
use crate::{
    CompactionReport, Inner, Key, Maintenance, RetentionReport, StoreError, io_err, lock, sync_dir,
    thread_cpu,
};

/// Files below this size are one tier for background compaction.
const TIER_UNIT_BYTES: u64 = 64 << 10;
/// Fragments (files with fewer rows than a merge copies as a row group) below this many rows
/// are one tier.
const TIER_UNIT_ROWS: u64 = 1024;
/// Where the tiers of fragments start (apart from those by bytes).
const FRAGMENTS: u32 = 1 << 16;
/// A tier of fragments waits for this many times `compact_min_files` files: each merge of a
/// tier encodes its rows once more, and they are encoded again when the partition's fragments
/// fill half a row group. On the server benchmark (150 s runs) four times as many fragments
/// per tier took rows encoded again per flushed row from 1.45 to 1.0 and merges' CPU down by a
/// quarter to a third, for twice as many files at the end.
const FRAGMENT_TIER_FACTOR: usize = 4;

/// Which rows a flush writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Flush {
    /// Every row in memory: on request, at close, before retention.
    All,
    /// What memory pressure or the interval calls for: small partitions may stay in memory
    /// (see [`crate::StoreConfig::max_held_bytes`]).
    Routine,
}

/// The rows of one day partition a flush holds in memory, in time order.
type Held = (Key, MemBatch);

impl Inner {
    pub(crate) fn flush(&self, how: Flush) -> Result<(), StoreError> {
        let mut m = lock(&self.maintenance);
        self.flush_locked(&mut m, how)
    }

    /// Writes the in-memory batches to one file per tenant, table and day, but for the
    /// partitions it holds (see [`Flush`]).
    pub(crate) fn flush_locked(&self, m: &mut Maintenance, how: Flush) -> Result<(), StoreError> {
        self.check_failed()?;
        let cpu = thread_cpu();
        // Freeze: the batches to write stay visible; appends go on into fresh lists and a new
        // log segment, so the old segments hold only what this flush writes.
        let (work, upto) = {
            let mut wal = lock(&self.wal);
            let mut state = lock(&self.state);
            let mut work: Vec<(Key, Vec<MemBatch>)> = Vec::new();
            for (key, part) in &mut state.parts {
                if part.active.is_empty() {
                    continue;
                }
                part.frozen = std::mem::take(&mut part.active);
                work.push((key.clone(), part.frozen.clone()));
            }
            if work.is_empty() {
                return Ok(());
            }
            if let Err(e) = wal.rotate() {
                state.unfreeze();
                return Err(e);
            }
            (work, state.applied_seq)
        };

        let mut created = Vec::new();
        let mut new_files = Vec::new();
        let committed = self
            .write_partitions(m, &work, how, &mut created, &mut new_files)
            .and_then(|held| {
                self.log_held(&held, upto)?;
                let mut next = m.manifest.clone();
                next.files.extend(new_files.iter().map(|(_, f)| f.clone()));
                next.wal_seq = upto;
                next.next_file_id = m.next_file_id;
                self.commit_manifest(&next)?;
                Ok((next, held))
            });
        let (next, held) = match committed {
            Ok(done) => done,
            Err(e) => {
                if self.failure.get().is_none() {
                    remove_all(&created);
                }
                lock(&self.state).unfreeze();
                return Err(e);
            }
        };
        m.manifest = next;

        // Publish: the files and the held rows replace the frozen batches in one step for
        // readers.
        let held_bytes: usize = held.iter().map(|(_, b)| b.bytes).sum();
        let held_rows: usize = held.iter().map(|(_, b)| b.batch.num_rows()).sum();
        let mut freed = 0;
        {
            let mut state = lock(&self.state);
            for (table, meta) in new_files {
                let file = Arc::new(DataFile::new(meta, &self.dir));
                state.part(&file.meta.tenant, table).files.push(file);
            }
            for part in state.parts.values_mut() {
                freed += part.frozen.iter().map(|b| b.bytes).sum::<usize>();
                part.frozen.clear();
            }
            for ((tenant, table), batch) in held {
                state.part(&tenant, table).active.push(batch);
            }
        }
        self.held_bytes.store(held_bytes, Ordering::Release);
        if freed >= held_bytes {
            self.memory_bytes
                .fetch_sub(freed - held_bytes, Ordering::AcqRel);
        } else {
            self.memory_bytes
                .fetch_add(held_bytes - freed, Ordering::AcqRel);
        }
        let rows: usize = work
            .iter()
            .flat_map(|(_, batches)| batches)
            .map(|b| b.batch.num_rows())
            .sum();
        self.work.flushes.fetch_add(1, Ordering::Relaxed);
        self.work
            .flushed_rows
            .fetch_add(rows.saturating_sub(held_rows) as u64, Ordering::Relaxed);
        self.work
            .held_rows
            .fetch_add(held_rows as u64, Ordering::Relaxed);
        self.work.flush_cpu_nanos.fetch_add(
            thread_cpu().saturating_sub(cpu).as_nanos() as u64,
            Ordering::Relaxed,
        );
        lock(&self.wal).trim(upto)
    }

    /// Writes one file per tenant, table and day of the frozen batches, but for the day
    /// partitions it holds: with [`Flush::Routine`], those with fewer rows than half a row
    /// group that came in less than `max_hold` ago, smallest first, as long as they fit
    /// `max_held_bytes` (by their share of their table's bytes). Returns those, each gathered
    /// into one batch.
    fn write_partitions(
        &self,
        m: &mut Maintenance,
        work: &[(Key, Vec<MemBatch>)],
        how: Flush,
        created: &mut Vec<PathBuf>,
        new_files: &mut Vec<(Table, FileMeta)>,
    ) -> Result<Vec<Held>, StoreError> {
        let budget = match how {
            Flush::All => 0,
            Flush::Routine => self
                .config
                .max_held_bytes
                .min(self.config.memory_limit_bytes / 4),
        };
        let ordered = work
            .iter()
            .map(|((_, table), batches)| {
                let refs: Vec<(&RecordBatch, i32)> =
                    batches.iter().map(|b| (&b.batch, b.ingest_day)).collect();
                time_order(&refs, *table)
            })
            .collect::<Result<Vec<_>, _>>()?;
        let oldest = |batches: &[MemBatch], rows: &[RowRef]| {
            rows.iter()
                .filter_map(|r| batches.get(r.batch as usize))
                .map(|b| b.since)
                .min()
        };
        let mut candidates = Vec::new();
        if budget > 0 {
            let half_group = files::copied_rows(self.config.row_group_rows);
            for (t, ((_, batches), rows)) in work.iter().zip(&ordered).enumerate() {
                let bytes: usize = batches.iter().map(|b| b.bytes).sum();
                for day_rows in rows.chunk_by(|a, b| a.day == b.day) {
                    let Some(since) = oldest(batches, day_rows) else {
                        continue;
                    };
                    if day_rows.len() < half_group && since.elapsed() < self.config.max_hold {
                        let share = bytes / rows.len().max(1) * day_rows.len();
                        candidates.push((day_rows.len(), share, t, day_rows[0].day, since));
                    }
                }
            }
        }
        candidates.sort_unstable();
        let mut hold = HashMap::new();
        let mut used = 0;
        for (_, share, t, day, since) in candidates {
            if used + share > budget {
                break;
            }
            used += share;
            hold.insert((t, day), since);
        }

        let mut held = Vec::new();
        let mut folders = BTreeSet::new();
        let now = Utc::now().timestamp_micros();
        for (t, ((tenant, table), batches)) in work.iter().enumerate() {
            let props = files::TableProps::new(
                *table,
                self.config.zstd_level,
                self.config.row_group_rows,
                how == Flush::Routine,
            )?;
            let sources: Vec<&RecordBatch> = batches.iter().map(|b| &b.batch).collect();
            for day_rows in ordered[t].chunk_by(|a, b| a.day == b.day) {
                let day = day_rows.first().map_or(0, |r| r.day);
                if let Some(&since) = hold.get(&(t, day)) {
                    let rows: Vec<(usize, usize)> = day_rows
                        .iter()
                        .map(|r| (r.batch as usize, r.row as usize))
                        .collect();
                    let batch = interleave_record_batch(&sources, &rows)?;
                    // Rows without a Timestamp are in this day's partition: they stay there.
                    let mut kept = MemBatch::new(batch, *table, day_start_micros(day));
                    kept.since = since;
                    held.push(((tenant.clone(), *table), kept));
                    continue;
                }
                let id = m.take_file_id();
                let meta = self.new_file(id, (tenant, *table, day), now, created, |path| {
                    write_file(path, *table, &props, &sources, day_rows)
                })?;
                folders.insert(self.dir.join(&meta.path).with_file_name(""));
                new_files.push((*table, meta));
            }
        }
        folders.iter().try_for_each(|f| sync_dir(f))?;
        Ok(held)
    }

    /// Logs the partitions a flush holds again, into the segment it started (the ones it
    /// deletes hold them too), covering the log up to `upto` (see [`record::encode`]).
    fn log_held(&self, held: &[Held], upto: u64) -> Result<(), StoreError> {
        if held.is_empty() {
            return Ok(());
        }
        let payloads = held
            .iter()
            .map(|((tenant, table), b)| {
                let ingest_us = day_start_micros(b.ingest_day);
                record::encode(
                    tenant,
                    *table,
                    ingest_us,
                    &b.batch,
                    self.config.wal_compression,
                    Some(upto),
                )
            })
            .collect::<Result<Vec<_>, _>>()?;
        let refs: Vec<&[u8]> = payloads.iter().map(Vec::as_slice).collect();
        let mut wal = lock(&self.wal);
        if let Err(e) = wal.write(&refs) {
            self.fail(&e);
            return Err(e);
        }
        // The next flush must cover these records too.
        let mut state = lock(&self.state);
        state.applied_seq = state.applied_seq.max(wal.last_seq());
        Ok(())
    }

    /// Names new file `id` ([`Maintenance::take_file_id`]) of a partition, makes its folder,
    /// and has `write` fill it; `ingested` as [`FileMeta::ingested`].
    fn new_file(
        &self,
        id: u64,
        (tenant, table, day): (&str, Table, i32),
        ingested: i64,
        created: &mut Vec<PathBuf>,
        write: impl FnOnce(&Path) -> Result<Written, StoreError>,
    ) -> Result<FileMeta, StoreError> {
        let rel = relative_path(tenant, table, day, id);
        let path = self.dir.join(&rel);
        if let Some(folder) = path.parent() {
            self.ensure_dir(folder)?;
        }
        created.push(path.clone());
        let w = write(&path)?;
        Ok(FileMeta {
            id,
            path: rel,
            tenant: tenant.to_string(),
            table: table.name().to_string(),
            day,
            rows: w.rows,
            bytes: w.bytes,
            min_ts: w.min_ts,
            max_ts: w.max_ts,
            ingested,
        })
    }

    /// Creates a partition folder and makes its entry durable up to the store's folder.
    fn ensure_dir(&self, dir: &Path) -> Result<(), StoreError> {
        if dir.is_dir() {
            return Ok(());
        }
        std::fs::create_dir_all(dir).map_err(|e| io_err(dir, e))?;
        let mut child = dir;
        while let Some(parent) = child.parent() {
            sync_dir(parent)?;
            if parent == self.dir {
                break;
            }
            child = parent;
        }
        Ok(())
    }

    /// Commits a manifest; a failure after which the live one is unknown stops the store.
    fn commit_manifest(&self, next: &Manifest) -> Result<(), StoreError> {
        manifest::commit(&self.dir, next).map_err(|e| {
            if e.uncertain {
                self.fail(&e.error);
            }
            e.error
        })
    }

    /// Swaps files in the readers' view: `gone` out (deleted once no scan holds them), `new`
    /// in. Call after the manifest saying so is committed.
    fn replace_files(&self, gone: &HashSet<u64>, new: Option<(Table, FileMeta)>) {
        let mut state = lock(&self.state);
        for part in state.parts.values_mut() {
            part.files.retain(|f| {
                let keep = !gone.contains(&f.meta.id);
                if !keep {
                    f.retire();
                }
                keep
            });
        }
        if let Some((table, meta)) = new {
            let file = Arc::new(DataFile::new(meta, &self.dir));
            state.part(&file.meta.tenant, table).files.push(file);
        }
    }

    /// Merges small files per partition. `tiered` (the background's way) merges only files of
    /// about the same size, `compact_min_files` of them at a time, so that a row is rewritten
    /// a logarithmic number of times however many flushes feed a day; otherwise every small
    /// file of a partition with two or more is merged.
    ///
    /// Rows are encoded again only while in row groups a merge cannot copy (a flush's, and
    /// those under half of `row_group_rows`; see `merge::merge_files`). So, tiered, files too
    /// small to hold one such row group ("fragments") are tiered by rows, not bytes, and all
    /// of a partition's fragments are merged as soon as together they fill one: a table that
    /// gets tens of thousands of rows per flush has them encoded once more, not at each tier
    /// its bytes would climb. A tier of fragments waits for [`FRAGMENT_TIER_FACTOR`] times as
    /// many files: they are cheap to write and read, and each tier's merge encodes again.
    pub(crate) fn compact(&self, tiered: bool) -> Result<CompactionReport, StoreError> {
        self.check_failed()?;
        let min_files = if tiered {
            self.config.compact_min_files
        } else {
            2
        };
        let copyable_rows = files::copied_rows(self.config.row_group_rows) as u64;
        let fragment = |f: &FileMeta| tiered && f.rows < copyable_rows;
        // Sizes within a factor of `min_files` share a tier (the config keeps it at least 2).
        let tier = |f: &FileMeta| match tiered {
            true if fragment(f) => {
                FRAGMENTS + (f.rows / TIER_UNIT_ROWS).max(1).ilog(min_files as u64)
            }
            true => (f.bytes / TIER_UNIT_BYTES).max(1).ilog(min_files as u64),
            false => 0,
        };
        // Merging reads a row group at a time: a partition's files of one tier are one merge
        // however large (`min_files` is at least 2).
        let groups: Vec<Vec<FileMeta>> = {
            let m = lock(&self.maintenance);
            let mut partitions: BTreeMap<(&str, &str, i32), Vec<&FileMeta>> = BTreeMap::new();
            for f in &m.manifest.files {
                if f.bytes < self.config.compact_small_file_bytes {
                    partitions
                        .entry((&f.tenant, &f.table, f.day))
                        .or_default()
                        .push(f);
                }
            }
            let mut groups = Vec::new();
            for files in partitions.into_values() {
                let (fragments, rest): (Vec<&FileMeta>, Vec<&FileMeta>) =
                    files.into_iter().partition(|f| fragment(f));
                let mut tiers: BTreeMap<u32, Vec<&FileMeta>> = BTreeMap::new();
                if fragments.len() >= 2
                    && fragments.iter().map(|f| f.rows).sum::<u64>() >= copyable_rows
                {
                    groups.push(fragments);
                } else {
                    for f in fragments {
                        tiers.entry(tier(f)).or_default().push(f);
                    }
                }
                for f in rest {
                    tiers.entry(tier(f)).or_default().push(f);
                }
                groups.extend(
                    tiers
                        .into_iter()
                        .filter(|(tier, files)| match tiered && *tier >= FRAGMENTS {
                            true => files.len() >= min_files * FRAGMENT_TIER_FACTOR,
                            false => files.len() >= min_files,
                        })
                        .map(|(_, files)| files),
                );
            }
            groups
                .into_iter()
                .map(|files| files.into_iter().cloned().collect())
                .collect()
        };

        let mut report = CompactionReport::default();
        let mut seen = BTreeSet::new();
        for group in groups {
            // Rows past the background's mark are flushed between merges, so that memory is
            // freed while a long compaction runs.
            if self.past_flush_mark() {
                self.flush(Flush::Routine)?;
            }
            let (files, rows) = (group.len(), group.iter().map(|f| f.rows).sum::<u64>());
            let partition = group
                .first()
                .map(|f| (f.tenant.clone(), f.table.clone(), f.day));
            if self.merge(group)? {
                seen.extend(partition);
                report.files_merged += files;
                report.rows += rows;
                report.files_written += 1;
            }
        }
        report.partitions = seen.len();
        Ok(report)
    }

    /// Replaces `inputs` (files of one partition) by one file holding all their rows; false
    /// when another change (a concurrent compaction, retention) took some of them meanwhile.
    fn merge(&self, inputs: Vec<FileMeta>) -> Result<bool, StoreError> {
        let Some(first) = inputs.first() else {
            return Ok(false);
        };
        let table = table_of(first)?;
        let cpu = thread_cpu();
        let (tenant, day) = (first.tenant.clone(), first.day);
        let ingested = inputs.iter().map(|f| f.ingested).max().unwrap_or(0);
        let gone: HashSet<u64> = inputs.iter().map(|f| f.id).collect();
        // Held like a scan holds its files: retention committed during the merge cannot delete
        // them under it.
        let held: Vec<Arc<DataFile>> = {
            let state = lock(&self.state);
            state
                .parts
                .values()
                .flat_map(|p| &p.files)
                .filter(|f| gone.contains(&f.meta.id))
                .cloned()
                .collect()
        };
        if held.len() != inputs.len() {
            return Ok(false);
        }
        let paths: Vec<PathBuf> = inputs.iter().map(|f| self.dir.join(&f.path)).collect();
        let props =
            files::writer_properties(table, self.config.zstd_level, self.config.row_group_rows)?;
        let id = lock(&self.maintenance).take_file_id();
        let mut created = Vec::new();
        let mut copied = 0;
        let written = self
            .new_file(id, (&tenant, table, day), ingested, &mut created, |path| {
                let w = merge_files(
                    path,
                    table,
                    &props,
                    &paths,
                    day,
                    self.config.row_group_rows,
                    self.config.memory_limit_bytes / 2,
                )?;
                copied = w.copied;
                Ok(w)
            })
            .and_then(|meta| {
                sync_dir(&self.dir.join(&meta.path).with_file_name(""))?;
                Ok(meta)
            });
        let mut m = lock(&self.maintenance);
        let live = gone
            .iter()
            .all(|id| m.manifest.files.iter().any(|f| f.id == *id));
        let committed = written.and_then(|meta| {
            if !live {
                return Ok(None);
            }
            let mut next = m.manifest.clone();
            next.files.retain(|f| !gone.contains(&f.id));
            next.files.push(meta.clone());
            next.next_file_id = m.next_file_id;
            self.commit_manifest(&next)?;
            Ok(Some((next, meta)))
        });
        drop(held);
        match committed {
            Ok(Some((next, meta))) => {
                m.manifest = next;
                let rows = meta.rows;
                self.replace_files(&gone, Some((table, meta)));
                self.work.merges.fetch_add(1, Ordering::Relaxed);
                self.work
                    .merged_rows
                    .fetch_add(rows - copied, Ordering::Relaxed);
                self.work.copied_rows.fetch_add(copied, Ordering::Relaxed);
                self.work.merge_cpu_nanos.fetch_add(
                    thread_cpu().saturating_sub(cpu).as_nanos() as u64,
                    Ordering::Relaxed,
                );
                Ok(true)
            }
            Ok(None) => {
                remove_all(&created);
                Ok(false)
            }
            Err(e) => {
                if self.failure.get().is_none() {
                    remove_all(&created);
                }
                Err(e)
            }
        }
    }

    pub(crate) fn apply_retention(
        &self,
        now: DateTime<Utc>,
    ) -> Result<RetentionReport, StoreError> {
        self.check_failed()?;
        let mut m = lock(&self.maintenance);
        self.flush_locked(&mut m, Flush::All)?;
        let cutoff = (now - self.config.retention).timestamp_micros();
        // A day is dropped once it has wholly ended before the cutoff and the last of its rows
        // was ingested before it too: whole partitions, never part of one.
        let first_kept = cutoff.div_euclid(86_400_000_000);
        let mut last_ingested: HashMap<(&str, &str, i32), i64> = HashMap::new();
        for f in &m.manifest.files {
            let latest = last_ingested
                .entry((&f.tenant, &f.table, f.day))
                .or_insert(f.ingested);
            *latest = (*latest).max(f.ingested);
        }
        let doomed: Vec<&FileMeta> = m
            .manifest
            .files
            .iter()
            .filter(|f| {
                i64::from(f.day) < first_kept
                    && last_ingested
                        .get(&(f.tenant.as_str(), f.table.as_str(), f.day))
                        .is_some_and(|&t| t < cutoff)
            })
            .collect();
        let report = RetentionReport {
            partitions: doomed
                .iter()
                .map(|f| (&f.tenant, &f.table, f.day))
                .collect::<BTreeSet<_>>()
                .len(),
            files: doomed.len(),
            rows: doomed.iter().map(|f| f.rows).sum(),
            bytes: doomed.iter().map(|f| f.bytes).sum(),
        };
        if doomed.is_empty() {
            return Ok(report);
        }
        let gone: HashSet<u64> = doomed.iter().map(|f| f.id).collect();
        let folders: BTreeSet<PathBuf> = doomed
            .iter()
            .map(|f| self.dir.join(&f.path).with_file_name(""))
            .collect();
        let mut next = m.manifest.clone();
        next.files.retain(|f| !gone.contains(&f.id));
        self.commit_manifest(&next)?;
        m.manifest = next;
        self.replace_files(&gone, None);
        for folder in folders {
            // Empty unless a scan still holds one of its files; then the next open tidies it.
            let _ = std::fs::remove_dir(&folder);
        }
        Ok(report)
    }
}

fn table_of(meta: &FileMeta) -> Result<Table, StoreError> {
    Table::from_name(&meta.table).ok_or_else(|| StoreError::Corrupt {
        path: PathBuf::from(&meta.path),
        message: format!("unknown table '{}'", meta.table),
    })
}

/// Deletes files of a change that did not commit (best effort: the next open deletes what is
/// left, as orphans).
fn remove_all(paths: &[PathBuf]) {
    for p in paths {
        let _ = std::fs::remove_file(p);
    }
}

#[cfg(test)]
mod tests {
    use rampart_schema::{DeviceProcessEvents, Row, Table};

    use crate::record::MemBatch;
    use crate::{DEFAULT_TENANT, Store, StoreConfig, lock};

    /// A flush that logged its held partitions again but never committed its manifest (a
    /// crash in between): at open the copies are skipped and the records they copy replayed.
    #[test]
    fn held_rows_of_a_flush_that_never_committed_come_from_their_first_records() {
        let dir = std::env::temp_dir().join(format!("rampart-held-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let config = StoreConfig {
            background: false,
            flush_interval: None,
            ..StoreConfig::default()
        };
        let store = Store::open(&dir, config.clone()).unwrap();
        let mut b = Table::DeviceProcessEvents.batch_builder();
        for id in 0..20 {
            let row = DeviceProcessEvents {
                report_id: Some(id),
                ..Default::default()
            };
            b.append(&Row::from(row)).unwrap();
        }
        let batch = b.finish();
        store
            .append(DEFAULT_TENANT, Table::DeviceProcessEvents, batch.clone())
            .unwrap();
        // What a flush does before it commits: a new segment, and the held rows logged in it.
        let upto = {
            let mut wal = lock(&store.inner.wal);
            wal.rotate().unwrap();
            wal.last_seq()
        };
        let held = MemBatch::new(batch, Table::DeviceProcessEvents, 0);
        let key = (DEFAULT_TENANT.to_string(), Table::DeviceProcessEvents);
        store.inner.log_held(&[(key, held)], upto).unwrap();
        drop(store);
        let store = Store::open(&dir, config).unwrap();
        let r = store.recovery();
        assert_eq!((r.replayed_records, r.superseded_records), (1, 1));
        assert_eq!(store.stats().rows(), 20);
        drop(store);
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// The background's tiered compaction, step by step: fragments (files under half a row
    /// group) wait for four times `compact_min_files` of their row tier, and all of a
    /// partition's are merged once together they fill half a row group.
    #[test]
    fn fragments_merge_by_row_tier_and_together_once_they_fill_a_row_group() {
        let dir = std::env::temp_dir().join(format!("rampart-tiers-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let store = Store::open(
            &dir,
            StoreConfig {
                background: false,
                flush_interval: None,
                row_group_rows: 64,
                ..StoreConfig::default()
            },
        )
        .unwrap();
        let day = chrono::DateTime::parse_from_rfc3339("2024-05-01T00:00:00Z").unwrap();
        let flush = |rows: i64| {
            let mut b = Table::DeviceProcessEvents.batch_builder();
            for id in 0..rows {
                let row = DeviceProcessEvents {
                    timestamp: Some(day.to_utc() + chrono::Duration::seconds(id)),
                    report_id: Some(id),
                    ..Default::default()
                };
                b.append(&Row::from(row)).unwrap();
            }
            store
                .append(DEFAULT_TENANT, Table::DeviceProcessEvents, b.finish())
                .unwrap();
            store.flush().unwrap();
        };
        let files = |store: &Store| {
            let mut rows: Vec<u64> = lock(&store.inner.maintenance)
                .manifest
                .files
                .iter()
                .map(|f| f.rows)
                .collect();
            rows.sort_unstable();
            rows
        };
        for _ in 0..15 {
            flush(1);
        }
        assert_eq!(store.inner.compact(true).unwrap().files_merged, 0);
        assert_eq!(
            files(&store),
            [1; 15],
            "fifteen fragments of a tier wait for a sixteenth"
        );
        flush(1);
        assert_eq!(store.inner.compact(true).unwrap().files_merged, 16);
        assert_eq!(files(&store), [16]);
        flush(16);
        assert_eq!(
            store.inner.compact(true).unwrap().files_merged,
            2,
            "32 rows fill half a row group of 64"
        );
        assert_eq!(files(&store), [32]);
        flush(40);
        assert_eq!(
            store.inner.compact(true).unwrap().files_merged,
            0,
            "files that fill half a row group are tiered by bytes, four at a time"
        );
        assert_eq!(files(&store), [32, 40]);
        drop(store);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
