-- 0001: the request log and the learned output/input token ratios.
-- Timestamps are ISO 8601 UTC strings 'YYYY-MM-DDTHH:MM:SS.mmmZ', so text order is time order.

CREATE TABLE IF NOT EXISTS requests (
    id INTEGER PRIMARY KEY,
    request_id TEXT UNIQUE NOT NULL,
    timestamp TEXT NOT NULL,
    model TEXT NOT NULL,
    provider TEXT,
    policy TEXT,
    streaming INTEGER NOT NULL,
    input_tokens INTEGER,
    output_tokens INTEGER,
    cost_sats REAL,
    provider_cost_sats REAL,
    latency_ms INTEGER NOT NULL,
    ttft_ms INTEGER,
    stream_duration_ms INTEGER,
    success INTEGER NOT NULL,
    error_status INTEGER,
    error_message TEXT,
    attempts INTEGER NOT NULL DEFAULT 1
);

CREATE INDEX IF NOT EXISTS idx_requests_timestamp ON requests (timestamp);
CREATE INDEX IF NOT EXISTS idx_requests_model ON requests (model);
CREATE INDEX IF NOT EXISTS idx_requests_provider ON requests (provider);

CREATE TABLE IF NOT EXISTS token_ratios (
    policy TEXT,
    model TEXT,
    avg_ratio REAL,
    sample_count INTEGER,
    PRIMARY KEY (policy, model)
);
