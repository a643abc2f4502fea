-- Fan-out over data (`for_each`): a step's `for_each` (its source and bound, as JSON, or
-- NULL). Its instances are steps of the same task, created when it becomes ready, with
-- `instance_of` (the position of their step), `item_index` and `item` (their element);
-- `instances_left` counts the instances of an expanded step that are not done (NULL
-- before it is expanded); `instance_context` and `instance_parents` are what its
-- instances are given for the context and their parents' results: written once, at
-- expansion, without the array they were split from, so that a claim of an instance
-- reads its item, not every item.

ALTER TABLE steps ADD COLUMN for_each TEXT;
ALTER TABLE steps ADD COLUMN instance_of INTEGER;
ALTER TABLE steps ADD COLUMN item_index INTEGER;
ALTER TABLE steps ADD COLUMN item TEXT;
ALTER TABLE steps ADD COLUMN instances_left INTEGER;
ALTER TABLE steps ADD COLUMN instance_context TEXT;
ALTER TABLE steps ADD COLUMN instance_parents TEXT;

CREATE INDEX steps_instances ON steps (task_id, instance_of, item_index) WHERE instance_of IS NOT NULL;
