"""No reload click: a dump with a table (or application) the definitions do not know reloads the
code location by itself.

Why this design: a dump table is an asset (`dumps/<app>/<table>`, partitioned by version, with its
checks and mirror), and Dagster builds definitions once per load of the code location, from the
dump directory. A new table therefore needs new definitions. Dagster 1.13 refreshes nothing by
itself: state-backed components (`StateBackedComponent`) re-read their state only when someone runs
`dg utils refresh-defs-state` or reloads, and the daemon re-reads snapshots but never re-imports the
code. One asset per application partitioned by (version, table) would need no reload but would
lose per-table lineage, checks, column schemas and mirrors. So the sensor does what the Reload
button does: it asks the webserver (GraphQL `reloadRepositoryLocation`) to reload the location; the
new code server knows the tables, and the sensor's next tick requests the held-back dump (its
cursor keeps it pending).

The webserver's address: `INGEST_DAGSTER_URL` (the launcher sets it), else `dagster dev`'s and
`dg dev`'s default http://127.0.0.1:3000 when running under them. Without either, the tick says to
reload by hand, as before.
"""

import json
import os
import threading
import time
import urllib.request

URL_VARIABLE = "INGEST_DAGSTER_URL"
LOCATION = "ingest_platform"  # workspace.yaml and [tool.dg.project] code_location_name
REQUEST_EVERY_SECONDS = 60.0  # one reload at a time: a reload takes seconds, a tick comes each 10
MUTATION = """mutation Reload($location: String!) {
  reloadRepositoryLocation(repositoryLocationName: $location) { __typename }
}"""

_last_request = 0.0


def webserver_url(environ=os.environ) -> str | None:
    if environ.get(URL_VARIABLE):
        return environ[URL_VARIABLE].rstrip("/")
    if environ.get("DAGSTER_IS_DEV_CLI"):  # set by `dagster dev` (and `dg dev`) for its children
        return "http://127.0.0.1:3000"
    return None


def reload_for_new_tables(cursor: str | None, log, environ=os.environ) -> None:
    """Request a reload when the dump sensor's cursor holds dumps waiting for new tables."""
    global _last_request
    waiting = any("dump" in entry for entry in json.loads(cursor or "{}").values())
    url = webserver_url(environ)
    if not waiting or url is None or time.monotonic() - _last_request < REQUEST_EVERY_SECONDS:
        return
    _last_request = time.monotonic()
    log.info(f"Reloading code location {LOCATION} through {url} for the new tables.")
    # In a thread: the reload replaces this very code server, so nothing here waits for it.
    threading.Thread(target=_post, args=(url, log), daemon=True).start()


def _post(url: str, log) -> None:
    body = json.dumps({"query": MUTATION, "variables": {"location": LOCATION}}).encode()
    request = urllib.request.Request(
        f"{url}/graphql", data=body, headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            response.read()
    except OSError as error:
        log.warning(
            f"Could not reload the code location through {url} ({error}); reload it by hand."
        )
