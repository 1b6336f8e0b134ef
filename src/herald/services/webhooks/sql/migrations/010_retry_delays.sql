-- A fixed retry schedule (milliseconds before retry 1, 2, …) instead of the exponential
-- one; empty: exponential (initial_delay_ms, backoff_multiplier, max_delay_ms).
ALTER TABLE webhooks.webhooks ADD COLUMN retry_delays_ms bigint[] NOT NULL DEFAULT '{}';
