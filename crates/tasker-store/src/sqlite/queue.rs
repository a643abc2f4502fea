//! The `queue_messages` and `queue_dead_letters` tables: a durable queue with a
//! visibility timeout, delayed visibility and a read count, in the shape of pgmq's.
//! Where PostgreSQL's queues are pgmq's tables and a send notifies other processes at
//! commit, these are rows of one table, and the store wakes its own readers.

use std::time::Duration;

use rusqlite::params;
use serde::Serialize;
use tasker_core::message::StepMessage;
use tasker_core::store::{
    DeadLetter, QueueBatch, QueueDepth, QueueMessage, StoreError, StoreResult,
};
use tasker_core::time::Timestamp;

use super::{Conn, SqliteTx, db, decode_all};
use crate::primitives::QueueOps;
use crate::rows::dead_letter;

/// A list of message ids as a JSON array, for `json_each`.
fn id_list(msg_ids: &[i64]) -> StoreResult<String> {
    serde_json::to_string(msg_ids).map_err(|e| StoreError::Corrupt(e.to_string()))
}

/// The queues that hold messages: one index seek per queue, however long they are.
pub(crate) fn list(conn: &Conn) -> StoreResult<Vec<String>> {
    let mut s = conn
        .prepare_cached(
            "WITH RECURSIVE q(name) AS (
                 SELECT min(queue) FROM queue_messages
                 UNION ALL
                 SELECT (SELECT min(queue) FROM queue_messages WHERE queue > q.name) FROM q WHERE q.name IS NOT NULL)
             SELECT name FROM q WHERE name IS NOT NULL AND name <> ?",
        )
        .map_err(db)?;
    let rows = s
        .query_map([tasker_core::message::TASK_QUEUE], |r| r.get(0))
        .map_err(db)?;
    rows.map(|r| r.map_err(db)).collect()
}

pub(crate) fn depths(conn: &Conn) -> StoreResult<Vec<QueueDepth>> {
    let mut s = conn
        .prepare_cached("SELECT queue, count(*) FROM queue_messages GROUP BY queue ORDER BY queue")
        .map_err(db)?;
    let rows = s
        .query_map([], |r| Ok(crate::rows::queue_depth((r.get(0)?, r.get(1)?))))
        .map_err(db)?;
    rows.map(|r| r.map_err(db)).collect()
}

/// A read of a queue none of whose messages has a priority: the visible messages,
/// oldest visibility first.
const READ: &str = "UPDATE queue_messages SET vt = ?1, read_ct = read_ct + 1
     WHERE msg_id IN (SELECT msg_id FROM queue_messages
                      WHERE queue = ?2 AND vt <= ?3
                        AND NOT EXISTS (SELECT 1 FROM paused_queues WHERE queue = ?2)
                      ORDER BY vt, msg_id LIMIT ?4)
     RETURNING msg_id, read_ct, enqueued_at, message";

/// A read of a queue with messages that have a priority: the positive ones first,
/// highest first, then those of priority 0, then the negative, each by visibility.
const PRIORITIZED_READ: &str = "UPDATE queue_messages SET vt = ?1, read_ct = read_ct + 1
     WHERE msg_id IN (
         SELECT msg_id FROM (
             SELECT * FROM (SELECT msg_id, 0 AS band, -priority AS rank, vt FROM queue_messages
                            WHERE queue = ?2 AND vt <= ?3 AND priority > 0
                            ORDER BY priority DESC, vt LIMIT ?4)
             UNION ALL
             SELECT * FROM (SELECT msg_id, 1, 0, vt FROM queue_messages
                            WHERE queue = ?2 AND vt <= ?3 AND priority = 0
                            ORDER BY vt, msg_id LIMIT ?4)
             UNION ALL
             SELECT * FROM (SELECT msg_id, 2, -priority, vt FROM queue_messages
                            WHERE queue = ?2 AND vt <= ?3 AND priority < 0
                            ORDER BY priority DESC, vt LIMIT ?4))
         WHERE NOT EXISTS (SELECT 1 FROM paused_queues WHERE queue = ?2)
         ORDER BY band, rank, vt, msg_id LIMIT ?4)
     RETURNING msg_id, read_ct, enqueued_at, message";

/// Reads visible messages, oldest visibility first (the index's order: a read costs
/// what it takes, not the queue's length), and, when fewer than `limit` were read, when
/// the earliest of the queue's other messages shows.
pub(crate) fn read(
    conn: &Conn,
    queue: &str,
    visibility: Duration,
    limit: u32,
) -> StoreResult<QueueBatch> {
    let now = Timestamp::now();
    // Most queues hold no message with a priority: then the read is one walk of the
    // visible messages in order, and the probe of the (empty) partial index is all
    // that priorities cost.
    let prioritized: bool = conn
        .prepare_cached(
            "SELECT EXISTS (SELECT 1 FROM queue_messages WHERE queue = ? AND priority <> 0)",
        )
        .and_then(|mut s| s.query_row([queue], |r| r.get(0)))
        .map_err(db)?;
    let mut s = conn
        .prepare_cached(if prioritized { PRIORITIZED_READ } else { READ })
        .map_err(db)?;
    let rows = s
        .query_map(params![now.after(visibility).0, queue, now.0, limit], |r| {
            Ok(QueueMessage {
                msg_id: r.get(0)?,
                read_ct: r.get(1)?,
                enqueued_at: Timestamp(r.get(2)?),
                body: r.get(3)?,
            })
        })
        .map_err(db)?;
    let mut messages = rows
        .map(|r| r.map_err(db))
        .collect::<StoreResult<Vec<_>>>()?;
    messages.sort_unstable_by_key(|m| m.msg_id);
    if messages.len() as u32 >= limit {
        return Ok(QueueBatch {
            messages,
            next_visible: None,
        });
    }
    let read: Vec<i64> = messages.iter().map(|m| m.msg_id).collect();
    let read = id_list(&read)?;
    let next_visible: Option<i64> = conn
        .prepare_cached(
            "SELECT MIN(vt) FROM queue_messages WHERE queue = ?1 AND msg_id NOT IN (SELECT value FROM json_each(?2))
               AND NOT EXISTS (SELECT 1 FROM paused_queues WHERE queue = ?1)",
        )
        .and_then(|mut s| s.query_row(params![queue, read], |r| r.get(0)))
        .map_err(db)?;
    Ok(QueueBatch {
        messages,
        next_visible: next_visible.map(Timestamp),
    })
}

pub(crate) fn dead_letters(conn: &Conn, queue: &str) -> StoreResult<Vec<DeadLetter>> {
    let mut s = conn
        .prepare_cached(
            "SELECT msg_id, read_ct, message, reason, archived_at FROM queue_dead_letters
             WHERE queue = ? ORDER BY msg_id",
        )
        .map_err(db)?;
    decode_all(&mut s, [queue], |r| dead_letter(r, queue))
}

pub(crate) fn dead_letter_queues(conn: &Conn) -> StoreResult<Vec<String>> {
    let mut s = conn
        .prepare_cached("SELECT DISTINCT queue FROM queue_dead_letters ORDER BY 1")
        .map_err(db)?;
    let rows = s.query_map([], |r| r.get(0)).map_err(db)?;
    rows.map(|r| r.map_err(db)).collect()
}

pub(crate) fn paused(conn: &Conn) -> StoreResult<Vec<String>> {
    let mut s = conn
        .prepare_cached("SELECT queue FROM paused_queues ORDER BY 1")
        .map_err(db)?;
    let rows = s.query_map([], |r| r.get(0)).map_err(db)?;
    rows.map(|r| r.map_err(db)).collect()
}

/// Makes every message that was read but not finished visible now. Only the owner of
/// the file may do this (see the module docs of `sqlite`): nobody else is working.
pub(crate) fn release_in_flight(conn: &Conn, now: Timestamp) -> StoreResult<usize> {
    conn.execute(
        "UPDATE queue_messages SET vt = ? WHERE read_ct > 0 AND vt > ?",
        params![now.0, now.0],
    )
    .map_err(db)
}

impl SqliteTx<'_> {
    /// Sends every element of `messages`, visible after `delay`, in one statement.
    fn send_all<T: Serialize>(
        &mut self,
        queue: &str,
        messages: &[T],
        delay: Duration,
    ) -> StoreResult<()> {
        let (now, visible) = (self.now, self.now.after(delay));
        self.conn
            .prepare_cached(
                "INSERT INTO queue_messages (queue, read_ct, enqueued_at, vt, message, priority)
                 SELECT ?1, 0, ?2, ?3, value,
                        CASE WHEN instr(value, '\"priority\"') > 0
                             THEN coalesce(json_extract(value, '$.priority'), 0) ELSE 0 END
                 FROM json_each(?4)",
            )
            .and_then(|mut s| {
                s.execute(params![
                    queue,
                    now.0,
                    visible.0,
                    self.buf.encode_all(messages)
                ])
            })
            .map_err(db)?;
        self.sent.queue(queue);
        Ok(())
    }
}

impl QueueOps for SqliteTx<'_> {
    /// A resumed queue's readers are woken at commit.
    async fn queue_set_paused(&mut self, queue: &str, paused: bool) -> StoreResult<bool> {
        let changed = if paused {
            self.conn
                .prepare_cached(
                    "INSERT INTO paused_queues (queue, paused_at) VALUES (?, ?) ON CONFLICT DO NOTHING",
                )
                .and_then(|mut s| s.execute(params![queue, self.now.0]))
        } else {
            self.conn
                .prepare_cached("DELETE FROM paused_queues WHERE queue = ?")
                .and_then(|mut s| s.execute([queue]))
        }
        .map_err(db)?
            == 1;
        if changed && !paused {
            self.sent.queue(queue);
        }
        Ok(changed)
    }

    /// SQLite needs nothing: every queue is rows of one table.
    async fn queue_ensure(&mut self, _queue: &str) -> StoreResult<()> {
        Ok(())
    }

    async fn queue_send<M: Serialize + Sync>(
        &mut self,
        queue: &str,
        message: &M,
        delay: Duration,
    ) -> StoreResult<()> {
        self.send_all(queue, std::slice::from_ref(message), delay)
    }

    async fn queue_send_batch(&mut self, queue: &str, messages: &[StepMessage]) -> StoreResult<()> {
        self.send_all(queue, messages, Duration::ZERO)
    }

    async fn queue_read(
        &mut self,
        queue: &str,
        visibility: Duration,
        limit: u32,
    ) -> StoreResult<QueueBatch> {
        read(self.conn, queue, visibility, limit)
    }

    async fn queue_delete(&mut self, queue: &str, msg_ids: &[i64]) -> StoreResult<()> {
        let conn = self.conn;
        let ids = id_list(msg_ids)?;
        conn.prepare_cached(
            "DELETE FROM queue_messages WHERE queue = ? AND msg_id IN (SELECT value FROM json_each(?))",
        )
        .and_then(|mut s| s.execute(params![queue, ids]))
        .map_err(db)?;
        Ok(())
    }

    /// Hides each message (id, for how long) from `now`.
    async fn queue_set_vt(&mut self, queue: &str, hidden: &[(i64, Duration)]) -> StoreResult<()> {
        let conn = self.conn;
        let now = self.now;
        let mut s = conn
            .prepare_cached("UPDATE queue_messages SET vt = ? WHERE msg_id = ? AND queue = ?")
            .map_err(db)?;
        for &(msg_id, hide) in hidden {
            s.execute(params![now.after(hide).0, msg_id, queue])
                .map_err(db)?;
        }
        Ok(())
    }

    /// Moves a message to the dead letters with the reason.
    async fn queue_dead_letter(
        &mut self,
        queue: &str,
        msg_id: i64,
        reason: &str,
    ) -> StoreResult<()> {
        let conn = self.conn;
        let now = self.now;
        conn.prepare_cached(
            "INSERT INTO queue_dead_letters (msg_id, queue, read_ct, enqueued_at, archived_at, message, reason)
             SELECT msg_id, queue, read_ct, enqueued_at, ?, message, ? FROM queue_messages
             WHERE msg_id = ? AND queue = ?",
        )
        .and_then(|mut s| s.execute(params![now.0, reason, msg_id, queue]))
        .map_err(db)?;
        self.queue_delete(queue, &[msg_id]).await
    }
}
