"""The lake's layout: where raw exports and typed Parquet live, and a partition's publish.

Layout (docs/warehouse.md)::

    raw/<partition>/<direction>.csv                          the export exactly as received
    parquet/calls/call_date=<date>/part-<partition>.parquet   typed calls, Hive style
    parquet/call_rejects/call_date=<partition>/part-<partition>.parquet
"""

import datetime as dt
import re
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from cdr_pipeline.config import LAKE_URL_VARIABLE
from cdr_pipeline.lakestore import STAGING, LakeError, LakeStore
from cdr_pipeline.schema import CALLS_TABLE, REJECTS_TABLE

RAW_PREFIX = "raw"
CALLS_PREFIX = f"parquet/{CALLS_TABLE}"
REJECTS_PREFIX = f"parquet/{REJECTS_TABLE}"
PART_FILE = re.compile(r"part-\d{4}-\d{2}-\d{2}\.parquet")


def part_name(partition: dt.date) -> str:
    """The name of the files a partition owns, in each `call_date=` folder."""
    return f"part-{partition.isoformat()}.parquet"


@dataclass(frozen=True)
class Lake:
    """The lake's layout: raw exports and typed Parquet under `CDR_LAKE_URL` (by default the
    data directory itself; or `s3://bucket/prefix`, see `lakestore`).

    Files are named by keys relative to the lake's root, the same in a folder and on S3. The
    `Path` helpers (`raw_file`, `calls_files`, `rejects_file`) are for folder lakes.
    """

    data_dir: Path
    url: str = ""  # CDR_LAKE_URL; empty: `data_dir`

    @cached_property
    def store(self) -> LakeStore:
        return LakeStore(self.url or str(self.data_dir))

    @property
    def staging_dir(self) -> Path:
        """Local scratch: inside a folder lake (a publish is then a rename), else in the data
        directory."""
        return (self.store.folder or self.data_dir) / STAGING

    @staticmethod
    def raw_key(partition: dt.date, direction: str) -> str:
        return f"{RAW_PREFIX}/{partition.isoformat()}/{direction}.csv"

    @staticmethod
    def calls_key(call_date_folder: str, partition: dt.date) -> str:
        """The file a partition owns in one `call_date=<date>` folder."""
        return f"{CALLS_PREFIX}/{call_date_folder}/{part_name(partition)}"

    @staticmethod
    def rejects_key(partition: dt.date) -> str:
        return f"{REJECTS_PREFIX}/call_date={partition.isoformat()}/{part_name(partition)}"

    def calls_keys(self, partition: dt.date) -> list[str]:
        """The typed Parquet files a partition owns (usually one, sometimes two call dates)."""
        return self.calls_keys_of([partition])[partition]

    def calls_keys_of(self, partitions: Sequence[dt.date]) -> dict[dt.date, list[str]]:
        """`calls_keys` of several partitions, from one listing of the calls folder."""
        owned: dict[dt.date, list[str]] = {p: [] for p in partitions}
        names = {part_name(p): p for p in partitions}
        for key in self.store.keys(CALLS_PREFIX):
            folder, _, name = key.rpartition("/")
            if name in names and folder.rpartition("/")[2].startswith("call_date="):
                owned[names[name]].append(key)
        return owned

    def _local(self, key: str) -> Path:
        if self.store.folder is None:
            raise LakeError(f"the lake {self.url} is not a folder: use the store for {key}")
        return self.store.folder / key

    def require_folder(self, action: str) -> None:
        """Refuse `action` (an erasure, a retention) on an S3 lake, before it changes anything:
        they walk the lake's folders, which only a folder lake has (see the README)."""
        if self.store.folder is None:
            raise LakeError(
                f"{action} works on a folder lake only; the lake {self.url} "
                f"({LAKE_URL_VARIABLE}) is on object storage"
            )

    @property
    def raw_dir(self) -> Path:
        """Folder lakes only: the raw exports' folder."""
        return self._local(RAW_PREFIX)

    @property
    def calls_dir(self) -> Path:
        """Folder lakes only: the `calls` Parquet folder."""
        return self._local(CALLS_PREFIX)

    @property
    def rejects_dir(self) -> Path:
        """Folder lakes only: the `call_rejects` Parquet folder."""
        return self._local(REJECTS_PREFIX)

    def raw_file(self, partition: dt.date, direction: str) -> Path:
        return self._local(self.raw_key(partition, direction))

    def calls_files(self, partition: dt.date) -> list[Path]:
        return [self._local(key) for key in self.calls_keys(partition)]

    def rejects_file(self, partition: dt.date) -> Path:
        return self._local(self.rejects_key(partition))


def publish_partition(
    lake: Lake, partition: dt.date, staged_calls: Sequence[Path], staged_rejects: Path
) -> list[str]:
    """Move a partition's staged Parquet files into the lake, replacing what it owned before.

    `staged_calls` are files laid out as `call_date=<date>/<any name>` under a staging folder
    (for a folder lake, on its file system). Each file replaces its target whole, so a reader
    sees either the old or the new file, never half of one (`LakeStore.publish`); the
    partition's files for call dates it no longer holds are removed last. Returns the keys of
    the published calls files.
    """
    staged = {lake.calls_key(path.parent.name, partition): path for path in staged_calls}
    stale = sorted(set(lake.calls_keys(partition)) - set(staged))
    lake.store.publish({**staged, lake.rejects_key(partition): staged_rejects}, remove=stale)
    return sorted(staged)
