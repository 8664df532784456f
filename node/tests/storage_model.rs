//! Differential test: random sequences of storage operations run against `MemStorage` (the model)
//! and `DiskStorage` (tiny segments, so rolls and compaction happen constantly) must give the same
//! answers and the same state, including after a restart. Any failing seed is replayable:
//! `STORAGE_MODEL_SEED=<seed> cargo test -p raftkv-node --test storage_model`.

use bytes::Bytes;
use raftkv_node::storage::{
    DiskOptions, DiskStorage, LogStorage, MemStorage, StagedSnapshot, StorageError,
};
use raftkv_raft::{ConfState, Entry, EntryPayload, HardState, SnapshotMeta};

type TestResult = Result<(), Box<dyn std::error::Error>>;

/// xorshift64*: small, deterministic, and enough to pick operations.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1)
    }
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

fn opts() -> DiskOptions {
    DiskOptions {
        segment_size: 512,
        keep_snapshots: 2,
    }
}

/// The variant of an error, for comparing refusals across implementations.
fn kind(r: &Result<(), StorageError>) -> String {
    match r {
        Ok(()) => "Ok".into(),
        Err(e) => {
            let s = format!("{e:?}");
            s.split([' ', '(', '{'])
                .next()
                .unwrap_or_default()
                .to_string()
        }
    }
}

fn run(seed: u64, ops: usize) -> TestResult {
    let mut rng = Rng::new(seed);
    let dir = tempfile::tempdir()?;
    let mut mem = MemStorage::new();
    let (disk, _) = DiskStorage::open(dir.path(), opts())?;
    let mut disk = Some(disk);
    let mut term = 1;
    for step in 0..ops {
        let Some(d) = disk.as_mut() else {
            return Err("disk storage missing".into());
        };
        let op = rng.below(100);
        let (rm, rd, what) = if op < 55 {
            // Append: mostly at the end, sometimes overwriting a suffix, rarely out of range.
            let first = mem.first_index();
            let next = mem.last_index() + 1;
            let start = match rng.below(10) {
                0 => next + 1 + rng.below(3),
                1 => first.saturating_sub(1 + rng.below(2)),
                2..=4 => first + rng.below(next - first + 1),
                _ => next,
            };
            if rng.chance(20) {
                term += 1;
            }
            let n = 1 + rng.below(6);
            let entries: Vec<Entry> = (start..start + n)
                .map(|index| Entry {
                    term,
                    index,
                    payload: EntryPayload::Normal(Bytes::from(vec![
                        (index % 251) as u8;
                        rng.below(120) as usize
                    ])),
                })
                .collect();
            (
                mem.append(&entries),
                d.append(&entries),
                format!("append {start}+{n}"),
            )
        } else if op < 70 {
            let hs = HardState {
                term,
                vote: rng.below(4),
                commit: rng.below(mem.last_index() + 1),
            };
            (
                mem.set_hard_state(hs),
                d.set_hard_state(hs),
                format!("{hs:?}"),
            )
        } else if op < 80 {
            // Install: usually matching an entry of the log (a local snapshot), sometimes a
            // leader's snapshot that conflicts or lies beyond the log, rarely a stale one.
            let base = mem.first_index() - 1;
            let index = match rng.below(10) {
                0 => base.saturating_sub(1),
                1..=2 => mem.last_index() + 1 + rng.below(4),
                _ => base + rng.below(mem.last_index() - base + 1),
            };
            let matching = mem.term(index).ok();
            let t = match matching {
                Some(t) if rng.chance(80) => t,
                _ => term,
            };
            let meta = SnapshotMeta {
                index,
                term: t,
                conf: ConfState::with_voters([1, 2, 3]),
            };
            let data = Bytes::from(format!("snapshot {index}/{t} at step {step}"));
            let staged = |s: &dyn LogStorage| -> Result<StagedSnapshot, StorageError> {
                if step.is_multiple_of(2) {
                    Ok(StagedSnapshot::from_bytes(meta.clone(), data.clone()))
                } else {
                    let mut w = s.snapshot_store().writer(meta.clone())?;
                    std::io::Write::write_all(&mut w, &data).map_err(|e| StorageError::Io {
                        op: "write",
                        path: Default::default(),
                        source: e.into(),
                    })?;
                    w.finish()
                }
            };
            let sm = staged(&mem)?;
            let sd = staged(&*d)?;
            (
                mem.install_snapshot(sm),
                d.install_snapshot(sd),
                format!("install {index}/{t}"),
            )
        } else if op < 86 {
            let snap = mem.snapshot_meta().map_or(0, |m| m.index);
            let upto = snap.saturating_sub(rng.below(3)) + u64::from(rng.chance(10));
            (
                mem.compact(upto),
                d.compact(upto),
                format!("compact {upto}"),
            )
        } else if op < 95 {
            (mem.sync(), d.sync(), "sync".into())
        } else {
            // Restart both from durable state.
            mem.sync()?;
            d.sync()?;
            let want = mem.initial_state()?;
            mem.crash();
            // Drop first: the directory's lock is held while it is open.
            drop(disk.take());
            let (reopened, recovered) = DiskStorage::open(dir.path(), opts())?;
            assert_eq!(recovered, want, "seed {seed} step {step}: recovered state");
            disk = Some(reopened);
            continue;
        };
        assert_eq!(
            kind(&rm),
            kind(&rd),
            "seed {seed} step {step}: {what}: {rm:?} vs {rd:?}"
        );
        let Some(d) = disk.as_ref() else {
            return Err("disk storage missing".into());
        };
        assert_eq!(
            mem.initial_state()?,
            d.initial_state()?,
            "seed {seed} step {step}: state after {what}"
        );
        assert_eq!(
            mem.snapshot_store().list()?,
            d.snapshot_store().list()?,
            "seed {seed} step {step}: snapshots kept after {what}"
        );
    }
    Ok(())
}

#[test]
fn memory_and_disk_agree_on_random_operation_sequences() -> TestResult {
    if let Some(seed) = std::env::var("STORAGE_MODEL_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
    {
        return run(seed, 400);
    }
    for seed in 0..24 {
        run(seed, 400)?;
    }
    Ok(())
}
