"""The Dagster instance settings: SQLite or PostgreSQL chosen by the environment, and the
deployment blocks the README gives, checked against Dagster's own schemas."""

import re
import tomllib
from pathlib import Path

import pytest
import yaml
from dagster._config import process_config
from dagster._core.instance.config import dagster_instance_config
from dagster_k8s import K8sRunLauncher

from cdr_pipeline.config import ConfigError
from cdr_pipeline.defs.instance import PG_DEFAULTS, instance_yaml, prepare_home
from cdr_pipeline_tests.support.dagster_processes import DAGSTER_YAML, PROJECT_ROOT

README = (PROJECT_ROOT / "README.md").read_text()
POSTGRES_YAML = PROJECT_ROOT / "dagster-postgres.yaml"
PG_ENV = {"DAGSTER_PG_HOST": "db.example", "DAGSTER_PG_PASSWORD": "not-a-real-one"}


def readme_k8s_block() -> dict:
    match = re.search(r"<!-- instance:k8s -->\s*```yaml\n(.*?)```", README, flags=re.DOTALL)
    assert match, "README has no Kubernetes instance block"
    return yaml.safe_load(match[1])


def test_home_is_sqlite_by_default_and_postgres_with_dagster_pg_host(tmp_path: Path) -> None:
    env: dict[str, str] = {}
    config = prepare_home(tmp_path, env)
    assert config.read_text() == DAGSTER_YAML.read_text()  # SQLite: the project's file as it is
    assert env == {}

    env = dict(PG_ENV)
    prepare_home(tmp_path, env)  # the file it wrote switches with the environment
    assert config.read_text() == DAGSTER_YAML.read_text() + "\n" + POSTGRES_YAML.read_text()
    assert env == PG_ENV | {k: v for k, v in PG_DEFAULTS.items() if k not in PG_ENV}
    assert "not-a-real-one" not in config.read_text()

    prepare_home(tmp_path, {})
    assert config.read_text() == DAGSTER_YAML.read_text()


def test_a_home_file_of_the_users_own_is_kept_but_must_match_dagster_pg_host(
    tmp_path: Path,
) -> None:
    own = "telemetry:\n  enabled: false\n"
    (tmp_path / "dagster.yaml").write_text(own)
    prepare_home(tmp_path, {})
    assert (tmp_path / "dagster.yaml").read_text() == own
    with pytest.raises(ConfigError, match=r"DAGSTER_PG_HOST is set but .* PostgreSQL"):
        prepare_home(tmp_path, dict(PG_ENV))


@pytest.mark.parametrize("postgres", [False, True])
def test_written_instance_files_are_valid_dagster_instances(
    tmp_path: Path, postgres: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in (PG_ENV | PG_DEFAULTS).items():
        monkeypatch.setenv(name, value)
    (tmp_path / "dagster.yaml").write_text(instance_yaml(postgres))
    config, _ = dagster_instance_config(str(tmp_path))
    assert ("postgres" in config.get("storage", {})) is postgres


def test_readme_shows_the_postgres_block_the_code_uses() -> None:
    block = POSTGRES_YAML.read_text()
    assert block[block.index("storage:") :].strip() in README


def test_readme_kubernetes_block_is_a_valid_k8s_run_launcher(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    block = readme_k8s_block()
    launcher = block["run_launcher"]
    assert (launcher["module"], launcher["class"]) == ("dagster_k8s", "K8sRunLauncher")
    result = process_config(K8sRunLauncher.config_type(), launcher["config"])
    assert result.success, result.errors
    # ... and, added to the PostgreSQL instance file, a valid instance configuration.
    for name, value in (PG_ENV | PG_DEFAULTS).items():
        monkeypatch.setenv(name, value)
    (tmp_path / "dagster.yaml").write_text(instance_yaml(True) + "\n" + yaml.safe_dump(block))
    config, _ = dagster_instance_config(str(tmp_path))
    assert config["run_launcher"]["class"] == "K8sRunLauncher"


def test_dagster_integrations_are_pinned_at_the_release_paired_with_dagster() -> None:
    """dagster 1.13.N goes with its integrations' 0.29.N: the pins move together."""
    pyproject = tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text())
    pins = pyproject["project"]["dependencies"] + pyproject["dependency-groups"]["dev"]
    versions = dict(pin.split("==") for pin in pins if pin.startswith("dagster"))
    major, minor, patch = versions.pop("dagster").split(".")
    assert versions.pop("dagster-webserver") == f"{major}.{minor}.{patch}"
    paired = f"0.{int(minor) + 16}.{patch}"  # 1.13.N <-> 0.29.N
    assert versions == {"dagster-postgres": paired, "dagster-k8s": paired}
