"""Analytical models: SELECTs written in PostgreSQL's dialect, materialized in BigQuery, proved
equal to PostgreSQL's answer by the comparison engine (no dagster import here)."""
