"""A second lane of stages in a second process, beside the first: the quickstart's way to use a
second core. Each process trains on one torch thread, so the two lanes do not fight over cores
(two threads in one process lose up to 8x as soon as anything else runs).

The process is spawned (not forked: the parent has run Rust and OpenMP thread pools) and writes
its output to a log file; when it ends, its stage lines are repeated on the parent's output so
the run reads as one story. A lane that stops with an error stops the run with its last line and
the log's path; Ctrl-C reaches both processes, a lane whose parent is gone (killed, even with
SIGKILL) stops within a second instead of training on unseen, and the same command resumes both
lanes from their finished stages.
"""

from __future__ import annotations

import multiprocessing
import os
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

from muppets.errors import TrainingError

STAGE_LINE = "["  # the runner's progress lines start with "[i/n]"


def _in_log(log: Path, parent: int, function: Callable, args: tuple) -> None:
    """The child: stdout and stderr (file descriptors too, for native code and tqdm) into `log`;
    it ends itself when `parent` is no longer its parent."""
    threading.Thread(target=_end_with, args=(parent,), daemon=True).start()
    with open(log, "a", encoding="utf-8") as stream:
        os.dup2(stream.fileno(), 1)
        os.dup2(stream.fileno(), 2)
    sys.stdout = open(1, "w", encoding="utf-8", buffering=1, closefd=False)
    sys.stderr = open(2, "w", encoding="utf-8", buffering=1, closefd=False)
    function(*args)


def _end_with(parent: int, every: float = 0.5) -> None:
    """Exit the process once it has been re-parented: the first lane died without stopping it
    (SIGTERM or SIGKILL skip `stop_lane`). Checkpoints are written atomically, so a resume is
    safe."""
    while os.getppid() == parent:
        time.sleep(every)
    print(f"lane 2: the first lane's process ({parent}) is gone; stopping", flush=True)
    os._exit(1)


def start_lane(function: Callable, args: tuple, log: Path) -> multiprocessing.Process:
    """Start `function(*args)` in a spawned process writing to `log` (appended: a resumed run
    keeps the earlier attempt's lines). `function` must be importable (module level)."""
    log.parent.mkdir(parents=True, exist_ok=True)
    process = multiprocessing.get_context("spawn").Process(
        target=_in_log, args=(log, os.getpid(), function, args), name="muppets-lane-2"
    )
    process.start()
    return process


def finish_lane(process: multiprocessing.Process, log: Path, offset: int) -> None:
    """Wait for the lane; repeat its stage lines written after `offset` (bytes); a lane that
    failed is a TrainingError naming its last line and the log."""
    process.join()
    with open(log, encoding="utf-8", errors="replace") as stream:
        stream.seek(offset)
        lines = [line.rstrip("\n") for line in stream.read().replace("\r", "\n").split("\n")]
    for line in lines:
        if line.startswith(STAGE_LINE):
            print(f"{line} (lane 2)")
    if process.exitcode != 0:
        said = [line for line in lines if line.strip()]
        last = said[-1].strip() if said else f"exit code {process.exitcode}"
        raise TrainingError(f"the second lane stopped: {last} (its log: {log})")


def stop_lane(process: multiprocessing.Process, interrupted: bool) -> None:
    """The first lane stopped early. After Ctrl-C the second got the same signal (one process
    group): wait for it to stop at its own pace. After an error, terminate it (its checkpoints
    are written atomically, so the same command resumes it)."""
    if not interrupted:
        process.terminate()
    process.join(30.0)
    if process.is_alive():
        process.kill()
        process.join()
