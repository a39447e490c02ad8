"""Which Dagster instance the project's processes use: SQLite under DAGSTER_HOME, or PostgreSQL.

The project's `dagster.yaml` (queued runs, the `duckdb_writer` pool, retries) is the whole
instance file for the default, SQLite storage. With `DAGSTER_PG_HOST` set, the home's file is
`dagster.yaml` followed by `dagster-postgres.yaml`, the `storage: postgres` block whose values
are `{env: DAGSTER_PG_*}` references: each Dagster process (webserver, daemon, run workers)
reads them from its own environment, so the password is never written to a file.

`cdr-pipeline dagster webserver|daemon|dev` is the launcher: it writes the home's file, checks
that PostgreSQL answers (failing at once with the host and the variable to fix, where Dagster
would retry and then print a stack trace), then becomes the Dagster process.
"""

import os
import shutil
import signal
import sys
from collections.abc import MutableMapping, Sequence
from pathlib import Path

import yaml

import cdr_pipeline
from cdr_pipeline.config import ConfigError

PG_HOST = "DAGSTER_PG_HOST"
PG_PORT = "DAGSTER_PG_PORT"
PG_USER = "DAGSTER_PG_USER"
PG_PASSWORD = "DAGSTER_PG_PASSWORD"
PG_DB = "DAGSTER_PG_DB"
# Filled in when DAGSTER_PG_HOST is set and they are not (an empty password: libpq's own
# ~/.pgpass or a trusted connection).
PG_DEFAULTS = {PG_PORT: "5432", PG_USER: "dagster", PG_PASSWORD: "", PG_DB: "dagster"}
PG_CONNECT_TIMEOUT_S = 5

INSTANCE_FILE = "dagster.yaml"
POSTGRES_FILE = "dagster-postgres.yaml"
# What each launcher process type runs (the workspace comes from ./workspace.yaml by default).
DAGSTER_COMMANDS = {
    "webserver": ["dagster-webserver"],
    "daemon": ["dagster-daemon", "run"],
    "dev": ["dagster", "dev"],
}


def project_file(name: str) -> Path:
    """A file shipped at the project's root: packaged with the wheel, or in a checkout."""
    package = Path(cdr_pipeline.__file__).resolve().parent
    for candidate in (package / name, package.parent / name):
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(f"{name} is missing from the cdr_pipeline installation")


def uses_postgres(env: MutableMapping[str, str]) -> bool:
    """Whether the environment selects PostgreSQL storage (DAGSTER_PG_HOST is set)."""
    return bool(env.get(PG_HOST))


def instance_yaml(postgres: bool) -> str:
    """The instance file for SQLite (the project's dagster.yaml) or for PostgreSQL."""
    text = project_file(INSTANCE_FILE).read_text()
    if postgres:
        text += "\n" + project_file(POSTGRES_FILE).read_text()
    return text


def prepare_home(home: Path, env: MutableMapping[str, str] = os.environ) -> Path:
    """Write `home`/dagster.yaml for the storage the environment selects; its path.

    A file this function wrote before (for either storage) is rewritten, so setting or unsetting
    DAGSTER_PG_HOST switches the instance. A file of the user's own is kept as it is, but if
    DAGSTER_PG_HOST is set and that file does not use PostgreSQL, this is an error rather than
    a silent SQLite instance. With PostgreSQL, the unset DAGSTER_PG_* get their defaults in `env`.
    """
    postgres = uses_postgres(env)
    home.mkdir(parents=True, exist_ok=True)
    config = home / INSTANCE_FILE
    ours = {instance_yaml(False), instance_yaml(True)}
    if not config.exists() or config.read_text() in ours:
        config.write_text(instance_yaml(postgres))
    elif postgres and "postgres" not in (yaml.safe_load(config.read_text()) or {}).get(
        "storage", {}
    ):
        raise ConfigError(
            f"{PG_HOST} is set but {config} does not use PostgreSQL storage: add the storage "
            f"block of {POSTGRES_FILE} to it, or delete it to let cdr-pipeline write it"
        )
    if postgres:
        for name, default in PG_DEFAULTS.items():
            env.setdefault(name, default)
    return config


def check_postgres(env: MutableMapping[str, str]) -> None:
    """Connect to the configured PostgreSQL once; a ConfigError naming what to fix if it fails.

    The password never appears in the message (libpq does not print it; it is masked anyway).
    """
    import psycopg2

    host, port = env[PG_HOST], env.get(PG_PORT) or PG_DEFAULTS[PG_PORT]
    user, db = env.get(PG_USER) or PG_DEFAULTS[PG_USER], env.get(PG_DB) or PG_DEFAULTS[PG_DB]
    password = env.get(PG_PASSWORD) or ""
    try:
        psycopg2.connect(
            host=host,
            port=port,
            user=user,
            password=password,
            dbname=db,
            connect_timeout=PG_CONNECT_TIMEOUT_S,
        ).close()
    except psycopg2.Error as error:
        reason = " ".join(str(error).split())
        if password:
            reason = reason.replace(password, "***")
        where = f"PostgreSQL at {host}:{port}"
        if "password authentication failed" in reason or "no password supplied" in reason:
            fix = f"check {PG_USER} ({user}) and {PG_PASSWORD}"
        elif "does not exist" in reason and "database" in reason:
            fix = f"create the database {db} or fix {PG_DB}"
        else:
            fix = f"start it, or fix {PG_HOST} / {PG_PORT}"
        raise ConfigError(f"{where} (Dagster's storage) is unusable: {reason}; {fix}") from None


def dagster_home(data_dir: Path, env: MutableMapping[str, str] = os.environ) -> Path:
    """The Dagster home to use, ready: DAGSTER_HOME, else <data dir>/dagster_home (then set).

    Its dagster.yaml is written for the storage the environment selects (`prepare_home`), and
    PostgreSQL, if selected, has answered.
    """
    home = Path(env.get("DAGSTER_HOME") or (data_dir / "dagster_home")).resolve()
    prepare_home(home, env)
    env["DAGSTER_HOME"] = str(home)
    if uses_postgres(env):
        check_postgres(env)
    return home


def exec_dagster(process: str, args: Sequence[str], data_dir: Path) -> None:
    """Become `dagster-webserver`, `dagster-daemon run` or `dagster dev` on the ready home."""
    dagster_home(data_dir)
    command = DAGSTER_COMMANDS[process]
    executable = Path(sys.executable).with_name(command[0])
    if not executable.exists():
        executable = Path(shutil.which(command[0]) or command[0])
    # A non-interactive parent may have left SIGINT ignored, which survives exec and would make
    # the Dagster process ignore Ctrl-C and SIGTERM (which `dagster dev` maps onto SIGINT).
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    sys.stdout.flush()
    os.execv(executable, [str(executable), *command[1:], *args])
