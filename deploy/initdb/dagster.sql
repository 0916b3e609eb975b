-- Dagster's storage beside the warehouse (DAGSTER_PG_URL), created on the server's first start.
CREATE DATABASE dagster;
