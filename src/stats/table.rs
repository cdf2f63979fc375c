//! Per-stage entries in chunks that publications share: the snapshot's figures, an exporter's.
//!
//! A snapshot holds one entry per stage. Rebuilding that list each cycle would cost a reference
//! count increment (and, when the old snapshot goes, a decrement) per stage per cycle: with
//! 20 000 series, thousands of cache misses every 10 ms for figures that did not change. Here
//! the list is chunks of [`CHUNK_STAGES`] entries behind their own `Arc`: a cycle copies only the
//! chunks holding a stage it refreshed, and a new snapshot clones one `Arc` per chunk.

use std::sync::Arc;

use super::StageSnapshot;

/// Stages per chunk: a cycle that refreshes a run of consecutive series copies a few chunks.
const CHUNK_STAGES: usize = 256;

/// Entries by stage id, each chunk behind its own `Arc`; cloning the table clones one `Arc` per
/// chunk. `T` is cheap to clone (an `Arc` itself, or a pair of them).
#[derive(Debug)]
pub(crate) struct SharedTable<T> {
    chunks: Vec<Arc<Vec<Option<T>>>>,
}

/// The snapshot's figures by stage id.
pub(crate) type StageTable = SharedTable<Arc<StageSnapshot>>;

impl<T> Default for SharedTable<T> {
    fn default() -> Self {
        Self { chunks: Vec::new() }
    }
}

impl<T> Clone for SharedTable<T> {
    fn clone(&self) -> Self {
        Self {
            chunks: self.chunks.clone(),
        }
    }
}

impl<T: Clone> SharedTable<T> {
    /// Stage `id`'s entry, if it has one.
    pub(crate) fn get(&self, id: usize) -> Option<&T> {
        self.chunks
            .get(id / CHUNK_STAGES)?
            .get(id % CHUNK_STAGES)?
            .as_ref()
    }

    /// At least the number of entries (the slots of every chunk).
    pub(crate) fn slots(&self) -> usize {
        self.chunks.len() * CHUNK_STAGES
    }

    /// Every entry, in id order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = &T> {
        self.chunks.iter().flat_map(|c| c.iter().flatten())
    }

    /// Sets stage `id`'s entry: the chunk is copied first if a publication still shares it.
    pub(crate) fn set(&mut self, id: usize, entry: T) {
        let chunk = id / CHUNK_STAGES;
        while self.chunks.len() <= chunk {
            self.chunks.push(Arc::new(vec![None; CHUNK_STAGES]));
        }
        Arc::make_mut(&mut self.chunks[chunk])[id % CHUNK_STAGES] = Some(entry);
    }
}

#[cfg(all(test, not(laptime_loom)))]
mod tests {
    use super::*;

    fn figures(count: usize) -> Arc<StageSnapshot> {
        Arc::from(vec![None; count])
    }

    #[test]
    fn a_shared_chunk_is_copied_and_the_others_stay_shared() {
        let mut table = StageTable::default();
        for id in [0, 1, CHUNK_STAGES + 3] {
            table.set(id, figures(id));
        }
        let published = table.clone();
        table.set(1, figures(7));
        // The snapshot taken before still sees the old figures; the new table the new ones.
        assert_eq!(published.get(1).unwrap().len(), 1);
        assert_eq!(table.get(1).unwrap().len(), 7);
        assert!(!Arc::ptr_eq(&published.chunks[0], &table.chunks[0]));
        assert!(Arc::ptr_eq(&published.chunks[1], &table.chunks[1]));
        assert!(table.get(2).is_none());
        assert!(table.get(10 * CHUNK_STAGES).is_none());
        let ids: Vec<usize> = table.iter().map(|s| s.len()).collect();
        assert_eq!(ids, vec![0, 7, CHUNK_STAGES + 3]);
    }
}
