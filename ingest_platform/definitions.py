"""The platform's one Definitions object: the components of the defs folder plus resources.

Each part (dump directory, CDC source, BigQuery mirror) is a component configured by a
`defs.yaml` under `defs_yaml/` (dg's defs folder). The tree is loaded from the package itself, so
an installed package without pyproject.toml loads the same way.
"""

import warnings
from pathlib import Path

import dagster as dg

from ingest_platform import defs_yaml
from ingest_platform.defs.executor import platform_executor
from ingest_platform.defs.resources import resources_from_env
from ingest_platform.local.environment import require_platform_environment

require_platform_environment()

# The platform uses Dagster's preview and beta features on purpose (partitioned asset checks,
# components' code references); their warnings would print again in every process that loads the
# definitions (code server, daemon, each run), drowning what matters in the console.
warnings.filterwarnings("ignore", category=dg.PreviewWarning)
warnings.filterwarnings("ignore", category=dg.BetaWarning)

components = dg.ComponentTree.from_module(
    defs_module=defs_yaml, project_root=Path(__file__).resolve().parent.parent
)

# Components first: they export the settings resources_from_env reads (defs/components/settings.py).
# Jobs without an executor of their own run on Celery workers when INGEST_EXECUTOR=celery.
defs = dg.Definitions.merge(
    components.build_defs(),
    dg.Definitions(resources=resources_from_env(), executor=platform_executor(default=None)),
)
