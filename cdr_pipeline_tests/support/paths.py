"""Where the project, the tests' sample data and their artifacts live."""

from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[2]
README = PROJECT_ROOT / "README.md"
TEST_DATA = PROJECT_ROOT / "cdr_pipeline_tests" / "data"
ARTIFACTS = PROJECT_ROOT / "test-artifacts"
