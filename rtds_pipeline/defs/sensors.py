"""One sensor per source (and PARTITION subset): each tick reads and commits one bounded window,
reports it as a landing materialization, and requests a run of its table's load job.

The lake's commit log is the truth; the cursor only mirrors it. A load run loads every committed
window the warehouse has not loaded (its own manifest says which), so a tick that failed after
committing (Dagster drops its cursor) loses nothing, and runs never pile up: a tick requests none
while one is still queued.
"""

import json
import time
from typing import Any

import dagster as dg
from dagster import SensorEvaluationContext

from rtds_pipeline.defs.assets import landing_key
from rtds_pipeline.defs.resources import RtdsResource
from rtds_pipeline.ingest import StreamHeadBehind, ingest_window, limits_from
from rtds_pipeline.lake.commits import Commit, CommitLog
from rtds_pipeline.rtds.timestamps import parse_iso_ms
from rtds_pipeline.settings import Settings, SourceConfig

SENSOR_WINDOW_CAP_S = 30.0  # well under Dagster's 60 s sensor evaluation limit
RETENTION_S = 7 * 86400  # RTDS replays at most 7 days: a reader further behind loses data
LAG_WARN, LAG_FAIL = 0.5, 0.8


def sensor_name(source: SourceConfig) -> str:
    return "rtds_" + "".join(c if c.isalnum() else "_" for c in source.key)


def stream_lag_evaluation(source: SourceConfig, lag_s: float | None) -> dg.AssetCheckEvaluation:
    """Lag against retention: warn at 50 % of 7 days, fail at 80 %."""
    ratio = (lag_s or 0.0) / RETENTION_S
    return dg.AssetCheckEvaluation(
        asset_key=landing_key(source), check_name="stream_lag", passed=ratio < LAG_WARN,
        severity=dg.AssetCheckSeverity.ERROR if ratio >= LAG_FAIL else dg.AssetCheckSeverity.WARN,
        metadata={"lag_seconds": round(lag_s, 1) if lag_s is not None else -1.0,
                  "retention_used": round(ratio, 4)},
        description=("RTDS keeps 7 days: a reader this far behind is about to lose events"
                     if ratio >= LAG_WARN else "within retention"))


def stream_lag_check(source: SourceConfig) -> dg.AssetChecksDefinition:
    @dg.asset_check(asset=landing_key(source), name="stream_lag",
                    description="Stream lag (now − newest `processed` landed) against RTDS's "
                                "7-day retention. Sensor ticks report it live (0 when caught up); "
                                "run by hand it reads the newest commit, so an idle stream shows "
                                "as lag.")
    def _check(rtds: RtdsResource) -> dg.AssetCheckResult:
        latest = CommitLog(rtds.lake(), source.key).latest()
        lag = (time.time() - parse_iso_ms(latest.max_processed) / 1000
               if latest and latest.max_processed else None)
        ev = stream_lag_evaluation(source, lag)
        return dg.AssetCheckResult(passed=ev.passed, severity=ev.severity, metadata=ev.metadata,
                                   description=ev.description)

    return _check


def _landing_metadata(commit: Commit, lag_s: float | None, seconds: float) -> dict[str, Any]:
    return {
        "events": commit.events, "bytes": commit.bytes_read, "files": len(commit.files),
        "window_seq": commit.window_seq,
        "offset_range": f"{commit.first_offset} … {commit.resume_offset}",
        "stream_lag_seconds": round(lag_s, 1) if lag_s is not None else -1.0,
        "duplicates_seen": commit.duplicates, "late_events_seen": commit.late_events,
        "dead_letters": commit.dead_letters, "days_touched": len(commit.days),
        "day_range": f"{commit.days[0]} … {commit.days[-1]}" if commit.days else "",
        "stop_reason": commit.stop_reason, "seconds": round(seconds, 2),
    }


def _load_queued(instance: dg.DagsterInstance, job_name: str) -> bool:
    """A load run not started yet loads every pending window when it starts: one is enough."""
    return bool(instance.get_run_ids(filters=dg.RunsFilter(
        job_name=job_name, statuses=[dg.DagsterRunStatus.QUEUED, dg.DagsterRunStatus.NOT_STARTED]),
        limit=1))


def evaluate_tick(context: dg.SensorEvaluationContext, source: SourceConfig, settings: Settings,
                  rtds: RtdsResource, load_job: str) -> dg.SensorResult:
    lake = rtds.lake()
    limits = limits_from(settings, max_seconds=min(settings.window_seconds, SENSOR_WINDOW_CAP_S),
                         stop_when_caught_up=True)
    try:
        outcome = ingest_window(source, lake, limits)  # raises on 401/403/400 after committing
    except StreamHeadBehind as exc:  # nothing can ever arrive: fail the lag check, say why
        return dg.SensorResult(skip_reason=str(exc), asset_events=[dg.AssetCheckEvaluation(
            asset_key=landing_key(source), check_name="stream_lag", passed=False,
            severity=dg.AssetCheckSeverity.ERROR, description=str(exc)[:1000],
            metadata={"stream_head": exc.head, "committed_resume_offset": exc.resume})])
    stats = outcome.stats
    log = CommitLog(lake, source.key)
    mirrored = json.loads(context.cursor)["window_seq"] if context.cursor else 0
    if not mirrored:
        context.log.info(f"first tick of {source.key} on this Dagster instance: starting from the "
                         "lake's commit log")
    new = log.since(mirrored) if mirrored else []
    latest = new[-1] if new else log.latest()

    lag_s = outcome.lag_s  # measured: 0 only when an idle window confirmed the stream's head
    events: list[dg.AssetMaterialization | dg.AssetCheckEvaluation] = []
    if outcome.commit is not None:
        events.append(dg.AssetMaterialization(
            asset_key=landing_key(source),
            metadata=_landing_metadata(outcome.commit, lag_s, outcome.seconds)))
    events.append(stream_lag_evaluation(source, lag_s))

    requests = []
    if (latest is not None and latest.window_seq != mirrored
            and not _load_queued(context.instance, load_job)):
        # The run key makes a re-evaluated tick harmless.
        requests.append(dg.RunRequest(run_key=f"{source.key}/w{latest.window_seq}",
                                      job_name=load_job))
    cursor = json.dumps({"window_seq": latest.window_seq, "resume_offset": latest.resume_offset}
                        if latest else {"window_seq": 0, "resume_offset": None})
    skip = None if requests or outcome.commit else f"nothing new ({stats.stop_reason})"
    return dg.SensorResult(run_requests=requests, cursor=cursor, asset_events=events,
                           skip_reason=skip)


def evaluate_webhook_tick(context: dg.SensorEvaluationContext, source: SourceConfig,
                          rtds: RtdsResource, load_job: str) -> dg.SensorResult:
    """A webhook source has no stream to read: the receiver commits windows (up to ~25 a second
    under load). A tick reports the commits since the last one as one landing materialization
    and requests a load."""
    log = CommitLog(rtds.lake(), source.key)
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
    requests = [] if _load_queued(context.instance, load_job) else [
        dg.RunRequest(run_key=f"{source.key}/w{latest.window_seq}", job_name=load_job)]
    return dg.SensorResult(run_requests=requests, asset_events=events,
                           cursor=json.dumps({"window_seq": latest.window_seq}))


def source_sensor(source: SourceConfig, settings: Settings,
                  load_job: dg.JobDefinition) -> dg.SensorDefinition:
    what = ("Mirrors the commits of the webhook receiver (`rtds-pipeline webhook`)"
            if source.webhook else f"Reads one bounded window of `{source.key}` per tick and "
                                   "commits it to the lake")

    @dg.sensor(name=sensor_name(source), minimum_interval_seconds=settings.tick_seconds,
               job=load_job, default_status=dg.DefaultSensorStatus.RUNNING,
               description=f"{what}; requests a load of what was committed.")
    def _sensor(context: SensorEvaluationContext, rtds: RtdsResource) -> dg.SensorResult:
        if source.webhook:
            return evaluate_webhook_tick(context, source, rtds, load_job.name)
        return evaluate_tick(context, source, settings, rtds, load_job.name)

    return _sensor
