"""The declarative settings layer: each field parsed by its type from its one declaration,
and the configuration reference generated from the same declarations."""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass, fields
from pathlib import Path

import pytest

from consumer_service.config import ConsumerSettings, ReadApiSettings
from infra.configuration_doc import DOC_PATH, render
from producer_service.config import ProducerSettings
from shared.auth import AuthSettings
from shared.config import (
    CommonSettings,
    EncryptionSettings,
    check_choices,
    declared,
    read_settings,
    setting,
)
from shared.errors import ConfigError

ROOT = Path(__file__).resolve().parents[3]
SETTINGS_CLASSES = (
    CommonSettings,
    AuthSettings,
    EncryptionSettings,
    ProducerSettings,
    ConsumerSettings,
    ReadApiSettings,
)


@dataclass(frozen=True)
class Sample:
    name: str = setting("n", "S_NAME", "a required text")
    note: str = setting("", "S_NOTE", "an optional text", required=False)
    mode: str = setting("a", "S_MODE", "a choice", choices=("a", "b"), case="lower")
    secret: str | None = setting(None, "S_SECRET", "kept as given", strip=False)
    count: int = setting(3, "S_COUNT", "a bounded integer", lo=1, hi=5)
    share: float = setting(0.5, "S_SHARE", "a bounded number", lo=0.0, hi=1.0)
    on: bool = setting(False, "S_ON", "a switch", old_env="S_ON_OLD")
    items: tuple[str, ...] = setting(("x",), "S_ITEMS", "a list")

    def __post_init__(self) -> None:
        check_choices(self)


def test_unset_and_blank_variables_keep_the_defaults() -> None:
    required = {"S_NAME", "S_MODE"}  # plain texts: blank is refused
    blank = {s.env: " " for _, s in declared(Sample) if s.env not in required}
    blank["S_SECRET"] = ""  # not stripped: " " would be a password
    assert read_settings(Sample, {}) == Sample() == read_settings(Sample, blank)


def test_each_field_is_parsed_by_its_type() -> None:
    env = {
        "S_NAME": " m ",
        "S_NOTE": "hi",
        "S_MODE": "B",
        "S_SECRET": " pw ",
        "S_COUNT": "5",
        "S_SHARE": "0.25",
        "S_ON_OLD": "yes",
        "S_ITEMS": " a, b ,",
    }
    assert read_settings(Sample, env) == Sample("m", "hi", "b", " pw ", 5, 0.25, True, ("a", "b"))


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"S_NAME": " "}, "S_NAME must not be empty"),
        ({"S_MODE": ""}, "S_MODE must not be empty"),
        ({"S_MODE": "c"}, "S_MODE must be one of a, b, got 'c'"),
        ({"S_COUNT": "6"}, "S_COUNT must be <= 5, got 6"),
        ({"S_COUNT": "0"}, "S_COUNT must be >= 1, got 0"),
        ({"S_COUNT": "2.5"}, "S_COUNT must be an integer, got '2.5'"),
        ({"S_SHARE": "inf"}, "S_SHARE must be a finite number"),
        ({"S_SHARE": "half"}, "S_SHARE must be a number"),
        ({"S_ON": "maybe"}, "S_ON must be one of true/false"),
        ({"S_ON": "true", "S_ON_OLD": "false"}, "S_ON and S_ON_OLD (its old name) disagree"),
    ],
)
def test_a_refused_value_names_its_variable(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        read_settings(Sample, env)


def test_choices_are_checked_when_built_directly_too() -> None:
    with pytest.raises(ConfigError, match="S_MODE must be one of"):
        Sample(mode="c")


def test_a_setting_of_a_type_without_a_parser_is_refused() -> None:
    @dataclass(frozen=True)
    class Odd:
        when: complex = setting(1j, "S_WHEN", "no parser for this")

    with pytest.raises(TypeError, match="S_WHEN"):
        read_settings(Odd, {"S_WHEN": "2j"})


@pytest.mark.parametrize("cls", SETTINGS_CLASSES)
def test_every_field_is_declared_with_a_variable_and_a_doc(cls: type) -> None:
    plain = [f.name for f in fields(cls) if f.name not in ("common", "auth", "encryption", "api")]
    assert plain == [f.name for f, _ in declared(cls)]
    for _, spec in declared(cls):
        assert spec.doc and "\n" not in spec.doc, spec.env


@pytest.mark.parametrize("cls", SETTINGS_CLASSES)
def test_every_number_has_both_bounds(cls: type) -> None:
    for f, spec in declared(cls):
        if isinstance(f.default, (int, float)) and not isinstance(f.default, bool):
            assert spec.lo is not None and spec.hi is not None, spec.env


def test_a_variable_is_declared_once_per_service() -> None:
    common = [s.env for _, s in declared(CommonSettings)]
    for cls in (ProducerSettings, ConsumerSettings):
        names = common + [s.env for _, s in declared(cls)]
        repeated = {n for n in names if names.count(n) > 1}
        # The producer reads REDIS_URL a second time, as "set or not" for the quota.
        assert repeated == ({"REDIS_URL"} if cls is ProducerSettings else set())


def test_the_configuration_reference_is_generated_from_the_code() -> None:
    assert DOC_PATH.read_text() == render(), (
        "docs/configuration.md differs from the settings' declarations: "
        "run .venv/bin/python infra/configuration_doc.py"
    )


def _environ_lookups(path: Path) -> set[str]:
    """Names looked up with os.environ.get / os.environ[...] / os.getenv in `path`."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        target: ast.expr | None = None
        if isinstance(node, ast.Call) and node.args:
            func = ast.unparse(node.func)
            if func.endswith(("environ.get", "getenv")):
                target = node.args[0]
        elif isinstance(node, ast.Subscript) and ast.unparse(node.value).endswith("environ"):
            target = node.slice
        if isinstance(target, ast.Constant) and isinstance(target.value, str):
            names.add(target.value)
    return names


def test_every_variable_the_code_reads_is_in_the_reference() -> None:
    read = {s.env for cls in SETTINGS_CLASSES for _, s in declared(cls)}
    read |= {s.old_env for cls in SETTINGS_CLASSES for _, s in declared(cls) if s.old_env}
    for package in ("shared", "producer_service", "consumer_service"):
        for path in (ROOT / package).rglob("*.py"):
            read |= {
                name
                for name in _environ_lookups(path)
                if re.match(r"(CONSUMER|PRODUCER|KAFKA|REDIS)_[A-Z0-9_]+$", name)
            }
    assert "CONSUMER_STATUS_FILE" in read  # the scan finds direct lookups
    reference = DOC_PATH.read_text()
    assert sorted(n for n in read if f"`{n}`" not in reference) == []
