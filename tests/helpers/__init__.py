"""What several test files share: conv_helpers (the convolution tests' layouts and harness),
train_helpers (tiny datasets and configs), cli_helpers (run_cli and a tiny run's options),
provenance_helpers (test certificates, PNG edits), and ROOT, the repository root.

Tests import them as `from helpers.<module> import ...` and the fixtures' module as
`from conftest import ...`: pyproject's `pythonpath = ["tests"]` puts tests/ on sys.path for
every test file, wherever it sits under tests/.
"""

from __future__ import annotations

from pathlib import Path

# The repository root (tests/helpers/__init__.py -> tests/helpers -> tests -> root), for the
# tests that read its files or run commands in it. Defined once, here, so that a test file can
# move between tests/ folders without its paths quietly pointing into tests/ instead.
ROOT = Path(__file__).resolve().parents[2]
