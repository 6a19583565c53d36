"""The one exception type a user sees: a message that names the problem and what to do."""

from __future__ import annotations


class VQVideoError(Exception):
    """A problem with the user's input, params or files; printed as one line, no traceback."""


class MissingInputError(VQVideoError):
    pass


class ConfigError(VQVideoError):
    pass


class DivergenceError(VQVideoError):
    """Training produced a NaN or inf loss."""

    def __init__(self, what: str, step: int, value: float):
        self.step = step
        self.value = value
        super().__init__(
            f"{what} diverged: loss is {value} at step {step}; the last good checkpoint is kept. "
            "Lower the learning rate (train.lr / prior.lr) or raise train.grad_clip, then re-run."
        )


def require_file(path, what: str, hint: str) -> None:
    """Fail early with a message naming the missing input and the stage that makes it."""
    from pathlib import Path

    p = Path(path)
    if not p.exists():
        raise MissingInputError(f"{what} not found at {p}: {hint}")
