-- Analytics layer: a materialized view per day, refreshed without blocking
-- readers: REFRESH MATERIALIZED VIEW CONCURRENTLY analytics.daily_user_metrics;
-- (CONCURRENTLY needs the unique index below).

CREATE MATERIALIZED VIEW IF NOT EXISTS analytics.daily_user_metrics AS
SELECT dd.full_date                                              AS metric_date,
       dd.date_key,
       dd.is_weekend,
       count(DISTINCT t.user_id)                                 AS active_users,
       count(*)                                                  AS transactions,
       count(*) FILTER (WHERE t.status = 'completed')            AS completed_transactions,
       COALESCE(sum(t.amount) FILTER (WHERE t.status = 'completed'), 0)::numeric(14, 2)
                                                                 AS revenue,
       round(avg(t.amount), 2)                                   AS avg_amount,
       (SELECT count(*) FROM production.users u
         WHERE (u.created_at AT TIME ZONE 'UTC')::date = dd.full_date) AS new_users
FROM production.transactions t
JOIN production.dim_date dd ON dd.full_date = (t.created_at AT TIME ZONE 'UTC')::date
GROUP BY dd.full_date, dd.date_key, dd.is_weekend
WITH DATA;

CREATE UNIQUE INDEX IF NOT EXISTS daily_user_metrics_date_key
    ON analytics.daily_user_metrics (metric_date);
