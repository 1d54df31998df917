-- Dagster's event log past its retention (the cutoff: a UTC timestamp as Dagster stores it):
-- what a run logged besides its asset events, the asset events a newer one superseded, and the
-- check results a newer one superseded. The newest materialization and observation of every
-- asset partition and the newest result of every check stay, whatever their age, so the UI's
-- partition status, lineage and check status are what they were. Each statement reads what is
-- older than the cutoff (deleted by the previous prune but for the newest) and what came since.

-- Step, engine, log and planning events of old runs (run records keep their status).
DELETE FROM event_logs
WHERE timestamp < $cutoff
  AND (dagster_event_type IS NULL OR dagster_event_type NOT IN
       ('ASSET_MATERIALIZATION', 'ASSET_OBSERVATION', 'ASSET_CHECK_EVALUATION'));

-- Materializations and observations superseded by a newer one of the same partition.
DELETE FROM event_logs
WHERE timestamp < $cutoff
  AND dagster_event_type IN ('ASSET_MATERIALIZATION', 'ASSET_OBSERVATION')
  AND id NOT IN (SELECT max(id) FROM event_logs
                 WHERE dagster_event_type IN ('ASSET_MATERIALIZATION', 'ASSET_OBSERVATION')
                 GROUP BY dagster_event_type, asset_key, partition);

-- Check executions superseded by a newer result of the same check, and planned executions of
-- old runs (a partitioned check's plan stays PLANNED beside its result), then their events.
DELETE FROM asset_check_executions
WHERE create_timestamp < $cutoff
  AND (execution_status = 'PLANNED'
       OR id NOT IN (SELECT max(id) FROM asset_check_executions
                     WHERE execution_status <> 'PLANNED'
                     GROUP BY asset_key, check_name, partition));

DELETE FROM event_logs
WHERE timestamp < $cutoff
  AND dagster_event_type = 'ASSET_CHECK_EVALUATION'
  AND id NOT IN (SELECT evaluation_event_storage_id FROM asset_check_executions
                 WHERE evaluation_event_storage_id IS NOT NULL);

-- Tags of the asset events deleted above.
DELETE FROM asset_event_tags
WHERE event_timestamp < $cutoff
  AND event_id NOT IN (SELECT id FROM event_logs);
