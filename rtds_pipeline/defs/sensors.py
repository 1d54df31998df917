"""One sensor per source (and PARTITION subset). Sensors decide; runs do the work.

A stream source's sensor keeps a reading run going (job `read_<source>`: it reads, commits and
reports windows for RTDS_READ_RUN_SECONDS) by requesting one whenever none is queued or running,
and requests a run of its table's load job (`load_<table>`) after new commits. A webhook source's
sensor reports the receiver's commits as a landing materialization and requests the load.

The lake's commit log is the truth; the cursor only mirrors it. A load run loads every committed
window the warehouse has not loaded (its own manifest says which), so a tick that failed after a
commit (Dagster drops its cursor) loses nothing, and runs never pile up: a tick requests no load
while one is still queued, and no reading run while one is queued or running.
"""

from __future__ import annotations

import json
import time

import dagster as dg

from rtds_pipeline.defs.assets import landing_key
from rtds_pipeline.defs.dagster_private import (
    MAX_RUNTIME_SECONDS_TAG,
    UnresolvedAssetJobDefinition,
)
from rtds_pipeline.defs.landing import READER_TAG, reader_name
from rtds_pipeline.defs.resources import LakeResource, ReaderResource
from rtds_pipeline.lake.commits import CommitLog
from rtds_pipeline.settings import SourceConfig

ACTIVE = [dg.DagsterRunStatus.QUEUED, dg.DagsterRunStatus.NOT_STARTED,
          dg.DagsterRunStatus.STARTING, dg.DagsterRunStatus.STARTED, dg.DagsterRunStatus.CANCELING]
FAILED_RUN_PAUSE_S = 300  # after a reading run failed (no retry left), before the next one
# A reading run reads for its budget plus at most one window; past this margin on top, run
# monitoring (dagster.yaml) ends it: a hung reader, or one whose process died with its host.
RUNTIME_MARGIN_S = 600


def sensor_name(source: SourceConfig) -> str:
    return "rtds_" + reader_name(source)


def _runs(instance: dg.DagsterInstance, job_name: str, statuses: list[dg.DagsterRunStatus],
          limit: int = 1) -> list[dg.RunRecord]:
    return list(instance.get_run_records(
        filters=dg.RunsFilter(job_name=job_name, statuses=statuses), limit=limit))


def _load_request(context: dg.SensorEvaluationContext, source: SourceConfig, seq: int,
                  load_job: str) -> list[dg.RunRequest]:
    """A load run not started yet loads every pending window when it starts: one is enough.
    The run key makes a re-evaluated tick harmless."""
    if _runs(context.instance, load_job, [dg.DagsterRunStatus.QUEUED,
                                          dg.DagsterRunStatus.NOT_STARTED]):
        return []
    return [dg.RunRequest(run_key=f"{source.key}/w{seq}", job_name=load_job)]


def _read_request(context: dg.SensorEvaluationContext, source: SourceConfig, read_job: str,
                  run_seconds: float) -> tuple[list[dg.RunRequest], str | None]:
    """A reading run unless one is queued or running, or the last one failed a moment ago. No
    run key: a key reused after a cursor reset would silently stop the source; a tick evaluated
    twice at worst queues a second run, which its pool holds until the first one ends."""
    if _runs(context.instance, read_job, ACTIVE):
        return [], "reading run in progress"
    failed = _runs(context.instance, read_job, [dg.DagsterRunStatus.FAILURE])
    last = failed[0] if failed else None
    # A run that never started (its launch timed out on a busy host) read nothing: no pause.
    if (last is not None and last.start_time is not None and last.end_time
            and time.time() - last.end_time < FAILED_RUN_PAUSE_S):
        return [], (f"the last reading run ({last.dagster_run.run_id}) failed: the next one "
                    f"starts {FAILED_RUN_PAUSE_S // 60} minutes after it (see its logs)")
    return [dg.RunRequest(job_name=read_job, tags={
        READER_TAG: source.key,
        MAX_RUNTIME_SECONDS_TAG: str(int(run_seconds + RUNTIME_MARGIN_S))})], None


def evaluate_tick(context: dg.SensorEvaluationContext, source: SourceConfig, lake: LakeResource,
                  reader: ReaderResource, read_job: str, load_job: str) -> dg.SensorResult:
    log = CommitLog(lake.lake(), source.key)
    mirrored = json.loads(context.cursor)["window_seq"] if context.cursor else 0
    if context.cursor is None:
        context.log.info(f"first tick of {source.key} on this Dagster instance: starting from the "
                         "lake's commit log")
    new = log.since(mirrored) if mirrored else []
    latest = new[-1] if new else log.latest()
    requests = []
    if latest is not None and latest.window_seq != mirrored:
        requests += _load_request(context, source, latest.window_seq, load_job)
    read, waiting = _read_request(context, source, read_job, reader.run_seconds)
    requests += read
    cursor = json.dumps({"window_seq": latest.window_seq if latest else 0,
                         "resume_offset": latest.resume_offset if latest else None})
    return dg.SensorResult(run_requests=requests, cursor=cursor,
                           skip_reason=None if requests else waiting or "nothing new")


def evaluate_webhook_tick(context: dg.SensorEvaluationContext, source: SourceConfig,
                          lake: LakeResource, load_job: str) -> dg.SensorResult:
    """A webhook source has no stream to read: the receiver commits windows (up to ~25 a second
    under load). A tick reports the commits since the last one as one landing materialization
    and requests a load."""
    log = CommitLog(lake.lake(), source.key)
    mirrored = json.loads(context.cursor)["window_seq"] if context.cursor else 0
    new = log.since(mirrored) if mirrored else [c for c in [log.latest()] if c]
    if not new:
        return dg.SensorResult(skip_reason="no new commit from the webhook receiver")
    latest = new[-1]
    events = [dg.AssetMaterialization(asset_key=landing_key(source), metadata={
        "windows": len(new), "window_seq": f"{new[0].window_seq} … {latest.window_seq}",
        "events": sum(c.events for c in new), "bytes": sum(c.bytes_read for c in new),
        "files": sum(len(c.files) for c in new),
        "dead_letters": sum(c.dead_letters for c in new),
        "days_touched": len({d for c in new for d in c.days})})]
    return dg.SensorResult(run_requests=_load_request(context, source, latest.window_seq, load_job),
                           asset_events=events,
                           cursor=json.dumps({"window_seq": latest.window_seq}))


def source_sensor(source: SourceConfig, tick_seconds: int, load_job: dg.JobDefinition,
                  read_job: UnresolvedAssetJobDefinition | None = None) -> dg.SensorDefinition:
    if read_job is None:  # a webhook source
        @dg.sensor(name=sensor_name(source), minimum_interval_seconds=tick_seconds,
                   job=load_job, default_status=dg.DefaultSensorStatus.RUNNING,
                   description="Mirrors the commits of the webhook receiver (`rtds-pipeline "
                               "webhook`); requests a load of what was committed.")
        def _webhook(context: dg.SensorEvaluationContext, lake: LakeResource) -> dg.SensorResult:
            return evaluate_webhook_tick(context, source, lake, load_job.name)

        return _webhook

    @dg.sensor(name=sensor_name(source), minimum_interval_seconds=tick_seconds,
               jobs=[read_job, load_job], default_status=dg.DefaultSensorStatus.RUNNING,
               description=f"Keeps a reading run of `{source.key}` going (one at a time) and "
                           "requests a load of what it committed.")
    def _sensor(context: dg.SensorEvaluationContext, lake: LakeResource,
                reader: ReaderResource) -> dg.SensorResult:
        return evaluate_tick(context, source, lake, reader, read_job.name, load_job.name)

    return _sensor
