"""Kubernetes resource quantities (``512Mi``, ``2G``, ``500m``, ``1e9``) as numbers.

A FlowRun's ``cluster.resources`` holds Kubernetes quantities. The API server checks them on
Kubernetes; ``daskflow run`` needs their value too (the memory limit of local workers), so
both sides read them with this one parser.
"""

from __future__ import annotations

import math
import re
from decimal import Decimal

_NUMBER = r"(?:\d+(?:\.\d*)?|\.\d+)"
QUANTITY = re.compile(
    rf"^(?P<number>\+?{_NUMBER})"
    rf"(?:(?P<suffix>Ki|Mi|Gi|Ti|Pi|Ei|m|k|M|G|T|P|E)|[eE](?P<exponent>[+-]?{_NUMBER}))?$"
)
_FACTOR: dict[str | None, Decimal] = {
    None: Decimal(1),
    "m": Decimal("0.001"),
    "k": Decimal(10) ** 3,
    "M": Decimal(10) ** 6,
    "G": Decimal(10) ** 9,
    "T": Decimal(10) ** 12,
    "P": Decimal(10) ** 15,
    "E": Decimal(10) ** 18,
    **{s: Decimal(1024) ** (i + 1) for i, s in enumerate(("Ki", "Mi", "Gi", "Ti", "Pi", "Ei"))},
}
EXAMPLES = "such as 512Mi, 2G, 1.5Gi or 500m"


def parse_quantity(text: str) -> Decimal:
    """The value of a non-negative Kubernetes quantity; ValueError if it is not one."""
    match = QUANTITY.match(text.strip())
    if match is None:
        raise ValueError(f"{text!r} is not a Kubernetes quantity {EXAMPLES}")
    value = Decimal(match["number"])
    if match["exponent"] is not None:
        exponent = Decimal(match["exponent"])
        if abs(exponent) > 30:
            raise ValueError(f"{text!r}: exponent out of range")
        return value * Decimal(10) ** exponent
    return value * _FACTOR[match["suffix"]]


def quantity_bytes(text: str) -> int:
    """A memory quantity in whole bytes (rounded up, as Kubernetes does)."""
    return math.ceil(parse_quantity(text))
