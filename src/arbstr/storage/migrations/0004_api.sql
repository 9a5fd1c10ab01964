-- 0004: which client API each request came in (chat, responses, messages, embeddings,
-- completions); every older row was a chat completion.

ALTER TABLE requests ADD COLUMN api TEXT NOT NULL DEFAULT 'chat';

CREATE INDEX IF NOT EXISTS idx_requests_api ON requests (api);
