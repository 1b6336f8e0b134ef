-- When the webhook was last made active (created active, or re-enabled): failures from
-- before do not count towards disabling it again (failing_since).
ALTER TABLE webhooks.webhooks ADD COLUMN activated_at timestamptz;
UPDATE webhooks.webhooks SET activated_at = created_at;
ALTER TABLE webhooks.webhooks
    ALTER COLUMN activated_at SET NOT NULL,
    ALTER COLUMN activated_at SET DEFAULT now();
