"""Run several training scripts one after another in one process: one `mindformers-hf launch` (its msrun startup is
most of a launch's cost) or one plain process serves many scenarios. Used by tests/trainer/dp_jobs.py.

argv: plan.json, a list of {"name", "argv": [script, args...], "copy": [src, dst] (optional)}. For each scenario,
in order: print `SCENARIO_BEGIN <name>`; with "copy", rank 0 copies the folder src to dst (a scenario resuming
from another one's checkpoint) while the other ranks wait for it; run the script as `python script args...` would
(runpy, __main__); print `SCENARIO_END <name>`, or `SCENARIO_FAILED <name>` and the traceback when it raised; the
next scenario runs either way. The worker's log is cut at these lines by dp_jobs.scenario_logs.
"""
import json
import os
import runpy
import shutil
import sys
import time
import traceback


def copy_once(src, dst, rank):
    if rank == 0:
        shutil.copytree(src, dst + ".partial")
        os.rename(dst + ".partial", dst)
        return
    deadline = time.monotonic() + 300
    while not os.path.isdir(dst):
        if time.monotonic() > deadline:
            raise TimeoutError(f"rank 0 did not copy {src} to {dst}")
        time.sleep(0.05)


def main(plan_path):
    with open(plan_path) as f:
        plan = json.load(f)
    rank = int(os.environ.get("RANK", "0"))
    for scenario in plan:
        print(f"SCENARIO_BEGIN {scenario['name']}", flush=True)
        try:
            if scenario.get("copy"):
                copy_once(*scenario["copy"], rank)
            sys.argv = list(scenario["argv"])
            runpy.run_path(sys.argv[0], run_name="__main__")
        except KeyboardInterrupt:
            raise
        except BaseException as e:  # noqa: BLE001 (a script's sys.exit(0) is an end, anything else its failure)
            if not (isinstance(e, SystemExit) and e.code in (0, None)):
                print(f"SCENARIO_FAILED {scenario['name']}\n{traceback.format_exc()}", flush=True)
                continue
        print(f"SCENARIO_END {scenario['name']}", flush=True)


if __name__ == "__main__":
    main(sys.argv[1])
