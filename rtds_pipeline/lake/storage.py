"""The lake's filesystem: a local folder by default, `s3://bucket/prefix` through s3fs."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from typing import Any, BinaryIO

import fsspec
import pyarrow as pa
from fsspec.implementations.local import LocalFileSystem


@dataclasses.dataclass(frozen=True)
class Lake:
    """A filesystem and the root path of the lake on it."""

    fs: fsspec.AbstractFileSystem
    root: str

    def path(self, *parts: str) -> str:
        return "/".join([self.root.rstrip("/"), *parts])

    @property
    def protocol(self) -> str:
        p = self.fs.protocol
        return p if isinstance(p, str) else p[0]

    @property
    def is_local(self) -> bool:
        return self.protocol in ("file", "local")

    @property
    def url(self) -> str:
        return self.url_of()

    def url_of(self, *parts: str) -> str:
        """What other engines (DuckDB, Spark) open: a local path, or `s3://bucket/key`."""
        path = self.path(*parts)
        return path if self.is_local else f"{self.protocol}://{path}"

    def remove_tree(self, *parts: str) -> None:
        """Delete a folder of the lake and everything under it (nothing if it is not there)."""
        path = self.path(*parts)
        if self.fs.exists(path):
            self.fs.rm(path, recursive=True)

    def write_durable(self, path: str, data: bytes) -> None:
        """Write a whole object: fsynced locally; on object stores one PUT, whole or absent."""
        if self.is_local:
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
        else:
            self.fs.pipe_file(path, data)

    def write_streamed(self, path: str, write: Callable[[pa.NativeFile | BinaryIO], None]) -> int:
        """Run `write` on a new file at `path`; its size once it is durable. A local file is
        Arrow's own (a Python file object takes the GIL for every page an Arrow encoder writes:
        the writing threads waited on each other and on the reader), fsynced before this
        returns; on an object store (s3fs) the object exists, whole, once `close()` returns."""
        if not self.is_local:
            with self.fs.open(path, "wb") as f:
                write(f)
                return f.tell()
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with pa.BufferedOutputStream(pa.OSFile(path, "wb"), buffer_size=1 << 20) as out:
            write(out)
            size = out.tell()
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)  # the file's data, whichever descriptor wrote it
        finally:
            os.close(fd)
        return size


def open_lake(url: str, storage_options: dict[str, Any] | None = None) -> Lake:
    """`./data/lake`, `file:///abs/path` or `s3://bucket/prefix` (endpoint via options/env)."""
    options = dict(storage_options or {})
    if url.startswith("s3://"):
        endpoint = options.pop("endpoint_url", None) or os.environ.get("RTDS_S3_ENDPOINT_URL")
        if endpoint:
            options.setdefault("endpoint_url", endpoint)
            options.setdefault("client_kwargs", {"region_name": os.environ.get("AWS_REGION", "us-east-1")})
        fs, root = fsspec.core.url_to_fs(url, **options)
        return Lake(fs, root)
    if url.startswith("file://"):
        url = url[len("file://"):]
    root = os.path.abspath(url)
    fs = LocalFileSystem(auto_mkdir=True)
    fs.makedirs(root, exist_ok=True)
    return Lake(fs, root)
