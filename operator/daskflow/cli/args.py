"""What the ``daskflow`` commands share: exit codes and the parsing of common arguments."""

from __future__ import annotations

import argparse
from typing import Any

import yaml

from ..model.reader import load_yaml
from ..model.validate import ManifestError

EXIT_OK, EXIT_FAILED, EXIT_INVALID = 0, 1, 2


def parse_set(pairs: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key:
            raise ManifestError([f"--set {pair!r}: expected NAME=VALUE"], "command line")
        try:
            pair.encode()
        except UnicodeEncodeError:  # undecodable bytes on the command line
            raise ManifestError([f"--set {key}: not UTF-8 text"], "command line") from None
        try:
            out[key] = load_yaml(raw) if raw else ""
        except yaml.YAMLError:
            out[key] = raw
    return out


def at_least_one(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value
