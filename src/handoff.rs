//! The handoff of new rings from registering threads to the aggregator, kept apart from the
//! collector so loom can check the very code the collector runs (`tests/loom.rs`).
//!
//! Registering threads [`register`](Handoff::register) items; the aggregator
//! [`take_all`](Handoff::take_all)s them at each cycle and, on stop, [`close`](Handoff::close)s the
//! handoff before its final cycle. Because `accepting` and the list sit under one lock, an item is
//! either taken by a later `take_all` or handed back to its thread, never stranded in between.

use crate::sync::Mutex;

/// A list of items on their way from any number of threads to one taker, which can close it.
#[derive(Debug)]
pub struct Handoff<T> {
    inner: Mutex<Inner<T>>,
}

#[derive(Debug)]
struct Inner<T> {
    /// False once [`Handoff::close`] ran: no item may join after that.
    accepting: bool,
    /// Registered and not yet taken. Nothing joins once `accepting` is false, so after `close`
    /// one more `take_all` empties it for good.
    items: Vec<T>,
}

impl<T> Handoff<T> {
    /// An open handoff with nothing in it.
    pub fn new() -> Self {
        Self {
            inner: Mutex::new(Inner {
                accepting: true,
                items: Vec::new(),
            }),
        }
    }

    /// Queues `item` for the taker, or hands it back if the handoff is closed.
    pub fn register(&self, item: T) -> Result<(), T> {
        let mut inner = self.inner.lock();
        if !inner.accepting {
            return Err(item);
        }
        inner.items.push(item);
        Ok(())
    }

    /// Moves every queued item to the end of `into`, in registration order.
    pub fn take_all(&self, into: &mut Vec<T>) {
        let mut inner = self.inner.lock();
        into.append(&mut inner.items);
    }

    /// Refuses every later `register`. Items queued before stay for the next `take_all`.
    pub fn close(&self) {
        self.inner.lock().accepting = false;
    }
}

impl<T> Default for Handoff<T> {
    fn default() -> Self {
        Self::new()
    }
}
