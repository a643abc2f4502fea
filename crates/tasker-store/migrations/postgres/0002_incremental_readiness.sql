-- Incremental readiness: each step counts its parents that are not done, each task
-- counts its steps not done and its active steps, so that a finished step touches only
-- its own edges. Existing rows are filled in from their current states.

ALTER TABLE tasker.steps ADD COLUMN waiting_on integer NOT NULL DEFAULT 0;
ALTER TABLE tasker.tasks ADD COLUMN step_count integer NOT NULL DEFAULT 0;
ALTER TABLE tasker.tasks ADD COLUMN steps_left integer NOT NULL DEFAULT 0;
ALTER TABLE tasker.tasks ADD COLUMN steps_active integer NOT NULL DEFAULT 0;

-- A step's children, for the decrement when it is done.
CREATE INDEX step_edges_parent ON tasker.step_edges (task_id, parent, child);

UPDATE tasker.steps SET waiting_on = (
    SELECT count(*) FROM tasker.step_edges e
    JOIN tasker.steps p ON p.task_id = e.task_id AND p.position = e.parent
    WHERE e.task_id = tasker.steps.task_id AND e.child = tasker.steps.position
      AND p.state NOT IN ('complete', 'resolved_manually'));

UPDATE tasker.tasks SET
    step_count = (SELECT count(*) FROM tasker.steps s WHERE s.task_id = tasker.tasks.id),
    steps_left = (SELECT count(*) FROM tasker.steps s WHERE s.task_id = tasker.tasks.id
                  AND s.state NOT IN ('complete', 'resolved_manually')),
    steps_active = (SELECT count(*) FROM tasker.steps s WHERE s.task_id = tasker.tasks.id
                    AND s.state IN ('enqueued', 'in_progress', 'waiting_for_retry'));
