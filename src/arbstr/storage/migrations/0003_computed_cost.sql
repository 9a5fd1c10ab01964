-- 0003: cost_sats becomes what the user pays: the provider's reported charge when it gave one
-- (provider_cost_sats), else arbstr's cost computed from the usage, which is kept apart as
-- computed_cost_sats. Older rows held the computed cost in cost_sats: it moves over, and
-- cost_sats takes the reported charge where there is one (SET reads the row as it was).

ALTER TABLE requests ADD COLUMN computed_cost_sats REAL;

UPDATE requests SET
    computed_cost_sats = cost_sats,
    cost_sats = COALESCE(provider_cost_sats, cost_sats);
