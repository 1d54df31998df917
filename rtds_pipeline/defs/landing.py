"""The landing assets: `landing/<source>`, one per source (and PARTITION subset).

A stream source's landing asset is materialized by its **reading run** (job `read_<source>`,
requested by the source's sensor): the run reads consecutive bounded windows for
RTDS_READ_RUN_SECONDS, committing each to the lake and reporting it as a materialization with the
`stream_lag` check. One run per source at a time (the source's own pool), each a separate run, so
a run launcher can place PARTITION readers on different machines. A webhook source's landing is
written by the receiver (`rtds-pipeline webhook`); its sensor reports it.
"""


import time
from collections.abc import Iterator
from typing import Any

import dagster as dg

from rtds_pipeline.defs.assets import landing_key
from rtds_pipeline.defs.dagster_private import UnresolvedAssetJobDefinition
from rtds_pipeline.defs.resources import LakeResource, ReaderResource
from rtds_pipeline.extract.errors import RtdsStreamError
from rtds_pipeline.extract.ingest import StreamHeadBehind, WindowOutcome, read_windows
from rtds_pipeline.extract.reader import WindowStats
from rtds_pipeline.lake.commits import Commit, CommitConflict, CommitLog
from rtds_pipeline.lake.retry import ObjectStoreUnavailable
from rtds_pipeline.protocol.timestamps import parse_iso_ms
from rtds_pipeline.settings import SourceConfig

RETENTION_S = 7 * 86400  # RTDS replays at most 7 days: a reader further behind loses data
LAG_WARN, LAG_FAIL = 0.5, 0.8
READER_TAG = "rtds/reader"  # the source a reading run reads
LAST_ERRORS = 5  # retried errors a window's metadata keeps (the last ones)
# Failures a later attempt can get past: the object store came back, another writer let go.
# A stream error that reaches the run is one retrying cannot fix (401/403/400/…): no retry.
RETRYABLE = (ObjectStoreUnavailable, CommitConflict)
WindowEvent = dg.AssetMaterialization | dg.AssetObservation | dg.AssetCheckEvaluation
READ_RETRY = dg.RetryPolicy(max_retries=3, delay=30, backoff=dg.Backoff.EXPONENTIAL,
                            jitter=dg.Jitter.PLUS_MINUS)


def reader_name(source: SourceConfig) -> str:
    """A name Dagster accepts (jobs, sensors, pools) for a source key such as events-p0of4."""
    return "".join(c if c.isalnum() else "_" for c in source.key)


def read_job_name(source: SourceConfig) -> str:
    return "read_" + reader_name(source)


def reader_pool(source: SourceConfig) -> str:
    """One slot per source (dagster_home/dagster.yaml: pools' default limit 1)."""
    return "rtds_reader_" + reader_name(source)


class ReadConfig(dg.Config):
    """Run config of a reading run (the defaults come from the reader resource)."""

    seconds: float | None = None  # how long to read; default RTDS_READ_RUN_SECONDS
    until_caught_up: bool = False  # stop after the first window that reached the stream's head


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
                                "7-day retention. Every window of a reading run reports it live "
                                "(0 when caught up); run by hand it reads the newest commit, so "
                                "an idle stream shows as lag.")
    def _check(lake: LakeResource) -> dg.AssetCheckResult:
        latest = CommitLog(lake.lake(), source.key).latest()
        lag = (time.time() - parse_iso_ms(latest.max_processed) / 1000
               if latest and latest.max_processed else None)
        ev = stream_lag_evaluation(source, lag)
        return dg.AssetCheckResult(passed=ev.passed, severity=ev.severity, metadata=ev.metadata,
                                   description=ev.description)

    return _check


def retry_metadata(stats: WindowStats) -> dict[str, Any]:
    """What the stream client retried inside the window (each retry is also in the run's log)."""
    return {"reconnects": stats.reconnects, "backoff_seconds": round(stats.backoff_seconds, 1),
            "server_errors": stats.server_errors,
            "last_errors": dg.MetadataValue.json(stats.errors[-LAST_ERRORS:])}


def landing_metadata(commit: Commit, outcome: WindowOutcome) -> dict[str, Any]:
    lag_s = outcome.lag_s
    return {
        "events": commit.events, "bytes": commit.bytes_read, "files": len(commit.files),
        "window_seq": commit.window_seq,
        "offset_range": f"{commit.first_offset} … {commit.resume_offset}",
        "stream_lag_seconds": round(lag_s, 1) if lag_s is not None else -1.0,
        "duplicates_seen": commit.duplicates, "late_events_seen": commit.late_events,
        "dead_letters": commit.dead_letters, "days_touched": len(commit.days),
        "day_range": f"{commit.days[0]} … {commit.days[-1]}" if commit.days else "",
        "stop_reason": commit.stop_reason, "seconds": round(outcome.seconds, 2),
        **retry_metadata(outcome.stats),
    }


def terminating(context: dg.AssetExecutionContext) -> bool:
    """Asked to terminate (the UI's Terminate, run monitoring, `make run` stopping): the run
    stops after the window it is reading, committed, instead of waiting for an interrupt."""
    run = context.instance.get_run_by_id(context.run.run_id)
    return run is not None and run.status == dg.DagsterRunStatus.CANCELING


def window_events(context: dg.AssetExecutionContext, source: SourceConfig,
                  outcome: WindowOutcome) -> Iterator[WindowEvent]:
    """A committed window is a materialization; a window that committed nothing but retried is
    an observation (its retries stay visible); every window reports the stream lag. Yielded (not
    `log_event`, which Dagster buffers until the step yields or ends): each is in the UI as soon
    as its window is committed."""
    stats, key = outcome.stats, landing_key(source)
    if outcome.commit is not None:
        context.log.debug(f"{source.key} window {outcome.commit.window_seq}: {stats.events:,} "
                         f"events in {outcome.seconds:.1f} s, {stats.reconnects} reconnect(s) "
                         f"({stats.stop_reason})")
        yield dg.AssetMaterialization(asset_key=key,
                                      metadata=landing_metadata(outcome.commit, outcome))
    elif stats.reconnects or stats.errors:
        yield dg.AssetObservation(asset_key=key, metadata={"stop_reason": stats.stop_reason,
                                                           **retry_metadata(stats)})
    yield stream_lag_evaluation(source, outcome.lag_s)


def landing_asset(source: SourceConfig) -> dg.AssetsDefinition:
    endpoint = "/api/events/general" if source.compliance else "/api/events"

    @dg.asset(
        key=landing_key(source), group_name="landing", kinds={"parquet"},
        pool=reader_pool(source), retry_policy=READ_RETRY,
        # Each window is reported as it commits; the run itself outputs nothing.
        output_required=False,
        metadata={"source": source.key, "endpoint": endpoint},
        description=f"Committed Parquet windows of source `{source.key}` ({endpoint}). Its "
                    f"reading run (job `{read_job_name(source)}`, requested by the sensor "
                    f"`rtds_{reader_name(source)}`) reads consecutive windows, each committed and "
                    "reported as one materialization.",
    )
    def _asset(context: dg.AssetExecutionContext, config: ReadConfig, lake: LakeResource,
               reader: ReaderResource) -> Iterator[WindowEvent]:
        windows = read_windows(
            source, lake.lake(), reader.limits(),
            seconds=reader.run_seconds if config.seconds is None else config.seconds,
            caught_up_pause_s=reader.caught_up_pause_seconds, store_retry=lake.store_retry(),
            orphan_grace_s=lake.orphan_grace_hours * 3600, until_caught_up=config.until_caught_up,
            stop=lambda: terminating(context))
        try:
            for outcome in windows:
                yield from window_events(context, source, outcome)
        except StreamHeadBehind as exc:  # nothing can ever arrive: fail the lag check, say why
            yield dg.AssetCheckEvaluation(
                asset_key=landing_key(source), check_name="stream_lag", passed=False,
                severity=dg.AssetCheckSeverity.ERROR, description=str(exc)[:1000],
                metadata={"stream_head": exc.head, "committed_resume_offset": exc.resume})
            raise dg.Failure(str(exc), allow_retries=False) from exc
        except RETRYABLE:
            raise
        except RtdsStreamError as exc:  # what arrived before it is committed and reported
            raise dg.Failure(str(exc), allow_retries=False) from exc

    return _asset


def read_job(source: SourceConfig) -> UnresolvedAssetJobDefinition:
    return dg.define_asset_job(
        read_job_name(source), selection=dg.AssetSelection.assets(landing_key(source)).without_checks(),
        tags={READER_TAG: source.key},
        description=f"Reads `{source.key}` for RTDS_READ_RUN_SECONDS, one committed window "
                    "after another (requested by its sensor; one run at a time).")


def webhook_landing_spec(source: SourceConfig) -> dg.AssetSpec:
    return dg.AssetSpec(
        landing_key(source), group_name="landing", kinds={"parquet"},
        description=f"Committed Parquet windows of webhook source `{source.key}`, written by the "
                    "webhook receiver (`rtds-pipeline webhook`, Airship POSTs to it); its sensor "
                    f"`rtds_{reader_name(source)}` reports the commits of each tick.",
        metadata={"source": source.key,
                  "endpoint": "webhook: POSTed by Airship to `rtds-pipeline webhook`"})
