"""Parameter helpers: declare with a descriptor (description + range) and read back in one call."""

from __future__ import annotations

from typing import Any

from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor
from rclpy.exceptions import InvalidParameterTypeException, InvalidParameterValueException
from rclpy.node import Node

from perception.errors import ConfigError


def declare(node: Node, name: str, default: Any, description: str, *, low: float | None = None,
            high: float | None = None, read_only: bool = False) -> Any:
    """Declare ``name`` with a descriptor and return its value (from a params file or ``default``).

    ``low``/``high`` become a ROS range (both must be given for numbers), so ``ros2 param set`` refuses
    values out of range; the value loaded at start-up is checked here too and raises :class:`ConfigError`.
    """
    # Floats accept ints too ("rate:=1" from a launch file), then read back as float.
    desc = ParameterDescriptor(description=description, read_only=read_only,
                               dynamic_typing=isinstance(default, float))
    if low is not None and high is not None:
        if isinstance(default, bool):
            raise ConfigError("a range makes no sense for a bool parameter", f"{node.get_name()}:{name}")
        if isinstance(default, int):
            desc.integer_range = [IntegerRange(from_value=int(low), to_value=int(high), step=0)]
        else:
            desc.floating_point_range = [FloatingPointRange(from_value=float(low), to_value=float(high), step=0.0)]
    where = f"{node.get_fully_qualified_name()}:{name}"
    try:
        value = node.declare_parameter(name, default, desc).value
    except (InvalidParameterTypeException, InvalidParameterValueException) as exc:
        raise ConfigError(str(exc), where) from exc
    if isinstance(default, float):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"expected a number, got {value!r}", where)
        value = float(value)
    if low is not None and high is not None and not (low <= value <= high):
        raise ConfigError(f"{value} is outside [{low}, {high}]", where)
    return value
