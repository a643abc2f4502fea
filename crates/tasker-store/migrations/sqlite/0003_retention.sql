-- Finished tasks by age, for pruning: covers only the final states.
CREATE INDEX tasks_finished ON tasks (updated_at)
    WHERE state IN ('complete', 'error', 'cancelled');
