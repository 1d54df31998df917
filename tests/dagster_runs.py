"""Sensor ticks and the runs they request, in process, on a real temporary Dagster instance."""

from __future__ import annotations

import dagster as dg

# What dagster_home/dagster.yaml sets for the reader's logs: they go into the run's logs.
INSTANCE = {"python_logs": {"managed_python_loggers": ["rtds_pipeline"]}}


def instance():
    return dg.instance_for_test(overrides=INSTANCE)


def tick(defs, instance, name="rtds_events", cursor=None):
    with dg.build_sensor_context(instance=instance, cursor=cursor, definitions=defs,
                                 resources=defs.resources) as ctx:
        return defs.resolve_sensor_def(name)(ctx)


def read_config(defs, job_name, **config):
    """Run config of a reading run: read until the stream's head, then stop."""
    [key] = defs.resolve_job_def(job_name).asset_layer.executable_asset_keys
    op = defs.resolve_assets_def(key).op.name
    return {"ops": {op: {"config": {"until_caught_up": True, **config}}}}


def execute(defs, instance, request, raise_on_error=True):
    """Run what a RunRequest asks for, in process, on the same instance (a reading run reads
    until it is caught up)."""
    if request.job_name:
        config = read_config(defs, request.job_name) if request.job_name.startswith("read_") else None
        result = defs.resolve_job_def(request.job_name).execute_in_process(
            instance=instance, tags=request.tags, run_config=config, raise_on_error=raise_on_error)
    else:
        # Resolved assets come with their resources bound.
        result = dg.materialize([defs.resolve_assets_def(k) for k in request.asset_selection],
                                instance=instance, tags=request.tags)
    assert result.success or not raise_on_error
    return result


def cycle(defs, instance, name="rtds_events", cursor=None, read=True):
    """One tick and the runs it requested: the reading run first, then the load (which loads
    every pending window, the reading run's included). Returns the tick's result."""
    result = tick(defs, instance, name, cursor)
    for request in sorted(result.run_requests, key=lambda r: not r.job_name.startswith("read_")):
        if read or not request.job_name.startswith("read_"):
            execute(defs, instance, request)
    return result


def fold_in(defs, instance):
    """What the sensor `rtds_fold_in` requests once loads left days behind the horizon: each
    table's maintenance run, which rebuilds them from the landing zone. Returns the requests."""
    result = tick(defs, instance, "rtds_fold_in")
    for request in result.run_requests:
        execute(defs, instance, request)
    return result.run_requests


def read_run(defs, instance, job_name="read_events", raise_on_error=True, **config):
    return defs.resolve_job_def(job_name).execute_in_process(
        instance=instance, run_config=read_config(defs, job_name, **config),
        raise_on_error=raise_on_error)


def landing_events(result):
    """The landing materializations and stream_lag evaluations a reading run reported."""
    mats = [e.step_materialization_data.materialization
            for e in result.all_events if e.is_step_materialization]
    checks = [e.event_specific_data for e in result.all_events
              if e.event_type_value == "ASSET_CHECK_EVALUATION"]
    return mats, checks
