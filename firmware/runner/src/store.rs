//! The gateway's state on disk: one JSON file, replaced atomically.
//!
//! The store-and-forward queue lives in the core's memory; this file holds its latest
//! snapshot. Writing a new file, fsyncing it, renaming it over the old one and fsyncing the
//! directory means a crash at any point leaves either the old or the new snapshot, never a
//! torn one.

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde::Serialize;

const FILE_NAME: &str = "state.json";
const TEMP_NAME: &str = "state.json.tmp";

/// A directory holding one state snapshot.
#[derive(Debug, Clone)]
pub struct StateStore {
    dir: PathBuf,
}

impl StateStore {
    /// Opens (creating) `dir`.
    ///
    /// # Errors
    /// The directory cannot be created.
    pub fn open(dir: impl Into<PathBuf>) -> io::Result<Self> {
        let dir = dir.into();
        fs::create_dir_all(&dir)?;
        Ok(Self { dir })
    }

    #[must_use]
    pub fn path(&self) -> PathBuf {
        self.dir.join(FILE_NAME)
    }

    /// Reads the snapshot; `None` when there is none yet.
    ///
    /// # Errors
    /// The file exists but cannot be read or parsed. Callers decide whether to start empty;
    /// the unreadable file is left in place for inspection.
    pub fn load<T: DeserializeOwned>(&self) -> io::Result<Option<T>> {
        match fs::read(self.path()) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Replaces the snapshot durably.
    ///
    /// # Errors
    /// Serialising, writing, syncing or renaming failed; the previous snapshot is intact.
    pub fn save<T: Serialize>(&self, state: &T) -> io::Result<()> {
        let bytes = serde_json::to_vec(state).map_err(io::Error::other)?;
        let temp = self.dir.join(TEMP_NAME);
        let mut file = File::create(&temp)?;
        file.write_all(&bytes)?;
        file.sync_all()?;
        drop(file);
        fs::rename(&temp, self.path())?;
        sync_dir(&self.dir)
    }
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_then_round_trip_then_replace() {
        let dir = tempfile::tempdir().unwrap();
        let store = StateStore::open(dir.path().join("SG1")).unwrap();
        assert_eq!(store.load::<Vec<u32>>().unwrap(), None);
        store.save(&vec![1_u32, 2, 3]).unwrap();
        assert_eq!(store.load::<Vec<u32>>().unwrap(), Some(vec![1, 2, 3]));
        store.save(&vec![4_u32]).unwrap();
        let reopened = StateStore::open(dir.path().join("SG1")).unwrap();
        assert_eq!(reopened.load::<Vec<u32>>().unwrap(), Some(vec![4]));
        assert!(!dir.path().join("SG1").join(TEMP_NAME).exists());
    }

    /// The core's queue state survives a restart through the store, including what a full
    /// queue dropped.
    #[test]
    fn gateway_snapshot_round_trip_keeps_order_and_drops() {
        use sg_gateway_core::{GatewaySnapshot, Queue, QueuedMessage};

        let mut queue = Queue::new(3, false);
        for n in 1..=5 {
            queue.push(QueuedMessage {
                topic: "sg/SG1/pub/measurements/ir".into(),
                payload: format!("{{\"n\":{n}}}"),
                qos: 1,
                seq: None,
            });
        }
        assert_eq!(
            queue.dropped_total(),
            2,
            "full: the two oldest were dropped"
        );
        let snapshot = GatewaySnapshot {
            next_seq: 9,
            queues: [queue.snapshot(), Default::default()],
        };
        let dir = tempfile::tempdir().unwrap();
        StateStore::open(dir.path())
            .unwrap()
            .save(&snapshot)
            .unwrap();
        let loaded: GatewaySnapshot = StateStore::open(dir.path())
            .unwrap()
            .load()
            .unwrap()
            .unwrap();
        assert_eq!(loaded, snapshot);
        let mut restored = Queue::new(3, false);
        restored.restore(loaded.queues[0].clone());
        let payloads: Vec<_> = restored.iter().map(|m| m.payload.as_str()).collect();
        assert_eq!(payloads, [r#"{"n":3}"#, r#"{"n":4}"#, r#"{"n":5}"#]);
        assert_eq!(restored.dropped_total(), 2);
    }

    #[test]
    fn corrupt_file_is_an_error_not_an_empty_queue() {
        let dir = tempfile::tempdir().unwrap();
        let store = StateStore::open(dir.path()).unwrap();
        fs::write(store.path(), b"{not json").unwrap();
        let error = store.load::<Vec<u32>>().unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::InvalidData);
    }
}
