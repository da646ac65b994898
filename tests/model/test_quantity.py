"""Kubernetes quantities as numbers: the memory limit of local workers depends on them."""

from __future__ import annotations

from decimal import Decimal

import pytest

from daskflow.model.quantity import parse_quantity, quantity_bytes


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("512Mi", 512 * 2**20),
        ("2G", 2 * 10**9),
        ("1.5Gi", 3 * 2**29),
        ("1Ki", 1024),
        ("1Ti", 2**40),
        ("1Pi", 2**50),
        ("1Ei", 2**60),
        ("100k", 100_000),
        ("3M", 3 * 10**6),
        ("1T", 10**12),
        ("1P", 10**15),
        ("1E", 10**18),
        ("128974848", 128974848),
        ("129e6", 129 * 10**6),
        ("1E3", 1000),  # an exponent, not exa
        ("5e-1", Decimal("0.5")),
        ("500m", Decimal("0.5")),
        ("0.1", Decimal("0.1")),
        (".5", Decimal("0.5")),
        ("+2", 2),
        ("0", 0),
    ],
)
def test_parse_quantity(text: str, value: Decimal | int) -> None:
    assert parse_quantity(text) == value


@pytest.mark.parametrize(
    "text", ["", "lots", "512MB", "1 Gi", "-1Gi", "Gi", "1.2.3", "1e", "2ki", "1e99999", "0x10"]
)
def test_not_a_quantity(text: str) -> None:
    with pytest.raises(ValueError, match=r"quantity|exponent"):
        parse_quantity(text)


@pytest.mark.parametrize(("text", "size"), [("1.5Gi", 1610612736), ("1k", 1000), ("1500m", 2)])
def test_quantity_bytes_rounds_up(text: str, size: int) -> None:
    assert quantity_bytes(text) == size
