"""The dg project's defs folder: one `defs.yaml` per component (see defs/components/).

The defaults below equal the environment-driven behaviour the README documents: each attribute
reads its `INGEST_*` variable, with that variable's default.
"""
