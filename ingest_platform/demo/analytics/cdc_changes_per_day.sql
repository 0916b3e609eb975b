-- description: CDC changes per day (UTC), table and action: the change-log rows the merges
--   applied, read from each tracked table's change history (cdc.<table>__changes).
-- owner: team:analytics
-- grain: day, table_name, action
-- freshness_hours: 24
WITH changes AS (
    SELECT 'project' AS table_name, _action, changed_at FROM cdc.project__changes
    UNION ALL
    SELECT 'inventory', _action, changed_at FROM cdc.inventory__changes
    UNION ALL
    SELECT 'pm_plan', _action, changed_at FROM cdc.pm_plan__changes
    UNION ALL
    SELECT 'pm_item', _action, changed_at FROM cdc.pm_item__changes
)
SELECT (changed_at AT TIME ZONE 'UTC')::date AS day,
       table_name,
       _action AS action,
       count(*) AS changes
FROM changes
GROUP BY 1, 2, 3
ORDER BY day, table_name, action
