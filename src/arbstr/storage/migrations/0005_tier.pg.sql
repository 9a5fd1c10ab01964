-- 0005 (PostgreSQL): as 0005_tier.sql, the score in DOUBLE PRECISION.

ALTER TABLE requests ADD COLUMN tier TEXT;
ALTER TABLE requests ADD COLUMN complexity DOUBLE PRECISION;

CREATE INDEX IF NOT EXISTS idx_requests_tier ON requests (tier);
