"""The `fastgen` command line: info, argument and data errors, and (once the training
library has landed) train -> sample -> export end to end."""

from __future__ import annotations

from fastgen._info import format_info, info


def test_format_info_aligns_long_op_names():
    data = info()
    data["ops"] = {"short": ["cpu"], "a_very_long_operator_name_past_the_old_width": []}
    lines = [line for line in format_info(data).splitlines() if line.startswith("  ")]
    starts = {line.index("cpu") if "cpu" in line else line.index("none") for line in lines}
    assert len(starts) == 1, lines
    keys = [line for line in format_info(data).splitlines() if not line.startswith(" ")]
    assert keys[0].startswith("fastgen                ")  # key column stays 22 wide
