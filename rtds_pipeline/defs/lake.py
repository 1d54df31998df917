"""The lake's housekeeping job and its schedule: compaction of settled landing days, deletion of
superseded files past their retention and of orphans, and the commit-log checkpoint. Each run
reports what it did on every source's landing asset (an observation with the numbers)."""

import dagster as dg

from rtds_pipeline.defs.assets import landing_key
from rtds_pipeline.defs.resources import LakeResource
from rtds_pipeline.lake.compaction import housekeep
from rtds_pipeline.settings import Settings

HOUSEKEEPING_JOB = "lake_housekeeping"


def housekeeping_job(settings: Settings) -> dg.JobDefinition:
    @dg.op(name="housekeep_lake", description="Compacts settled landing days to at most "
           f"{settings.compact_max_files} files per source and day, deletes superseded files "
           f"after {settings.superseded_retention_hours:g} h and orphans after "
           f"{settings.orphan_grace_hours:g} h, writes the commit-log checkpoints.")
    def _op(context: dg.OpExecutionContext, lake: LakeResource) -> None:
        store = lake.lake()
        for source in settings.sources:
            done = housekeep(store, source.key, **settings.lake_housekeeping())
            for d in done.compacted:  # the run's log in the UI; the console gets a summary
                context.log.debug(f"{source.key} {d.day}: {d.files_before} files -> "
                                  f"{d.files_after} (record {d.seq})")
            if done.compacted:
                context.log.info(
                    f"{source.key}: compacted {len(done.compacted)} settled day(s), "
                    f"{sum(d.files_before for d in done.compacted)} files -> "
                    f"{sum(d.files_after for d in done.compacted)}; "
                    f"{len(done.superseded_deleted)} superseded and "
                    f"{len(done.orphans_deleted)} orphaned file(s) deleted")
            context.log_event(dg.AssetObservation(asset_key=landing_key(source), metadata={
                "days_compacted": len(done.compacted),
                "files_compacted": sum(d.files_before - d.files_after for d in done.compacted),
                "compacted_days": ", ".join(d.day for d in done.compacted)[:500],
                "superseded_deleted": len(done.superseded_deleted),
                "orphans_deleted": len(done.orphans_deleted),
                "live_files": done.live_files, "days": done.days,
                "max_files_per_settled_day": done.max_files_per_settled_day,
            }))

    @dg.job(name=HOUSEKEEPING_JOB, description="The landing zone's lifecycle: compaction, "
            "retention of superseded files, orphan clean-up (also `rtds-pipeline lake compact`).")
    def _job() -> None:
        _op()

    return _job


def housekeeping_schedule(job: dg.JobDefinition, settings: Settings) -> dg.ScheduleDefinition:
    return dg.ScheduleDefinition(
        name=f"{HOUSEKEEPING_JOB}_schedule", job=job, cron_schedule=settings.housekeeping_cron,
        execution_timezone="UTC", default_status=dg.DefaultScheduleStatus.RUNNING,
        description="Runs the lake's housekeeping (RTDS_HOUSEKEEPING_CRON).")
