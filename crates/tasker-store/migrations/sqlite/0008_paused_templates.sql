-- Paused templates: a task of a template named here stays pending — its start request
-- is dropped — until the template is resumed, which requests the start of every such
-- task again. A row, so that it holds across processes and restarts.

CREATE TABLE paused_templates (
    namespace  TEXT NOT NULL,
    name       TEXT NOT NULL,
    paused_at  INTEGER NOT NULL,
    PRIMARY KEY (namespace, name)
);
