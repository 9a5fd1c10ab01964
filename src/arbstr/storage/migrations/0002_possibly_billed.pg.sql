-- 0002 (PostgreSQL): as 0002_possibly_billed.sql, in DOUBLE PRECISION.

ALTER TABLE requests ADD COLUMN possibly_billed_sats DOUBLE PRECISION;
