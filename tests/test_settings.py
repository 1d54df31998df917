"""Settings: one home for every default, and a first partition day that does not move."""

from __future__ import annotations

import dataclasses

import pytest

from rtds_pipeline.defs.assets import daily_partitions
from rtds_pipeline.extract.ingest import limits_from
from rtds_pipeline.extract.reader import WindowLimits
from rtds_pipeline.settings import FIRST_DAY, Settings, SettingsError, load_settings


def test_the_first_partition_day_is_fixed_and_can_be_moved():
    start = daily_partitions(load_settings({})).start
    assert start.date().isoformat() == FIRST_DAY == "2026-01-01"
    moved = daily_partitions(load_settings({"RTDS_FIRST_DAY": "2026-06-01"}))
    assert moved.get_first_partition_key() == "2026-06-01"


def test_a_first_day_that_is_not_a_day_is_refused_naming_the_variable():
    with pytest.raises(SettingsError, match="RTDS_FIRST_DAY='June'.*YYYY-MM-DD"):
        load_settings({"RTDS_FIRST_DAY": "June"})


def test_the_readers_defaults_are_the_settings_defaults():
    # A window read with no settings at all and one read from default settings are bounded alike.
    assert limits_from(Settings()) == WindowLimits()
    # With no variable set, load_settings gives the dataclass's defaults (paths made absolute).
    loaded, defaults = load_settings({}), Settings()
    assert dataclasses.replace(loaded, sources=(), lake_url=defaults.lake_url,
                               warehouse_path=defaults.warehouse_path) == defaults


@pytest.mark.parametrize("value", ["ten", "0", "-5", "3000"])
def test_a_bad_horizon_names_the_variable_and_what_is_allowed(value):
    with pytest.raises(SettingsError, match=f"RTDS_HOT_HOURS='{value}'.*from 1 to 2160"):
        load_settings({"RTDS_HOT_HOURS": value})
    assert load_settings({"RTDS_HOT_HOURS": "12"}).hot_hours == 12.0
    assert load_settings({}).hot_hours == 72.0
