-- .workers transaction: bad records are named by id in the result (failed_id, error)
WITH r AS (
  SELECT (e->>'id')::bigint AS id, e->'payload' AS p, u.id AS user_id
  FROM jsonb_array_elements($1::jsonb) e
  LEFT JOIN production.users u ON u.email = lower(e->'payload'->>'email')),
chk AS (
  SELECT r.*, CASE
    WHEN user_id IS NULL THEN 'no such user: ' || coalesce(p->>'email', '(none)')
    WHEN NOT staging.valid_amount(p) THEN 'amount must be positive: ' || coalesce(p->>'amount', '(none)')
    WHEN coalesce(p->>'status', '') NOT IN ('pending', 'completed', 'failed', 'refunded')
      THEN 'unknown status: ' || coalesce(p->>'status', '(none)')
    END AS error
  FROM r),
ins AS (
  INSERT INTO production.transactions (user_id, amount, status, external_ref, created_at)
  SELECT user_id, (p->>'amount')::numeric, p->>'status', p->>'ref', to_timestamp((p->>'ts')::bigint)
  FROM chk WHERE error IS NULL
  ON CONFLICT (external_ref) DO NOTHING)
SELECT id AS failed_id, error FROM chk WHERE error IS NOT NULL
