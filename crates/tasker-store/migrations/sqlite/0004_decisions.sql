-- Decisions: a step's `decides` (its children by name and position, as JSON, or NULL),
-- and each step's count of parents done with results (complete or resolved): a step
-- whose parents are all done runs when one of them is live, and is skipped when none
-- is. Existing rows are filled in from their parents' states.

ALTER TABLE steps ADD COLUMN decides TEXT;
ALTER TABLE steps ADD COLUMN live_parents INTEGER NOT NULL DEFAULT 0;

UPDATE steps SET live_parents = (
    SELECT count(*) FROM step_edges e
    JOIN steps p ON p.task_id = e.task_id AND p.position = e.parent
    WHERE e.task_id = steps.task_id AND e.child = steps.position
      AND p.state IN ('complete', 'resolved_manually'));
