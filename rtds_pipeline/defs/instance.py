"""The Dagster instance's own housekeeping: its event log stays bounded while the pipeline runs
for weeks. Every window adds runs, materializations and check results; past
RTDS_DAGSTER_HISTORY_DAYS the prune keeps, of every asset partition and check, only the newest
event (partition status, lineage and check status in the UI are unchanged), deletes the rest of
what old runs logged, and deletes the run records left with no event. Dagster itself only
expires sensor and schedule ticks (`retention` in dagster_home/dagster.yaml).

Works on SQL event logs that hold every run in one database: the SQLite file of
dagster_home/dagster.yaml and Postgres. Dagster's default SQLite layout (a database per run)
is left alone, with a message saying why.
"""

import dataclasses
import datetime as dt
import time
from pathlib import Path

import dagster as dg
import duckdb
import sqlalchemy as db

from rtds_pipeline.defs.dagster_private import SqlEventLogStorage

PRUNE_SQL = Path(__file__).with_name("sql") / "prune_instance.sql"
FINISHED = [dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.FAILURE,
            dg.DagsterRunStatus.CANCELED]
RUNS_PER_PAGE = 500


@dataclasses.dataclass
class Pruned:
    events: int = 0  # event-log rows deleted
    check_executions: int = 0
    runs: int = 0  # run records deleted (none of their events left)
    skipped: str = ""  # why nothing was pruned


def prune_instance(instance: dg.DagsterInstance, keep_seconds: float,
                   now: float | None = None) -> Pruned:
    """Prune what is older than `keep_seconds` (see the module's docstring)."""
    storage = instance.event_log_storage
    if not isinstance(storage, SqlEventLogStorage) or storage.is_run_sharded:
        return Pruned(skipped=f"{type(storage).__name__} keeps a database per run: use the event "
                              "log of dagster_home/dagster.yaml (one database) or Postgres")
    cutoff_ts = (now if now is not None else time.time()) - keep_seconds
    # As Dagster writes its timestamps: naive UTC (compares as text in SQLite, as TIMESTAMP in Postgres).
    cutoff = dt.datetime.fromtimestamp(cutoff_ts, dt.UTC).replace(tzinfo=None)
    out = Pruned()
    with storage.index_connection() as conn:
        for statement in duckdb.extract_statements(PRUNE_SQL.read_text()):
            sql = "\n".join(line for line in statement.query.splitlines()
                            if not line.lstrip().startswith("--"))
            result = conn.execute(db.text(sql.replace("$cutoff", ":cutoff")),
                                  {"cutoff": cutoff.isoformat(sep=" ")})
            if sql.split("WHERE")[0].strip().endswith("asset_check_executions"):
                out.check_executions += result.rowcount
            else:
                out.events += result.rowcount
    out.runs = _delete_empty_runs(instance, storage, cutoff_ts)
    return out


def _delete_empty_runs(instance: dg.DagsterInstance, storage: SqlEventLogStorage,
                       cutoff_ts: float) -> int:
    """Finished runs last updated before the cutoff that no event refers to any more, with
    their captured logs. Reads the runs older than the cutoff: those left by earlier prunes
    (each still holds a newest event, so they are as many as the partitions and checks) and
    those that aged since."""
    before = dt.datetime.fromtimestamp(cutoff_ts, dt.UTC)
    ids: list[str] = []
    while True:
        page = [r.dagster_run.run_id for r in instance.get_run_records(
            filters=dg.RunsFilter(statuses=FINISHED, updated_before=before),
            limit=RUNS_PER_PAGE, cursor=ids[-1] if ids else None)]
        ids += page
        if len(page) < RUNS_PER_PAGE:
            break
    kept: set[str] = set()
    with storage.index_connection() as conn:
        for i in range(0, len(ids), RUNS_PER_PAGE):
            kept |= {row[0] for row in conn.execute(
                db.text("SELECT DISTINCT run_id FROM event_logs WHERE run_id IN :ids")
                .bindparams(db.bindparam("ids", expanding=True)),
                {"ids": ids[i:i + RUNS_PER_PAGE]})}
    empty = [run_id for run_id in ids if run_id not in kept]
    for run_id in empty:
        instance.delete_run(run_id)
        instance.compute_log_manager.delete_logs(prefix=[run_id])
    return len(empty)


JOB = "dagster_housekeeping"


def housekeeping_job(history_days: float) -> dg.JobDefinition:
    @dg.op(name="prune_dagster_history",
           description=f"Deletes what Dagster logged more than {history_days:g} days ago, but for "
                       "the newest event of every asset partition and check "
                       "(RTDS_DAGSTER_HISTORY_DAYS).")
    def _op(context: dg.OpExecutionContext) -> None:
        done = prune_instance(context.instance, history_days * 86400)
        if done.skipped:
            context.log.warning(f"Dagster history not pruned: {done.skipped}")
        else:
            context.log.info(f"Dagster history older than {history_days:g} days: deleted "
                             f"{done.events} events, {done.check_executions} check results "
                             f"and {done.runs} runs")

    @dg.job(name=JOB, description="Keeps the Dagster instance's event log bounded: past "
            f"{history_days:g} days only the newest event of every asset partition and check stays.")
    def _job() -> None:
        _op()

    return _job


def housekeeping_schedule(job: dg.JobDefinition) -> dg.ScheduleDefinition:
    return dg.ScheduleDefinition(name=f"{JOB}_schedule", job=job, cron_schedule="47 * * * *",
                                 execution_timezone="UTC",
                                 default_status=dg.DefaultScheduleStatus.RUNNING,
                                 description="Prunes Dagster's own history every hour.")
