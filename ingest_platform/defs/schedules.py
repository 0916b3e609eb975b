"""Every schedule of the platform starts stopped: each has one switch (a component attribute,
set from an `INGEST_*_SCHEDULE=on` variable in its defs.yaml) or the UI's toggle. README
"Schedules" lists them. Sensors that react to new data (dump directory, CDC change log, CSV
directory, mirrors) run by default: they only act on new input."""

import dagster as dg


def default_status(on: bool) -> dg.DefaultScheduleStatus:
    return dg.DefaultScheduleStatus.RUNNING if on else dg.DefaultScheduleStatus.STOPPED
