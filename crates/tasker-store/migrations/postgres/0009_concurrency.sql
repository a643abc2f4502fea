-- Per-key concurrency: a task of a template with `concurrency` carries its key's value
-- and the limit, so that starting it can count the tasks of the same template and key
-- in progress (a slot is a task in progress: it frees when the task ends, whatever
-- process ran it).

ALTER TABLE tasker.tasks ADD COLUMN concurrency_key text;
ALTER TABLE tasker.tasks ADD COLUMN concurrency_limit integer;
CREATE INDEX tasks_concurrency ON tasker.tasks (namespace, name, concurrency_key, state, id)
    WHERE concurrency_key IS NOT NULL;
