//! Counter resets asked on an instance that does not run the converter's bus (HAProxy sends a
//! browser to any instance; the bus runs only on the holder of lease `modbus:converter:<id>`).
//!
//! The asking instance inserts a `converter_requests` row ('pending', `expires_at` = now + the
//! wait), announces it on [`CHANNEL`] and reads the row until its status is final. The owner
//! ([`serve`], started by the supervisor) claims its converters' pending rows ('pending' →
//! 'running', only before `expires_at`) on the notice or on its one-second tick, carries each
//! out through its bus exactly as a local reset, and writes the outcome ('running' → 'done' or
//! 'failed'). Past `expires_at` the asker fails a still pending row ('pending' → 'failed').
//! Every transition is conditional on the status it leaves, so either the owner claimed the
//! row (and only it writes to the meter, once) or the asker failed it (and nobody ever will):
//! the row is the answer both sides agree on.

use std::collections::HashSet;
use std::time::Duration;

use sqlx::postgres::PgListener;
use sqlx::PgPool;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::{ModbusError, ModbusHandle};

/// Notices of new requests; payload: the converter id.
pub const CHANNEL: &str = "headend_modbus";

/// How often the asker reads its request's row.
const READ_EVERY: Duration = Duration::from_millis(150);
/// The owner's fallback when a notice was missed (no listening connection, lease just taken).
const TICK: Duration = Duration::from_secs(1);
/// How long past `expires_at` the asker still waits for an owner that claimed the request
/// (and stops its bus work at `expires_at`) to write the outcome.
const GRACE: Duration = Duration::from_secs(5);
/// `converter_requests.detail` is bounded.
const DETAIL_MAX: usize = 2000;

/// Asks the owner of `converter`'s bus to reset `counter` of unit `unit`, and waits at most
/// `within` (plus [`GRACE`] when the owner took it) for the outcome: `Ok` when the reset
/// register was written, [`ModbusError::Bus`] with the reason otherwise.
pub async fn ask_reset(
    pool: &PgPool,
    converter: i64,
    unit: i16,
    counter: &str,
    within: Duration,
) -> Result<(), ModbusError> {
    let id: i64 = sqlx::query_scalar(
        "INSERT INTO converter_requests (converter_id, unit, counter, expires_at)
         VALUES ($1, $2, $3, now() + make_interval(secs => $4)) RETURNING id",
    )
    .bind(converter)
    .bind(unit)
    .bind(counter)
    .bind(within.as_secs_f64())
    .fetch_one(pool)
    .await?;
    // Without the notice the owner's tick finds the row within a second.
    if let Err(e) = sqlx::query("SELECT pg_notify($1, $2)")
        .bind(CHANNEL)
        .bind(converter.to_string())
        .execute(pool)
        .await
    {
        tracing::warn!(error = %e, converter, "cannot announce a counter reset request");
    }
    loop {
        let row: Option<(String, Option<String>, Option<String>, bool, bool)> = sqlx::query_as(
            "SELECT status, detail, claimed_by, expires_at <= now(),
                    expires_at + make_interval(secs => $2) <= now()
             FROM converter_requests WHERE id = $1",
        )
        .bind(id)
        .bind(GRACE.as_secs_f64())
        .fetch_optional(pool)
        .await?;
        let Some((status, detail, claimed_by, expired, overdue)) = row else {
            return Err(ModbusError::Bus("the converter was deleted".into()));
        };
        let gave_up = match status.as_str() {
            "done" => return Ok(()),
            "failed" => return Err(ModbusError::Bus(detail.unwrap_or_default())),
            "pending" if expired => {
                let why = format!(
                    "no instance carried the reset out within {} s",
                    within.as_secs()
                );
                give_up(pool, id, "pending", &why).await?.then_some(why)
            }
            "running" if overdue => {
                let why = format!(
                    "instance {} took the reset but did not report its outcome; \
                     the meter may have been reset",
                    claimed_by.unwrap_or_default()
                );
                give_up(pool, id, "running", &why).await?.then_some(why)
            }
            _ => {
                tokio::time::sleep(READ_EVERY).await;
                None
            }
        };
        if let Some(why) = gave_up {
            return Err(ModbusError::Bus(why));
        }
    }
}

/// Fails request `id` if it is still in status `from`; false when someone moved it first.
async fn give_up(pool: &PgPool, id: i64, from: &str, why: &str) -> Result<bool, sqlx::Error> {
    settle(pool, id, from, "failed", Some(why)).await
}

/// Moves request `id` from status `from` to the final `to`; false when it was not in `from`.
async fn settle(
    pool: &PgPool,
    id: i64,
    from: &str,
    to: &str,
    detail: Option<&str>,
) -> Result<bool, sqlx::Error> {
    let detail = detail.map(|d| d.chars().take(DETAIL_MAX).collect::<String>());
    let moved = sqlx::query(
        "UPDATE converter_requests SET status = $3, detail = $4, done_at = now()
         WHERE id = $1 AND status = $2",
    )
    .bind(id)
    .bind(from)
    .bind(to)
    .bind(detail)
    .execute(pool)
    .await?;
    Ok(moved.rows_affected() == 1)
}

/// A request this instance claimed.
#[derive(sqlx::FromRow)]
struct Claimed {
    id: i64,
    converter_id: i64,
    unit: i16,
    counter: String,
    /// Seconds left until `expires_at` when claimed.
    left: f64,
}

/// Carries out the requests of the converters whose bus runs here (`handle`'s attached buses),
/// until `shutdown`; `instance` is written as the claimer.
pub(super) async fn serve(
    pool: PgPool,
    handle: ModbusHandle,
    instance: String,
    shutdown: CancellationToken,
) {
    let mut listener: Option<PgListener> = None;
    let mut work: JoinSet<()> = JoinSet::new();
    loop {
        if listener.is_none() {
            listener = listen(&pool).await;
        }
        let attached = handle.attached();
        if !attached.is_empty() {
            match claim(&pool, &attached, &instance).await {
                Ok(claimed) => {
                    for request in claimed {
                        work.spawn(carry_out(pool.clone(), handle.clone(), request));
                    }
                }
                Err(e) => tracing::warn!(error = %e, "cannot claim converter requests; retried"),
            }
        }
        while work.try_join_next().is_some() {}
        tokio::select! {
            () = shutdown.cancelled() => break,
            () = notice(&mut listener, &attached) => {}
            () = tokio::time::sleep(TICK) => {}
        }
    }
    // The buses stop with us: what was claimed ends ("bus stopped") and its outcome is written.
    let _ = tokio::time::timeout(Duration::from_secs(5), async {
        while work.join_next().await.is_some() {}
    })
    .await;
}

async fn listen(pool: &PgPool) -> Option<PgListener> {
    let listening = async {
        let mut listener = crate::infra::changes::listener(pool).await?;
        listener.listen(CHANNEL).await?;
        Ok::<_, sqlx::Error>(listener)
    };
    match listening.await {
        Ok(listener) => Some(listener),
        Err(e) => {
            tracing::warn!(error = %e, "cannot listen for converter requests; the 1 s tick finds them");
            None
        }
    }
}

/// Resolves on a notice for one of the `attached` converters (others are skipped); never
/// without a listener. A lost connection drops the listener (connected again next pass).
async fn notice(listener: &mut Option<PgListener>, attached: &[i64]) {
    let Some(l) = listener.as_mut() else {
        return std::future::pending().await;
    };
    let attached: HashSet<i64> = attached.iter().copied().collect();
    loop {
        match l.recv().await {
            Ok(n)
                if n.payload()
                    .parse::<i64>()
                    .is_ok_and(|id| attached.contains(&id)) =>
            {
                return
            }
            Ok(_) => {}
            Err(e) => {
                tracing::debug!(error = %e, "converter request listener lost its connection");
                *listener = None;
                return;
            }
        }
    }
}

/// Claims the pending, unexpired requests of `converters`: from now on only this instance
/// carries them out, and the asker no longer fails them.
async fn claim(
    pool: &PgPool,
    converters: &[i64],
    instance: &str,
) -> Result<Vec<Claimed>, sqlx::Error> {
    sqlx::query_as(
        "UPDATE converter_requests SET status = 'running', claimed_by = $2
         WHERE status = 'pending' AND expires_at > now() AND converter_id = ANY($1)
         RETURNING id, converter_id, unit, counter,
                   EXTRACT(EPOCH FROM expires_at - now())::float8 AS left",
    )
    .bind(converters)
    .bind(instance)
    .fetch_all(pool)
    .await
}

/// Resets through the local bus, as a reset asked here, within the request's expiry (the asker
/// stops waiting soon after), and writes the outcome.
async fn carry_out(pool: PgPool, handle: ModbusHandle, r: Claimed) {
    let left = Duration::from_secs_f64(r.left.max(0.0));
    let outcome = handle
        .reset_here(r.converter_id, r.unit, &r.counter, left)
        .await;
    let (to, detail) = match &outcome {
        Ok(()) => ("done", None),
        Err(e) => ("failed", Some(e.to_string())),
    };
    tracing::info!(
        converter = r.converter_id,
        unit = r.unit,
        counter = %r.counter,
        status = to,
        "counter reset asked by another instance"
    );
    match settle(&pool, r.id, "running", to, detail.as_deref()).await {
        Ok(true) => {}
        Ok(false) => tracing::warn!(
            request = r.id,
            status = to,
            "the asker gave up before the outcome was written"
        ),
        Err(e) => tracing::warn!(error = %e, request = r.id, status = to,
            "cannot write a counter reset's outcome; the asker reports it unknown"),
    }
}
