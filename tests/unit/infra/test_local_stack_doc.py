"""docs/development.md lists every LOCAL_* variable the local stack's scripts read, and no
variable they do not read: the table is written by hand, so this is what keeps it true."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
SCRIPTS = [*ROOT.glob("infra/*.sh"), *ROOT.glob("infra/*.py"), ROOT / "bench" / "run.sh"]
NAME = re.compile(r"\bLOCAL_[A-Z_]+[A-Z]\b")


def _table_names() -> set[str]:
    text = (ROOT / "docs" / "development.md").read_text()
    section = text.split("## The local stack", 1)[1]
    rows = [line for line in section.splitlines() if line.startswith("| `LOCAL_")]
    return {name for row in rows for name in NAME.findall(row.split("|")[1])}


def test_every_local_variable_the_scripts_read_is_documented() -> None:
    read = {name for path in SCRIPTS for name in NAME.findall(path.read_text())}
    assert read, "no LOCAL_* variable found: the scripts moved?"
    assert read - _table_names() == set()


def test_the_table_names_no_variable_the_scripts_do_not_read() -> None:
    read = {name for path in SCRIPTS for name in NAME.findall(path.read_text())}
    assert _table_names() - read == set()
