"""The Dagster code location (`workspace.yaml`): definitions for the configured settings."""

from rtds_pipeline.defs import build_definitions
from rtds_pipeline.settings import load_settings

defs = build_definitions(load_settings())
