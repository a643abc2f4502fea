-- Rate limits: a step's `rate_limit` (key, rate, burst as JSON), and a token bucket
-- per key, shared by every step that names it, taken from in the claim's transaction.

ALTER TABLE tasker.steps ADD COLUMN rate_limit text;
-- The time of the token a step that found none booked: it then starts without another.
ALTER TABLE tasker.steps ADD COLUMN rate_booked bigint;
CREATE INDEX steps_rate_limited ON tasker.steps (state) WHERE rate_limit IS NOT NULL;

CREATE TABLE tasker.rate_limits (
    key     text             PRIMARY KEY,
    tokens  double precision NOT NULL,
    at      bigint           NOT NULL
);
