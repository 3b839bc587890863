"""Exclusive locks that a dead holder releases: a file lock beside an SQLite database, and a
PostgreSQL session advisory lock on a server's database (the server drops it with the holder's
connection). The registry's alias writers and the tuners' budget reservations each hold one."""

from __future__ import annotations

import contextlib
import fcntl
import os
import zlib
from collections.abc import Iterator
from typing import Any


@contextlib.contextmanager
def file_lock(path: str) -> Iterator[None]:
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock (also when the process dies)


@contextlib.contextmanager
def advisory_lock(connection: Any, lock_class: int, name: str) -> Iterator[None]:
    """pg_advisory_lock(lock_class, a key of `name`) held on the open psycopg2 `connection`, which
    is closed (and the lock with it) on the way out."""
    connection.autocommit = True
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_lock(%s, %s)", (lock_class, zlib.crc32(name.encode()) - 2**31))
        yield
    finally:
        connection.close()
