"""Node parameters that take what a user types: every value is declared with dynamic typing and read as
the type of its default, so `-p rate:=20` (an integer to rcl) still gives the float the node needs, and
`-p checkpoint:="2024"` stays a string."""

from __future__ import annotations

from rcl_interfaces.msg import ParameterDescriptor
from rclpy.node import Node

_TRUE, _FALSE = ("true", "1", "yes", "on"), ("false", "0", "no", "off")


def declare(node: Node, defaults: dict) -> dict:
    """Declare ``defaults`` on ``node`` and return their values, each converted to its default's type;
    a value that cannot be read so raises ValueError naming the parameter."""
    descriptor = ParameterDescriptor(dynamic_typing=True)
    return {
        name: coerce(name, node.declare_parameter(name, default, descriptor).value, type(default))
        for name, default in defaults.items()
    }


def coerce(name: str, value, kind: type):
    try:
        if kind is bool:
            text = str(value).strip().lower()
            if text not in _TRUE + _FALSE:
                raise ValueError
            return text in _TRUE
        if kind is int:
            number = float(value)
            if not number.is_integer():
                raise ValueError
            return int(number)
        return kind(value)
    except (TypeError, ValueError):
        raise ValueError(f"parameter {name!r}: cannot read {value!r} as {kind.__name__}") from None
