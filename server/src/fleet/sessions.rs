//! Sessions of instances that died: a gateway whose session an instance held stays online in
//! the database when that instance dies without closing it (kill -9, lost machine). The reaper,
//! one per cluster (lease `cluster:sessions`), marks such gateways offline once the instance's
//! `instances` row has expired.
//!
//! It never races a fresh connect: a gateway is changed only if its session owner and its
//! `online_changed_at` are still what the reaper saw, in a transaction holding its row lock
//! (the ingest writer takes the same locks in the same id order).

use std::time::Duration;

use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use crate::infra::cluster::{run_while_held, Leases};

/// The lease under which one instance reaps.
pub const LEASE: &str = "cluster:sessions";

/// Runs the reaper on whichever instance holds [`LEASE`], every third of the lease time to
/// live, until `shutdown`.
pub async fn run(pool: PgPool, leases: Leases, shutdown: CancellationToken) -> Result<(), String> {
    let ttl = leases.ttl();
    run_while_held(&leases, LEASE, &shutdown, |lost| {
        let pool = pool.clone();
        async move {
            loop {
                match reap(&pool, ttl).await {
                    Ok(0) => {}
                    Ok(n) => tracing::info!(gateways = n, "sessions of dead instances closed"),
                    Err(e) => tracing::warn!(error = %e, "reaping dead sessions failed; retried"),
                }
                tokio::select! {
                    () = lost.cancelled() => return Ok(()),
                    () = tokio::time::sleep(ttl / 3) => {}
                }
            }
        }
    })
    .await
}

/// Marks offline every gateway online through an instance that is dead: its `instances` row
/// expired, or it has none and the session is older than `grace` (an instance writes its row
/// as it starts, so a connect can precede its first heartbeat only by moments). Each gets a
/// `disconnect` event saying why. Returns how many.
pub async fn reap(pool: &PgPool, grace: Duration) -> Result<u64, sqlx::Error> {
    let mut tx = pool.begin().await?;
    // Lock in id order, as the ingest writer does, so the two never deadlock.
    let dead: Vec<(i64, String, Option<chrono::DateTime<chrono::Utc>>)> = sqlx::query_as(
        "SELECT g.id, g.session_instance, g.online_changed_at FROM gateways g
         WHERE g.online AND g.session_instance IS NOT NULL
           AND NOT EXISTS (SELECT 1 FROM instances i
                           WHERE i.id = g.session_instance AND i.expires_at >= now())
           AND (EXISTS (SELECT 1 FROM instances i WHERE i.id = g.session_instance)
                OR g.online_changed_at < now() - make_interval(secs => $1))
         ORDER BY g.id FOR NO KEY UPDATE OF g SKIP LOCKED",
    )
    .bind(grace.as_secs_f64())
    .fetch_all(&mut *tx)
    .await?;
    if dead.is_empty() {
        return Ok(0);
    }
    let ids: Vec<i64> = dead.iter().map(|d| d.0).collect();
    let owners: Vec<&str> = dead.iter().map(|d| d.1.as_str()).collect();
    let changed: Vec<Option<chrono::DateTime<chrono::Utc>>> = dead.iter().map(|d| d.2).collect();
    // Conditional on what was seen: a connect committed meanwhile (to another instance, or to
    // the same one come back) keeps the gateway online. Events of no journal: epoch 0, and a
    // negative seq from the events' own id sequence, so they never collide with journaled ones.
    let reaped = sqlx::query(
        "WITH reaped AS (
             UPDATE gateways g SET online = false, online_changed_at = now()
             FROM UNNEST($1::int8[], $2::text[], $3::timestamptz[]) AS d(id, owner, changed)
             WHERE g.id = d.id AND g.online AND g.session_instance = d.owner
               AND g.online_changed_at IS NOT DISTINCT FROM d.changed
               AND NOT EXISTS (SELECT 1 FROM instances i
                               WHERE i.id = d.owner AND i.expires_at >= now())
             RETURNING g.id, g.session_instance),
         numbered AS (
             SELECT id, session_instance,
                    nextval(pg_get_serial_sequence('gateway_events', 'id')) AS n
             FROM reaped)
         INSERT INTO gateway_events (id, gateway_id, kind, received_at, body, journal_epoch, journal_seq)
         SELECT n, id, 'disconnect', now(),
                'session closed: instance ' || session_instance || ' died without closing it', 0, -n
         FROM numbered",
    )
    .bind(&ids)
    .bind(&owners)
    .bind(&changed)
    .execute(&mut *tx)
    .await?
    .rows_affected();
    tx.commit().await?;
    Ok(reaped)
}
