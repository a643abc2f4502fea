-- Schedules: a template submitted with a context at each tick of a cron expression.
-- The tick a schedule waits for is a delayed message on the task queue; the row says
-- which tick is current (`next_fire`), so a stale or repeated message fires nothing.
-- A tick that created its task is a row of `schedule_ticks`, unique per (schedule,
-- fire time), written in the transaction that creates the task.

CREATE TABLE tasker.schedules (
    name        text    PRIMARY KEY,
    namespace   text    NOT NULL,
    template    text    NOT NULL,
    version     text    NOT NULL,
    cron        text    NOT NULL,
    timezone    text    NOT NULL,
    context     json    NOT NULL,
    catch_up    text    NOT NULL,
    paused      boolean NOT NULL DEFAULT false,
    next_fire   bigint,
    created_at  bigint  NOT NULL
);

CREATE TABLE tasker.schedule_ticks (
    schedule  text   NOT NULL,
    fire_at   bigint NOT NULL,
    task_id   uuid   NOT NULL,
    fired_at  bigint NOT NULL,
    PRIMARY KEY (schedule, fire_at)
);
