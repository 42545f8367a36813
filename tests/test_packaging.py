"""Packaging metadata (issue 14, item 9): the licence file and its SPDX expression, the extras."""

from __future__ import annotations

import pytest
from helpers import ROOT

tomllib = pytest.importorskip("tomllib")  # Python 3.11+


@pytest.fixture(scope="module")
def project():
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_license_is_an_spdx_string_with_the_file_beside_it(project):
    meta = project["project"]
    # PEP 639: a plain SPDX expression; the {text = ...} table form is deprecated.
    assert meta["license"] == "Apache-2.0"
    assert meta["license-files"] == ["LICENSE"]
    text = (ROOT / "LICENSE").read_text()
    assert text.lstrip().startswith("Apache License") and "Version 2.0, January 2004" in text
    assert "END OF TERMS AND CONDITIONS" in text
    # setuptools reads the SPDX form (and license-files) from version 77 on
    build = project["build-system"]["requires"]
    assert "setuptools>=77" in build


def test_extras_hold_what_the_tests_and_linters_import(project):
    extras = project["project"]["optional-dependencies"]
    assert "pillow" in extras["test"]  # tests/train/test_data.py decodes and writes images
    assert any(name.startswith("ruff") for name in extras["dev"])
    assert {"tqdm", "matplotlib", "pillow"} <= set(extras["train"])


def test_torch_floor_is_the_oldest_torch_ci_tests(project):
    # `make test` (what CI runs) installs Makefile's TORCH_VERSION; the CUDA build check uses a
    # newer one (scripts/ci_cuda_build.sh). An older torch than that is untested: not admitted.
    import re

    makefile = (ROOT / "Makefile").read_text()
    tested = re.search(r"^TORCH_VERSION \?= (\d+)\.(\d+)\.\d+$", makefile, re.M).groups()
    floors = [d for d in project["project"]["dependencies"] if d.startswith("torch")]
    assert floors == [f"torch>={'.'.join(tested)}"]
    install = (ROOT / "README.md").read_text().split("## Install from source")[1].split("\n## ")[0]
    assert f"torch >= {'.'.join(tested)}" in install
