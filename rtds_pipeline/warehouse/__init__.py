"""Transform and load: the Delta `events` tables loaded per window (dedupe + order), the
incremental marts (SQL files) and the published read-only DuckDB file."""
