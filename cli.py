"""Leaf helpers of every entry point: errors that exit with one line, and device resolution.

No project imports, so any module (library or script) can use them without import cycles;
`utils` re-exports them under BigGAN-PyTorch's module name.
"""
from __future__ import annotations

import os
import sys
from typing import NoReturn

import torch


class UserError(Exception):
    """A problem with the user's input (flag, file, data): printed as one line, exit code 2."""


def fail(message: str) -> NoReturn:
    """Print `error: message` to stderr and exit with status 2."""
    print(f"error: {message}", file=sys.stderr, flush=True)
    raise SystemExit(2)


def run_cli(main, argv: list[str] | None = None) -> None:
    """Run `main(argv)`, turning UserError/ValueError/OSError into a one-line exit 2.

    Bugs (any other exception) keep their traceback.
    """
    try:
        main(argv)
    except (UserError, ValueError, OSError) as err:  # OSError: full disk, unwritable folder, ...
        fail(str(err).splitlines()[0] if str(err) else type(err).__name__)
    except KeyboardInterrupt:
        fail("interrupted")


def resolve_device(name: str = "auto") -> torch.device:
    """'auto' -> CUDA when available (this process's LOCAL_RANK device under torchrun), else CPU."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda":
        if not torch.cuda.is_available():
            raise UserError("--device cuda was requested but no CUDA device is visible; use --device cpu")
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return torch.device(name)
