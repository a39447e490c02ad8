"""Where the lake's files live (`CDR_LAKE_URL`): a local folder or an S3 prefix, one interface.

Both are obstore stores addressed by the same keys (`raw/<day>/<direction>.csv`,
`parquet/calls/call_date=<date>/part-<day>.parquet`, ...), so listing, sizing, renaming and
deleting run the same calls on a laptop and on S3. Two things differ, and only here:

- **Publishing.** A folder lake renames a staged file over its target (`durable.replace`:
  atomic on one file system, and durable). S3 has no rename: every file of a publish is first
  uploaded under a temporary key (`staging/<id>/…`), and only once all are up is each copied
  server-side to its key and the temporary one deleted. A single object appears whole or not at
  all, so a reader sees a file's old version or its new one; see docs/lake.md for what S3's
  consistency gives and how a day's set of files is kept coherent.
- **Reading.** A folder's files are read in place; S3 objects are downloaded to a local
  scratch folder first (the DuckDB wheel has no `httpfs`, and it cannot be installed offline),
  only the objects a load names: reading stays proportional to the days loaded.

Credentials never pass through this module: obstore reads the standard AWS variables
(`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`, `AWS_REGION`,
`AWS_ENDPOINT_URL_S3` / `AWS_ENDPOINT_URL`, ...) itself, and errors are scrubbed of them.
"""

import datetime as dt
import os
import shutil
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING

import obstore
import pyarrow as pa
import pyarrow.parquet as pq
from obstore.store import LocalStore, S3Store

if TYPE_CHECKING:
    from obstore.store import ClientConfig, RetryConfig

from cdr_pipeline import durable
from cdr_pipeline.config import LAKE_URL_VARIABLE, s3_location

STAGING = "staging"  # the folder (or key prefix) of files not yet published
# obstore retries 5xx answers (S3's `SlowDown` is a 503), dropped connections and timeouts,
# with exponential backoff and jitter (0.2 s doubling to at most 5 s; 5 retries), within 60 s.
S3_RETRY: "RetryConfig" = {
    "max_retries": 5,
    "backoff": {
        "init_backoff": dt.timedelta(milliseconds=200),
        "max_backoff": dt.timedelta(seconds=5),
        "base": 2,
    },
    "retry_timeout": dt.timedelta(seconds=60),
}
S3_CLIENT: "ClientConfig" = {
    "connect_timeout": dt.timedelta(seconds=5),
    "timeout": dt.timedelta(minutes=5),
}
ENDPOINT_VARIABLES = ("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL")
SECRET_VARIABLES = ("AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_ACCESS_KEY_ID")
_DOWNLOAD_CHUNK = 8 << 20
_REJECTED = (obstore.exceptions.PermissionDeniedError, obstore.exceptions.UnauthenticatedError)
_UNANSWERED_WORDS = ("error sending request", "connect", "timed out", "timeout", "retries")
_REJECTED_WORDS = ("accessdenied", "invalidaccesskeyid", "signaturedoesnotmatch", "403 forbidden")


class LakeError(RuntimeError):
    """The lake's storage cannot be used. The message names the URL and the variable to fix,
    never a secret."""


@dataclass(frozen=True)
class LakeStore:
    """The lake at `url`: a folder, or `s3://bucket/prefix` (see the module docstring)."""

    url: str

    @cached_property
    def folder(self) -> Path | None:
        """The lake's folder, or None when it lives on S3."""
        return None if s3_location(self.url) else Path(self.url).resolve()

    @cached_property
    def store(self) -> LocalStore | S3Store:
        if self.folder is not None:
            self.folder.mkdir(parents=True, exist_ok=True)
            return LocalStore(self.folder)
        bucket, prefix = s3_location(self.url) or ("", "")
        endpoint = next((os.environ[v] for v in ENDPOINT_VARIABLES if os.environ.get(v)), "")
        return S3Store(
            bucket,
            prefix=prefix or None,
            client_options={**S3_CLIENT, "allow_http": endpoint.startswith("http://")},
            retry_config=S3_RETRY,
        )

    def uri(self, key: str) -> str:
        """Where `key` is, for people: a local path or an `s3://` URL."""
        return str(self.folder / key) if self.folder else f"{self.url.rstrip('/')}/{key}"

    def check(self) -> None:
        """Fail now, with what to fix, if the lake cannot be listed (unreachable endpoint,
        rejected credentials, missing bucket); one request, nothing written. A folder is
        created if missing."""
        if self.folder is not None:
            self.folder.mkdir(parents=True, exist_ok=True)
            return
        with self._errors("listing"):
            next(iter(obstore.list(self.store, prefix=STAGING, chunk_size=1)), None)

    def keys(self, prefix: str) -> list[str]:
        """The keys under `prefix` (a folder), sorted; none when it does not exist."""
        with self._errors(f"listing {prefix}"):
            return sorted(
                meta["path"]
                for chunk in obstore.list(self.store, prefix=prefix, chunk_size=1000)
                for meta in chunk
            )

    def exists(self, key: str) -> bool:
        try:
            with self._errors(f"reading {key}"):
                obstore.head(self.store, key)
        except FileNotFoundError:
            return False
        return True

    def size(self, key: str) -> int:
        with self._errors(f"reading {key}"):
            return int(obstore.head(self.store, key)["size"])

    def parquet_rows(self, key: str) -> int:
        """The rows of a Parquet file, from its footer (two small range reads on S3)."""
        with self._errors(f"reading {key}"):
            size = int(obstore.head(self.store, key)["size"])
            trailer = bytes(obstore.get_range(self.store, key, start=size - 8, end=size))
            length = int.from_bytes(trailer[:4], "little")
            footer = bytes(obstore.get_range(self.store, key, start=size - 8 - length, end=size))
        return pq.read_metadata(pa.BufferReader(b"PAR1" + footer)).num_rows

    def publish(self, staged: Mapping[str, Path], *, remove: Iterable[str] = ()) -> None:
        """Put local files at their keys, replacing what was there, then delete `remove`.

        A folder lake renames each file over its key, durably (`durable.replace`; the files must
        be on the lake's file system). On S3, every file is uploaded under a temporary key
        first; only when all are up is each renamed (copied server-side, then deleted) to its
        key, so a failed upload changes nothing a reader sees.
        """
        if self.folder is not None:
            for key, path in staged.items():
                durable.replace(path, self.folder / key)
        else:
            batch = f"{STAGING}/{uuid.uuid4().hex[:12]}"
            uploaded: list[str] = []
            try:
                with self._errors("uploading"):
                    for key, path in staged.items():
                        obstore.put(self.store, f"{batch}/{key}", path)
                        uploaded.append(key)
                    for key in staged:
                        obstore.rename(self.store, f"{batch}/{key}", key)
                        uploaded.remove(key)
            finally:
                self._discard([f"{batch}/{key}" for key in uploaded])
        with self._errors("deleting"):
            for key in remove:
                obstore.delete(self.store, key)

    def _discard(self, keys: Sequence[str]) -> None:
        """Best effort: temporary objects of a failed publish (a lifecycle rule on `staging/`
        removes any a crash leaves behind)."""
        for key in keys:
            try:
                obstore.delete(self.store, key)
            except Exception:  # the publish's own error is the one to report
                break

    @contextmanager
    def writing(self, keys: Sequence[str], scratch: Path) -> Iterator[list[Path]]:
        """Local files to write `keys` through: in a folder lake the files themselves (their
        writer must replace them atomically); on S3 files under `scratch`, published together
        (`publish`) when the block ends without error, and removed in any case."""
        if self.folder is not None:
            yield [self.folder / key for key in keys]
            return
        folder = scratch / f"write-{uuid.uuid4().hex[:8]}"
        try:
            paths = [folder / key for key in keys]
            yield paths
            self.publish(dict(zip(keys, paths, strict=True)))
        finally:
            shutil.rmtree(folder, ignore_errors=True)

    @contextmanager
    def local_files(self, scratch: Path) -> Iterator["LocalFiles"]:
        """Local copies of the lake's files, on demand, for readers that need a file name
        (DuckDB's `read_parquet`); removed at the end on S3."""
        if self.folder is not None:
            yield LocalFiles(self, None)
            return
        folder = scratch / f"read-{uuid.uuid4().hex[:8]}"
        try:
            yield LocalFiles(self, folder)
        finally:
            shutil.rmtree(folder, ignore_errors=True)

    def download(self, key: str, dest: Path) -> Path:
        """Copy the object `key` to the local file `dest`."""
        dest.parent.mkdir(parents=True, exist_ok=True)
        with self._errors(f"reading {key}"), dest.open("wb") as out:
            for chunk in obstore.get(self.store, key).stream(min_chunk_size=_DOWNLOAD_CHUNK):
                out.write(chunk)
        return dest

    @contextmanager
    def _errors(self, action: str) -> Iterator[None]:
        """obstore's errors as `LakeError`s saying what to fix; a missing object (not a missing
        bucket) as FileNotFoundError."""
        try:
            yield
        except (FileNotFoundError, obstore.exceptions.NotFoundError) as error:
            if "nosuchbucket" in str(error).lower():
                raise LakeError(self._explain(action, error)) from None
            raise FileNotFoundError(str(error).split("\n", 1)[0]) from None
        except obstore.exceptions.BaseError as error:
            raise LakeError(self._explain(action, error)) from None

    def _explain(self, action: str, error: Exception) -> str:
        text = str(error).split("\n", 1)[0]
        for name in SECRET_VARIABLES:
            if os.environ.get(name):
                text = text.replace(os.environ[name], "***")
        if len(text) > 400:
            text = text[:400] + "..."
        lowered = str(error).lower()  # the whole of it: the store's answer may follow the line
        if "nosuchbucket" in lowered or "bucket does not exist" in lowered:
            fix = f"the bucket does not exist: create it, or fix {LAKE_URL_VARIABLE}"
        elif isinstance(error, _REJECTED) or any(word in lowered for word in _REJECTED_WORDS):
            fix = (
                "the credentials were rejected: check AWS_ACCESS_KEY_ID and "
                "AWS_SECRET_ACCESS_KEY (and AWS_SESSION_TOKEN, AWS_REGION)"
            )
        elif any(word in lowered for word in _UNANSWERED_WORDS):
            fix = (
                "the object store did not answer (after retries): check "
                f"{' / '.join(ENDPOINT_VARIABLES)} and the network, or {LAKE_URL_VARIABLE}"
            )
        else:
            fix = (
                f"the object store refused the request: check {LAKE_URL_VARIABLE} and the "
                "AWS_* variables"
            )
        return f"the lake {self.url} ({LAKE_URL_VARIABLE}) failed while {action}: {fix} ({text})"


@dataclass
class LocalFiles:
    """Local file names for lake keys: the files themselves in a folder lake, downloads (made
    once each) in `folder` for an S3 lake. The key's layout is kept, so file names still say
    which partition wrote them."""

    lake: LakeStore
    folder: Path | None

    def paths(self, keys: Iterable[str]) -> list[str]:
        if self.lake.folder is not None:
            return [str(self.lake.folder / key) for key in keys]
        assert self.folder is not None
        local = []
        for key in keys:
            dest = self.folder / key
            if not dest.exists():
                self.lake.download(key, dest)
            local.append(str(dest))
        return local
