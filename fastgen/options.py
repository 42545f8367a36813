"""The `fastgen train` options, derived from the config dataclasses (fastgen/config.py): each
field's metadata gives its help text, choices and group, the dataclasses give the defaults
and which trainer has the field; and --checkpoint latest|best, shared by `fastgen sample`
and `fastgen export`. No torch here: `fastgen train --help` stays fast."""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Iterator
from typing import Any, NamedTuple

from fastgen.config import GANConfig, VAEConfig

GROUPS = ("data", "run", "optimiser", "model", "dcgan", "vae")
TRAINERS = {"dcgan": GANConfig, "vae": VAEConfig}


class Option(NamedTuple):
    field: str  # the config field (and the argparse dest)
    flag: str  # the option without "--"
    trainers: list[str]  # the trainers whose config has the field
    meta: dict[str, Any]
    defaults: dict[str, Any]  # trainer -> default


def options() -> Iterator[Option]:
    fields: dict[str, dict] = {}
    for kind, cls in TRAINERS.items():
        for f in dataclasses.fields(cls):
            entry = fields.setdefault(f.name, {"field": f, "kinds": [], "defaults": {}})
            entry["kinds"].append(kind)
            entry["defaults"][kind] = f.default
    for name, entry in fields.items():
        meta = dict(entry["field"].metadata)
        flag = meta.get("flag", name.replace("_", "-"))
        yield Option(name, flag, entry["kinds"], meta, entry["defaults"])


def flag_of(field: str) -> str:
    return "--" + next(o.flag for o in options() if o.field == field)


def _default_text(defaults: dict) -> str:
    shown = {kind: ("none" if value in ("", None) else value) for kind, value in defaults.items()}
    values = set(map(str, shown.values()))
    if len(values) == 1:
        return f"default: {next(iter(values))}"
    return "defaults: " + ", ".join(f"{kind} {value}" for kind, value in shown.items())


def add_options(p: argparse.ArgumentParser) -> dict[str, argparse._ArgumentGroup]:
    """Adds every config field as an option (unset ones keep the config's or the
    checkpoint's value: their default is SUPPRESS); returns the groups by name."""
    groups = {name: p.add_argument_group(name) for name in GROUPS}
    for option in options():
        name, flag, kinds, meta, defaults = option
        group = groups[meta.get("group", "run")]
        only = "" if len(kinds) == 2 or meta.get("group") in kinds else f" ({kinds[0]} only)"
        text = f"{meta.get('help', '')}{only}; {_default_text(defaults)}"
        kwargs = dict(dest=name, default=argparse.SUPPRESS, help=text.replace("%", "%%"))
        field_type = type(next(iter(defaults.values())))
        if field_type is bool:  # a switch, off unless given
            store = "store_false" if flag.startswith("no-") else "store_true"
            kwargs["help"] = f"{meta.get('help', '')}{only}"
            group.add_argument(f"--{flag}", action=store, **kwargs)
            continue
        kwargs["metavar"] = flag.upper().replace("-", "_")
        choices = meta.get("choices")
        if name == "amp":
            kwargs.update(choices=["none" if c == "" else c for c in choices], metavar=None)
        elif choices is not None:
            kwargs.update(choices=list(choices), type=type(choices[0]), metavar=None)
        elif field_type in (int, float):
            kwargs.update(type=field_type)
        group.add_argument(f"--{flag}", **kwargs)
    return groups


def config_from_options(trainer: str, values: dict[str, Any]):
    """The trainer's config from the given options (field -> value); validate() is the one
    check. An option another trainer's config has is a ValueError naming it."""
    trainers = {o.field: o.trainers for o in options()}
    fields = {}
    for name, value in values.items():
        if trainer not in trainers[name]:
            raise ValueError(f"{flag_of(name)} does not apply to `fastgen train {trainer}`")
        fields[name] = "" if name == "amp" and value == "none" else value
    config = TRAINERS[trainer](**fields)
    config.validate()
    return config


def add_which_checkpoint(p: argparse.ArgumentParser) -> None:
    """--checkpoint latest|best of `fastgen sample` and `fastgen export`: which checkpoint of a
    run folder CKPT names."""
    p.add_argument(
        "--checkpoint", dest="which", choices=["latest", "best"], default="latest",
        help="with a run folder: its newest checkpoint, or best (checkpoints/best.pt, the "
        "best evaluation's); default: latest",
    )  # fmt: skip
