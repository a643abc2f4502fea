-- Incremental readiness: each step counts its parents that are not done, each task
-- counts its steps not done and its active steps, so that a finished step touches only
-- its own edges. Existing rows are filled in from their current states.

ALTER TABLE steps ADD COLUMN waiting_on INTEGER NOT NULL DEFAULT 0;
ALTER TABLE tasks ADD COLUMN step_count INTEGER NOT NULL DEFAULT 0;
ALTER TABLE tasks ADD COLUMN steps_left INTEGER NOT NULL DEFAULT 0;
ALTER TABLE tasks ADD COLUMN steps_active INTEGER NOT NULL DEFAULT 0;

-- A step's children, for the decrement when it is done.
CREATE INDEX step_edges_parent ON step_edges (task_id, parent, child);

UPDATE steps SET waiting_on = (
    SELECT count(*) FROM step_edges e
    JOIN steps p ON p.task_id = e.task_id AND p.position = e.parent
    WHERE e.task_id = steps.task_id AND e.child = steps.position
      AND p.state NOT IN ('complete', 'resolved_manually'));

UPDATE tasks SET
    step_count = (SELECT count(*) FROM steps s WHERE s.task_id = tasks.id),
    steps_left = (SELECT count(*) FROM steps s WHERE s.task_id = tasks.id
                  AND s.state NOT IN ('complete', 'resolved_manually')),
    steps_active = (SELECT count(*) FROM steps s WHERE s.task_id = tasks.id
                    AND s.state IN ('enqueued', 'in_progress', 'waiting_for_retry'));
