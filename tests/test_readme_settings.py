"""The README's settings tables name every RTDS_* variable `make run` and the settings read."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"


def settings_section() -> str:
    text = README.read_text()
    start = text.index("### Settings")
    return text[start:text.index("\n## ", start)]


@pytest.mark.parametrize("module", ["rtds_pipeline/run.py", "rtds_pipeline/settings.py"])
def test_every_variable_read_is_in_the_readme_settings(module):
    source = (ROOT / module).read_text()
    read = set(re.findall(r"""["'](RTDS_[A-Z_]+)["']""", source))
    assert read, f"no RTDS_* variable found in {module}"
    documented = set(re.findall(r"`(RTDS_[A-Z_]+)`", settings_section()))
    assert read <= documented, f"not in the README's settings: {sorted(read - documented)}"
