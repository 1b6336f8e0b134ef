-- When the current secret was made (created, or rotated in), and whether its rotation
-- falling due (SECRET_ROTATION_DAYS) was announced. Existing rows: a webhook never
-- rotated has had its secret since it was created; one rotated counts from now (when
-- is not known).
ALTER TABLE webhooks.webhooks
    ADD COLUMN secret_created_at timestamptz NOT NULL DEFAULT now(),
    ADD COLUMN secret_due_announced boolean NOT NULL DEFAULT false;
UPDATE webhooks.webhooks SET secret_created_at = created_at WHERE previous_secret IS NULL;
