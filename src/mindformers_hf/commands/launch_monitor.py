"""Watching one msrun run for `mindformers-hf launch`: forward msrun's own output, name the worker that failed
(rank, exit code or signal, log file, last lines), say which machine never joined when the cluster did not
form in time, and stop msrun's scheduler as soon as msrun has stopped the workers.

msrun itself already does the rest: it starts the scheduler and the workers, kills the other workers when one
exits with an error, and waits for the scheduler. That last wait is what this module shortens: MindSpore's
scheduler notices a dead worker only when its heartbeat times out (30 s, `MS_NODE_TIMEOUT`), so msrun kept a
failed job alive that long; once msrun reports a failed worker and has killed the others, the scheduler
serves no one, and it is killed.
"""
import os
import re
import signal
import subprocess
import sys
import threading
import time

# msrun's own lines (mindspore/parallel/cluster/process_entity/_api.py, MindSpore 2.x)
_WORKER_EXIT = re.compile(r"Worker process (\d+) exit with exception\. Error code: (-?\d+)")
_KILLING_OTHERS = "exits with exception, kill all other workers"
_MSRUN_GAVE_UP = "RuntimeError: Distributed job exited with exception"
# what a worker or the scheduler raises when the cluster did not form within msrun's --cluster_time_out
CLUSTER_TIMEOUT = "Failed to initialize distributed job cluster"
# the scheduler's line for every worker that joined
_REGISTERED = re.compile(r"The new node: (\d+)\(role: MS_WORKER\)")


def _role_and_rank(proc):
    """(MS_ROLE, RANK_ID) of one of msrun's child processes; (None, None) when it is not one we know."""
    try:
        env = proc.environ()
    except Exception:  # it exited meanwhile, or a `tail` we may not read
        return None, None
    return env.get("MS_ROLE"), env.get("RANK_ID")


class MsrunRun:
    """One msrun process, watched until it exits: `run()` returns its exit code; afterwards `failures` is
    [(rank or None, pid, exit code)] in the order msrun reported them."""

    def __init__(self, command, env, poll_interval=0.5):
        self.command, self.env, self.poll_interval = command, env, poll_interval
        self.failures = []
        self.interrupted = False
        self.ranks = {}  # worker pid -> rank
        self._stop_scheduler = threading.Event()
        self._killed_scheduler = None  # its pid: msrun's "Scheduler process <pid> exit with exception" is ours

    def _pump(self, stream):
        held = []  # a Python traceback of msrun itself, held until we know it is msrun's "job exited" one
        for line in stream:
            if held or line.startswith("Traceback (most recent call last):"):
                held.append(line)
                if _MSRUN_GAVE_UP in line:  # msrun's way to exit 1; the launcher's own report replaces it
                    held = []
                elif not line.startswith((" ", "Traceback")):
                    sys.stderr.writelines(held)
                    held = []
                continue
            if self._killed_scheduler and f"Scheduler process {self._killed_scheduler} exit" in line:
                continue
            sys.stderr.write(line)
            match = _WORKER_EXIT.search(line)
            if match:
                self.failures.append((int(match.group(1)), int(match.group(2))))
            if _KILLING_OTHERS in line:
                self._stop_scheduler.set()
        sys.stderr.writelines(held)
        sys.stderr.flush()

    def run(self):
        import psutil  # a MindSpore dependency

        proc = subprocess.Popen(self.command, env=self.env, stderr=subprocess.PIPE, text=True, errors="replace",
                                bufsize=1)
        pump = threading.Thread(target=self._pump, args=(proc.stderr,), daemon=True)
        pump.start()
        seen, scheduler = set(), None
        try:
            while proc.poll() is None:
                try:
                    children = psutil.Process(proc.pid).children()
                except psutil.Error:
                    children = []
                for child in children:
                    if child.pid in seen:
                        continue
                    seen.add(child.pid)
                    role, rank = _role_and_rank(child)
                    if role == "MS_SCHED":
                        scheduler = child
                    elif role == "MS_WORKER" and rank is not None:
                        self.ranks[child.pid] = int(rank)
                if self._stop_scheduler.is_set() and scheduler is not None:
                    # msrun has killed the other workers (the line is logged before it kills them): give it a
                    # moment, then end the scheduler, which would otherwise wait for their heartbeats to time out
                    time.sleep(self.poll_interval)
                    try:
                        self._killed_scheduler = scheduler.pid
                        scheduler.send_signal(signal.SIGKILL)
                    except psutil.Error:
                        pass
                    scheduler = None
                time.sleep(self.poll_interval)
        except KeyboardInterrupt:  # Ctrl+C reached msrun too: it stops its workers; no restart after this
            self.interrupted = True
            proc.wait()
        pump.join(timeout=5)
        self.failures = [(self.ranks.get(pid), pid, code) for pid, code in self.failures]
        return proc.returncode


def _tail(path, count=12):
    with open(path, encoding="utf-8", errors="replace") as f:
        lines = [line.rstrip("\n") for line in f if not line.startswith("[INFO]")]
    return lines[-count:]


def _exit_text(code):
    if code < 0:
        try:
            return f"killed by signal {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit code {code}"


def traceback_workers(log_dir):
    """Paths of the worker logs in log_dir that show a Python traceback or an error line."""
    found = []
    if not os.path.isdir(log_dir):
        return found
    for name in sorted(os.listdir(log_dir)):
        if name.startswith("worker") and name.endswith(".log"):
            path = os.path.join(log_dir, name)
            lines = _tail(path, count=10 ** 9)
            if any(line.startswith("Traceback") or "Error" in line.split(":")[0] for line in lines):
                found.append(path)
    return found


def _logs_mention(log_dir, text):
    if not os.path.isdir(log_dir):
        return False
    for name in os.listdir(log_dir):
        if name.endswith(".log"):
            with open(os.path.join(log_dir, name), encoding="utf-8", errors="replace") as f:
                if text in f.read():
                    return True
    return False


def _ranks_text(ranks):
    ranks = sorted(ranks)
    if len(ranks) > 2 and ranks == list(range(ranks[0], ranks[-1] + 1)):
        return f"ranks {ranks[0]}-{ranks[-1]}"
    return ("rank " if len(ranks) == 1 else "ranks ") + ", ".join(map(str, ranks))


def timeout_report(resolved, log_dir, timeout):
    """The message for a cluster that did not form within `timeout` seconds: which machines never joined (seen
    from the main machine's scheduler log), or, on another machine, that the main machine was not reached."""
    n, machines = int(resolved["num_processes"]), int(resolved["num_machines"])
    local, me = n // machines, int(resolved["machine_rank"])
    address = f"{resolved['main_process_ip']}:{resolved['main_process_port']}"
    head = f"the cluster did not form within {timeout} s (--join_timeout)"
    sched_log = os.path.join(log_dir, "scheduler.log")
    if me == 0 and os.path.isfile(sched_log):
        with open(sched_log, encoding="utf-8", errors="replace") as f:
            joined = {int(m.group(1)) for m in _REGISTERED.finditer(f.read())}
        missing = sorted(set(range(n)) - joined)
        by_machine = {}
        for rank in missing:
            by_machine.setdefault(rank // local, []).append(rank)
        here = by_machine.pop(me, None)
        if by_machine:
            names = "; ".join(f"machine_rank {m} ({_ranks_text(r)})" for m, r in sorted(by_machine.items()))
            also = (f" (and this machine's {_ranks_text(here)} did not register in time either: a loaded machine "
                    "or a too short timeout, see its log)" if here else "")
            return (f"{head}: {names} never joined{also}. Start `mindformers-hf launch --num_machines {machines} "
                    f"--machine_rank <rank> --main_process_ip {resolved['main_process_ip']} --main_process_port "
                    f"{resolved['main_process_port']} --num_processes {n} ...` on each of them (they must reach "
                    f"{address}), or wait longer with --join_timeout SECONDS.")
    mine = list(range(me * local, (me + 1) * local))
    if machines == 1:
        return (f"{head}: not all {n} processes registered with the scheduler at {address} in time (a loaded "
                "machine or a too short timeout); see the worker logs, or wait longer with --join_timeout SECONDS.")
    return (f"{head}: this machine (machine_rank {me}, {_ranks_text(mine)}) waited for the main process at "
            f"{address} (machine_rank 0) and the other machines' {n - local} processes. Check that "
            "`mindformers-hf launch` runs on every machine with the same --num_processes/--num_machines and that "
            f"{address} is reachable from here, or wait longer with --join_timeout SECONDS.")


def cluster_timed_out(log_dir):
    """Whether the run failed because the cluster did not form in time (then a restart would only wait again)."""
    return _logs_mention(log_dir, CLUSTER_TIMEOUT)


def failure_report(code, run, log_dir, resolved, timeout):
    """Lines telling what failed: the timed-out cluster, else each failed worker with its log's last lines."""
    lines = [f"mindformers-hf launch: the job failed (msrun exit code {code}); msrun stopped the other workers."]
    if cluster_timed_out(log_dir):
        lines.append(timeout_report(resolved, log_dir, timeout))
        return lines
    named = set()
    for rank, pid, exit_code in run.failures:
        path = os.path.join(log_dir, f"worker_{rank}.log") if rank is not None else None
        what = f"rank {rank}" if rank is not None else f"a worker (pid {pid})"
        lines.append(f"{what} failed first ({_exit_text(exit_code)})" + (f"; its log: {path}" if path else ""))
        if path and os.path.isfile(path):
            named.add(path)
            lines.append(f"--- {path} (last lines):")
            lines.extend("    " + line for line in _tail(path))
    for path in traceback_workers(log_dir):
        if path not in named:
            lines.append(f"--- {path} (last lines):")
            lines.extend("    " + line for line in _tail(path))
            named.add(path)
    if not named:
        lines.append(f"See the logs in {log_dir} (scheduler.log, worker_<rank>.log).")
    return lines


def archive_logs(log_dir, attempt):
    """Move this attempt's logs into log_dir/attempt_<attempt>/ (torchelastic keeps each attempt's logs too), so
    that the next attempt writes fresh ones where msrun always writes them; returns the new folder."""
    target = os.path.join(log_dir, f"attempt_{attempt}")
    os.makedirs(target, exist_ok=True)
    for name in os.listdir(log_dir):
        if name.endswith(".log"):
            os.replace(os.path.join(log_dir, name), os.path.join(target, name))
    return target
