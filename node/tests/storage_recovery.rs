//! Crash recovery of `DiskStorage` (DESIGN.md §6b): torn tails are cut, corruption is refused with
//! the file and byte offset, a snapshot install cut short loses nothing, truncated suffixes stay
//! truncated, and compaction deletes whole segments only.
//!
//! Crashes are simulated on the files: cutting, zero-filling or flipping bytes of a WAL segment,
//! or leaving the files of a half-done snapshot install behind, then reopening the directory.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use raftkv_node::storage::{
    DiskOptions, DiskStorage, LogStorage, RecoveredState, StagedSnapshot, StorageError,
};
use raftkv_raft::{ConfState, Entry, EntryPayload, HardState, Index, SnapshotMeta, Term};

type TestResult = Result<(), Box<dyn std::error::Error>>;

fn ent(index: Index, term: Term) -> Entry {
    Entry {
        term,
        index,
        payload: EntryPayload::Normal(Bytes::from(format!("value {index:>4} in term {term}"))),
    }
}

fn ents(indexes: std::ops::RangeInclusive<Index>, term: Term) -> Vec<Entry> {
    indexes.map(|i| ent(i, term)).collect()
}

fn meta(index: Index, term: Term) -> SnapshotMeta {
    SnapshotMeta {
        index,
        term,
        conf: ConfState::with_voters([1, 2, 3]),
    }
}

fn small() -> DiskOptions {
    DiskOptions {
        segment_size: 1024,
        keep_snapshots: 2,
    }
}

fn open(dir: &Path) -> Result<(DiskStorage, RecoveredState), StorageError> {
    DiskStorage::open(dir, DiskOptions::default())
}

fn file_len(path: &Path) -> Result<u64, std::io::Error> {
    Ok(fs::metadata(path)?.len())
}

fn last_segment(s: &DiskStorage) -> PathBuf {
    s.segment_paths().pop().unwrap_or_default()
}

/// Copies a data directory (files one level deep: `wal/`, `snap/`).
fn copy_dir(from: &Path, to: &Path) -> std::io::Result<()> {
    for sub in ["wal", "snap"] {
        fs::create_dir_all(to.join(sub))?;
        for f in fs::read_dir(from.join(sub))? {
            let f = f?;
            fs::copy(f.path(), to.join(sub).join(f.file_name()))?;
        }
    }
    Ok(())
}

fn snap_files(dir: &Path) -> std::io::Result<Vec<String>> {
    let mut names: Vec<_> = fs::read_dir(dir.join("snap"))?
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .collect();
    names.sort();
    Ok(names)
}

/// Builds a log of entries 1..=5 plus a hard state, then entry 6 as the last record; returns the
/// directory, the segment, and where entry 6's record starts and ends.
fn log_with_last_record()
-> Result<(tempfile::TempDir, PathBuf, u64, u64), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let (mut s, _) = open(dir.path())?;
    for e in ents(1..=5, 1) {
        s.append(&[e])?;
    }
    s.set_hard_state(HardState {
        term: 1,
        vote: 1,
        commit: 5,
    })?;
    s.sync()?;
    let seg = last_segment(&s);
    let start = file_len(&seg)?;
    s.append(&ents(6..=6, 1))?;
    s.sync()?;
    let end = file_len(&seg)?;
    Ok((dir, seg, start, end))
}

#[test]
fn a_wal_cut_at_every_byte_of_its_last_record_recovers_every_complete_record() -> TestResult {
    let (dir, seg, start, end) = log_with_last_record()?;
    let full = fs::read(&seg)?;
    assert!(
        end - start > 20,
        "the last record should be a few dozen bytes"
    );
    for cut in start..end {
        let copy = tempfile::tempdir()?;
        copy_dir(dir.path(), copy.path())?;
        let copied_seg = copy
            .path()
            .join("wal")
            .join(seg.file_name().unwrap_or_default());
        fs::write(&copied_seg, &full[..cut as usize])?;

        let (mut s, rec) = open(copy.path())?;
        assert_eq!(rec.entries, ents(1..=5, 1), "cut at {cut}");
        assert_eq!(rec.hard_state.commit, 5, "cut at {cut}");
        // The torn bytes are gone from the file, and the log continues where it ends.
        assert_eq!(file_len(&copied_seg)?, start, "cut at {cut}");
        s.append(&ents(6..=7, 2))?;
        s.sync()?;
        drop(s);
        let (_, rec) = open(copy.path())?;
        assert_eq!(rec.entries[5..], ents(6..=7, 2)[..], "cut at {cut}");
    }
    Ok(())
}

#[test]
fn a_torn_record_followed_by_zeros_is_a_torn_tail() -> TestResult {
    let (dir, seg, start, end) = log_with_last_record()?;
    let mut bytes = fs::read(&seg)?;
    bytes.truncate(((start + end) / 2) as usize);
    // What a file system may show after a crash: the size grew, the data never arrived.
    bytes.extend_from_slice(&[0; 8192]);
    fs::write(&seg, &bytes)?;
    let (_, rec) = open(dir.path())?;
    assert_eq!(rec.entries, ents(1..=5, 1));
    assert_eq!(file_len(&seg)?, start);
    Ok(())
}

#[test]
fn a_whole_record_of_zeros_at_the_end_is_a_torn_tail() -> TestResult {
    let (dir, seg, start, end) = log_with_last_record()?;
    let mut bytes = fs::read(&seg)?;
    bytes[start as usize..end as usize].fill(0);
    fs::write(&seg, &bytes)?;
    let (_, rec) = open(dir.path())?;
    assert_eq!(rec.entries, ents(1..=5, 1));
    Ok(())
}

/// Appends entries 1..=20 one record each and returns where each record starts.
fn twenty_records() -> Result<(tempfile::TempDir, PathBuf, Vec<u64>), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let (mut s, _) = open(dir.path())?;
    let seg = last_segment(&s);
    let mut starts = Vec::new();
    for e in ents(1..=20, 1) {
        starts.push(file_len(&seg)?);
        s.append(&[e])?;
    }
    s.sync()?;
    Ok((dir, seg, starts))
}

fn expect_corrupt(dir: &Path, file: &Path, offset: u64) -> TestResult {
    match open(dir) {
        Err(e @ StorageError::Corrupt { .. }) => {
            let StorageError::Corrupt {
                file: f, offset: o, ..
            } = &e
            else {
                unreachable!()
            };
            assert_eq!((f.as_path(), *o), (file, offset), "{e}");
            let msg = e.to_string();
            assert!(msg.contains(&file.display().to_string()), "{msg}");
            assert!(msg.contains(&format!("offset {offset}")), "{msg}");
            Ok(())
        }
        Err(e) => Err(format!("expected corruption at {offset}, got {e}").into()),
        Ok(_) => Err(format!("corruption at {offset} was accepted").into()),
    }
}

#[test]
fn a_byte_flipped_in_the_middle_of_the_log_is_refused_naming_file_and_offset() -> TestResult {
    for (record, byte) in [(9, 12), (9, 2), (0, 20), (18, 30)] {
        let (dir, seg, starts) = twenty_records()?;
        let mut bytes = fs::read(&seg)?;
        let at = starts[record] + byte;
        bytes[at as usize] ^= 0x10;
        fs::write(&seg, &bytes)?;
        expect_corrupt(dir.path(), &seg, starts[record])?;
        // Nothing was changed by the refusal.
        assert_eq!(fs::read(&seg)?, bytes);
    }
    Ok(())
}

#[test]
fn a_damaged_segment_header_is_refused() -> TestResult {
    let (dir, seg, _) = twenty_records()?;
    let mut bytes = fs::read(&seg)?;
    bytes[10] ^= 0x01;
    fs::write(&seg, &bytes)?;
    expect_corrupt(dir.path(), &seg, 0)
}

#[test]
fn a_bad_record_at_the_end_of_a_sealed_segment_is_corruption() -> TestResult {
    let dir = tempfile::tempdir()?;
    let (mut s, _) = DiskStorage::open(dir.path(), small())?;
    for e in ents(1..=100, 1) {
        s.append(&[e])?;
    }
    s.sync()?;
    let segs = s.segment_paths();
    assert!(
        segs.len() >= 3,
        "expected several segments, got {}",
        segs.len()
    );
    drop(s);
    // Cutting the end of the first segment looks like a torn write, but that segment was fsynced
    // before the second one was created: it cannot be one.
    let len = file_len(&segs[0])?;
    let f = fs::OpenOptions::new().write(true).open(&segs[0])?;
    f.set_len(len - 3)?;
    match DiskStorage::open(dir.path(), small()) {
        Err(StorageError::Corrupt { file, .. }) => assert_eq!(file, segs[0]),
        other => return Err(format!("expected corruption, got {other:?}").into()),
    }
    Ok(())
}

#[test]
fn a_new_segment_cut_inside_its_header_is_discarded() -> TestResult {
    let dir = tempfile::tempdir()?;
    let (mut s, _) = DiskStorage::open(dir.path(), small())?;
    let mut first_in_new = 0;
    for e in ents(1..=100, 1) {
        let before = s.segment_paths().len();
        let index = e.index;
        s.append(&[e])?;
        if s.segment_paths().len() > before {
            first_in_new = index;
            break;
        }
    }
    assert!(first_in_new > 1, "no segment was rolled");
    s.sync()?;
    let new = last_segment(&s);
    drop(s);
    // A crash while the new segment was being created: only part of its header reached the disk.
    let f = fs::OpenOptions::new().write(true).open(&new)?;
    f.set_len(5)?;
    let (mut s, rec) = DiskStorage::open(dir.path(), small())?;
    assert_eq!(rec.entries, ents(1..=first_in_new - 1, 1));
    assert!(!new.exists());
    s.append(&ents(first_in_new..=first_in_new + 50, 2))?;
    s.sync()?;
    drop(s);
    let (_, rec) = DiskStorage::open(dir.path(), small())?;
    assert_eq!(rec.entries.len() as u64, first_in_new + 50);
    Ok(())
}

/// A log with a snapshot at 10 and entries up to 25, all synced.
fn snapshotted()
-> Result<(tempfile::TempDir, DiskStorage, RecoveredState), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let (mut s, _) = open(dir.path())?;
    s.append(&ents(1..=20, 1))?;
    let mut w = s.snapshot_store().writer(meta(10, 1))?;
    w.write_all(b"snapshot A")?;
    s.install_snapshot(w.finish()?)?;
    s.append(&ents(21..=25, 1))?;
    s.set_hard_state(HardState {
        term: 1,
        vote: 2,
        commit: 25,
    })?;
    s.sync()?;
    let state = s.initial_state()?;
    Ok((dir, s, state))
}

fn staged_b(s: &DiskStorage) -> Result<StagedSnapshot, Box<dyn std::error::Error>> {
    let mut w = s.snapshot_store().writer(meta(20, 1))?;
    w.write_all(b"snapshot B, never installed")?;
    Ok(w.finish()?)
}

fn read_all(s: &DiskStorage, m: &SnapshotMeta) -> Result<Vec<u8>, Box<dyn std::error::Error>> {
    let mut out = Vec::new();
    std::io::Read::read_to_end(&mut s.snapshot_store().open(m)?, &mut out)?;
    Ok(out)
}

#[test]
fn a_crash_between_snapshot_temp_file_and_rename_loses_nothing() -> TestResult {
    let (dir, s, before) = snapshotted()?;
    // The temp file is written and fsynced; the crash comes before the rename (so nothing runs
    // the staged snapshot's cleanup either).
    std::mem::forget(staged_b(&s)?);
    drop(s);
    assert!(snap_files(dir.path())?.iter().any(|n| n.contains(".tmp")));

    let (s, rec) = open(dir.path())?;
    assert_eq!(rec, before);
    assert_eq!(read_all(&s, &meta(10, 1))?, b"snapshot A");
    assert_eq!(
        snap_files(dir.path())?,
        vec![format!("{:016x}-{:016x}.snap", 10, 1)]
    );
    Ok(())
}

#[test]
fn a_crash_after_the_snapshot_rename_but_before_its_log_record_loses_nothing() -> TestResult {
    let (dir, s, before) = snapshotted()?;
    let staged = staged_b(&s)?;
    // Do the rename an install would do, then crash before the log records the install.
    let tmp = snap_files(dir.path())?
        .into_iter()
        .find(|n| n.contains(".tmp"))
        .ok_or("no temp file")?;
    let snap = dir.path().join("snap");
    fs::rename(
        snap.join(&tmp),
        snap.join(format!("{:016x}-{:016x}.snap", 20, 1)),
    )?;
    std::mem::forget(staged);
    drop(s);

    let (s, rec) = open(dir.path())?;
    assert_eq!(rec, before);
    assert_eq!(read_all(&s, &meta(10, 1))?, b"snapshot A");
    // The orphan is gone: nothing refers to it.
    assert_eq!(s.snapshot_store().list()?, vec![(10, 1)]);
    Ok(())
}

#[test]
fn a_damaged_or_missing_snapshot_file_is_refused() -> TestResult {
    let (dir, s, _) = snapshotted()?;
    drop(s);
    let file = dir
        .path()
        .join("snap")
        .join(format!("{:016x}-{:016x}.snap", 10, 1));
    let mut bytes = fs::read(&file)?;
    let n = bytes.len();
    bytes[n - 20] ^= 0x01; // in the data
    fs::write(&file, &bytes)?;
    match open(dir.path()) {
        Err(StorageError::Corrupt { file: f, .. }) => assert_eq!(f, file),
        other => return Err(format!("expected corruption, got {other:?}").into()),
    }
    fs::remove_file(&file)?;
    assert!(matches!(
        open(dir.path()),
        Err(StorageError::SnapshotNotFound { index: 10, term: 1 })
    ));
    Ok(())
}

#[test]
fn a_truncated_conflicting_suffix_stays_truncated_after_reopen() -> TestResult {
    for opts in [DiskOptions::default(), small()] {
        let dir = tempfile::tempdir()?;
        let (mut s, _) = DiskStorage::open(dir.path(), opts.clone())?;
        s.append(&ents(1..=60, 1))?;
        s.sync()?;
        s.append(&ents(31..=33, 2))?;
        s.sync()?;
        drop(s);
        let (s, rec) = DiskStorage::open(dir.path(), opts.clone())?;
        let mut want = ents(1..=30, 1);
        want.extend(ents(31..=33, 2));
        assert_eq!(rec.entries, want);
        assert_eq!(s.last_index(), 33);
        assert!(matches!(s.term(34), Err(StorageError::Unavailable(34))));
    }
    Ok(())
}

#[test]
fn compaction_deletes_whole_segments_below_the_snapshot() -> TestResult {
    let dir = tempfile::tempdir()?;
    let (mut s, _) = DiskStorage::open(dir.path(), small())?;
    for chunk in ents(1..=300, 1).chunks(10) {
        s.append(chunk)?;
    }
    s.sync()?;
    let before = s.segment_paths();
    assert!(before.len() > 5);
    s.install_snapshot(StagedSnapshot::from_bytes(
        meta(200, 1),
        Bytes::from_static(b"200"),
    ))?;
    s.compact(200)?;
    let after = s.segment_paths();
    let deleted = before.len() - after.len();
    assert!(deleted > 0, "nothing was deleted");
    assert_eq!(s.stats().segments_deleted, deleted as u64);
    // Oldest first, whole files only.
    assert_eq!(after[..], before[deleted..]);
    for gone in &before[..deleted] {
        assert!(!gone.exists(), "{} still exists", gone.display());
    }
    // What is left still holds every entry above the snapshot: reading them verifies each record.
    assert_eq!(s.entries(201, 301)?, ents(201..=300, 1));
    let state = s.initial_state()?;
    drop(s);
    let (_, rec) = DiskStorage::open(dir.path(), small())?;
    assert_eq!(rec, state);
    Ok(())
}

#[test]
fn a_compaction_interrupted_by_a_crash_is_finished_on_restart() -> TestResult {
    let dir = tempfile::tempdir()?;
    let (mut s, _) = DiskStorage::open(dir.path(), small())?;
    s.append(&ents(1..=300, 1))?;
    s.sync()?;
    let first = s.segment_paths()[0].clone();
    let saved = fs::read(&first)?;
    s.install_snapshot(StagedSnapshot::from_bytes(meta(250, 1), Bytes::new()))?;
    s.compact(250)?;
    assert!(!first.exists());
    let state = s.initial_state()?;
    drop(s);
    // The crash left the oldest segment behind while later ones were deleted.
    fs::write(&first, saved)?;
    let (_, rec) = DiskStorage::open(dir.path(), small())?;
    assert_eq!(rec, state);
    assert!(!first.exists());
    Ok(())
}

#[test]
fn a_lost_segment_is_refused_and_nothing_is_deleted() -> TestResult {
    let dir = tempfile::tempdir()?;
    let (mut s, _) = DiskStorage::open(dir.path(), small())?;
    s.append(&ents(1..=200, 1))?;
    s.sync()?;
    let segs = s.segment_paths();
    assert!(segs.len() >= 4);
    drop(s);
    fs::remove_file(&segs[1])?;
    match DiskStorage::open(dir.path(), small()) {
        Err(StorageError::Corrupt { reason, .. }) => {
            assert!(reason.contains("missing"), "{reason}")
        }
        other => return Err(format!("expected corruption, got {other:?}").into()),
    }
    assert!(segs[0].exists());
    Ok(())
}

#[test]
fn a_second_open_of_the_same_directory_is_refused() -> TestResult {
    let dir = tempfile::tempdir()?;
    let (_s, _) = open(dir.path())?;
    assert!(matches!(open(dir.path()), Err(StorageError::Locked { .. })));
    Ok(())
}
