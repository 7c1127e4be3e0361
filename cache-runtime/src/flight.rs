//! In-process single flight: one task per key per process runs the load; the others wait
//! for it. The table holds only keys being loaded right now: an entry is removed when its
//! leader finishes, fails, panics or is dropped.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::watch;

/// What a leader's load left in the cache.
#[derive(Debug, Clone)]
pub(crate) enum Landed {
    /// The envelope the leader stored (followers decode it; no second round trip).
    Stored(Arc<[u8]>),
    /// Nothing was stored (error, panic, cancellation, uncached `None`, lost lease):
    /// followers go on to the lease protocol themselves.
    NotStored,
}

type Slot = watch::Receiver<Option<Landed>>;

/// The in-flight table of one cache.
#[derive(Debug, Default)]
pub(crate) struct Flights {
    map: Mutex<HashMap<String, Slot>>,
}

/// This task's role for a key.
pub(crate) enum Role<'a> {
    /// Run the load, then [`Leader::land`].
    Leader(Leader<'a>),
    /// Wait for the leader with [`follow`].
    Follower(Slot),
}

/// Held by the task loading a key; dropping it (panic, cancellation) wakes the followers.
pub(crate) struct Leader<'a> {
    flights: &'a Flights,
    key: String,
    tx: watch::Sender<Option<Landed>>,
}

impl Flights {
    /// Joins the flight for `key`, becoming its leader if there is none.
    pub(crate) fn join(&self, key: &str) -> Role<'_> {
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(rx) = map.get(key) {
            return Role::Follower(rx.clone());
        }
        let (tx, rx) = watch::channel(None);
        map.insert(key.to_owned(), rx);
        Role::Leader(Leader {
            flights: self,
            key: key.to_owned(),
            tx,
        })
    }

    /// Keys being loaded now (for tests of boundedness).
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.map.lock().map(|m| m.len()).unwrap_or(0)
    }
}

impl Leader<'_> {
    /// Publishes the outcome to the followers.
    pub(crate) fn land(self, landed: Landed) {
        self.tx.send_replace(Some(landed));
        // Drop removes the table entry.
    }
}

impl Drop for Leader<'_> {
    fn drop(&mut self) {
        let mut map = self.flights.map.lock().unwrap_or_else(|p| p.into_inner());
        if map
            .get(&self.key)
            .is_some_and(|rx| rx.same_channel(&self.tx.subscribe()))
        {
            map.remove(&self.key);
        }
    }
}

/// Waits for the leader's outcome; a leader that vanished counts as [`Landed::NotStored`].
pub(crate) async fn follow(mut rx: Slot) -> Landed {
    match rx.wait_for(Option::is_some).await {
        Ok(v) => v.clone().unwrap_or(Landed::NotStored),
        Err(_) => Landed::NotStored,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn table_shrinks_and_followers_wake() {
        let f = Flights::default();
        let Role::Leader(leader) = f.join("k") else {
            panic!("first joiner leads")
        };
        let Role::Follower(rx) = f.join("k") else {
            panic!("second joiner follows")
        };
        assert_eq!(f.len(), 1);
        leader.land(Landed::Stored(Arc::from(&b"x"[..])));
        assert_eq!(f.len(), 0);
        assert!(matches!(follow(rx).await, Landed::Stored(_)));
    }

    #[tokio::test]
    async fn dropped_leader_releases_followers() {
        let f = Flights::default();
        let Role::Leader(leader) = f.join("k") else {
            panic!()
        };
        let Role::Follower(rx) = f.join("k") else {
            panic!()
        };
        drop(leader);
        assert_eq!(f.len(), 0);
        assert!(matches!(follow(rx).await, Landed::NotStored));
    }
}
