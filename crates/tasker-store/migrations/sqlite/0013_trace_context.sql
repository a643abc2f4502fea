-- Traces: the W3C trace context of a task submitted with traces on (its trace and its
-- task span), which its step messages carry (as `traceparent`, only when set).

ALTER TABLE tasks ADD COLUMN traceparent TEXT;
