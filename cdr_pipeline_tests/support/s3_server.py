"""A throwaway S3-compatible server for tests: moto in server mode, on 127.0.0.1.

`running_s3` starts `moto.server` on a free loopback port in a temporary folder, creates an IAM
user allowed `s3:*` with an access key, and the bucket, then stops it afterwards.
`S3Server.checking_credentials` turns moto's IAM checks on (signatures, keys), so a wrong key is
rejected as AWS rejects it. `FlakyProxy` stands between a client and the server and answers
`503 SlowDown` (or another error S3 gives) to chosen requests.
"""

import contextlib
import http.client
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import boto3
import httpx

from cdr_pipeline_tests.support.dagster_processes import free_port

BUCKET = "cdr-lake"
REGION = "us-east-1"
# What S3 answers, by status, when it refuses a request.
ERROR_BODIES = {
    503: b"<Error><Code>SlowDown</Code><Message>Please reduce your request rate.</Message></Error>",
    500: b"<Error><Code>InternalError</Code><Message>We encountered an internal error.</Message>"
    b"</Error>",
    403: b"<Error><Code>AccessDenied</Code><Message>Access Denied</Message></Error>",
}


class S3Server:
    """moto's S3 on one loopback port, with a bucket and an IAM user's access key."""

    def __init__(self) -> None:
        self.port = free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.folder = Path(tempfile.mkdtemp(prefix="cdr-s3-"))
        self.access_key_id = ""
        self.secret_access_key = ""
        self._process: subprocess.Popen | None = None

    def start(self) -> "S3Server":
        log = (self.folder / "server.log").open("wb")
        self._process = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
            cwd=self.folder,
            stdout=log,
            stderr=subprocess.STDOUT,
            env={k: v for k, v in os.environ.items() if not k.startswith("AWS_")},
            start_new_session=True,
        )
        deadline = time.monotonic() + 60
        while True:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port)):
                break
            if self._process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(
                    f"moto did not start: {(self.folder / 'server.log').read_text()}"
                )
            time.sleep(0.1)
        setup = {"aws_access_key_id": "setup", "aws_secret_access_key": "setup"}
        iam = self.client("iam", **setup)
        iam.create_user(UserName="cdr-pipeline")
        iam.put_user_policy(
            UserName="cdr-pipeline",
            PolicyName="lake",
            PolicyDocument='{"Version": "2012-10-17", "Statement": [{"Effect": "Allow", '
            '"Action": "s3:*", "Resource": "*"}]}',
        )
        key = iam.create_access_key(UserName="cdr-pipeline")["AccessKey"]
        self.access_key_id, self.secret_access_key = key["AccessKeyId"], key["SecretAccessKey"]
        self.client("s3").create_bucket(Bucket=BUCKET)
        return self

    def client(self, service: str = "s3", **credentials: str) -> object:
        """A boto3 client of this server (the IAM user's key unless others are given)."""
        return boto3.client(
            service,
            endpoint_url=self.endpoint,
            region_name=REGION,
            aws_access_key_id=credentials.get("aws_access_key_id", self.access_key_id),
            aws_secret_access_key=credentials.get("aws_secret_access_key", self.secret_access_key),
        )

    def env(self, endpoint: str | None = None, **overrides: str) -> dict[str, str]:
        """The standard AWS variables that point a client at this server."""
        return {
            "AWS_ACCESS_KEY_ID": self.access_key_id,
            "AWS_SECRET_ACCESS_KEY": self.secret_access_key,
            "AWS_ENDPOINT_URL": endpoint or self.endpoint,
            "AWS_REGION": REGION,
            "AWS_EC2_METADATA_DISABLED": "true",
            **overrides,
        }

    def keys(self, prefix: str) -> list[str]:
        """Every key under `prefix`, through the S3 API."""
        pages = self.client("s3").get_paginator("list_objects_v2")
        return sorted(
            item["Key"]
            for page in pages.paginate(Bucket=BUCKET, Prefix=prefix)
            for item in page.get("Contents", [])
        )

    def read(self, key: str) -> bytes:
        return self.client("s3").get_object(Bucket=BUCKET, Key=key)["Body"].read()

    @contextlib.contextmanager
    def checking_credentials(self) -> Iterator[None]:
        """moto checks every request's key and signature (IAM) inside the block."""
        httpx.post(f"{self.endpoint}/moto-api/reset-auth", content=b"0").raise_for_status()
        try:
            yield
        finally:
            httpx.post(f"{self.endpoint}/moto-api/reset-auth", content=b"inf").raise_for_status()

    def stop(self) -> None:
        try:
            if self._process is not None and self._process.poll() is None:
                self._process.terminate()
                try:
                    self._process.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    self._process.kill()
                    self._process.wait()
        finally:
            shutil.rmtree(self.folder, ignore_errors=True)


@contextlib.contextmanager
def running_s3() -> Iterator[S3Server]:
    """A started server with its bucket, stopped (and its folder deleted) at the end."""
    server = S3Server()
    try:
        yield server.start()
    finally:
        server.stop()


class FlakyProxy:
    """Forwards HTTP to `target`, answering `status` instead to the requests `fails` picks
    (called with the method, the path and how many requests came before)."""

    def __init__(
        self, target_port: int, fails: Callable[[str, str, int], bool], status: int = 503
    ) -> None:
        self.requests: list[tuple[str, str, int]] = []  # method, path, status answered
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _forward(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if fails(self.command, self.path, len(proxy.requests)):
                    proxy.requests.append((self.command, self.path, status))
                    self.send_response(status)
                    self.send_header("Content-Type", "application/xml")
                    self.send_header("Content-Length", str(len(ERROR_BODIES[status])))
                    self.end_headers()
                    self.wfile.write(ERROR_BODIES[status])
                    return
                upstream = http.client.HTTPConnection("127.0.0.1", target_port, timeout=30)
                try:
                    headers = {
                        name: value
                        for name, value in self.headers.items()
                        if name.lower() not in ("connection", "expect", "keep-alive")
                    }
                    upstream.request(self.command, self.path, body, headers)
                    answer = upstream.getresponse()
                    payload = answer.read()
                finally:
                    upstream.close()
                proxy.requests.append((self.command, self.path, answer.status))
                self.send_response(answer.status)
                head = self.command == "HEAD"  # keeps the object's Content-Length, no body
                dropped = {"transfer-encoding", "connection"} | (
                    set() if head else {"content-length"}
                )
                for name, value in answer.getheaders():
                    if name.lower() not in dropped:
                        self.send_header(name, value)
                if not head:
                    self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                if not head:
                    self.wfile.write(payload)

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _forward

            def log_message(self, *args: object) -> None:
                return None

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.endpoint = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> "FlakyProxy":
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=10)
