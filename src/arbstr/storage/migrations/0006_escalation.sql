-- 0006: escalation. A tiered answer with a failure signal re-asked one tier up gets its own
-- row: escalated_from is the request id of the row it re-asks, escalation the signal's
-- reason code (both NULL on every other row).

ALTER TABLE requests ADD COLUMN escalated_from TEXT;
ALTER TABLE requests ADD COLUMN escalation TEXT;

CREATE INDEX IF NOT EXISTS idx_requests_escalation ON requests (escalation);
