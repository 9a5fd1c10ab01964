-- 0005: the tier each request was routed within (economy, standard, frontier; NULL: none
-- applied) and the complexity scorer's score of it (NULL: not scored).

ALTER TABLE requests ADD COLUMN tier TEXT;
ALTER TABLE requests ADD COLUMN complexity REAL;

CREATE INDEX IF NOT EXISTS idx_requests_tier ON requests (tier);
