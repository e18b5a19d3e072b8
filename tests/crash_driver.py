"""Run ``synthface generate ARGS`` and kill -9 this process at an event: ``python crash_driver.py EVENT ARGS``.

EVENT is ``batch:N`` (after the N-th batch is written into a shard), ``commit:N`` (after the N-th
shard is renamed into place) or ``manifest`` (manifest complete under its temporary name): the
``events`` hook of :func:`synthface.generate.generate`, injected here, never by the library itself.
"""

from __future__ import annotations

import functools
import os
import signal
import sys

import synthface.cli.generate_cmd as generate_cmd
from synthface.cli import main

counts: dict[str, int] = {}


def kill_at(target: str, name: str) -> None:
    counts[name] = counts.get(name, 0) + 1
    if target in (name, f"{name}:{counts[name]}"):
        os.kill(os.getpid(), signal.SIGKILL)


if __name__ == "__main__":
    target, args = sys.argv[1], sys.argv[2:]
    generate_cmd.generate = functools.partial(generate_cmd.generate, events=functools.partial(kill_at, target))
    main(["generate", *args])
