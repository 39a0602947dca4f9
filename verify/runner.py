"""One task runner for every command that runs many independent jobs.

A *task* is a module-level function of one small JSON-serialisable config dict (its seed included)
that returns a JSON-serialisable record, and it is pure: the same config gives the same record in
any process.  ``run_tasks`` runs a list of configs

- in this process (``workers=1``), on ``workers`` local processes (default: one per core), or on a
  Dask distributed cluster (``scheduler``: its address, or ``local:N`` for a ``LocalCluster`` of N
  processes started here).  Every task runs with one torch thread, so the records are the same,
  every number equal, in all three, whatever order the tasks finish in;
- appends each finished task to ``OUT/results.jsonl`` at once (flushed and fsynced), one JSON line
  ``{"key", "task", "version", "config", "status", "record" | "error", "seconds"}``, where ``key``
  hashes the task function's name, its config and the package version.  A sweep killed at any
  moment loses only the tasks that were running; ``resume`` skips the tasks recorded "ok";
- records a task that raises as "failed" with its one-line error and goes on;
- on Ctrl-C (or SIGTERM, as batch systems send before a kill) stops, keeps every finished record
  and says how to resume;
- shows tasks done / total, failed, running and an ETA on stderr: a bar on a terminal, plain lines
  otherwise.

Every record passes through JSON before it is returned, so a resumed sweep's records (read back
from the file) equal an uninterrupted one's.  Commands add the flags with ``add_runner_flags`` and
run with ``run_with_args``.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import hashlib
import importlib.metadata
import itertools
import json
import math
import multiprocessing
import os
import pickle
import re
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, BrokenExecutor, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path

import torch

from numerics.markov import InvalidInputError

RESULTS_FILE = "results.jsonl"
#: Seconds to reach a Dask scheduler before giving up (a reachable one answers in milliseconds).
CONNECT_SECONDS = 10

Task = Callable[[dict], object]


class SchedulerError(InvalidInputError):
    """A ``--scheduler`` that is malformed or cannot be reached (one line, exit 2)."""


@dataclass(frozen=True)
class RunResult:
    """The outcome of ``run_tasks``.

    ``entries[i]`` is config i's line of the results file (a dict with "status" "ok" and its "record",
    or "failed" and its "error"), or None when the sweep was interrupted before it finished.
    """

    entries: list[dict | None]
    resumed: int  # tasks read back from the results file instead of run
    interrupted: bool
    results_file: Path | None

    @property
    def records(self) -> list:
        """The records in config order; None for a task that failed or did not run."""
        return [e["record"] if e is not None and e["status"] == "ok" else None for e in self.entries]

    @property
    def failed(self) -> int:
        return sum(e is not None and e["status"] == "failed" for e in self.entries)

    @property
    def exit_code(self) -> int:
        """130 interrupted (the shell's code for Ctrl-C), 1 some task failed, else 0."""
        return 130 if self.interrupted else 1 if self.failed else 0


def default_workers() -> int:
    """The cores this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


@functools.cache
def package_version() -> str:
    try:
        return importlib.metadata.version("markov-attention-verify")
    except importlib.metadata.PackageNotFoundError:  # run from a source tree that was never installed
        return "unknown"


def task_name(fn: Task) -> str:
    return f"{fn.__module__}.{fn.__qualname__}"


def importable(fn: Task) -> Task:
    """``fn`` under its module's import name when that module runs as ``python -m NAME`` (where its
    functions belong to ``__main__``): workers then import it by name, and its task keys do not depend
    on how the command was started."""
    spec = getattr(sys.modules.get(fn.__module__), "__spec__", None)
    if fn.__module__ != "__main__" or spec is None:
        return fn
    return functools.reduce(getattr, fn.__qualname__.split("."), importlib.import_module(spec.name))


def task_key(fn: Task, config: dict) -> str:
    """A hash of the task function's name, its config (as JSON, keys sorted) and the package version."""
    text = json.dumps({"task": task_name(fn), "config": config, "version": package_version()},
                      sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:20]


def one_line(err: BaseException) -> str:
    """``Type: first line of the message``, and its cause's the same way (Dask wraps a worker's
    ModuleNotFoundError in a RuntimeError whose first line does not name it)."""
    lines = str(err).strip().splitlines()
    text = f"{type(err).__name__}: {lines[0]}" if lines else type(err).__name__
    return text if err.__cause__ is None else f"{text} (caused by {one_line(err.__cause__)})"


def load_results(out: Path) -> dict[str, dict]:
    """The entries of ``out/results.jsonl`` by task key, the last one of a key winning; a line cut short
    by a kill is skipped."""
    path = Path(out) / RESULTS_FILE
    entries: dict[str, dict] = {}
    if path.exists():
        for line in path.read_text().splitlines():
            with contextlib.suppress(json.JSONDecodeError):
                entry = json.loads(line)
                if isinstance(entry, dict) and "key" in entry:
                    entries[entry["key"]] = entry
    return entries


def execute(fn: Task, config: dict) -> tuple[str, str, float]:
    """Run one task with one torch thread: ("ok", its record as JSON text, seconds), or ("failed", its
    one-line error, seconds).

    A task's own exception is its recorded outcome, not retried: the task is pure, so it would fail
    the same way again.  (Tasks lost with a worker are another matter: Dask reschedules them.)
    """
    torch.set_num_threads(1)
    start = time.perf_counter()
    try:
        status, text = "ok", json.dumps(fn(config))
    except Exception as err:
        status, text = "failed", one_line(err)
    return status, text, time.perf_counter() - start


# An engine runs (key, config) pairs and yields (key, outcome of ``execute``, tasks still running).
Runs = Iterator[tuple[str, tuple[str, str, float], int]]


def _in_process(fn: Task, todo: list[tuple[str, dict]]) -> Runs:
    previous = torch.get_num_threads()
    try:
        for i, (key, config) in enumerate(todo):
            yield key, execute(fn, config), 0 if i == len(todo) - 1 else 1
    finally:
        torch.set_num_threads(previous)


def _start_method() -> str | None:
    """fork on Linux: the workers start at once with this process's imports (spawn would import torch
    again in each, 2 s a worker on 2 busy cores).  Safe here because each worker takes one torch thread
    before any work, as torch's DataLoader workers do, and the executor forks all its workers before it
    starts a thread of its own; but not once CUDA is initialised (a forked child cannot use it): spawn
    then, which Linux does not default to before Python 3.14 (e.g. verify.experiments on a GPU reads its
    free memory before the pool starts).  Elsewhere: the platform's default."""
    if torch.cuda.is_initialized():
        return "spawn"
    return "fork" if sys.platform == "linux" else None


def _worker_init() -> None:
    # Ctrl-C reaches the whole process group: the parent stops the sweep and ends the workers, which
    # must not print a KeyboardInterrupt traceback each meanwhile; and the parent's SIGTERM handler
    # (forked with it) must not turn the parent's terminate() into one either
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    torch.set_num_threads(1)


def _on_pool(fn: Task, todo: list[tuple[str, dict]], workers: int) -> Runs:
    """At most ``workers`` tasks in flight, so that a stopped sweep has nothing queued to throw away."""
    pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context(_start_method()),
                               initializer=_worker_init)
    waiting = iter(todo)
    running: dict = {}

    def submit(n: int) -> None:
        for key, config in list(itertools.islice(waiting, n)):
            try:
                future = pool.submit(execute, fn, config)
            except BrokenExecutor as err:  # a worker died (e.g. out of memory): every task left fails
                future = Future()
                future.set_exception(err)
            running[future] = key

    try:
        submit(workers)
        while running:
            finished, _ = wait(running, return_when=FIRST_COMPLETED)
            keys = [running.pop(future) for future in finished]
            submit(len(finished))
            for future, key in zip(finished, keys):
                err = future.exception()
                yield key, ("failed", one_line(err), math.nan) if err else future.result(), len(running)
    except BaseException:
        # stopped: end the workers now, their tasks' results would be thrown away (Python 3.14 has
        # pool.terminate_workers(); before it the executor keeps its processes in _processes)
        workers_now = list((pool._processes or {}).values())
        pool.shutdown(wait=False, cancel_futures=True)
        for process in workers_now:
            process.terminate()
        raise
    pool.shutdown()


def _parse_scheduler(address: str) -> int | None:
    """N of ``local:N`` (a LocalCluster to start), None for the address of a running scheduler."""
    if not address.startswith("local:"):
        return None
    count = address.removeprefix("local:")
    if not count.isdigit() or int(count) < 1:
        raise SchedulerError(f"--scheduler local:N needs a worker count N >= 1, got {address!r}")
    return int(count)


@contextlib.contextmanager
def dask_client(address: str) -> Iterator:
    """A ``distributed.Client`` of the scheduler at ``address`` (or of a new LocalCluster of N one-thread
    worker processes for ``local:N``), closed afterwards; SchedulerError if it cannot be reached within
    CONNECT_SECONDS."""
    local = _parse_scheduler(address)
    try:
        from distributed import Client, LocalCluster
    except ImportError:
        raise SchedulerError("--scheduler needs Dask: python -m pip install -e '.[cluster]'") from None
    with contextlib.ExitStack() as stack:
        if local is None:
            try:
                client = Client(address, timeout=CONNECT_SECONDS)
            except Exception as err:  # refused, timed out, malformed: Dask raises OSError, ValueError, ...
                # Dask's message names its connector object (an address in memory): keep the reason only
                why = re.sub(r" in <[^>]*>", "", one_line(err))
                raise SchedulerError(f"cannot reach the Dask scheduler at {address}: {why}") from None
        else:
            cluster = stack.enter_context(LocalCluster(n_workers=local, threads_per_worker=1, processes=True))
            client = Client(cluster)
        yield stack.enter_context(client)


def _on_dask(client, fn: Task, todo: list[tuple[str, dict]]) -> Runs:
    """Every task submitted at once (the scheduler queues them); a task lost with its worker is
    rescheduled by Dask itself (``distributed.scheduler.allowed-failures`` times, then KilledWorker)."""
    from distributed import as_completed

    name = task_name(fn)
    futures = {client.submit(execute, fn, config, key=f"{name}-{key}", pure=False): key for key, config in todo}
    left = len(futures)
    try:
        for future in as_completed(futures):
            left -= 1
            try:
                outcome = future.result()
            except Exception as err:  # KilledWorker, or a task the workers cannot unpickle
                outcome = "failed", one_line(err), math.nan
            yield futures[future], outcome, min(left, sum(client.nthreads().values()))
    finally:
        client.cancel(list(futures))  # stopped: drop what is still queued (a no-op for finished tasks)


@contextlib.contextmanager
def _engine(fn: Task, todo: list[tuple[str, dict]], workers: int, scheduler: str | None) -> Iterator[tuple[Runs, str]]:
    """The runs and where they happen, in words."""
    if scheduler is not None:
        with dask_client(scheduler) as client:
            yield _on_dask(client, fn, todo), f"on the Dask cluster at {client.scheduler.address}"
    elif min(workers, len(todo)) <= 1:
        yield _in_process(fn, todo), "in this process"
    else:
        workers = min(workers, len(todo))
        yield _on_pool(fn, todo, workers), f"on {workers} local worker processes"


@contextlib.contextmanager
def _journal(path: Path | None, *, fresh: bool) -> Iterator[Callable[[dict], None]]:
    """A writer of results-file lines, each on disk (flushed, fsynced) when the call returns."""
    if path is None:
        yield lambda entry: None
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    cut = not fresh and path.exists() and path.stat().st_size and not path.read_bytes().endswith(b"\n")
    with path.open("w" if fresh else "a") as stream:
        if cut:  # the last line was cut short by a kill: end it, so that it stays one unreadable line
            stream.write("\n")

        def write(entry: dict) -> None:
            stream.write(json.dumps(entry) + "\n")
            stream.flush()
            os.fsync(stream.fileno())

        yield write


@contextlib.contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """SIGTERM (a batch system's notice before a kill) stops the sweep like Ctrl-C (main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum, frame):
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


class Progress:
    """Tasks done / total, failed, running and an ETA on ``stream``: a tqdm bar on a terminal, else a
    plain line every tenth of the tasks or ``seconds``.  The ETA counts only the tasks run now."""

    def __init__(self, total: int, done: int, *, enabled: bool = True, stream=None, seconds: float = 30.0) -> None:
        self.stream = sys.stderr if stream is None else stream
        self.enabled, self.total, self.done, self.initial, self.failed = enabled, total, done, done, 0
        self.every, self.seconds = max(1, math.ceil(total / 10)), seconds
        self.start = self.last_time = time.monotonic()
        self.last_done = done
        self.bar = None
        if enabled and self.stream.isatty():
            from tqdm import tqdm

            self.bar = tqdm(total=total, initial=done, desc="tasks", unit="task", file=self.stream)

    def say(self, text: str) -> None:
        if self.enabled:
            (self.bar.write if self.bar else print)(text, file=self.stream)

    def update(self, failed: bool, running: int) -> None:
        self.done += 1
        self.failed += failed
        if self.bar is not None:
            self.bar.set_postfix_str(f"{self.failed} failed, {running} running", refresh=False)
            self.bar.update()
            return
        now = time.monotonic()
        if self.enabled and (self.done - self.last_done >= self.every or now - self.last_time >= self.seconds
                             or self.done == self.total):
            self.last_done, self.last_time = self.done, now
            elapsed = now - self.start
            left = elapsed * (self.total - self.done) / (self.done - self.initial)
            print(f"tasks: {self.done}/{self.total} done, {self.failed} failed, {running} running, "
                  f"{elapsed:.0f} s elapsed, about {left:.0f} s left", file=self.stream, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _check_options(fn: Task, workers: int | None, scheduler: str | None, resume: bool, out: Path | None) -> None:
    try:
        pickle.dumps(fn)
    except (pickle.PicklingError, AttributeError, TypeError):
        raise TypeError(f"task {fn!r} must be a module-level function: workers receive it by name") from None
    if workers is not None and (isinstance(workers, bool) or not isinstance(workers, int) or workers < 1):
        raise InvalidInputError(f"--workers must be a whole number >= 1, got {workers!r}")
    if workers is not None and scheduler is not None:
        raise InvalidInputError("give --workers (local processes) or --scheduler (a Dask cluster), not both")
    if scheduler is not None:
        _parse_scheduler(scheduler)
    if resume and out is None:
        raise InvalidInputError("--resume needs an output folder holding results.jsonl")


def _entry(fn: Task, key: str, config: dict, outcome: tuple[str, str, float]) -> dict:
    """A task's line of the results file, from the outcome of ``execute``."""
    status, text, seconds = outcome
    result = {"record": json.loads(text)} if status == "ok" else {"error": text}
    return {"key": key, "task": task_name(fn), "version": package_version(), "config": config, "status": status,
            **result, "seconds": round(seconds, 3)}


def run_tasks(fn: Task, configs: Sequence[dict], *, out: Path | None = None, workers: int | None = None,
              scheduler: str | None = None, resume: bool = False, progress: bool = True) -> RunResult:
    """Run ``fn`` on every config (see the module docstring); the result lists them in config order.

    ``out``: the folder of results.jsonl (None: keep nothing on disk).  Without ``resume`` the file is
    started afresh; with it, tasks recorded "ok" there are read back instead of run.  Configs equal
    as JSON are one task.  Raises InvalidInputError (SchedulerError) for bad options or a scheduler
    that cannot be reached, before any task runs or the results file is touched; TypeError when a
    config or ``fn`` cannot be sent to a worker.
    """
    fn = importable(fn)
    _check_options(fn, workers, scheduler, resume, out)
    try:
        configs = [json.loads(json.dumps(c)) for c in configs]  # what a resumed run reads back
    except TypeError as err:
        raise TypeError(f"a task config must be JSON-serialisable: {err}") from None
    keys = [task_key(fn, c) for c in configs]
    path = None if out is None else Path(out) / RESULTS_FILE
    unique = dict(zip(keys, configs))
    done = {k: e for k, e in load_results(out).items() if k in unique and e.get("status") == "ok"} if resume else {}
    todo = [(k, c) for k, c in unique.items() if k not in done]
    resumed, interrupted = len(done), False
    with _engine(fn, todo, workers or default_workers(), scheduler) as (runs, where), \
            _journal(path, fresh=not resume) as write, _sigterm_as_interrupt():
        bar = Progress(len(unique), resumed, enabled=progress)
        bar.say(f"running {len(todo)} tasks {where}"
                + (f" ({resumed} already recorded in {path})" if resumed else ""))
        try:
            with contextlib.closing(runs):
                for key, outcome, running in runs:
                    done[key] = entry = _entry(fn, key, unique[key], outcome)
                    write(entry)
                    bar.update(entry["status"] == "failed", running)
        except KeyboardInterrupt:
            interrupted = True
        finally:
            bar.close()
    result = RunResult([done.get(k) for k in keys], resumed, interrupted, path)
    _summarise(result, len(unique), len(done), progress)
    return result


def _summarise(result: RunResult, total: int, finished: int, progress: bool) -> None:
    """One line on stderr for an interrupted sweep (always: how to resume) and for failures."""
    if result.interrupted:
        kept = (f"recorded in {result.results_file}; run the same command with --resume to finish the other "
                f"{total - finished}") if result.results_file else "finished; nothing was kept (no output folder)"
        print(f"interrupted: {finished}/{total} tasks {kept}", file=sys.stderr, flush=True)
    elif result.failed and progress:
        first = next(e["error"] for e in result.entries if e is not None and e["status"] == "failed")
        where = f"; errors in {result.results_file}" if result.results_file else ""
        print(f"{result.failed}/{len(result.entries)} tasks failed (first: {first}){where}", file=sys.stderr,
              flush=True)


def add_runner_flags(parser: argparse.ArgumentParser) -> None:
    """--workers, --scheduler and --resume, documented, in their own group of ``parser``'s help."""
    group = parser.add_argument_group("running the tasks (verify/runner.py)")
    group.add_argument("--workers", type=int, metavar="N",
                       help=f"local worker processes, one torch thread each (default: one per core, "
                            f"{default_workers()} here; 1 runs the tasks in this process)")
    group.add_argument("--scheduler", metavar="ADDRESS",
                       help="run the tasks on a Dask distributed cluster instead: its scheduler's address "
                            "(e.g. tcp://host:8786), or local:N to start a LocalCluster of N worker processes "
                            "here (needs the cluster extra: python -m pip install -e '.[cluster]')")
    group.add_argument("--resume", action="store_true",
                       help=f"read back the tasks already recorded in the output folder's {RESULTS_FILE} "
                            "instead of running them again (after Ctrl-C, a kill or failed tasks)")


def run_with_args(fn: Task, configs: Sequence[dict], args: argparse.Namespace, *, out: Path | None,
                  progress: bool = True) -> RunResult:
    """``run_tasks`` with the options of ``add_runner_flags``'s flags."""
    return run_tasks(fn, configs, out=out, workers=args.workers, scheduler=args.scheduler, resume=args.resume,
                     progress=progress)
