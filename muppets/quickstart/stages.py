"""Resumable stages under one wall-clock budget: what `muppets quickstart` is made of.

A stage is a function run in its own folder `<out>/<name>/` that returns a dict of results. When
it finishes, the runner writes `<name>/done.json` (atomically) with those results, its wall time
and a fresh id. A later run skips a stage whose marker exists and whose inputs are the same: the
ids of the stages it needs. So an interrupted run resumes from the finished stages, and a redone
stage makes the stages built on it stale (they are redone too, after their folder is cleared).
A stage without a marker, whose inputs were not redone, starts in whatever its folder holds: a
pretraining stage resumes from its last checkpoint, the others clear the folder first.

Every stage gets a fixed share of the budget. Before each stage one line says where the run is:
    [3/12] pretrain BERT (bert-tiny, MLM + NSP) (budget 3m36s) | elapsed 0m02s, about 11m38s to go,
    done by 19:21
The "to go" estimate is the budget of the stages not yet done; the training stages show their
own progress bar with tqdm's ETA.
"""

from __future__ import annotations

import json
import os
import shutil
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

MARKER = "done.json"


@dataclass(frozen=True)
class Stage:
    name: str  # its folder under the run directory, and its key in the results
    title: str  # what the progress line says
    share: float  # of the whole budget
    run: Callable[[StageContext], dict]
    needs: tuple[str, ...] = ()  # stages whose results it reads: redone when one is redone


@dataclass
class StageContext:
    """What a stage function receives: its folder, its seconds, the results so far."""

    out: Path  # the run directory
    directory: Path  # <out>/<name>
    seconds: float  # this stage's share of the budget
    done: dict[str, dict] = field(default_factory=dict)  # name -> results of finished stages


def format_seconds(seconds: float) -> str:
    """125.3 -> '2m05s'; 3725 -> '1h02m05s'."""
    seconds = max(0, round(seconds))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}h{m:02d}m{s:02d}s" if h else f"{m}m{s:02d}s"


def read_marker(directory: Path) -> dict | None:
    path = directory / MARKER
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError:  # written atomically, so only a hand edit gets here: redo
        return None


def write_marker(directory: Path, record: dict) -> None:
    """done.json via a temporary file and a rename: a marker is either whole or absent."""
    directory.mkdir(parents=True, exist_ok=True)
    temporary = directory / (MARKER + ".tmp")
    temporary.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    os.replace(temporary, directory / MARKER)


class StageRunner:
    """Runs (or skips) stages in order, remembering the records of every stage finished or
    skipped, and which ran in this invocation (their dependents are redone). `order` names every
    stage of the run, for the "[i/n]" of the progress lines; `start` is the run's start on the
    monotonic clock (shared by the processes of one machine), so a second lane's lines say the
    run's elapsed time too."""

    def __init__(self, out: Path, budget_seconds: float, order: list[str], clock=time.perf_counter):
        self.out, self.budget_seconds, self.order, self.clock = out, budget_seconds, order, clock
        self.records: dict[str, dict] = {}
        self.ran: set[str] = set()  # stages run (not skipped) in this invocation
        self.start = clock()

    def load(self, names: list[str]) -> None:
        """Take the records of stages another process finished (their done.json)."""
        for name in names:
            record = read_marker(self.out / name)
            if record is None:
                raise ValueError(f"stage {name} has no {MARKER}: it did not finish")
            self.records[name] = record

    def up_to_date(self, stages: list[Stage]) -> bool:
        """Whether every one of `stages` would be skipped: finished, on the same inputs."""
        ids = {name: record["id"] for name, record in self.records.items()}
        for stage in stages:
            record = read_marker(self.out / stage.name)
            if record is None or record.get("needs") != {n: ids.get(n) for n in stage.needs}:
                return False
            ids[stage.name] = record["id"]
        return True

    def run(self, stages: list[Stage], later_share: float = 0.0) -> None:
        """Run or skip `stages`; `later_share` is the budget share of what follows them (for the
        "to go" estimate)."""
        for position, stage in enumerate(stages):
            known = set(self.records).union(s.name for s in stages[:position])
            unknown = [n for n in stage.needs if n not in known]
            if unknown:
                raise ValueError(f"stage {stage.name} needs {unknown}, not an earlier stage")
        for position, stage in enumerate(stages):
            rest = sum(s.share for s in stages[position:] if s.name not in self.records)
            self._run_one(stage, (rest + later_share) * self.budget_seconds)

    def _run_one(self, stage: Stage, left: float) -> None:
        directory = self.out / stage.name
        tag = f"[{self.order.index(stage.name) + 1}/{len(self.order)}] {stage.title}"
        needs = {n: self.records[n]["id"] for n in stage.needs}
        previous = read_marker(directory)
        if previous is not None and previous.get("needs") == needs:
            print(f"{tag}: finished in an earlier run, skipped ({directory / MARKER})")
            self.records[stage.name] = previous
            return
        if directory.exists() and (previous is not None or self.ran.intersection(stage.needs)):
            shutil.rmtree(directory)  # built on outputs that were just redone: stale
        seconds = stage.share * self.budget_seconds
        finish = time.strftime("%H:%M", time.localtime(time.time() + left))
        elapsed = format_seconds(self.clock() - self.start)
        print(
            f"{tag} (budget {format_seconds(seconds)}) | elapsed {elapsed}, about "
            f"{format_seconds(left)} to go, done by {finish}",
            flush=True,
        )
        finished = {n: r["results"] for n, r in self.records.items()}
        context = StageContext(self.out, directory, seconds, finished)
        began = self.clock()
        try:
            results = stage.run(context)
        except KeyboardInterrupt:
            print(f"\n{tag}: interrupted; run the same command again to resume from this stage")
            raise
        record = {
            "stage": stage.name,
            "id": uuid.uuid4().hex,
            "needs": needs,
            "seconds": self.clock() - began,
            "budget_seconds": seconds,
            "finished": time.strftime("%Y-%m-%dT%H:%M:%S"),
            "results": results,
        }
        write_marker(directory, record)
        self.records[stage.name] = record
        self.ran.add(stage.name)
        print(f"{tag}: done in {format_seconds(record['seconds'])}", flush=True)


def run_stages(
    stages: list[Stage], out: Path, budget_seconds: float, clock=time.perf_counter
) -> dict[str, dict]:
    """Run (or skip) every stage in order, in this process; returns name -> marker record (with
    "results")."""
    runner = StageRunner(out, budget_seconds, [s.name for s in stages], clock)
    runner.run(stages)
    print(f"all {len(stages)} stages done; this run took {format_seconds(clock() - runner.start)}")
    return runner.records
