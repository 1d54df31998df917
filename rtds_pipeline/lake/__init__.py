"""Object storage: the landing zone's layout, Parquet writer and commit log (fsspec)."""
