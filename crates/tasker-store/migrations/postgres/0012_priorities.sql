-- Priorities: a task's priority, which its step messages carry (as `priority`, only
-- when it is not 0). A queue's read takes the messages of positive priority first
-- (highest first), then those without one, then those of negative priority; a partial
-- index per queue table orders the few that have one (see queue.rs), so a queue
-- without priorities keeps its one index walk.

ALTER TABLE tasker.tasks ADD COLUMN priority integer NOT NULL DEFAULT 0;

DO $$
DECLARE q text;
BEGIN
    FOR q IN SELECT queue_name FROM pgmq.meta LOOP
        EXECUTE format(
            'CREATE INDEX IF NOT EXISTS %I ON pgmq.%I (((message->>''priority'')::int) DESC, msg_id) WHERE message ? ''priority''',
            'q_' || q || '_priority', 'q_' || q);
    END LOOP;
END $$;
