"""Each setting is declared once in node.config; the example config and the docs must agree with it."""

from __future__ import annotations

import tomllib
from pathlib import Path

from node import config
from node.cli import build_parser

ROOT = Path(__file__).resolve().parents[1]


def test_example_config_has_every_setting_with_its_default_and_help() -> None:
    text = (ROOT / "config" / "artkeep.example.toml").read_text()
    example = tomllib.loads(text)
    flat = {f"{section}.{name}": value for section, table in example.items() for name, value in table.items()}
    assert flat == {s.key: s.default for s in config.SETTINGS}
    comments = " ".join(line.removeprefix("#").strip() for line in text.splitlines() if line.startswith("#"))
    for setting in config.SETTINGS:
        assert setting.help in comments, setting.key
    assert config.build(example, {}).values == {s.key: s.default for s in config.SETTINGS}


def test_configuration_doc_names_every_setting_and_its_variable() -> None:
    doc = (ROOT / "docs" / "configuration.md").read_text()
    for setting in config.SETTINGS:
        assert f"`{setting.key}`" in doc and f"`{setting.env}`" in doc, setting.key


def test_cli_doc_names_every_command() -> None:
    doc = (ROOT / "docs" / "cli.md").read_text()
    parser = build_parser()
    commands = next(a for a in parser._actions if a.dest == "command").choices
    assert commands
    for name in commands:
        assert f"## `artkeep {name}" in doc, name


def test_unknown_settings_and_bad_values_are_refused() -> None:
    import pytest

    from node.errors import InputError

    with pytest.raises(InputError, match="unknown setting"):
        config.build({"import": {"profil": "x"}}, {})
    with pytest.raises(InputError, match="must be a bool"):
        config.build({"import": {"include_hidden": "maybe"}}, {})
    assert config.build({}, {"ARTKEEP_IMPORT_INCLUDE_HIDDEN": "yes"}).include_hidden is True


def test_home_defaults_follow_xdg() -> None:
    assert config.default_home({"ARTKEEP_HOME": "/data/art"}) == Path("/data/art")
    assert config.default_home({"XDG_DATA_HOME": "/x"}) == Path("/x/artkeep")
    assert config.default_home({}).parts[-3:] == (".local", "share", "artkeep")
