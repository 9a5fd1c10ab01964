-- 0002: the estimated cost of a request that may have been billed although no usage came
-- back (read timeout, client disconnect, interrupted stream), in sats; NULL otherwise.
-- Kept apart from cost_sats, which is only ever a cost computed from a reported usage.

ALTER TABLE requests ADD COLUMN possibly_billed_sats REAL;
