-- Schedules: a template submitted with a context at each tick of a cron expression.
-- The tick a schedule waits for is a delayed message on the task queue; the row says
-- which tick is current (`next_fire`), so a stale or repeated message fires nothing.
-- A tick that created its task is a row of `schedule_ticks`, unique per (schedule,
-- fire time), written in the transaction that creates the task.

CREATE TABLE schedules (
    name        TEXT    PRIMARY KEY,
    namespace   TEXT    NOT NULL,
    template    TEXT    NOT NULL,
    version     TEXT    NOT NULL,
    cron        TEXT    NOT NULL,
    timezone    TEXT    NOT NULL,
    context     TEXT    NOT NULL,
    catch_up    TEXT    NOT NULL,
    paused      INTEGER NOT NULL DEFAULT 0,
    next_fire   INTEGER,
    created_at  INTEGER NOT NULL
);

CREATE TABLE schedule_ticks (
    schedule  TEXT   NOT NULL,
    fire_at   INTEGER NOT NULL,
    task_id   BLOB    NOT NULL,
    fired_at  INTEGER NOT NULL,
    PRIMARY KEY (schedule, fire_at)
);
