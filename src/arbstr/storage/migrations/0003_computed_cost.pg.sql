-- 0003 (PostgreSQL): as 0003_computed_cost.sql, in DOUBLE PRECISION.

ALTER TABLE requests ADD COLUMN computed_cost_sats DOUBLE PRECISION;

UPDATE requests SET
    computed_cost_sats = cost_sats,
    cost_sats = COALESCE(provider_cost_sats, cost_sats);
