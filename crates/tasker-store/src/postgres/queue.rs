//! The queues: pgmq's tables, written by static statements that do what its SQL
//! functions do. The functions build their statements with `EXECUTE format(...)`,
//! planned on every call; these are prepared once per queue, and measured faster
//! (BENCHMARKS.md). pgmq's own functions and tools still work on the same tables; they
//! create queues and archive dead letters here. Messages are bound as text and cast to
//! `jsonb`; they are read back as text and decoded by borrowing from it.

use std::time::Duration;

use serde::Serialize;

use sqlx::Row;
use tasker_core::message::{StepMessage, TASK_QUEUE};
use tasker_core::store::{
    DeadLetter, QueueBatch, QueueDepth, QueueMessage, StoreError, StoreResult,
};
use tasker_core::time::Timestamp;

use super::{Conn, PgTx, db};
use crate::primitives::QueueOps;
use crate::rows::dead_letter;

/// A pgmq table of `queue` (`q` for the queue, `a` for its archive), as an identifier.
/// Queue names are checked first, so the identifier is safe to splice into SQL.
fn table(prefix: &str, queue: &str) -> StoreResult<String> {
    if queue != TASK_QUEUE {
        tasker_core::names::check_queue_name(queue)
            .map_err(|why| StoreError::Conflict(format!("queue `{queue}` {why}")))?;
    }
    Ok(format!("pgmq.\"{prefix}_{queue}\""))
}

/// The error a missing queue table gives: a queue nobody has sent to yet.
fn is_missing_queue(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(d) if d.code().as_deref() == Some("42P01"))
}

/// The payload of a notification: `<queue> <token of the sender>`.
fn notice(queue: &str, sender: &str) -> String {
    format!("{queue} {sender}")
}

pub(crate) async fn list(conn: &mut Conn) -> StoreResult<Vec<String>> {
    sqlx::query_scalar("SELECT queue_name::text FROM pgmq.meta WHERE queue_name <> $1 ORDER BY 1")
        .bind(TASK_QUEUE)
        .fetch_all(&mut *conn)
        .await
        .map_err(db)
}

pub(crate) async fn depths(conn: &mut Conn) -> StoreResult<Vec<QueueDepth>> {
    let rows: Vec<(String, i64)> =
        sqlx::query_as("SELECT queue_name::text, queue_length FROM pgmq.metrics_all() ORDER BY 1")
            .fetch_all(&mut *conn)
            .await
            .map_err(db)?;
    Ok(rows.into_iter().map(crate::rows::queue_depth).collect())
}

/// Reads as `pgmq.read` does (the oldest visible messages, skipping those another
/// transaction holds, hidden for `visibility`) — but those of a positive priority
/// first, highest first, and those of a negative one last, each through its index
/// (a partial one holds only messages with a priority) — and, in the same statement,
/// the time the earliest of the queue's other messages becomes visible — only when
/// fewer than `limit` were read: a full batch is read again at once, and the search
/// through the queue's index is the statement's largest cost.
pub(crate) async fn read(
    conn: &mut Conn,
    queue: &str,
    visibility: Duration,
    limit: u32,
) -> StoreResult<QueueBatch> {
    let vt_secs = visibility.as_secs_f64().ceil().max(1.0);
    let q = table("q", queue)?;
    // `n` sees the rows as they were before the read: the ones just read are left out.
    // A paused queue reads as empty, with nothing to wake for until it is resumed.
    let sql = format!(
        "WITH p AS (SELECT EXISTS (SELECT 1 FROM tasker.paused_queues WHERE queue = $3) AS paused),
              hi AS (SELECT msg_id FROM {q} WHERE vt <= clock_timestamp() AND NOT (SELECT paused FROM p)
                       AND message ? 'priority' AND (message->>'priority')::int > 0
                     ORDER BY (message->>'priority')::int DESC, msg_id LIMIT $1 FOR UPDATE SKIP LOCKED),
              mid AS (SELECT msg_id FROM {q} WHERE vt <= clock_timestamp() AND NOT (SELECT paused FROM p)
                        AND NOT message ? 'priority'
                      ORDER BY msg_id LIMIT greatest(0, $1 - (SELECT count(*) FROM hi))
                      FOR UPDATE SKIP LOCKED),
              lo AS (SELECT msg_id FROM {q} WHERE vt <= clock_timestamp() AND NOT (SELECT paused FROM p)
                       AND message ? 'priority' AND (message->>'priority')::int < 0
                     ORDER BY (message->>'priority')::int DESC, msg_id
                     LIMIT greatest(0, $1 - (SELECT count(*) FROM hi) - (SELECT count(*) FROM mid))
                     FOR UPDATE SKIP LOCKED),
              c AS (SELECT msg_id FROM hi UNION ALL SELECT msg_id FROM mid UNION ALL SELECT msg_id FROM lo),
              r AS (UPDATE {q} m SET last_read_at = clock_timestamp(),
                           vt = clock_timestamp() + make_interval(secs => $2), read_ct = read_ct + 1
                    WHERE m.msg_id = ANY(ARRAY(SELECT msg_id FROM c))
                    RETURNING m.msg_id, m.read_ct, m.enqueued_at, m.message),
              n AS (SELECT (extract(epoch FROM min(vt)) * 1000000)::bigint AS next FROM {q}
                    WHERE msg_id <> ALL(ARRAY(SELECT msg_id FROM r))
                      AND (SELECT count(*) FROM r) < $1 AND NOT (SELECT paused FROM p))
         SELECT r.msg_id, r.read_ct, (extract(epoch FROM r.enqueued_at) * 1000000)::bigint, r.message::text, n.next
         FROM n LEFT JOIN r ON true"
    );
    let rows = match sqlx::query(&sql)
        .bind(limit as i64)
        .bind(vt_secs)
        .bind(queue)
        .fetch_all(&mut *conn)
        .await
    {
        Ok(rows) => rows,
        Err(e) if is_missing_queue(&e) => return Ok(QueueBatch::default()),
        Err(e) => return Err(db(e)),
    };
    let mut batch = QueueBatch::default();
    for r in rows {
        batch.next_visible = r.get::<Option<i64>, _>(4).map(Timestamp);
        if let Some(msg_id) = r.get::<Option<i64>, _>(0) {
            batch.messages.push(QueueMessage {
                msg_id,
                read_ct: r.get(1),
                enqueued_at: Timestamp(r.get(2)),
                body: r.get(3),
            });
        }
    }
    batch.messages.sort_unstable_by_key(|m| m.msg_id);
    Ok(batch)
}

pub(crate) async fn dead_letters(conn: &mut Conn, queue: &str) -> StoreResult<Vec<DeadLetter>> {
    let sql = format!(
        "SELECT a.msg_id, a.read_ct, a.message::text, r.reason, (extract(epoch FROM a.archived_at) * 1000000)::bigint
         FROM {} a JOIN tasker.dead_letter_reasons r ON r.queue = $1 AND r.msg_id = a.msg_id
         ORDER BY a.msg_id",
        table("a", queue)?
    );
    let rows = match sqlx::query(&sql).bind(queue).fetch_all(&mut *conn).await {
        Ok(rows) => rows,
        Err(e) if is_missing_queue(&e) => return Ok(Vec::new()),
        Err(e) => return Err(db(e)),
    };
    rows.iter().map(|r| dead_letter(r, queue)).collect()
}

/// Every dead letter has its reason recorded beside pgmq's archive.
pub(crate) async fn dead_letter_queues(conn: &mut Conn) -> StoreResult<Vec<String>> {
    sqlx::query_scalar("SELECT DISTINCT queue FROM tasker.dead_letter_reasons ORDER BY 1")
        .fetch_all(&mut *conn)
        .await
        .map_err(db)
}

pub(crate) async fn paused(conn: &mut Conn) -> StoreResult<Vec<String>> {
    sqlx::query_scalar("SELECT queue FROM tasker.paused_queues ORDER BY 1")
        .fetch_all(&mut *conn)
        .await
        .map_err(db)
}

/// Deletes the messages and dead letters of every queue that belong to `tasks`.
pub(crate) async fn forget_tasks(conn: &mut Conn, tasks: &[uuid::Uuid]) -> StoreResult<()> {
    let ids: Vec<String> = tasks.iter().map(|t| t.hyphenated().to_string()).collect();
    let queues: Vec<String> = sqlx::query_scalar("SELECT queue_name::text FROM pgmq.meta")
        .fetch_all(&mut *conn)
        .await
        .map_err(db)?;
    for queue in queues {
        let sql = format!(
            "DELETE FROM {} WHERE message->>'task_id' = ANY($1)",
            table("q", &queue)?
        );
        sqlx::query(&sql)
            .bind(&ids)
            .execute(&mut *conn)
            .await
            .map_err(db)?;
        let sql = format!(
            "WITH gone AS (DELETE FROM {} WHERE message->>'task_id' = ANY($1) RETURNING msg_id)
             DELETE FROM tasker.dead_letter_reasons WHERE queue = $2 AND msg_id IN (SELECT msg_id FROM gone)",
            table("a", &queue)?
        );
        sqlx::query(&sql)
            .bind(&ids)
            .bind(&queue)
            .execute(&mut *conn)
            .await
            .map_err(db)?;
    }
    Ok(())
}

impl PgTx<'_> {
    /// Sends every element of `messages`, visible after `delay`, in one statement that
    /// notifies the queue's listeners at commit (repeats within one transaction are
    /// folded into one). `enqueued_at` takes its default.
    async fn send_all<T: Serialize>(
        &mut self,
        queue: &str,
        messages: &[T],
        delay: Duration,
    ) -> StoreResult<()> {
        let sql = format!(
            "WITH sent AS (INSERT INTO {} (vt, message)
                           SELECT clock_timestamp() + make_interval(secs => $1), m
                           FROM jsonb_array_elements($2::jsonb) AS m)
             SELECT pg_notify($3, $4)",
            table("q", queue)?
        );
        sqlx::query(&sql)
            .bind(delay.as_secs_f64())
            .bind(self.buf.encode_all(messages))
            .bind(super::CHANNEL)
            .bind(notice(queue, self.token))
            .execute(&mut *self.conn)
            .await
            .map_err(db)?;
        self.sent.queue(queue);
        Ok(())
    }
}

impl QueueOps for PgTx<'_> {
    /// A resumed queue's readers, here and in every process, are woken at commit.
    async fn queue_set_paused(&mut self, queue: &str, paused: bool) -> StoreResult<bool> {
        let changed = if paused {
            sqlx::query(
                "INSERT INTO tasker.paused_queues (queue, paused_at) VALUES ($1, $2)
                 ON CONFLICT DO NOTHING",
            )
            .bind(queue)
            .bind(self.now.0)
        } else {
            sqlx::query("DELETE FROM tasker.paused_queues WHERE queue = $1").bind(queue)
        }
        .execute(&mut *self.conn)
        .await
        .map_err(db)?
        .rows_affected()
            == 1;
        if changed && !paused {
            sqlx::query("SELECT pg_notify($1, $2)")
                .bind(super::CHANNEL)
                .bind(notice(queue, self.token))
                .execute(&mut *self.conn)
                .await
                .map_err(db)?;
            self.sent.queue(queue);
        }
        Ok(changed)
    }

    /// Creates `queue` unless this process knows it exists (pgmq serializes concurrent
    /// creations); the store learns of it once the transaction commits.
    async fn queue_ensure(&mut self, queue: &str) -> StoreResult<()> {
        if self.known.lock().expect("queue cache lock").contains(queue) {
            return Ok(());
        }
        let q = table("q", queue)?;
        let exists: bool =
            sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pgmq.meta WHERE queue_name = $1)")
                .bind(queue)
                .fetch_one(&mut *self.conn)
                .await
                .map_err(db)?;
        if !exists {
            sqlx::query("SELECT pgmq.create($1)")
                .bind(queue)
                .execute(&mut *self.conn)
                .await
                .map_err(db)?;
            // The messages that carry a priority, in the order a read takes them. Made
            // with the queue, not later: building an index locks out its writers.
            let index = format!("\"q_{queue}_priority\"");
            sqlx::query(&format!(
                "CREATE INDEX IF NOT EXISTS {index} ON {q} (((message->>'priority')::int) DESC, msg_id)
                 WHERE message ? 'priority'"
            ))
            .execute(&mut *self.conn)
            .await
            .map_err(db)?;
        }
        self.created.push(queue.to_owned());
        Ok(())
    }

    async fn queue_send<M: Serialize + Sync>(
        &mut self,
        queue: &str,
        message: &M,
        delay: Duration,
    ) -> StoreResult<()> {
        self.send_all(queue, std::slice::from_ref(message), delay)
            .await
    }

    async fn queue_send_batch(&mut self, queue: &str, messages: &[StepMessage]) -> StoreResult<()> {
        self.send_all(queue, messages, Duration::ZERO).await
    }

    async fn queue_read(
        &mut self,
        queue: &str,
        visibility: Duration,
        limit: u32,
    ) -> StoreResult<QueueBatch> {
        read(self.conn, queue, visibility, limit).await
    }

    async fn queue_delete(&mut self, queue: &str, msg_ids: &[i64]) -> StoreResult<()> {
        let conn = &mut *self.conn;
        let sql = format!("DELETE FROM {} WHERE msg_id = ANY($1)", table("q", queue)?);
        sqlx::query(&sql)
            .bind(msg_ids)
            .execute(&mut *conn)
            .await
            .map_err(db)?;
        Ok(())
    }

    /// Hides each message (id, for how long) from now: one statement on the queue's table.
    async fn queue_set_vt(&mut self, queue: &str, hidden: &[(i64, Duration)]) -> StoreResult<()> {
        let conn = &mut *self.conn;
        let sql = format!(
            "UPDATE {} q SET vt = clock_timestamp() + make_interval(secs => h.secs)
             FROM UNNEST($1::bigint[], $2::float8[]) AS h(msg_id, secs) WHERE q.msg_id = h.msg_id",
            table("q", queue)?
        );
        let ids: Vec<i64> = hidden.iter().map(|h| h.0).collect();
        let secs: Vec<f64> = hidden.iter().map(|h| h.1.as_secs_f64()).collect();
        sqlx::query(&sql)
            .bind(&ids)
            .bind(&secs)
            .execute(&mut *conn)
            .await
            .map_err(db)?;
        Ok(())
    }

    /// Moves the message to pgmq's archive of its queue and records why.
    async fn queue_dead_letter(
        &mut self,
        queue: &str,
        msg_id: i64,
        reason: &str,
    ) -> StoreResult<()> {
        let conn = &mut *self.conn;
        sqlx::query("SELECT pgmq.archive($1, $2)")
            .bind(queue)
            .bind(msg_id)
            .execute(&mut *conn)
            .await
            .map_err(db)?;
        sqlx::query(
            "INSERT INTO tasker.dead_letter_reasons (queue, msg_id, reason) VALUES ($1, $2, $3)
             ON CONFLICT (queue, msg_id) DO UPDATE SET reason = EXCLUDED.reason",
        )
        .bind(queue)
        .bind(msg_id)
        .bind(reason)
        .execute(&mut *conn)
        .await
        .map_err(db)?;
        Ok(())
    }
}
