//! The month partitions of the three time-series tables: naming, listing, creating, and the
//! DEFAULT partition's rows moved into their months.
//!
//! A month partition is `<table>_pYYYYMM` for the UTC month [start, next start); `<table>_legacy`
//! is the table as it was before partitioning, (MINVALUE .. its boundary, kept in
//! `partition_legacy_bounds`); `<table>_default` catches a row no other partition holds, so
//! that such a row never fails an ingest batch. Maintenance moves what the default holds into
//! month partitions (or, for raw measurements past retention, into `measurements_15min`).

use chrono::{DateTime, Datelike, Months, NaiveDate, TimeZone, Utc};
use sqlx::{PgConnection, Postgres, Transaction};

use super::downsample;

/// A partitioned table: its name, its partition key, whether its raw rows expire.
#[derive(Debug, Clone, Copy)]
pub struct Table {
    pub name: &'static str,
    pub key: &'static str,
    pub expires: bool,
}

pub const TABLES: [Table; 3] = [
    Table {
        name: "measurements",
        key: "ts",
        expires: true,
    },
    Table {
        name: "counter_readings",
        key: "ts",
        expires: false,
    },
    Table {
        name: "energy_intervals",
        key: "start",
        expires: false,
    },
];

/// One partition of a [`Table`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Part {
    /// The table as it was before partitioning: everything before `upper`.
    Legacy {
        upper: DateTime<Utc>,
    },
    /// The UTC month starting at `start`.
    Month {
        start: DateTime<Utc>,
    },
    Default,
}

impl Part {
    /// The end of what this partition holds (none for the default).
    pub fn upper(&self) -> Option<DateTime<Utc>> {
        match self {
            Part::Legacy { upper } => Some(*upper),
            Part::Month { start } => Some(next_month(*start)),
            Part::Default => None,
        }
    }
}

/// The first instant of the UTC month holding `t`.
pub fn month_floor(t: DateTime<Utc>) -> DateTime<Utc> {
    let day = NaiveDate::from_ymd_opt(t.year(), t.month(), 1).unwrap_or(t.date_naive());
    Utc.from_utc_datetime(&day.and_time(chrono::NaiveTime::MIN))
}

pub fn next_month(start: DateTime<Utc>) -> DateTime<Utc> {
    start
        .checked_add_months(Months::new(1))
        .unwrap_or(DateTime::<Utc>::MAX_UTC)
}

pub fn month_name(table: &Table, start: DateTime<Utc>) -> String {
    format!("{}_p{}", table.name, start.format("%Y%m"))
}

pub fn default_name(table: &Table) -> String {
    format!("{}_default", table.name)
}

pub fn legacy_name(table: &Table) -> String {
    format!("{}_legacy", table.name)
}

/// The partitions of `table` with what each holds; names this module did not make are left out.
pub async fn list(
    conn: &mut PgConnection,
    table: &Table,
) -> Result<Vec<(String, Part)>, sqlx::Error> {
    let names: Vec<String> = sqlx::query_scalar(
        "SELECT c.relname::text FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
         WHERE i.inhparent = $1::regclass ORDER BY 1",
    )
    .bind(table.name)
    .fetch_all(&mut *conn)
    .await?;
    let legacy_upper: Option<DateTime<Utc>> =
        sqlx::query_scalar("SELECT boundary FROM partition_legacy_bounds WHERE table_name = $1")
            .bind(table.name)
            .fetch_optional(&mut *conn)
            .await?;
    let month_prefix = format!("{}_p", table.name);
    Ok(names
        .into_iter()
        .filter_map(|name| {
            let part = if name == default_name(table) {
                Part::Default
            } else if name == legacy_name(table) {
                Part::Legacy {
                    upper: legacy_upper?,
                }
            } else {
                let digits = name.strip_prefix(&month_prefix)?;
                let day = NaiveDate::parse_from_str(&format!("{digits}01"), "%Y%m%d").ok()?;
                Part::Month {
                    start: Utc.from_utc_datetime(&day.and_time(chrono::NaiveTime::MIN)),
                }
            };
            Some((name, part))
        })
        .collect())
}

/// Whether `start`'s month is inside a partition of `parts` (its own, or the legacy one).
pub fn covered(parts: &[(String, Part)], start: DateTime<Utc>) -> bool {
    parts.iter().any(|(_, part)| match part {
        Part::Month { start: s } => *s == start,
        Part::Legacy { upper } => next_month(start) <= *upper,
        Part::Default => false,
    })
}

/// Creates the partition of `start`'s month (the default must hold none of its rows).
pub async fn create_month(
    tx: &mut Transaction<'_, Postgres>,
    table: &Table,
    start: DateTime<Utc>,
) -> Result<String, sqlx::Error> {
    let name = month_name(table, start);
    let sql = format!(
        "CREATE TABLE IF NOT EXISTS \"{name}\" PARTITION OF \"{}\"
         FOR VALUES FROM ('{}') TO ('{}')",
        table.name,
        start.to_rfc3339(),
        next_month(start).to_rfc3339()
    );
    sqlx::query(&sql).execute(&mut **tx).await?;
    Ok(name)
}

/// What moving the default partition did.
#[derive(Debug, Default)]
pub struct Moved {
    pub created: Vec<String>,
    pub moved_rows: u64,
    pub quarter_hours: u64,
}

/// Adds the month partitions `months` to `table`. An empty default partition only costs
/// PostgreSQL's check that it holds none of their rows. When it holds rows, it is detached and
/// replaced by an empty one, every month it held rows for gets its partition too, and its rows
/// go back through the parent into them; raw measurements past `cutoff` are downsampled instead.
/// All in the caller's transaction: a crash leaves the default as it was.
pub async fn add_months(
    tx: &mut Transaction<'_, Postgres>,
    table: &Table,
    months: &[DateTime<Utc>],
    cutoff: DateTime<Utc>,
) -> Result<Moved, sqlx::Error> {
    let default = default_name(table);
    let mut moved = Moved::default();
    super::lock(
        tx,
        &format!("LOCK TABLE \"{default}\" IN ACCESS EXCLUSIVE MODE"),
    )
    .await?;
    let holds_rows: bool =
        sqlx::query_scalar(&format!("SELECT EXISTS (SELECT 1 FROM \"{default}\")"))
            .fetch_one(&mut **tx)
            .await?;
    if !holds_rows {
        for start in months {
            moved.created.push(create_month(tx, table, *start).await?);
        }
        return Ok(moved);
    }
    let old = format!("{default}_moving");
    super::lock(
        tx,
        &format!(
            "ALTER TABLE \"{}\" DETACH PARTITION \"{default}\"",
            table.name
        ),
    )
    .await?;
    sqlx::query(&format!("ALTER TABLE \"{default}\" RENAME TO \"{old}\""))
        .execute(&mut **tx)
        .await?;
    let key = table.key;
    // Months of the rows it held (raw measurements past retention excepted).
    let held: Vec<DateTime<Utc>> = sqlx::query_scalar(&format!(
        "SELECT DISTINCT date_trunc('month', {key} AT TIME ZONE 'UTC') AT TIME ZONE 'UTC'
         FROM \"{old}\" WHERE NOT $1 OR {key} >= $2"
    ))
    .bind(table.expires)
    .bind(cutoff)
    .fetch_all(&mut **tx)
    .await?;
    let parts = list(tx, table).await?;
    let mut wanted: Vec<DateTime<Utc>> = months.iter().copied().chain(held).collect();
    wanted.sort();
    wanted.dedup();
    for start in wanted {
        if !covered(&parts, start) {
            moved.created.push(create_month(tx, table, start).await?);
        }
    }
    sqlx::query(&format!(
        "CREATE TABLE \"{default}\" PARTITION OF \"{}\" DEFAULT",
        table.name
    ))
    .execute(&mut **tx)
    .await?;
    if table.expires {
        moved.quarter_hours = downsample::into_15min(tx, &old, Some(cutoff)).await?;
    }
    moved.moved_rows = sqlx::query(&format!(
        "INSERT INTO \"{}\" SELECT * FROM \"{old}\" WHERE NOT $1 OR {key} >= $2
         ON CONFLICT DO NOTHING",
        table.name
    ))
    .bind(table.expires)
    .bind(cutoff)
    .execute(&mut **tx)
    .await?
    .rows_affected();
    sqlx::query(&format!("DROP TABLE \"{old}\""))
        .execute(&mut **tx)
        .await?;
    Ok(moved)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utc(y: i32, m: u32, d: u32, h: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(y, m, d, h, 0, 0)
            .single()
            .expect("valid time")
    }

    #[test]
    fn months_are_utc_calendar_months() {
        assert_eq!(month_floor(utc(2027, 3, 31, 23)), utc(2027, 3, 1, 0));
        assert_eq!(next_month(utc(2027, 12, 1, 0)), utc(2028, 1, 1, 0));
        assert_eq!(
            month_name(&TABLES[0], utc(2027, 2, 1, 0)),
            "measurements_p202702"
        );
    }

    #[test]
    fn covered_by_its_month_or_the_legacy_partition() {
        let parts = vec![
            (
                "l".to_owned(),
                Part::Legacy {
                    upper: utc(2027, 2, 1, 0),
                },
            ),
            (
                "m".to_owned(),
                Part::Month {
                    start: utc(2027, 3, 1, 0),
                },
            ),
            ("d".to_owned(), Part::Default),
        ];
        assert!(covered(&parts, utc(2027, 1, 1, 0)));
        assert!(!covered(&parts, utc(2027, 2, 1, 0)));
        assert!(covered(&parts, utc(2027, 3, 1, 0)));
        assert!(!covered(&parts, utc(2027, 4, 1, 0)));
    }
}
