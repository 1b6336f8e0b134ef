-- The HTTP statuses a webhook's failed deliveries are retried on; empty: every failure
-- (any other status is dead-lettered at once: Bitrix24's 4xx mean "correct the data").
ALTER TABLE webhooks.webhooks ADD COLUMN retry_statuses integer[] NOT NULL DEFAULT '{}';
