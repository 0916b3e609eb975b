-- description: Customers per region and country across versions; version 1.0 has no country
--   column, so its customers count under a NULL country.
-- owner: team:analytics
-- grain: region, version, country
-- freshness_hours: 24
SELECT substr(_version, strpos(_version, '-') + 1) AS region,
       substr(_version, 1, strpos(_version, '-') - 1) AS version,
       country,
       count(*) AS customers
FROM shop.customer
GROUP BY _version, country
ORDER BY region, version, country
