-- description: Lag from a change in the source (the change log's date_created) to its row in
--   BigQuery (the time the mirror's MERGE inserted it), per day (UTC), table and action.
-- owner: team:analytics
-- grain: day, table_name, action
-- freshness_hours: 24
-- unproved: mirrored, avg_lag_seconds, max_lag_seconds
-- Why unproved: _mirrored_at is stamped by BigQuery when the row arrives there; PostgreSQL has
--   no such time (its _mirrored_at is NULL, so its lag is NULL). The proof compares the grain
--   and the number of changes: BigQuery has every change PostgreSQL has, per day and action.
WITH changes AS (
    SELECT 'project' AS table_name, _action, changed_at, _mirrored_at FROM cdc.project__changes
    UNION ALL
    SELECT 'inventory', _action, changed_at, _mirrored_at FROM cdc.inventory__changes
    UNION ALL
    SELECT 'pm_plan', _action, changed_at, _mirrored_at FROM cdc.pm_plan__changes
    UNION ALL
    SELECT 'pm_item', _action, changed_at, _mirrored_at FROM cdc.pm_item__changes
)
SELECT (changed_at AT TIME ZONE 'UTC')::date AS day,
       table_name,
       _action AS action,
       count(*) AS changes,
       count(_mirrored_at) AS mirrored,
       avg(extract(epoch FROM _mirrored_at) - extract(epoch FROM changed_at)) AS avg_lag_seconds,
       max(extract(epoch FROM _mirrored_at) - extract(epoch FROM changed_at)) AS max_lag_seconds
FROM changes
GROUP BY 1, 2, 3
ORDER BY day, table_name, action
