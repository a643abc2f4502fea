-- Decisions: a step's `decides` (its children by name and position, as JSON, or NULL),
-- and each step's count of parents done with results (complete or resolved): a step
-- whose parents are all done runs when one of them is live, and is skipped when none
-- is. Existing rows are filled in from their parents' states.

ALTER TABLE tasker.steps ADD COLUMN decides text;
ALTER TABLE tasker.steps ADD COLUMN live_parents integer NOT NULL DEFAULT 0;

UPDATE tasker.steps c SET live_parents = (
    SELECT count(*) FROM tasker.step_edges e
    JOIN tasker.steps p ON p.task_id = e.task_id AND p.position = e.parent
    WHERE e.task_id = c.task_id AND e.child = c.position
      AND p.state IN ('complete', 'resolved_manually'))
WHERE EXISTS (SELECT 1 FROM tasker.step_edges e WHERE e.task_id = c.task_id AND e.child = c.position);
