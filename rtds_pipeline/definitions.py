"""The Dagster code location (`workspace.yaml`): definitions for the configured settings."""

import warnings

import dagster as dg

from rtds_pipeline.defs import build_definitions
from rtds_pipeline.settings import load_settings

# Single-run backfills of the daily assets need `backfill_policy`, which Dagster marks as beta:
# without this filter every process that loads the code location (the code server, then each
# run) prints that one warning once per daily asset. Only that warning is silenced, and the
# one Dagster raises itself when it binds the resources to a sensor that targets a job (it passes
# the sensor's `owners` on, even unset): nothing of ours sets owners.
warnings.filterwarnings("ignore", category=dg.BetaWarning,
                        message="Parameter `backfill_policy` of function `asset` is currently in beta")
warnings.filterwarnings("ignore", category=dg.BetaWarning,
                        message="Parameter `owners` of initializer `SensorDefinition.__init__` is "
                                "currently in beta")

defs = build_definitions(load_settings())
