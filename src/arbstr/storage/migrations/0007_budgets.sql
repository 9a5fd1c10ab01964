-- 0007: budget state that several arbstr instances on one database share (PostgreSQL; on
-- SQLite, where one process owns the log, budgets live in memory and these stay empty).
-- budget_usage: what each budget settled in one window (window_start: the stored timestamp
-- format), added to as requests end. budget_holds: the estimate each request in flight holds
-- on each budget covering it, until it ends or expires_at passes (a crashed instance's).

CREATE TABLE IF NOT EXISTS budget_usage (
    budget TEXT NOT NULL,
    window_start TEXT NOT NULL,
    used_msats BIGINT NOT NULL,
    PRIMARY KEY (budget, window_start)
);

CREATE TABLE IF NOT EXISTS budget_holds (
    request_id TEXT NOT NULL,
    budget TEXT NOT NULL,
    window_start TEXT NOT NULL,
    msats BIGINT NOT NULL,
    expires_at TEXT NOT NULL,
    PRIMARY KEY (request_id, budget)
);

CREATE INDEX IF NOT EXISTS idx_budget_holds_budget ON budget_holds (budget, window_start);
