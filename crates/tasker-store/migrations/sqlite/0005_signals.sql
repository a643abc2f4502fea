-- Signals: a step that waits (`wait_for`) names the signal in `wait_signal` (NULL for a
-- step that runs a handler); a signal delivered to a task is kept, one per name, whether
-- a step waits for it yet or not.

ALTER TABLE steps ADD COLUMN wait_signal TEXT;

CREATE TABLE signals (
    task_id       BLOB    NOT NULL REFERENCES tasks (id),
    name          TEXT    NOT NULL,
    payload       TEXT    NOT NULL,
    delivered_at  INTEGER NOT NULL,
    PRIMARY KEY (task_id, name)
) WITHOUT ROWID;
