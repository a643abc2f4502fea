-- Tasker's distributed schema, in its own schema `tasker`. Times are microseconds since
-- the Unix epoch (bigint), as on SQLite; JSON columns are `json`, which keeps the text
-- as given. pgmq (installed before this migration) holds the queues.

CREATE SCHEMA IF NOT EXISTS tasker;

CREATE TABLE tasker.templates (
    namespace   text   NOT NULL,
    name        text   NOT NULL,
    version     text   NOT NULL,
    definition  text   NOT NULL,
    created_at  bigint NOT NULL,
    PRIMARY KEY (namespace, name, version)
);

CREATE TABLE tasker.tasks (
    id               uuid   PRIMARY KEY,
    namespace        text   NOT NULL,
    name             text   NOT NULL,
    version          text   NOT NULL,
    state            text   NOT NULL,
    context          json   NOT NULL,
    idempotency_key  text   UNIQUE,
    created_at       bigint NOT NULL,
    updated_at       bigint NOT NULL
);
CREATE INDEX tasks_state ON tasker.tasks (state, id);
CREATE INDEX tasks_namespace ON tasker.tasks (namespace, id);

CREATE TABLE tasker.steps (
    id            uuid    PRIMARY KEY,
    task_id       uuid    NOT NULL REFERENCES tasker.tasks (id),
    position      integer NOT NULL,
    name          text    NOT NULL,
    handler       text    NOT NULL,
    queue         text    NOT NULL,
    config        json    NOT NULL,
    retry         text    NOT NULL,
    max_attempts  integer NOT NULL,
    timeout_ms    bigint  NOT NULL,
    state         text    NOT NULL,
    attempts      integer NOT NULL DEFAULT 0,
    results       json,
    error         text,
    started_at    bigint,
    completed_at  bigint,
    UNIQUE (task_id, position)
);

CREATE TABLE tasker.step_edges (
    task_id  uuid    NOT NULL REFERENCES tasker.tasks (id),
    parent   integer NOT NULL,
    child    integer NOT NULL,
    PRIMARY KEY (task_id, child, parent)
);

CREATE TABLE tasker.transitions (
    id          bigserial PRIMARY KEY,
    task_id     uuid   NOT NULL,
    step_id     uuid,
    from_state  text,
    to_state    text   NOT NULL,
    reason      text   NOT NULL,
    at          bigint NOT NULL
);
CREATE INDEX transitions_task ON tasker.transitions (task_id, id);

-- Why a message was moved to pgmq's archive of its queue (`pgmq.a_<queue>`).
CREATE TABLE tasker.dead_letter_reasons (
    queue   text   NOT NULL,
    msg_id  bigint NOT NULL,
    reason  text   NOT NULL,
    PRIMARY KEY (queue, msg_id)
);

-- The internal queue of task start requests.
SELECT pgmq.create('_tasks');
