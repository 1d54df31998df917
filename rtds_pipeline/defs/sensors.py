"""One sensor per source (and PARTITION subset): each tick reads and commits one bounded window,
reports it as a landing materialization, and requests runs for the day partitions it touched.

The lake's commit log is the truth; the cursor only mirrors it. Run requests are derived from
the commits the cursor has not seen yet, so a tick that failed after committing (Dagster drops
its cursor) has its days requested by the next one, and a wiped instance (no cursor) requests
every committed day once.
"""

import json
import time

import dagster as dg
from dagster import SensorEvaluationContext
from dagster._core.storage.tags import (
    ASSET_PARTITION_RANGE_END_TAG,
    ASSET_PARTITION_RANGE_START_TAG,
)

from rtds_pipeline.defs.assets import REBUILD_CHANGED, REBUILD_TAG, TABLE_TAG, landing_key
from rtds_pipeline.defs.resources import RtdsResource
from rtds_pipeline.ingest import StreamHeadBehind, ingest_window, limits_from
from rtds_pipeline.lake.commits import Commit, CommitLog
from rtds_pipeline.rtds.timestamps import parse_iso_ms
from rtds_pipeline.settings import Settings, SourceConfig
from rtds_pipeline.warehouse.events import TABLES

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


def _landing_metadata(commit: Commit, lag_s: float | None, seconds: float) -> dict[str, object]:
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


def _queued_run_covers(instance: dg.DagsterInstance, table: str, first: str, last: str) -> bool:
    """A run not started yet reads the manifest when it starts, so it will see this commit too."""
    for run in instance.get_runs(filters=dg.RunsFilter(
            statuses=[dg.DagsterRunStatus.QUEUED, dg.DagsterRunStatus.NOT_STARTED],
            tags={TABLE_TAG: table, REBUILD_TAG: REBUILD_CHANGED})):
        lo = run.tags.get(ASSET_PARTITION_RANGE_START_TAG, "")
        hi = run.tags.get(ASSET_PARTITION_RANGE_END_TAG, "")
        if lo <= first and last <= hi:
            return True
    return False


def evaluate_tick(context: dg.SensorEvaluationContext, source: SourceConfig, settings: Settings,
                  rtds: RtdsResource, partitions: dg.PartitionsDefinition,
                  target: dg.AssetKey) -> dg.SensorResult:
    lake = rtds.lake()
    table = TABLES[source.kind]
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
    mirrored = json.loads(context.cursor)["window_seq"] if context.cursor else None
    if mirrored is None:
        context.log.info(f"no cursor for {source.key}: resuming from the lake's commit log and "
                         "requesting every committed day once")
    new = log.since(mirrored or 0)
    latest = new[-1] if new else log.latest()

    lag_s = outcome.lag_s  # measured: 0 only when an idle window confirmed the stream's head
    events: list[dg.AssetMaterialization | dg.AssetCheckEvaluation] = []
    if outcome.commit is not None:
        events.append(dg.AssetMaterialization(
            asset_key=landing_key(source),
            metadata=_landing_metadata(outcome.commit, lag_s, outcome.seconds)))
    events.append(stream_lag_evaluation(source, lag_s))

    valid = set(partitions.get_partition_keys())
    days = sorted({d for c in new for d in c.days})
    outside = [d for d in days if d not in valid]
    if outside:
        context.log.warning(f"{len(outside)} day(s) landed outside the partitions "
                            f"({outside[:5]}…): set RTDS_FIRST_DAY earlier to build them")
    days = [d for d in days if d in valid]
    requests = []
    if days and not _queued_run_covers(context.instance, table, days[0], days[-1]):
        # One run for the range the commits touched (late days included); it rebuilds only the
        # days whose committed files changed. The run key makes a re-evaluated tick harmless.
        requests.append(dg.RunRequest(
            run_key=f"{source.key}/w{latest.window_seq}", asset_selection=[target],
            tags={TABLE_TAG: table, REBUILD_TAG: REBUILD_CHANGED,
                  ASSET_PARTITION_RANGE_START_TAG: days[0], ASSET_PARTITION_RANGE_END_TAG: days[-1]}))
    cursor = json.dumps({"window_seq": latest.window_seq, "resume_offset": latest.resume_offset}
                        if latest else {"window_seq": 0, "resume_offset": None})
    skip = None if requests or outcome.commit else f"nothing new ({stats.stop_reason})"
    return dg.SensorResult(run_requests=requests, cursor=cursor, asset_events=events,
                           skip_reason=skip)


def source_sensor(source: SourceConfig, settings: Settings, partitions: dg.PartitionsDefinition,
                  target: dg.AssetKey) -> dg.SensorDefinition:
    @dg.sensor(name=sensor_name(source), minimum_interval_seconds=settings.tick_seconds,
               asset_selection=[target],
               default_status=dg.DefaultSensorStatus.RUNNING,
               description=f"Reads one bounded window of `{source.key}` per tick and commits it "
                           "to the lake; requests the day partitions it touched.")
    def _sensor(context: SensorEvaluationContext, rtds: RtdsResource) -> dg.SensorResult:
        return evaluate_tick(context, source, settings, rtds, partitions, target)

    return _sensor
