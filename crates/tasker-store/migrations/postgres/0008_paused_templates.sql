-- Paused templates: a task of a template named here stays pending — its start request
-- is dropped — until the template is resumed, which requests the start of every such
-- task again. A row, so that it holds across processes and restarts.

CREATE TABLE tasker.paused_templates (
    namespace  text NOT NULL,
    name       text NOT NULL,
    paused_at  bigint NOT NULL,
    PRIMARY KEY (namespace, name)
);
