//! Runs Headend's private PostgreSQL cluster from the machine's server binaries.
//!
//! [`PgBinaries::locate`] finds `initdb`, `postgres` and `pg_ctl`;
//! [`Cluster::ensure_initialized`] creates the cluster once;
//! [`Cluster::start`] starts it (or adopts one left running) and returns a
//! [`RunningCluster`] whose [`url`](RunningCluster::url) connects to it.
//!
//! # Security
//!
//! The server listens on a Unix socket only (`listen_addresses = ''`) and
//! trusts every local connection, so *the socket's file permissions are the
//! security boundary*: the socket is mode 0700 and its directory, when
//! created here, too, leaving access to the run-as user and root. TCP
//! connections are rejected by `pg_hba.conf` should anyone enable a listener.
//!
//! When Headend runs as root, the server runs as the `postgres` system user
//! (PostgreSQL refuses root); the data, socket and log paths are created for
//! and handed to that user, and must be reachable by it.

#![forbid(unsafe_code)]

mod backup;
mod binaries;
mod cluster;
mod error;
mod identity;
mod process;

pub use backup::{base_backup, hand_over, verify_backup};
pub use binaries::{BinarySearch, PgBinaries};
pub use cluster::{Cluster, ClusterConfig, RunningCluster, DEFAULT_PORT, DEFAULT_SUPERUSER};
pub use error::{PgEmbedError, Result};
pub use identity::RunAs;
