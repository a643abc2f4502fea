-- Priorities: a task's priority, which its step messages carry. A queue's read takes
-- the messages of positive priority first (highest first), then those of priority 0,
-- then the negative; a partial index orders the few that have one, so a queue without
-- priorities keeps its one index walk.

ALTER TABLE tasks ADD COLUMN priority INTEGER NOT NULL DEFAULT 0;
ALTER TABLE queue_messages ADD COLUMN priority INTEGER NOT NULL DEFAULT 0;
CREATE INDEX queue_messages_priority ON queue_messages (queue, priority DESC, vt)
    WHERE priority <> 0;
