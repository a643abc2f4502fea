-- Paused queues: a queue named here delivers no message to workers until it is resumed
-- (the steps in flight finish). A row, so that it holds across processes and restarts.

CREATE TABLE tasker.paused_queues (
    queue      text PRIMARY KEY,
    paused_at  bigint NOT NULL
);
