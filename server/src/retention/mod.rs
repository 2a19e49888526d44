//! Partitions and retention of the time-series tables (docs/retention.md).
//!
//! `measurements`, `counter_readings` and `energy_intervals` are partitioned by UTC month
//! (migrations 20261207000008/9). This module keeps them so: month partitions exist
//! `retention.partitions_ahead_months` ahead ([`ensure_partitions`], at start and daily), rows
//! that reached the DEFAULT partition are moved into their months, and raw measurements whose
//! month ended more than `retention.measurements_days` ago are downsampled into
//! `measurements_15min` and their partition dropped, in one transaction ([`run_once`]): a crash
//! leaves the partition and no aggregate, never both or neither. Old data goes by DROP, never
//! DELETE. Counter readings and intervals are the billing truth and are never dropped.
//!
//! Every maintenance transaction takes one advisory lock, so two instances (or a test and the
//! task) never interleave; the task itself runs under the `retention` lease.

pub mod config;
mod downsample;
pub mod partitions;

use std::time::Duration;

use chrono::{DateTime, Months, Utc};
use sqlx::{PgPool, Postgres, Transaction};
use tokio_util::sync::CancellationToken;

pub use config::RetentionConfig;
use partitions::{Part, Table, TABLES};

/// What a pass changed (empty when there was nothing to do).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Report {
    /// Partitions created.
    pub created: Vec<String>,
    /// Partitions dropped (after downsampling, for measurements).
    pub dropped: Vec<String>,
    /// Quarter-hours written or merged into `measurements_15min`.
    pub quarter_hours: u64,
    /// Rows moved out of a DEFAULT partition into their month.
    pub moved_rows: u64,
}

impl Report {
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }
}

/// Creates the month partitions due (and moves what the default partitions hold); called once
/// before ingest starts, then by every pass.
pub async fn ensure_partitions(
    pool: &PgPool,
    config: &RetentionConfig,
) -> Result<Report, sqlx::Error> {
    let now = Utc::now();
    let mut report = Report::default();
    for table in &TABLES {
        ensure_table(pool, config, table, now, &mut report).await?;
    }
    Ok(report)
}

/// One whole pass: [`ensure_partitions`], then raw measurements past retention downsampled and
/// their partitions dropped. Running it again right after changes nothing.
pub async fn run_once(pool: &PgPool, config: &RetentionConfig) -> Result<Report, sqlx::Error> {
    let mut report = ensure_partitions(pool, config).await?;
    let cutoff = config.cutoff(Utc::now());
    let table = &TABLES[0];
    let parts = {
        let mut conn = pool.acquire().await?;
        partitions::list(&mut conn, table).await?
    };
    for (name, part) in parts {
        if !matches!(part, Part::Month { .. } | Part::Legacy { .. })
            || part.upper().is_none_or(|upper| upper > cutoff)
        {
            continue;
        }
        let mut tx = begin(pool).await?;
        let exists: bool = sqlx::query_scalar("SELECT to_regclass($1) IS NOT NULL")
            .bind(format!("\"{name}\""))
            .fetch_one(&mut *tx)
            .await?;
        if !exists {
            continue;
        }
        report.quarter_hours += downsample::into_15min(&mut tx, &name, None).await?;
        lock(&mut tx, &format!("DROP TABLE \"{name}\"")).await?;
        tx.commit().await?;
        tracing::info!(partition = %name, "raw measurements downsampled and dropped");
        report.dropped.push(name);
    }
    Ok(report)
}

async fn ensure_table(
    pool: &PgPool,
    config: &RetentionConfig,
    table: &Table,
    now: DateTime<Utc>,
    report: &mut Report,
) -> Result<(), sqlx::Error> {
    let cutoff = config.cutoff(now);
    let mut tx = begin(pool).await?;
    let mut parts = partitions::list(&mut tx, table).await?;
    let mut wanted = Vec::new();
    let mut dropped = None;
    // A database partitioned while empty (a fresh install): the legacy partition would take
    // every past row; month partitions back to the retention cutoff take them instead.
    if let Some((legacy, upper)) = parts.iter().find_map(|(name, part)| match part {
        Part::Legacy { upper } => Some((name.clone(), *upper)),
        _ => None,
    }) {
        let empty = format!("SELECT NOT EXISTS (SELECT 1 FROM \"{legacy}\")");
        // Checked again under the lock: a row may have come in between.
        if sqlx::query_scalar::<_, bool>(&empty)
            .fetch_one(&mut *tx)
            .await?
            && {
                lock(
                    &mut tx,
                    &format!("LOCK TABLE \"{legacy}\" IN ACCESS EXCLUSIVE MODE"),
                )
                .await?;
                sqlx::query_scalar::<_, bool>(&empty)
                    .fetch_one(&mut *tx)
                    .await?
            }
        {
            lock(&mut tx, &format!("DROP TABLE \"{legacy}\"")).await?;
            dropped = Some(legacy);
            parts = partitions::list(&mut tx, table).await?;
            let mut start = partitions::month_floor(cutoff);
            while start < upper {
                wanted.push(start);
                start = partitions::next_month(start);
            }
        }
    }
    let current = partitions::month_floor(now);
    for ahead in 0..=config.ahead_months() {
        if let Some(start) = current.checked_add_months(Months::new(ahead)) {
            wanted.push(start);
        }
    }
    wanted.retain(|start| !partitions::covered(&parts, *start));
    let default_rows: bool = sqlx::query_scalar(&format!(
        "SELECT EXISTS (SELECT 1 FROM \"{}\")",
        partitions::default_name(table)
    ))
    .fetch_one(&mut *tx)
    .await?;
    if wanted.is_empty() && !default_rows && dropped.is_none() {
        return Ok(());
    }
    let moved = partitions::add_months(&mut tx, table, &wanted, cutoff).await?;
    tx.commit().await?;
    if !moved.created.is_empty() || moved.moved_rows > 0 {
        tracing::info!(table = table.name, created = ?moved.created, moved = moved.moved_rows,
            "partitions added");
    }
    report.dropped.extend(dropped);
    report.created.extend(moved.created);
    report.moved_rows += moved.moved_rows;
    report.quarter_hours += moved.quarter_hours;
    Ok(())
}

/// A maintenance transaction: one at a time across every instance.
async fn begin(pool: &PgPool) -> Result<Transaction<'static, Postgres>, sqlx::Error> {
    let mut tx = pool.begin().await?;
    sqlx::query("SELECT pg_advisory_xact_lock(hashtext('headend.retention'))")
        .execute(&mut *tx)
        .await?;
    Ok(tx)
}

/// Runs `sql` (a statement that takes a strong lock) with a short lock timeout, retrying: a long
/// reader must not make every ingest writer queue behind our waiting lock request.
async fn lock(tx: &mut Transaction<'_, Postgres>, sql: &str) -> Result<(), sqlx::Error> {
    const ATTEMPTS: u32 = 30;
    for attempt in 1..=ATTEMPTS {
        sqlx::query("SAVEPOINT retention_lock")
            .execute(&mut **tx)
            .await?;
        sqlx::query("SET LOCAL lock_timeout = '2s'")
            .execute(&mut **tx)
            .await?;
        match sqlx::query(sql).execute(&mut **tx).await {
            Ok(_) => {
                sqlx::query("RELEASE SAVEPOINT retention_lock")
                    .execute(&mut **tx)
                    .await?;
                sqlx::query("SET LOCAL lock_timeout = 0")
                    .execute(&mut **tx)
                    .await?;
                return Ok(());
            }
            Err(sqlx::Error::Database(e))
                if attempt < ATTEMPTS
                    && matches!(e.code().as_deref(), Some("55P03") | Some("40P01")) =>
            {
                sqlx::query("ROLLBACK TO SAVEPOINT retention_lock")
                    .execute(&mut **tx)
                    .await?;
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// The maintenance task: a pass at start and then daily (ten minutes after a failed one), while
/// this instance holds the `retention` lease.
pub async fn run(
    pool: PgPool,
    config: RetentionConfig,
    leases: crate::infra::cluster::Leases,
    shutdown: CancellationToken,
) -> Result<(), String> {
    crate::infra::cluster::run_while_held(&leases, "retention", &shutdown, |lost| {
        let (pool, config, shutdown) = (pool.clone(), config.clone(), shutdown.clone());
        async move {
            loop {
                let wait = match run_once(&pool, &config).await {
                    Ok(report) => {
                        if !report.is_empty() {
                            tracing::info!(?report, "retention pass");
                        }
                        Duration::from_secs(24 * 3600)
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "retention pass failed; retrying later");
                        Duration::from_secs(600)
                    }
                };
                tokio::select! {
                    _ = lost.cancelled() => return Ok(()),
                    _ = shutdown.cancelled() => return Ok(()),
                    _ = tokio::time::sleep(wait) => {}
                }
            }
        }
    })
    .await
}
