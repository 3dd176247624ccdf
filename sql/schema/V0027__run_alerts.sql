-- pgpipe built-in schema: the pipeline runner's alerts and the status page's
-- action requests (pgpipe run). Idempotent.

-- One row per alert condition (pipeline, rule, subject): whether it fires
-- now. Instances running the same pipeline all evaluate the rules; the one
-- whose compare-and-set UPDATE turns firing on (or re-notifies after an
-- hour) delivers the alert, the others see it on and stay quiet.
CREATE TABLE IF NOT EXISTS pgpipe.run_alert_state (
    pipeline    TEXT NOT NULL,
    rule        TEXT NOT NULL,               -- dlq-growth, backlog-age, ...
    subject     TEXT NOT NULL,               -- what it is about: an event type, a task ...
    firing      BOOLEAN NOT NULL DEFAULT false,
    fired_at    TIMESTAMPTZ,                 -- when the condition started to hold
    notified_at TIMESTAMPTZ,                 -- the last delivery
    cleared_at  TIMESTAMPTZ,                 -- when it last stopped holding
    fired_by    TEXT,                        -- the instance that delivered
    message     TEXT,
    PRIMARY KEY (pipeline, rule, subject)
);
COMMENT ON TABLE pgpipe.run_alert_state IS
    'pgpipe run alerts: firing or not, per rule and subject (one instance delivers)';

-- Every alert delivered, kept 30 days (the runner deletes older rows).
CREATE TABLE IF NOT EXISTS pgpipe.run_alerts (
    id          BIGSERIAL PRIMARY KEY,
    pipeline    TEXT NOT NULL,
    rule        TEXT NOT NULL,
    subject     TEXT NOT NULL,
    message     TEXT NOT NULL,
    detail      JSONB NOT NULL DEFAULT '{}',
    instance    TEXT NOT NULL,
    fired_at    TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS run_alerts_fired_idx ON pgpipe.run_alerts (fired_at);
CREATE INDEX IF NOT EXISTS run_alerts_pipeline_idx ON pgpipe.run_alerts (pipeline, fired_at);
COMMENT ON TABLE pgpipe.run_alerts IS 'pgpipe run: alerts delivered (30 days)';

-- Requests made on the status page with the bearer token (POST
-- /actions/fire?schedule=NAME, /actions/replay-dlq), for the runner to act
-- on; taken_at/taken_by are set by the instance that acts.
CREATE TABLE IF NOT EXISTS pgpipe.run_actions (
    id           BIGSERIAL PRIMARY KEY,
    pipeline     TEXT NOT NULL,
    action       TEXT NOT NULL CHECK (action IN ('fire', 'replay-dlq')),
    target       TEXT,                       -- fire: the schedule
    requested_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    requested_by TEXT,                       -- the client address
    instance     TEXT NOT NULL,              -- the instance that took the request
    taken_at     TIMESTAMPTZ,
    taken_by     TEXT
);
CREATE INDEX IF NOT EXISTS run_actions_open_idx
    ON pgpipe.run_actions (pipeline, requested_at) WHERE taken_at IS NULL;
COMMENT ON TABLE pgpipe.run_actions IS
    'pgpipe run: actions requested on the status page, for the runner to act on';
