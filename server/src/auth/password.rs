//! Password hashing (argon2id, PHC strings) and generation of one-time-shown passwords.
//!
//! Every argon2 computation runs through one bounded pool: a verification costs about 19 MiB
//! and tens of milliseconds of CPU, so an anonymous flood of logins or CONNECTs must queue
//! (briefly) and then be shed with [`Busy`] rather than run unbounded and exhaust memory.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;
use std::time::Duration;

use argon2::password_hash::{
    rand_core::OsRng, PasswordHash, PasswordHasher, PasswordVerifier, SaltString,
};
use argon2::Argon2;
use rand::Rng;
use tokio::sync::Semaphore;

#[derive(Debug, thiserror::Error)]
#[error("password hashing failed: {0}")]
pub struct HashError(String);

/// The hashing pool is full: the caller sheds the request (HTTP 429, CONNACK 3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("too many password checks at once; try again shortly")]
pub struct Busy;

/// Memory one argon2id computation with the default parameters holds (m = 19 MiB).
const ARGON2_BYTES: u64 = 19 * 1024 * 1024;

/// Bounds the argon2 computations running at once and the callers waiting for one.
///
/// The computations run on `size` dedicated threads rather than Tokio's blocking pool: the
/// allocator keeps a freed 19 MiB block in the arena of the thread that used it, so spreading
/// checks over the blocking pool's many threads grew memory by an arena per thread (seen:
/// 475 MiB after 200 bad logins). With dedicated threads at most `size` arenas hold one.
struct HashPool {
    running: std::sync::Arc<Semaphore>,
    waiting: AtomicUsize,
    max_waiting: usize,
    max_wait: Duration,
    jobs: std::sync::mpsc::Sender<Job>,
}

type Job = Box<dyn FnOnce() + Send>;

fn start_workers(size: usize) -> std::sync::mpsc::Sender<Job> {
    let (jobs, queue) = std::sync::mpsc::channel::<Job>();
    let queue = std::sync::Arc::new(std::sync::Mutex::new(queue));
    for n in 0..size {
        let queue = queue.clone();
        let spawned = std::thread::Builder::new()
            .name(format!("argon2-{n}"))
            .spawn(move || loop {
                let job = queue
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .recv();
                match job {
                    Ok(job) => job(),
                    Err(_) => return,
                }
            });
        if let Err(error) = spawned {
            tracing::error!(%error, "could not start a password hashing thread");
        }
    }
    jobs
}

/// Computations at once: one per core (argon2 is CPU-bound, more would only queue inside the
/// blocking pool), fewer when an eighth of the machine's memory cannot hold them.
pub fn pool_size() -> usize {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let budget = total_memory_bytes().map_or(u64::MAX, |total| total / 8);
    let by_memory = usize::try_from(budget / ARGON2_BYTES).unwrap_or(usize::MAX);
    cores.min(by_memory).max(1)
}

fn total_memory_bytes() -> Option<u64> {
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = meminfo.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

fn pool() -> &'static HashPool {
    static POOL: OnceLock<HashPool> = OnceLock::new();
    POOL.get_or_init(|| {
        let size = pool_size();
        HashPool {
            running: std::sync::Arc::new(Semaphore::new(size)),
            waiting: AtomicUsize::new(0),
            // A short queue absorbs a legitimate burst (a fleet reconnecting); beyond it a
            // caller would wait longer than a client's own timeout, so it is shed at once.
            max_waiting: size * 32,
            max_wait: Duration::from_secs(5),
            jobs: start_workers(size),
        }
    })
}

/// Runs `work` on a hashing thread once the pool has room; [`Busy`] when the queue is
/// full or no room came within the wait bound.
async fn bounded<T: Send + 'static>(work: impl FnOnce() -> T + Send + 'static) -> Result<T, Busy> {
    let pool = pool();
    // Counted down on drop: a caller cancelled while it waits (a client that hung up) must not
    // leave the queue looking fuller than it is.
    let waiting = Waiting::enter(pool).ok_or(Busy)?;
    let permit = tokio::time::timeout(pool.max_wait, pool.running.clone().acquire_owned()).await;
    drop(waiting);
    let Ok(Ok(permit)) = permit else {
        return Err(Busy);
    };
    let (done, answer) = tokio::sync::oneshot::channel();
    // The permit travels with the job and is released when the computation ends, even if the
    // caller is gone by then: the queue never holds more jobs than there are threads.
    let job: Job = Box::new(move || {
        let _ = done.send(work());
        drop(permit);
    });
    pool.jobs.send(job).map_err(|_| Busy)?;
    answer.await.map_err(|_| Busy)
}

/// One caller in the hashing pool's queue, for as long as it lives.
struct Waiting(&'static HashPool);

impl Waiting {
    fn enter(pool: &'static HashPool) -> Option<Self> {
        if pool.waiting.fetch_add(1, Ordering::AcqRel) >= pool.max_waiting {
            pool.waiting.fetch_sub(1, Ordering::AcqRel);
            return None;
        }
        Some(Self(pool))
    }
}

impl Drop for Waiting {
    fn drop(&mut self) {
        self.0.waiting.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Hashes on a blocking thread through the bounded pool.
pub async fn hash(password: String) -> Result<String, HashError> {
    bounded(move || hash_blocking(&password))
        .await
        .map_err(|e| HashError(e.to_string()))?
}

pub fn hash_blocking(password: &str) -> Result<String, HashError> {
    let salt = SaltString::generate(&mut OsRng);
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| HashError(e.to_string()))
}

/// Verifies through the bounded pool; a malformed stored hash verifies as false. [`Busy`] means
/// nothing was decided: the caller must answer "try again", never "wrong password".
pub async fn verify(password: Vec<u8>, stored: String) -> Result<bool, Busy> {
    bounded(move || verify_blocking(&password, &stored)).await
}

pub fn verify_blocking(password: &[u8], stored: &str) -> bool {
    PasswordHash::new(stored)
        .map(|parsed| Argon2::default().verify_password(password, &parsed).is_ok())
        .unwrap_or(false)
}

/// A real argon2id hash of a random password, verified against when the account does not
/// exist, so that an unknown name costs the same time as a known one. Made once.
pub async fn dummy_hash() -> String {
    static DUMMY: tokio::sync::OnceCell<String> = tokio::sync::OnceCell::const_new();
    DUMMY
        .get_or_init(|| async {
            tokio::task::spawn_blocking(|| hash_blocking(&generate()).unwrap_or_default())
                .await
                .unwrap_or_default()
        })
        .await
        .clone()
}

/// A random password for a gateway or a new user, shown once: 24 characters from an alphabet
/// without look-alikes (about 137 bits).
pub fn generate() -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz23456789";
    let mut rng = rand::thread_rng();
    (0..24)
        .map(|_| ALPHABET[rng.gen_range(0..ALPHABET.len())] as char)
        .collect()
}

/// Minimum rules for human-chosen passwords.
pub fn check_strength(password: &str) -> Result<(), String> {
    if password.chars().count() < 10 {
        return Err("a password needs at least 10 characters".into());
    }
    if password.len() > 1024 {
        return Err("a password may not be longer than 1024 bytes".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_verifies_and_wrong_password_does_not() {
        let h = hash_blocking("correct horse battery").unwrap();
        assert!(h.starts_with("$argon2id$"));
        assert!(verify_blocking(b"correct horse battery", &h));
        assert!(!verify_blocking(b"wrong", &h));
        assert!(!verify_blocking(b"x", "not a hash"));
    }

    #[test]
    fn generated_passwords_are_long_and_distinct() {
        let (a, b) = (generate(), generate());
        assert_eq!(a.len(), 24);
        assert_ne!(a, b);
        assert!(check_strength(&a).is_ok());
    }

    #[test]
    fn the_pool_is_at_least_one_and_at_most_the_cores() {
        let size = pool_size();
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        assert!((1..=cores).contains(&size));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_flood_is_shed_not_queued_without_bound() {
        let stored = hash_blocking("right password").unwrap();
        let tries = pool_size() * 32 + pool_size() + 64;
        let checks = (0..tries).map(|_| verify(b"wrong".to_vec(), stored.clone()));
        let verdicts = futures::future::join_all(checks).await;
        assert!(verdicts.contains(&Err(Busy)), "nothing was shed");
        assert!(verdicts.contains(&Ok(false)), "nothing was checked");
        assert!(!verdicts.contains(&Ok(true)));
    }
}
