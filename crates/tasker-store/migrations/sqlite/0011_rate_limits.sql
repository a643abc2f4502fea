-- Rate limits: a step's `rate_limit` (key, rate, burst as JSON), and a token bucket
-- per key, shared by every step that names it, taken from in the claim's transaction.

ALTER TABLE steps ADD COLUMN rate_limit TEXT;
-- The time of the token a step that found none booked: it then starts without another.
ALTER TABLE steps ADD COLUMN rate_booked INTEGER;
CREATE INDEX steps_rate_limited ON steps (state) WHERE rate_limit IS NOT NULL;

CREATE TABLE rate_limits (
    key     TEXT    PRIMARY KEY,
    tokens  REAL    NOT NULL,
    at      INTEGER NOT NULL
);
