"""DuckDB: the events load (dedupe + order), the marts (SQL files) and read-only access."""
