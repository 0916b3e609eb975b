"""The REST intake API: new records over HTTP into configured warehouse tables.

Pure Python (FastAPI, psycopg); no dagster import. Modules: ``config`` (the TOML naming the
exposed tables), ``schema`` (what the catalog says about them, and the request models made from
it), ``store`` (the API's own tables: users, requests, rejects), ``writes`` (validation and the one
INSERT per batch), ``auth`` (passwords, tokens, the login rate limit), ``app`` (the FastAPI app).
"""
