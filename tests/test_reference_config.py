"""configs/reference.yaml lists every config key, commented, each with its default value."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import yaml

from seqlab.config import Config, load_config

REFERENCE = Path(__file__).resolve().parents[1] / "configs" / "reference.yaml"

# Keys whose value in reference.yaml differs from the dataclass default, and why: the
# defaults alone name no data, so they do not validate.
NOT_DEFAULT = {"data.synthetic": "dates"}


def dataclass_keys(cls, prefix: str = "") -> dict[str, object]:
    """Dotted key -> default value, for every leaf field of a (nested) config dataclass."""
    out: dict[str, object] = {}
    instance = cls()  # defaults, default_factory ones included
    for f in dataclasses.fields(cls):
        key, value = f"{prefix}{f.name}", getattr(instance, f.name)
        if dataclasses.is_dataclass(value):
            out.update(dataclass_keys(type(value), key + "."))
        else:
            out[key] = value
    return out


def yaml_keys(node: dict, prefix: str = "") -> dict[str, object]:
    """Dotted key -> value, for every leaf of a nested mapping."""
    out: dict[str, object] = {}
    for name, value in node.items():
        key = f"{prefix}{name}"
        if isinstance(value, dict):
            out.update(yaml_keys(value, key + "."))
        else:
            out[key] = value
    return out


@pytest.fixture(scope="module")
def raw() -> dict:
    return yaml.safe_load(REFERENCE.read_text(encoding="utf-8"))


def test_reference_config_loads_and_validates():
    cfg = load_config(REFERENCE)
    assert cfg.data.synthetic == "dates"


def test_reference_config_lists_every_key(raw):
    expected, listed = set(dataclass_keys(Config)), set(yaml_keys(raw))
    missing, unknown = sorted(expected - listed), sorted(listed - expected)
    assert not missing, f"keys of seqlab.config missing from {REFERENCE.name}: {missing}"
    assert not unknown, f"keys in {REFERENCE.name} that seqlab.config lacks: {unknown}"


def test_reference_config_values_are_the_defaults(raw):
    defaults, listed = dataclass_keys(Config), yaml_keys(raw)
    for key, value in NOT_DEFAULT.items():
        assert listed[key] == value
        assert defaults[key] != value, f"{key} is the default now; drop it from NOT_DEFAULT"
    wrong = {
        key: (listed[key], defaults[key])
        for key in defaults
        if key in listed and key not in NOT_DEFAULT
        # type too: 1.0e-4 must not be read as a string, 1 not as True
        and (listed[key] != defaults[key] or type(listed[key]) is not type(defaults[key]))
        and not (isinstance(defaults[key], float) and type(listed[key]) is int
                 and listed[key] == defaults[key])
    }
    assert not wrong, f"{REFERENCE.name} values (reference, default) differ: {wrong}"


def test_reference_config_equals_defaults_after_loading():
    cfg = load_config(REFERENCE)
    expected = Config()
    for key, value in NOT_DEFAULT.items():
        section, name = key.split(".")
        setattr(getattr(expected, section), name, value)
    assert cfg == expected


def test_every_key_is_commented():
    """Each section and each key has a comment on its line or on the line(s) just above."""
    text = REFERENCE.read_text(encoding="utf-8")
    lines = text.splitlines()
    uncommented = []

    def walk(node, prefix):
        for key_node, value_node in node.value:
            key = f"{prefix}{key_node.value}"
            i = key_node.start_mark.line
            if "#" not in lines[i] and not lines[i - 1].lstrip().startswith("#"):
                uncommented.append(f"{REFERENCE.name}:{i + 1}: {key}")
            if isinstance(value_node, yaml.MappingNode):
                walk(value_node, key + ".")

    walk(yaml.compose(text), "")
    assert not uncommented, "keys without a comment:\n" + "\n".join(uncommented)


def key_comments() -> dict[str, str]:
    """Dotted key -> its comment in reference.yaml: the `#` lines just above it and the
    comment on its own line."""
    lines = REFERENCE.read_text(encoding="utf-8").splitlines()
    out: dict[str, str] = {}

    def walk(node, prefix):
        for key_node, value_node in node.value:
            key, i = f"{prefix}{key_node.value}", key_node.start_mark.line
            above = []
            j = i - 1
            while j >= 0 and lines[j].lstrip().startswith("#"):
                above.insert(0, lines[j].strip().lstrip("# "))
                j -= 1
            inline = lines[i].split("#", 1)[1] if "#" in lines[i] else ""
            out[key] = " ".join(above + [inline])
            if isinstance(value_node, yaml.MappingNode):
                walk(value_node, key + ".")

    walk(yaml.compose("\n".join(lines)), "")
    return out


def checked_fields(cls=Config, prefix: str = ""):
    """(dotted key, Rule) for every field declared with seqlab.config.check."""
    instance = cls()
    for f in dataclasses.fields(cls):
        value = getattr(instance, f.name)
        if dataclasses.is_dataclass(value):
            yield from checked_fields(type(value), f"{prefix}{f.name}.")
        elif "rule" in f.metadata:
            yield f"{prefix}{f.name}", f.metadata["rule"]


def test_every_range_is_in_the_comment():
    """A key whose value has a range (check(default, "> 0")) says so in its comment, in the
    same words as the error message ("> 0", "in [0, 1)", ...)."""
    comments = key_comments()
    silent = [f"{key}: {rule.text!r}" for key, rule in checked_fields()
              if rule.text not in comments[key]]
    assert not silent, "ranges missing from reference.yaml comments:\n" + "\n".join(silent)
