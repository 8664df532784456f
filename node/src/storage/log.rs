//! The logical log both implementations share: entries after a snapshot, with the rules for
//! appending (conflicting-suffix truncation) and for installing a snapshot.
//!
//! It is generic over what is kept per entry — the entry itself in `MemStorage`, its location in a
//! WAL segment in `DiskStorage` — so that the two implementations cannot disagree on the rules.

use raftkv_raft::{Entry, Index, Term};

use super::error::{Result, StorageError};

/// Anything kept per log entry must know the entry's term.
pub(crate) trait Termed {
    /// The term of the entry.
    fn term(&self) -> Term;
}

impl Termed for Entry {
    fn term(&self) -> Term {
        self.term
    }
}

/// Entries `base + 1 ..= base + items.len()`, where `base` is the snapshot's index.
#[derive(Clone, Debug)]
pub(crate) struct Log<T> {
    base: Index,
    base_term: Term,
    items: Vec<T>,
}

impl<T> Default for Log<T> {
    fn default() -> Self {
        Self {
            base: 0,
            base_term: 0,
            items: Vec::new(),
        }
    }
}

impl<T: Termed> Log<T> {
    /// An empty log after a snapshot at `(base, base_term)`.
    pub(crate) fn empty(base: Index, base_term: Term) -> Self {
        Self {
            base,
            base_term,
            items: Vec::new(),
        }
    }

    /// The snapshot's index: everything at or below it is gone.
    pub(crate) fn base(&self) -> Index {
        self.base
    }

    /// The first index that may hold an entry.
    pub(crate) fn first_index(&self) -> Index {
        self.base + 1
    }

    /// The last index, or the snapshot's index when there are no entries.
    pub(crate) fn last_index(&self) -> Index {
        self.base + self.items.len() as u64
    }

    /// The term at `index`, for indexes from the snapshot's to the last.
    pub(crate) fn term(&self, index: Index) -> Option<Term> {
        if index == self.base {
            Some(self.base_term)
        } else {
            self.get(index).map(Termed::term)
        }
    }

    /// What is kept for the entry at `index`, if it is in the log.
    pub(crate) fn get(&self, index: Index) -> Option<&T> {
        let offset = index.checked_sub(self.base + 1)?;
        self.items.get(usize::try_from(offset).ok()?)
    }

    /// The entries `[lo, hi)`, or the reason they are not all here.
    pub(crate) fn slice(&self, lo: Index, hi: Index) -> Result<&[T]> {
        if lo <= self.base {
            return Err(StorageError::Compacted(lo));
        }
        if hi > self.last_index() + 1 {
            return Err(StorageError::Unavailable(hi - 1));
        }
        if lo >= hi {
            return Ok(&[]);
        }
        // Both bounds are within `items`, checked above.
        let a = (lo - self.base - 1) as usize;
        let b = (hi - self.base - 1) as usize;
        Ok(&self.items[a..b])
    }

    /// Checks that entries with indexes `indexes` may be appended: consecutive, after the
    /// snapshot, and starting at most one past the last entry.
    pub(crate) fn check_append(&self, indexes: impl IntoIterator<Item = Index>) -> Result<()> {
        let mut indexes = indexes.into_iter();
        let Some(first) = indexes.next() else {
            return Ok(());
        };
        if first <= self.base || first > self.last_index() + 1 {
            return Err(StorageError::AppendOutOfRange {
                index: first,
                first: self.first_index(),
                next: self.last_index() + 1,
            });
        }
        let mut expected = first;
        for got in indexes {
            expected += 1;
            if got != expected {
                return Err(StorageError::NonConsecutive { expected, got });
            }
        }
        Ok(())
    }

    /// Appends `item` at `index`, first dropping the entry there and everything after it.
    /// The caller has checked `base < index <= last_index + 1`.
    pub(crate) fn push(&mut self, index: Index, item: T) {
        // In range by the caller's check.
        let keep = (index - self.base - 1) as usize;
        self.items.truncate(keep);
        self.items.push(item);
    }

    /// Whether installing a snapshot at `(index, term)` keeps the entries after it: only when this
    /// log holds that very entry (Raft paper §7: "if existing log entry has same index and term as
    /// snapshot's last included entry, retain log entries following it"). Otherwise the whole log
    /// is discarded, since nothing in it is known to agree with the snapshot.
    pub(crate) fn snapshot_keeps_suffix(&self, index: Index, term: Term) -> bool {
        self.term(index) == Some(term)
    }

    /// Installs a snapshot at `(index, term)` (not older than the current one): the log then starts
    /// after `index`, keeping the entries after it only as [`Self::snapshot_keeps_suffix`] says.
    /// Returns whether the suffix was kept.
    pub(crate) fn install_snapshot(&mut self, index: Index, term: Term) -> bool {
        let keep = self.snapshot_keeps_suffix(index, term);
        self.rebase(index, term, keep);
        keep
    }

    /// Moves the start of the log to after `(index, term)`: drops the entries at or below `index`
    /// and, unless `keep_suffix`, all the others too.
    pub(crate) fn rebase(&mut self, index: Index, term: Term, keep_suffix: bool) {
        if keep_suffix {
            let n = usize::try_from(index.saturating_sub(self.base)).unwrap_or(usize::MAX);
            self.items.drain(..n.min(self.items.len()));
        } else {
            self.items.clear();
        }
        self.base = index;
        self.base_term = term;
    }

    /// Replaces the log by an empty one after `(base, base_term)`.
    pub(crate) fn reset(&mut self, base: Index, base_term: Term) {
        self.items.clear();
        self.base = base;
        self.base_term = base_term;
    }

    /// The items, first to last.
    pub(crate) fn items(&self) -> &[T] {
        &self.items
    }

    /// Maps every item, keeping the indexes.
    pub(crate) fn map<U>(self, f: impl FnMut(T) -> U) -> Log<U> {
        Log {
            base: self.base,
            base_term: self.base_term,
            items: self.items.into_iter().map(f).collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    impl Termed for Term {
        fn term(&self) -> Term {
            *self
        }
    }

    fn log(terms: &[Term]) -> Log<Term> {
        let mut l = Log::empty(0, 0);
        for (i, t) in terms.iter().enumerate() {
            l.push(i as u64 + 1, *t);
        }
        l
    }

    #[test]
    fn push_truncates_a_conflicting_suffix() {
        let mut l = log(&[1, 1, 1, 1]);
        l.push(3, 2);
        assert_eq!(l.items(), &[1, 1, 2]);
        assert_eq!(l.last_index(), 3);
    }

    #[test]
    fn check_append_bounds() {
        let mut l = log(&[1, 1, 1]);
        assert!(l.check_append([4, 5]).is_ok());
        assert!(l.check_append([2]).is_ok());
        assert!(matches!(
            l.check_append([5]),
            Err(StorageError::AppendOutOfRange { index: 5, .. })
        ));
        assert!(matches!(
            l.check_append([3, 5]),
            Err(StorageError::NonConsecutive {
                expected: 4,
                got: 5
            })
        ));
        l.install_snapshot(2, 1);
        assert!(matches!(
            l.check_append([2]),
            Err(StorageError::AppendOutOfRange { index: 2, .. })
        ));
    }

    #[test]
    fn snapshot_keeps_the_suffix_only_after_a_matching_entry() {
        let mut l = log(&[1, 1, 2, 2]);
        l.install_snapshot(2, 1);
        assert_eq!((l.first_index(), l.items()), (3, &[2, 2][..]));
        let mut l = log(&[1, 1, 2, 2]);
        l.install_snapshot(2, 3);
        assert_eq!((l.first_index(), l.last_index()), (3, 2));
        let mut l = log(&[1]);
        l.install_snapshot(10, 1);
        assert_eq!((l.term(10), l.last_index()), (Some(1), 10));
    }

    #[test]
    fn slice_bounds() {
        let mut l = log(&[1, 2, 3, 4]);
        l.install_snapshot(1, 1);
        assert_eq!(l.slice(2, 5).ok(), Some(&[2, 3, 4][..]));
        assert!(matches!(l.slice(1, 3), Err(StorageError::Compacted(1))));
        assert!(matches!(l.slice(2, 6), Err(StorageError::Unavailable(5))));
        assert_eq!(l.slice(3, 3).ok(), Some(&[][..]));
    }
}
