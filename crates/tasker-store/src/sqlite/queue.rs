//! The `queue_messages` and `queue_dead_letters` tables: a durable queue with a
//! visibility timeout, delayed visibility and a read count, in the shape of pgmq's.

use std::time::Duration;

use sqlx::{Row, SqlitePool};
use tasker_core::store::{DeadLetter, QueueBatch, QueueDepth, QueueMessage, StoreResult};
use tasker_core::time::Timestamp;

use super::{Conn, db};

/// Sends a message, visible after `delay`.
pub(crate) async fn send(
    conn: &mut Conn,
    queue: &str,
    body: &str,
    delay: Duration,
    now: Timestamp,
) -> StoreResult<()> {
    sqlx::query("INSERT INTO queue_messages (queue, read_ct, enqueued_at, vt, message) VALUES (?, 0, ?, ?, ?)")
        .bind(queue)
        .bind(now.0)
        .bind(now.after(delay).0)
        .bind(body)
        .execute(&mut *conn)
        .await
        .map_err(db)?;
    Ok(())
}

/// Sends every element of the JSON array `messages`, visible at once.
pub(crate) async fn send_batch(
    conn: &mut Conn,
    queue: &str,
    messages: &str,
    now: Timestamp,
) -> StoreResult<()> {
    sqlx::query(
        "INSERT INTO queue_messages (queue, read_ct, enqueued_at, vt, message)
         SELECT ?, 0, ?, ?, value FROM json_each(?)",
    )
    .bind(queue)
    .bind(now.0)
    .bind(now.0)
    .bind(messages)
    .execute(&mut *conn)
    .await
    .map_err(db)?;
    Ok(())
}

pub(crate) async fn delete(conn: &mut Conn, queue: &str, msg_ids: &[i64]) -> StoreResult<()> {
    let ids = serde_json::to_string(msg_ids)
        .map_err(|e| tasker_core::store::StoreError::Corrupt(e.to_string()))?;
    sqlx::query(
        "DELETE FROM queue_messages WHERE queue = ? AND msg_id IN (SELECT value FROM json_each(?))",
    )
    .bind(queue)
    .bind(ids)
    .execute(&mut *conn)
    .await
    .map_err(db)?;
    Ok(())
}

/// Hides a message until `vt`.
pub(crate) async fn set_vt(
    conn: &mut Conn,
    queue: &str,
    msg_id: i64,
    vt: Timestamp,
) -> StoreResult<()> {
    sqlx::query("UPDATE queue_messages SET vt = ? WHERE msg_id = ? AND queue = ?")
        .bind(vt.0)
        .bind(msg_id)
        .bind(queue)
        .execute(&mut *conn)
        .await
        .map_err(db)?;
    Ok(())
}

pub(crate) async fn list(pool: &SqlitePool) -> StoreResult<Vec<String>> {
    sqlx::query_scalar("SELECT DISTINCT queue FROM queue_messages WHERE queue <> ? ORDER BY queue")
        .bind(tasker_core::message::TASK_QUEUE)
        .fetch_all(pool)
        .await
        .map_err(db)
}

pub(crate) async fn depths(pool: &SqlitePool) -> StoreResult<Vec<QueueDepth>> {
    let rows: Vec<(String, i64)> =
        sqlx::query_as("SELECT queue, count(*) FROM queue_messages GROUP BY queue ORDER BY queue")
            .fetch_all(pool)
            .await
            .map_err(db)?;
    Ok(rows.into_iter().map(crate::rows::queue_depth).collect())
}

/// Reads visible messages, and when the earliest of the queue's other messages shows.
pub(crate) async fn read(
    conn: &mut Conn,
    queue: &str,
    visibility: Duration,
    limit: u32,
    now: Timestamp,
) -> StoreResult<QueueBatch> {
    let rows = sqlx::query(
        "UPDATE queue_messages SET vt = ?, read_ct = read_ct + 1
         WHERE msg_id IN (SELECT msg_id FROM queue_messages
                          WHERE queue = ? AND vt <= ? ORDER BY msg_id LIMIT ?)
         RETURNING msg_id, read_ct, enqueued_at, message",
    )
    .bind(now.after(visibility).0)
    .bind(queue)
    .bind(now.0)
    .bind(i64::from(limit))
    .fetch_all(&mut *conn)
    .await
    .map_err(db)?;
    let mut messages: Vec<QueueMessage> = rows
        .into_iter()
        .map(|r| QueueMessage {
            msg_id: r.get(0),
            read_ct: r.get(1),
            enqueued_at: Timestamp(r.get(2)),
            body: r.get(3),
        })
        .collect();
    messages.sort_unstable_by_key(|m| m.msg_id);
    let read: Vec<i64> = messages.iter().map(|m| m.msg_id).collect();
    let next_visible = next_visible(conn, queue, &read).await?;
    Ok(QueueBatch {
        messages,
        next_visible,
    })
}

/// The earliest visibility time of the queue's messages other than `except`.
async fn next_visible(
    conn: &mut Conn,
    queue: &str,
    except: &[i64],
) -> StoreResult<Option<Timestamp>> {
    let except = serde_json::to_string(except)
        .map_err(|e| tasker_core::store::StoreError::Corrupt(e.to_string()))?;
    let vt: Option<i64> = sqlx::query_scalar(
        "SELECT MIN(vt) FROM queue_messages WHERE queue = ? AND msg_id NOT IN (SELECT value FROM json_each(?))",
    )
    .bind(queue)
    .bind(except)
    .fetch_one(&mut *conn)
    .await
    .map_err(db)?;
    Ok(vt.map(Timestamp))
}

/// Moves a message to the dead letters with the reason.
pub(crate) async fn dead_letter(
    conn: &mut Conn,
    queue: &str,
    msg_id: i64,
    reason: &str,
    now: Timestamp,
) -> StoreResult<()> {
    sqlx::query(
        "INSERT INTO queue_dead_letters (msg_id, queue, read_ct, enqueued_at, archived_at, message, reason)
         SELECT msg_id, queue, read_ct, enqueued_at, ?, message, ? FROM queue_messages
         WHERE msg_id = ? AND queue = ?",
    )
    .bind(now.0)
    .bind(reason)
    .bind(msg_id)
    .bind(queue)
    .execute(&mut *conn)
    .await
    .map_err(db)?;
    delete(conn, queue, &[msg_id]).await?;
    Ok(())
}

pub(crate) async fn dead_letters(pool: &SqlitePool, queue: &str) -> StoreResult<Vec<DeadLetter>> {
    let rows = sqlx::query(
        "SELECT msg_id, read_ct, message, reason, archived_at FROM queue_dead_letters
         WHERE queue = ? ORDER BY msg_id",
    )
    .bind(queue)
    .fetch_all(pool)
    .await
    .map_err(db)?;
    Ok(rows
        .into_iter()
        .map(|r| DeadLetter {
            queue: queue.to_owned(),
            msg_id: r.get(0),
            read_ct: r.get(1),
            body: r.get(2),
            reason: r.get(3),
            archived_at: Timestamp(r.get(4)),
        })
        .collect())
}

/// Makes every message that was read but not finished visible now. Only the owner of
/// the file may do this (see the module docs of `sqlite`): nobody else is working.
pub(crate) async fn release_in_flight(pool: &SqlitePool, now: Timestamp) -> StoreResult<u64> {
    let done = sqlx::query("UPDATE queue_messages SET vt = ? WHERE read_ct > 0 AND vt > ?")
        .bind(now.0)
        .bind(now.0)
        .execute(pool)
        .await
        .map_err(db)?;
    Ok(done.rows_affected())
}
