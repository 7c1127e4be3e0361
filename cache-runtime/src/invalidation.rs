//! Invalidation: deleting entries after a successful write (the retry queue is in `retry`).
