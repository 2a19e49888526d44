//! What a batch says about its gateways: last seen, session state and its owner, hello, clock.

use sqlx::{Postgres, Transaction};

use crate::ingest::normalize::{GatewayUpdate, Hello, Rows};

pub(super) async fn update_gateways(
    tx: &mut Transaction<'_, Postgres>,
    rows: &Rows,
) -> Result<(), sqlx::Error> {
    if rows.gateways.is_empty() {
        return Ok(());
    }
    let mut updates: Vec<_> = rows.gateways.iter().collect();
    updates.sort_by_key(|(id, _)| **id);
    let id: Vec<i64> = updates.iter().map(|(id, _)| **id).collect();
    // Lock the rows in id order first: an UPDATE ... FROM join locks them in whatever order
    // its plan visits them, and two writers doing that deadlock (seen in the energy benchmark).
    // NO KEY UPDATE is the UPDATE's own lock: it does not conflict with the KEY SHARE lock a
    // concurrent device insert holds on its gateway (FOR UPDATE would, and deadlock there).
    sqlx::query("SELECT 1 FROM gateways WHERE id = ANY($1) ORDER BY id FOR NO KEY UPDATE")
        .bind(&id)
        .execute(&mut **tx)
        .await?;
    let hello_text = |text: fn(&Hello) -> &Option<String>| {
        field(&updates, move |u| {
            u.hello.as_ref().and_then(|h| text(h).as_deref())
        })
    };
    // Which session change applies (`cur` is the row as locked above, `$11` the instance
    // whose journal this batch comes from; NULL: unknown, e.g. a drained journal whose
    // instance name is lost):
    // - from an unknown instance: only to a row no instance owns, newest first (as before
    //   there were several instances);
    // - from the owning instance (or to an unowned row): newest first, since concurrent
    //   writers commit one instance's events out of order;
    // - from another instance: only a connect, and only when the owner's session is closed
    //   or older. A late disconnect of the session a gateway left never marks it offline, and
    //   a connect committed after the old instance's disconnect still takes over.
    sqlx::query(
        "UPDATE gateways AS g SET
             last_seen_at = GREATEST(g.last_seen_at, u.seen),
             online = CASE WHEN u.applies THEN u.online ELSE g.online END,
             online_changed_at = CASE WHEN u.applies THEN u.online_at ELSE g.online_changed_at END,
             session_instance = CASE WHEN u.applies AND $11::text IS NOT NULL THEN $11::text
                                     ELSE g.session_instance END,
             last_hello_at = GREATEST(g.last_hello_at, u.hello_at),
             model = COALESCE(u.model, g.model),
             firmware_version = COALESCE(u.fw, g.firmware_version),
             hardware_version = COALESCE(u.hw, g.hardware_version),
             clock_skew_s = COALESCE(u.skew, g.clock_skew_s),
             clock_faults = g.clock_faults + u.faults
         FROM (SELECT u.*, u.online_at IS NOT NULL AND CASE
                   WHEN $11::text IS NULL OR cur.session_instance IS NULL
                        OR cur.session_instance = $11::text
                   THEN ($11::text IS NOT NULL OR cur.session_instance IS NULL)
                        AND (cur.online_changed_at IS NULL OR u.online_at >= cur.online_changed_at)
                   ELSE u.online AND (NOT cur.online OR cur.online_changed_at IS NULL
                                      OR u.online_at >= cur.online_changed_at)
                   END AS applies
               FROM UNNEST($1::int8[], $2::timestamptz[], $3::bool[], $4::timestamptz[],
                           $5::text[], $6::text[], $7::text[], $8::float8[], $9::int8[],
                           $10::timestamptz[])
                    AS u(id, seen, online, hello_at, model, fw, hw, skew, faults, online_at)
               JOIN gateways cur ON cur.id = u.id) AS u
         WHERE g.id = u.id",
    )
    .bind(&id)
    .bind(field(&updates, |u| u.last_seen_at))
    .bind(field(&updates, |u| u.online.map(|(_, online)| online)))
    .bind(field(&updates, |u| u.hello.as_ref().map(|h| h.at)))
    .bind(hello_text(|h| &h.model))
    .bind(hello_text(|h| &h.firmware_version))
    .bind(hello_text(|h| &h.hardware_version))
    .bind(field(&updates, |u| u.skew.map(|(_, skew)| skew)))
    .bind(field(&updates, |u| u.clock_faults))
    .bind(field(&updates, |u| u.online.map(|(at, _)| at)))
    .bind(rows.session_instance.as_deref())
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// One field of every update, in id order: an UNNEST parameter.
fn field<'a, T>(
    updates: &[(&i64, &'a GatewayUpdate)],
    value: impl Fn(&'a GatewayUpdate) -> T,
) -> Vec<T> {
    updates.iter().map(|(_, u)| value(u)).collect()
}
