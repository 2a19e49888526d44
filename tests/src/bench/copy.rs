//! PostgreSQL's binary `COPY` for the benchmarks that load readings straight into the tables
//! (a year of them in seconds, without going through ingest).

use bytes::{BufMut, BytesMut};
use sqlx::PgPool;

/// Microseconds from the Unix epoch to PostgreSQL's (2000-01-01).
const PG_EPOCH_US: i64 = 946_684_800_000_000;

/// `COPY ... FROM STDIN (FORMAT binary)` data, cut into chunks of about 1 MiB.
pub struct BinaryCopy {
    buf: BytesMut,
    chunks: Vec<bytes::Bytes>,
    rows: u64,
}

impl Default for BinaryCopy {
    fn default() -> Self {
        Self::new()
    }
}

impl BinaryCopy {
    const CHUNK: usize = 1 << 20;

    pub fn new() -> Self {
        let mut buf = BytesMut::with_capacity(Self::CHUNK + 256);
        buf.put_slice(b"PGCOPY\n\xff\r\n\0");
        buf.put_i32(0); // flags
        buf.put_i32(0); // header extension
        Self {
            buf,
            chunks: Vec::new(),
            rows: 0,
        }
    }

    /// Starts a row of `fields` fields.
    pub fn row(&mut self, fields: i16) {
        if self.buf.len() >= Self::CHUNK {
            self.chunks.push(self.buf.split().freeze());
        }
        self.buf.put_i16(fields);
        self.rows += 1;
    }

    pub fn int8(&mut self, v: i64) {
        self.buf.put_i32(8);
        self.buf.put_i64(v);
    }

    pub fn int2(&mut self, v: i16) {
        self.buf.put_i32(2);
        self.buf.put_i16(v);
    }

    pub fn float4(&mut self, v: f32) {
        self.buf.put_i32(4);
        self.buf.put_f32(v);
    }

    /// A `timestamptz` from Unix milliseconds.
    pub fn timestamptz(&mut self, ms: i64) {
        self.int8(ms * 1000 - PG_EPOCH_US);
    }

    /// The chunks to send and the number of rows in them.
    pub fn finish(mut self) -> (Vec<bytes::Bytes>, u64) {
        self.buf.put_i16(-1);
        self.chunks.push(self.buf.freeze());
        (self.chunks, self.rows)
    }
}

/// Runs `statement` (a `COPY ... FROM STDIN`) with `chunks` on one connection of `pool`.
pub async fn copy_in(
    pool: &PgPool,
    statement: &str,
    chunks: Vec<bytes::Bytes>,
) -> anyhow::Result<u64> {
    let mut conn = pool.acquire().await?;
    let mut copy = conn.copy_in_raw(statement).await?;
    for chunk in chunks {
        copy.send(chunk).await?;
    }
    Ok(copy.finish().await?)
}
