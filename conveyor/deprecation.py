"""Deprecated names: each old name works for one more release and warns where it is used.

    if TYPE_CHECKING:
        JobError = FailedAttempt                  # type checkers see the alias
    else:
        __getattr__ = renamed(__name__, {"JobError": ("conveyor.FailedAttempt", lambda: FailedAttempt)})

Type checkers are given the plain alias (a module ``__getattr__`` would make every misspelt name
``Any``); at run time the module's ``__getattr__`` serves the old name with a DeprecationWarning.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping


def deprecated(old: str, new: str, stacklevel: int = 3) -> None:
    """Warn that ``old`` is deprecated in favour of ``new`` (at the caller's caller by default)."""
    warnings.warn(f"{old} is deprecated and goes in the next release; use {new}", DeprecationWarning, stacklevel=stacklevel)


def renamed(module: str, names: Mapping[str, tuple[str, Callable[[], object]]]) -> Callable[[str], object]:
    """A module ``__getattr__`` serving each old name (``{old: (new name to show, getter)}``) with a warning."""

    def __getattr__(name: str) -> object:
        if name in names:
            new, get = names[name]
            deprecated(f"{module}.{name}", new)
            return get()
        raise AttributeError(f"module {module!r} has no attribute {name!r}")

    return __getattr__
