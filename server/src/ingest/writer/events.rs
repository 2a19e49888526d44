//! `gateway_events` and `ingest_rejects`, both keyed on the journal position.

use sqlx::{Postgres, Transaction};

use crate::ingest::normalize::{RejectRow, Rows};

pub(super) async fn insert_events(
    tx: &mut Transaction<'_, Postgres>,
    epoch: i64,
    rows: &Rows,
) -> Result<u64, sqlx::Error> {
    if rows.events.is_empty() {
        return Ok(0);
    }
    let e = &rows.events;
    let done = sqlx::query(
        "INSERT INTO gateway_events (gateway_id, kind, received_at, body, journal_epoch, journal_seq)
         SELECT u.g, u.k, u.r, u.b, $5, u.s
         FROM UNNEST($1::int8[], $2::text[], $3::timestamptz[], $4::text[], $6::int8[])
              AS u(g, k, r, b, s)
         ON CONFLICT (journal_epoch, journal_seq) DO NOTHING",
    )
    .bind(e.iter().map(|x| x.gateway_id).collect::<Vec<i64>>())
    .bind(e.iter().map(|x| x.kind).collect::<Vec<&str>>())
    .bind(e.iter().map(|x| x.received_at).collect::<Vec<_>>())
    .bind(e.iter().map(|x| x.body.as_str()).collect::<Vec<&str>>())
    .bind(epoch)
    .bind(e.iter().map(|x| x.seq).collect::<Vec<i64>>())
    .execute(&mut **tx)
    .await?;
    Ok(done.rows_affected())
}

pub(super) async fn insert_rejects(
    tx: &mut Transaction<'_, Postgres>,
    epoch: i64,
    r: &[RejectRow],
) -> Result<u64, sqlx::Error> {
    if r.is_empty() {
        return Ok(0);
    }
    let done = sqlx::query(
        "INSERT INTO ingest_rejects (received_at, source, topic, client, gateway_id, reason, partial,
                                     payload, payload_size, journal_epoch, journal_seq)
         SELECT u.ra, u.so, u.t, u.c, u.g, u.re, u.pa, u.pl, octet_length(u.pl), $9, u.s
         FROM UNNEST($1::timestamptz[], $2::text[], $3::text[], $4::text[], $5::int8[], $6::text[],
                     $7::bool[], $8::bytea[], $10::int8[]) AS u(ra, so, t, c, g, re, pa, pl, s)
         ON CONFLICT (journal_epoch, journal_seq) DO NOTHING",
    )
    .bind(r.iter().map(|x| x.received_at).collect::<Vec<_>>())
    .bind(r.iter().map(|x| x.source.as_str()).collect::<Vec<&str>>())
    .bind(r.iter().map(|x| x.topic.as_str()).collect::<Vec<&str>>())
    .bind(r.iter().map(|x| x.client.as_str()).collect::<Vec<&str>>())
    .bind(r.iter().map(|x| x.gateway_id).collect::<Vec<Option<i64>>>())
    .bind(r.iter().map(|x| x.reason.as_str()).collect::<Vec<&str>>())
    .bind(r.iter().map(|x| x.partial).collect::<Vec<bool>>())
    .bind(r.iter().map(|x| x.payload.as_ref()).collect::<Vec<&[u8]>>())
    .bind(epoch)
    .bind(r.iter().map(|x| x.seq).collect::<Vec<i64>>())
    .execute(&mut **tx)
    .await?;
    Ok(done.rows_affected())
}
