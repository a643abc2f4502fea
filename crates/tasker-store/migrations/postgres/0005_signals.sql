-- Signals: a step that waits (`wait_for`) names the signal in `wait_signal` (NULL for a
-- step that runs a handler); a signal delivered to a task is kept, one per name, whether
-- a step waits for it yet or not.

ALTER TABLE tasker.steps ADD COLUMN wait_signal text;

CREATE TABLE tasker.signals (
    task_id       uuid   NOT NULL REFERENCES tasker.tasks (id),
    name          text   NOT NULL,
    payload       json   NOT NULL,
    delivered_at  bigint NOT NULL,
    PRIMARY KEY (task_id, name)
);
