"""What msrun runs in each process of `mindformers-hf launch`: torchrun's environment, then the user's script.

msrun names a process by RANK_ID, DEVICE_ID and MS_WORKER_NUM; scripts written for `torchrun` or
`accelerate launch` read RANK, LOCAL_RANK, WORLD_SIZE, ... from the environment, often on their first lines.
The values all processes of a machine share are put in msrun's environment by the launcher
(`launch.torchrun_env`); RANK and LOCAL_RANK differ per process and exist only once msrun has started it, so
they are set here, before the script runs.

msrun starts the same command in its scheduler process too (MS_ROLE=MS_SCHED). That process does not run the
script: it serves the job (MindSpore's init() there holds the cluster together until the workers leave), so a
script's top-level code runs once per rank, as under torchrun, and never sees a scheduler without a rank.
msrun starts a scheduler on every machine whose addresses include --master_addr: on one host running several
"machines" (127.0.0.1), that is each of them; only machine_rank 0's serves, the others' leave at once.

Usage (what the launcher hands msrun): python -m mindformers_hf.commands.launch_worker script.py [args...]
"""
import os
import runpy
import sys


def rank_env(environ):
    """RANK and LOCAL_RANK from msrun's names for them (the launcher always passes --node_rank, so msrun exports
    RANK_ID = node_rank * local_worker_num + local index, the rank init() gives the process)."""
    return {"RANK": environ["RANK_ID"], "LOCAL_RANK": environ["DEVICE_ID"]}


def main(argv):
    if not argv:
        raise SystemExit("usage: python -m mindformers_hf.commands.launch_worker script.py [args...]")
    if os.environ.get("MS_ROLE") == "MS_SCHED":
        if os.environ.get("NODE_RANK", "0") != "0":
            return 0
        from mindspore.communication import init

        init()
        return 0
    os.environ.update(rank_env(os.environ))
    script = argv[0]
    sys.argv = list(argv)
    sys.path[0] = os.path.dirname(os.path.abspath(script))  # as `python script.py`: the script's folder first
    runpy.run_path(script, run_name="__main__")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
