-- Traces: the W3C trace context of a task submitted with traces on (its trace and its
-- task span), which its step messages carry (as `traceparent`, only when set) so
-- that each step's span joins the task's trace in whichever process runs it.

ALTER TABLE tasker.tasks ADD COLUMN traceparent text;
