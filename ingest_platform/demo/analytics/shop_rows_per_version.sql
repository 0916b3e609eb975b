-- description: Rows per table, application version and region of the shop dumps (parent tables).
-- owner: team:analytics
-- grain: table_name, version, region
-- freshness_hours: 24
-- A dump version is named <version>-<region> (for example 1.0-eu).
SELECT 'customer' AS table_name,
       substr(_version, 1, strpos(_version, '-') - 1) AS version,
       substr(_version, strpos(_version, '-') + 1) AS region,
       count(*) AS row_count
FROM shop.customer
GROUP BY _version
UNION ALL
SELECT 'orders', substr(_version, 1, strpos(_version, '-') - 1),
       substr(_version, strpos(_version, '-') + 1), count(*)
FROM shop.orders
GROUP BY _version
UNION ALL
SELECT 'order_item', substr(_version, 1, strpos(_version, '-') - 1),
       substr(_version, strpos(_version, '-') + 1), count(*)
FROM shop.order_item
GROUP BY _version
