-- Dead letters in the windows that landed rows of some days: a dead letter has no date of its
-- own, so it is counted against every day its window touched. Parameters: $kind, $days (VARCHAR[]).
SELECT coalesce(sum(w.dead_letters), 0)
FROM landing_windows w
WHERE w.kind = $kind
  AND (w.source, w.window_seq) IN (SELECT source, window_seq FROM landing_files
                                   WHERE kind = $kind AND list_contains($days, day))
