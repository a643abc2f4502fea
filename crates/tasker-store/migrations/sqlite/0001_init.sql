-- Tasker's embedded schema. Times are microseconds since the Unix epoch; ids are
-- UUIDv7 stored as 16-byte blobs; JSON is stored as text.

CREATE TABLE templates (
    namespace   TEXT    NOT NULL,
    name        TEXT    NOT NULL,
    version     TEXT    NOT NULL,
    definition  TEXT    NOT NULL,  -- canonical JSON of the validated template
    created_at  INTEGER NOT NULL,
    PRIMARY KEY (namespace, name, version)
);

CREATE TABLE tasks (
    id               BLOB    PRIMARY KEY,
    namespace        TEXT    NOT NULL,
    name             TEXT    NOT NULL,
    version          TEXT    NOT NULL,
    state            TEXT    NOT NULL,
    context          TEXT    NOT NULL,
    idempotency_key  TEXT    UNIQUE,
    created_at       INTEGER NOT NULL,
    updated_at       INTEGER NOT NULL
);
CREATE INDEX tasks_state ON tasks (state, id);

CREATE TABLE steps (
    id            BLOB    PRIMARY KEY,
    task_id       BLOB    NOT NULL REFERENCES tasks (id),
    position      INTEGER NOT NULL,
    name          TEXT    NOT NULL,
    handler       TEXT    NOT NULL,
    queue         TEXT    NOT NULL,
    config        TEXT    NOT NULL,
    retry         TEXT    NOT NULL,  -- JSON of the resolved retry policy
    max_attempts  INTEGER NOT NULL,
    timeout_ms    INTEGER NOT NULL,
    state         TEXT    NOT NULL,
    attempts      INTEGER NOT NULL DEFAULT 0,
    results       TEXT,
    error         TEXT,
    started_at    INTEGER,
    completed_at  INTEGER,
    UNIQUE (task_id, position)
);

-- Edges by step position within the task: readiness works on positions.
CREATE TABLE step_edges (
    task_id  BLOB    NOT NULL REFERENCES tasks (id),
    parent   INTEGER NOT NULL,
    child    INTEGER NOT NULL,
    PRIMARY KEY (task_id, child, parent)
);

CREATE TABLE transitions (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    task_id     BLOB    NOT NULL,
    step_id     BLOB,
    from_state  TEXT,
    to_state    TEXT    NOT NULL,
    reason      TEXT    NOT NULL,
    at          INTEGER NOT NULL
);
CREATE INDEX transitions_task ON transitions (task_id, id);

-- The durable queue: a message is visible when vt <= now; reading hides it until
-- now + visibility timeout and counts the read.
CREATE TABLE queue_messages (
    msg_id       INTEGER PRIMARY KEY AUTOINCREMENT,
    queue        TEXT    NOT NULL,
    read_ct      INTEGER NOT NULL DEFAULT 0,
    enqueued_at  INTEGER NOT NULL,
    vt           INTEGER NOT NULL,
    message      TEXT    NOT NULL
);
CREATE INDEX queue_messages_visible ON queue_messages (queue, vt);

CREATE TABLE queue_dead_letters (
    msg_id       INTEGER PRIMARY KEY,
    queue        TEXT    NOT NULL,
    read_ct      INTEGER NOT NULL,
    enqueued_at  INTEGER NOT NULL,
    archived_at  INTEGER NOT NULL,
    message      TEXT    NOT NULL,
    reason       TEXT    NOT NULL
);
