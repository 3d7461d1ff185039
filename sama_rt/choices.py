"""Named choices (backends, precisions) as string enums that parse with a helpful error."""
from __future__ import annotations

import enum
import re


class Choice(str, enum.Enum):
    """A str enum whose `parse` accepts a member or its (case-insensitive) value and names
    the valid values when given anything else."""

    @classmethod
    def parse(cls, value, also_valid: tuple[str, ...] = ()):
        """`also_valid`: names the caller handles itself (e.g. "auto"), listed in the error."""
        if isinstance(value, cls):
            return value
        try:
            return cls(str(value).lower())
        except ValueError:
            valid = ", ".join([member.value for member in cls] + list(also_valid))
            label = re.sub(r"(?<!^)(?=[A-Z])", " ", cls.__name__).lower()  # AttentionBackend -> attention backend
            raise ValueError(f"unknown {label} {value!r}; valid: {valid}") from None
