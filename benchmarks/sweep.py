"""Task runner (verify/runner.py): a sweep on two local workers against one, and Dask's cost per task.

1. ``--tasks`` equal short training runs (numerics.train: the tied one-layer model on the chain
   p = 0.5, q = 0.8, N = ``--seq-len``, ``--steps`` AdamW steps, seeds 0, 1, ...) run with
   ``workers=1`` (in this process) and ``workers=2`` (two forked worker processes), each timed in this
   process, pool start included, alternately ``--repeats`` times (medians), after one untimed short run
   that pays torch's first-use costs (2-3 s, once per process).  Target: ``workers=2`` at least 1.7
   times faster (the exit status is 1 when it is not: MISS).  Two cores that other processes keep busy
   cannot give it.
2. ``--overhead-tasks`` tasks that do nothing, through the local pool of 2 workers and through a Dask
   LocalCluster of 2 one-thread worker processes (started, and warmed up by one such sweep, beforehand):
   wall time per task in milliseconds of each, connection and pool start included.  Reported, no target.
The records of the training sweep are also checked equal across the local runs and the LocalCluster.
Run:  python benchmarks/sweep.py [--tasks 8] [--steps 300] [--seq-len 32] [--repeats 1] [--overhead-tasks 200]
      [--no-dask]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

from numerics.markov import InvalidInputError, MarkovChain, check_positive_int
from numerics.train import TrainConfig, train
from verify.cli import Parser, bad_input
from verify.runner import RunResult, run_tasks

RATIO_TARGET = 1.7


def training_run(config: dict) -> dict:
    """One short training run: its final test loss and test-loss curve."""
    result = train(MarkovChain(0.5, 0.8), TrainConfig(seq_len=config["seq_len"], steps=config["steps"],
                                                      seed=config["seed"]))
    return {"seed": config["seed"], "final_loss": result.final_loss, "test_loss": result.test_loss}


def nothing(config: dict) -> dict:
    return config


def timed(configs: list[dict], fn=training_run, **options) -> tuple[float, RunResult]:
    start = time.perf_counter()
    result = run_tasks(fn, configs, progress=False, **options)
    return time.perf_counter() - start, result


def _parser() -> argparse.ArgumentParser:
    ap = Parser(prog="python benchmarks/sweep.py", description=__doc__.split("\n\n")[0],
                epilog=__doc__.split("\n", 1)[1], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tasks", type=int, default=8, help="equal training runs in the sweep (default: %(default)s)")
    ap.add_argument("--steps", type=int, default=300, help="training steps of each run (default: %(default)s)")
    ap.add_argument("--seq-len", type=int, default=32, help="sequence length N of each run (default: %(default)s)")
    ap.add_argument("--overhead-tasks", type=int, default=200,
                    help="empty tasks timed through the local pool and the LocalCluster (default: %(default)s)")
    ap.add_argument("--repeats", type=int, default=1,
                    help="timed sweeps of each kind, alternating; medians reported (default: %(default)s)")
    ap.add_argument("--no-dask", action="store_true", help="skip the LocalCluster (part 2 and its records check)")
    return ap


def main(argv: list[str] | None = None) -> int:
    try:
        args = _parser().parse_args(argv)
        for name in ("tasks", "steps", "seq_len", "repeats", "overhead_tasks"):
            check_positive_int(name.replace("_", "-"), getattr(args, name))
    except InvalidInputError as err:
        return bad_input(err)
    configs = [{"seed": seed, "steps": args.steps, "seq_len": args.seq_len} for seed in range(args.tasks)]
    training_run(configs[0] | {"steps": 2})
    times: dict[int, list[float]] = {1: [], 2: []}
    records = []
    for _ in range(args.repeats):
        for workers in times:
            seconds, result = timed(configs, workers=workers)
            times[workers].append(seconds)
            records.append(result.records)
    one, two = statistics.median(times[1]), statistics.median(times[2])
    ratio = one / two
    print(f"{args.tasks} training runs (N = {args.seq_len}, {args.steps} steps): workers=1 {one:.2f} s, "
          f"workers=2 {two:.2f} s, ratio {ratio:.2f}  {'pass' if ratio >= RATIO_TARGET else 'MISS'} "
          f"(target >= {RATIO_TARGET})")
    if not args.no_dask:
        from distributed import LocalCluster

        empty = [{"seed": seed} for seed in range(args.overhead_tasks)]
        with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
            timed(empty, nothing, scheduler=cluster.scheduler_address)  # the workers import torch once
            dask_s, _ = timed(empty, nothing, scheduler=cluster.scheduler_address)
            records.append(timed(configs, scheduler=cluster.scheduler_address)[1].records)
        pool_s, _ = timed(empty, nothing, workers=2)
        per_task = 1e3 / len(empty)
        print(f"per empty task ({len(empty)} tasks, 2 workers): local pool {per_task * pool_s:.1f} ms, "
              f"Dask LocalCluster {per_task * dask_s:.1f} ms, Dask's extra {per_task * (dask_s - pool_s):.1f} ms")
    same = all(r == records[0] for r in records)
    print(f"records identical across {'workers=1, workers=2' + ('' if args.no_dask else ' and the LocalCluster')}: "
          f"{'yes' if same else 'NO'}")
    return 0 if ratio >= RATIO_TARGET and same else 1


if __name__ == "__main__":
    sys.exit(main())
