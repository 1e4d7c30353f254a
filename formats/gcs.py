"""gcsfs's filesystems as `formats.storage.Folder` uses them for ``gs://`` (imported only when a gs:// folder
is opened; needs the gcsfs package).

Two changes from gcsfs's defaults:

- files are read with fsspec's ``readahead`` cache, as s3fs's are (and gcsfs's were before 2026): gcsfs's own
  default (``adaptive``) starts background prefetch tasks that outlive the files pyarrow and duckdb leave to the
  garbage collector, and each is reported at exit ("Task was destroyed but it is pending!");
- with ``STORAGE_EMULATOR_HOST`` set (a local GCS emulator, `emulator`), the plain JSON-API filesystem,
  anonymous unless a token is given (as Google's own clients connect to an emulator): gcsfs's default class
  also asks the gRPC Storage Control API for each bucket's layout, which emulators do not serve (each call is
  retried for a minute).
"""

from __future__ import annotations

import os

import gcsfs
import gcsfs.core


def emulator() -> str | None:
    """The GCS emulator gcsfs talks to instead of Google (``STORAGE_EMULATOR_HOST``), or None."""
    host = os.environ.get("STORAGE_EMULATOR_HOST", "")
    return host if host not in ("", "default") else None


def _readahead(kwargs: dict) -> dict:
    if kwargs.get("cache_type") is None:
        kwargs["cache_type"] = "readahead"
    return kwargs


class GCSFileSystem(gcsfs.GCSFileSystem):
    """gcsfs's default filesystem, files read ahead."""

    def _open(self, path, mode="rb", **kwargs):
        return super()._open(path, mode, **_readahead(kwargs))


class EmulatorGCSFileSystem(gcsfs.core.GCSFileSystem):
    """gcsfs's JSON-API filesystem, for an emulator; files read ahead."""

    def _open(self, path, mode="rb", **kwargs):
        return super()._open(path, mode, **_readahead(kwargs))


def filesystem(options: dict):
    """The filesystem for ``gs://`` folders with `options` (gcsfs's arguments: ``token``, ``project``, ...)."""
    if emulator():
        return EmulatorGCSFileSystem(**{"token": "anon", **options})
    return GCSFileSystem(**options)
