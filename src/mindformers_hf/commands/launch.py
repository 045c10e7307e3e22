"""`mindformers-hf launch | config | env`: accelerate's command line on top of MindSpore's own `msrun`.

`launch` takes `accelerate launch`'s flags and config file (`accelerate config`'s YAML) and runs the script
with `msrun`, MindSpore's distributed launcher: one worker process per rank, the scheduler on the main
machine, the collectives MindSpore's (mccl on CPU, HCCL on Ascend). Multi-node jobs run the same command on
every machine with its own --machine_rank, as with accelerate. One process on one machine runs the script
directly (as `accelerate launch` does), without msrun. `--max_restarts K` reruns the whole job after a failure
(torchrun's and accelerate's flag); `--join_timeout` (or accelerate's `--rdzv_conf timeout=N`) bounds the wait
for the other machines (msrun's --cluster_time_out). Watching the msrun run is in launch_monitor.py.
"""
import argparse
import os
import platform
import shutil
import socket
import subprocess
import sys

from ..utils import warn_once
from .launch_monitor import MsrunRun, archive_logs, cluster_timed_out, failure_report

# accelerate's default config location: $HF_HOME/accelerate, else $XDG_CACHE_HOME/huggingface/accelerate
_HF_HOME = os.environ.get("HF_HOME") or os.path.join(
    os.environ.get("XDG_CACHE_HOME", os.path.join(os.path.expanduser("~"), ".cache")), "huggingface")
DEFAULT_CONFIG_FILE = os.path.join(_HF_HOME, "accelerate", "default_config.yaml")
DEFAULT_PORT = 29500  # accelerate's (torchrun's) default main_process_port
DEFAULT_JOIN_TIMEOUT = 600  # seconds: msrun's default --cluster_time_out, and torch's static rendezvous timeout

# The accelerate launch options that map onto msrun; the rest are accepted where harmless and refused where
# they ask for an engine we do not have.
_LAUNCH_KEYS = ("num_processes", "num_machines", "machine_rank", "main_process_ip", "main_process_port",
                "mixed_precision", "num_cpu_threads_per_process")
_REFUSED_FLAGS = {"use_fsdp": "FSDP", "use_megatron_lm": "Megatron-LM",
                  "tpu": "TPU launching", "module": "launching a module (-m)", "no_python": "--no_python"}
# accelerate's data x tensor mesh and DeepSpeed ZeRO-1 flags: exported to the workers as accelerate exports them
_MESH_FLAGS = ("parallelism_config_dp_replicate_size", "parallelism_config_dp_shard_size", "parallelism_config_tp_size")
_REFUSED_DISTRIBUTED_TYPES = {"DEEPSPEED": "DeepSpeed", "FSDP": "FSDP", "MEGATRON_LM": "Megatron-LM",
                              "XLA": "TPU (XLA)", "TPU": "TPU (XLA)"}


class LaunchError(SystemExit):
    def __init__(self, message):
        super().__init__(f"mindformers-hf launch: error: {message}")


def _flag(parser, name, **kwargs):
    """accelerate spells its flags with underscores and also takes dashes: --num_processes / --num-processes."""
    names = [f"--{name}"] + ([f"--{name.replace('_', '-')}"] if "_" in name else [])
    parser.add_argument(*names, dest=name, **kwargs)


def add_launch_parser(sub):
    p = sub.add_parser("launch", help="run a script on N processes (accelerate launch's flags) through msrun")
    _flag(p, "config_file", default=None, help="accelerate config YAML (default: accelerate's default_config.yaml "
                                                 "when it exists)")
    _flag(p, "num_processes", type=int, default=None, help="total number of processes over all machines")
    _flag(p, "num_machines", type=int, default=None, help="number of machines")
    _flag(p, "machine_rank", type=int, default=None, help="rank of this machine (0 runs the scheduler)")
    _flag(p, "main_process_ip", default=None, help="address of the machine of rank 0")
    _flag(p, "main_process_port", type=int, default=None, help=f"port of the scheduler (default {DEFAULT_PORT})")
    _flag(p, "mixed_precision", choices=["no", "fp16", "bf16", "fp8"], default=None,
          help="sets ACCELERATE_MIXED_PRECISION, which our Trainer obeys as transformers' does")
    _flag(p, "cpu", action="store_true", default=False, help="run on the CPU backend")
    _flag(p, "num_cpu_threads_per_process", type=int, default=None, help="OMP_NUM_THREADS of each worker")
    _flag(p, "log_dir", default=None, help="where msrun writes scheduler.log and worker_<rank>.log "
                                           "(default ./msrun_log)")
    _flag(p, "max_restarts", type=int, default=0,
          help="rerun the whole job up to this many times after a failure (scripts resume from their last "
               "checkpoint as run_clm does: get_last_checkpoint(output_dir)); TORCHELASTIC_RESTART_COUNT counts")
    _flag(p, "join_timeout", type=float, default=None,
          help=f"seconds to wait for every machine's processes to join (default {DEFAULT_JOIN_TIMEOUT}; "
               "msrun's --cluster_time_out); then the job fails naming the machines that did not join")
    _flag(p, "rdzv_conf", default="", help="accelerate's rendezvous settings `key=value,...`; `timeout` (or "
                                           "`join_timeout`) is the --join_timeout, other keys are ignored")
    _flag(p, "quiet", action="store_true", default=False, help="less launcher output")
    p.add_argument("-q", dest="quiet", action="store_true")
    _flag(p, "multi_gpu", action="store_true", default=False, help="accepted: more than one process is data parallel")
    _flag(p, "gpu_ids", default=None, help="accepted and ignored (msrun places workers by DEVICE_ID)")
    _flag(p, "same_network", action="store_true", default=False, help="accepted and ignored")
    _flag(p, "dynamo_backend", default=None, help="only 'no' is supported")
    _flag(p, "use_parallelism_config", action="store_true", default=False,
          help="a data x tensor mesh from the --parallelism_config_* sizes (docs/parallelism.md)")
    for name in _MESH_FLAGS:
        _flag(p, name, type=int, default=None, help=argparse.SUPPRESS if "dp_" in name else
              "tensor-parallel size: from_pretrained splits the model over groups of this many ranks")
    _flag(p, "use_deepspeed", action="store_true", default=False,
          help="with --zero_stage 1: AdamW's state sharded over the data-parallel ranks (natively, no DeepSpeed)")
    _flag(p, "zero_stage", type=int, default=None, help="DeepSpeed's ZeRO stage: only 1 (or 0) is supported")
    for name in _REFUSED_FLAGS:
        if name != "module":
            _flag(p, name, action="store_true", default=False, help=argparse.SUPPRESS)
    p.add_argument("-m", "--module", dest="module", action="store_true", default=False, help=argparse.SUPPRESS)
    p.add_argument("training_script", help="the script to run on every process")
    p.add_argument("training_script_args", nargs=argparse.REMAINDER, help="its arguments")
    p.set_defaults(func=launch_command)
    return p


def add_config_parser(sub):
    p = sub.add_parser("config", help="write accelerate's config YAML (`config default`)")
    csub = p.add_subparsers(dest="config_command")
    d = csub.add_parser("default", help="write a basic config for this machine")
    _flag(d, "config_file", default=DEFAULT_CONFIG_FILE, help="where to write it")
    _flag(d, "mixed_precision", choices=["no", "fp16", "bf16"], default="no")
    p.set_defaults(func=config_command)
    return p


def add_env_parser(sub):
    p = sub.add_parser("env", help="print versions and the launch configuration, as `accelerate env`")
    _flag(p, "config_file", default=None)
    p.set_defaults(func=env_command)
    return p


# ---------------------------------------------------------------------------------------------- config
def read_config(path):
    """accelerate's config file (YAML or JSON) as a dict; {} when there is none."""
    if path is None:
        path = DEFAULT_CONFIG_FILE if os.path.isfile(DEFAULT_CONFIG_FILE) else None
        if path is None:
            return {}
    if not os.path.isfile(path):
        raise LaunchError(f"config file {path} does not exist (write one with `mindformers-hf config default "
                          f"--config_file {path}`)")
    import yaml

    with open(path, encoding="utf-8") as f:
        data = yaml.safe_load(f) or {}  # JSON is YAML too: accelerate writes either
    if not isinstance(data, dict):
        raise LaunchError(f"config file {path} does not hold a mapping of accelerate's keys")
    return data


def basic_config(mixed_precision="no"):
    """What `accelerate config default` writes for this machine: one process (on a CPU) or one per NPU."""
    from ..utils import device_target

    on_cpu = device_target() == "CPU"
    return {"compute_environment": "LOCAL_MACHINE", "debug": False, "distributed_type": "NO",
            "downcast_bf16": False, "enable_cpu_affinity": False, "machine_rank": 0,
            "main_training_function": "main", "mixed_precision": mixed_precision, "num_machines": 1,
            "num_processes": 1, "rdzv_backend": "static", "same_network": False,
            "tpu_use_cluster": False, "tpu_use_sudo": False, "use_cpu": on_cpu}


def config_command(args):
    if args.config_command != "default":
        raise SystemExit("mindformers-hf config: only `mindformers-hf config default [--config_file F]` is "
                         "supported (the interactive questionnaire is not); edit the YAML it writes")
    path = args.config_file
    if os.path.exists(path):
        print(f"Configuration already exists at {path}, will not override. Edit it or pass another --config_file.")
        return 1
    import yaml

    from ..safetensors_io import atomic_write_text

    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    atomic_write_text(path, yaml.safe_dump(basic_config(args.mixed_precision), sort_keys=True))
    print(f"accelerate configuration saved at {path}")
    return 0


# ---------------------------------------------------------------------------------------------- launch
def resolve_launch(args):
    """accelerate's precedence: command-line flag, else the config file, else the default."""
    config = read_config(args.config_file)
    distributed_type = str(config.get("distributed_type", "NO")).upper()
    if distributed_type in _REFUSED_DISTRIBUTED_TYPES:
        raise LaunchError(f"{_REFUSED_DISTRIBUTED_TYPES[distributed_type]} (distributed_type: {distributed_type} in "
                          "the config file) is not supported: msrun runs data- and tensor-parallel jobs only")
    for name, feature in _REFUSED_FLAGS.items():
        if getattr(args, name, False):
            raise LaunchError(f"{feature} is not supported by mindformers-hf launch (it runs scripts through msrun)")
    if args.dynamo_backend not in (None, "no", "NO"):
        raise LaunchError(f"--dynamo_backend {args.dynamo_backend} (torch.compile) is not supported; use "
                          "TrainingArguments(torch_compile=True), which compiles with MindSpore's jit")
    for name in ("gpu_ids", "same_network"):
        if getattr(args, name):
            warn_once(f"mindformers-hf launch: --{name} is accepted for compatibility and ignored")
    resolved = {}
    defaults = {"num_processes": 1, "num_machines": 1, "machine_rank": 0, "main_process_ip": "127.0.0.1",
                "main_process_port": DEFAULT_PORT, "mixed_precision": "no", "num_cpu_threads_per_process": None}
    for key in _LAUNCH_KEYS:
        value = getattr(args, key)
        if value is None:
            value = config.get(key)
        if value is None or (key == "num_processes" and value == -1):
            value = defaults[key]
        resolved[key] = value
    resolved["cpu"] = bool(args.cpu or config.get("use_cpu", False))
    resolved["join_timeout"] = join_timeout(args)
    if args.max_restarts < 0:
        raise LaunchError(f"--max_restarts must be >= 0, got {args.max_restarts}")
    resolved["mesh_env"] = _mesh_env(args, int(resolved["num_processes"]))
    n, machines = int(resolved["num_processes"]), int(resolved["num_machines"])
    if n < 1 or machines < 1 or n % machines:
        raise LaunchError(f"num_processes ({n}) must be a positive multiple of num_machines ({machines}): "
                          "every machine runs num_processes / num_machines workers")
    if not 0 <= int(resolved["machine_rank"]) < machines:
        raise LaunchError(f"machine_rank {resolved['machine_rank']} is not in [0, {machines})")
    return resolved


def join_timeout(args):
    """--join_timeout, else accelerate's --rdzv_conf timeout=N (torch's static rendezvous key; c10d's
    join_timeout too), else msrun's default; a whole number of seconds >= 1."""
    conf = {}
    for item in filter(None, (part.strip() for part in (args.rdzv_conf or "").split(","))):
        key, sep, value = item.partition("=")
        if not sep:
            raise LaunchError(f"--rdzv_conf takes key=value pairs separated by commas, got {item!r}")
        conf[key.strip()] = value.strip()
    ignored = sorted(set(conf) - {"timeout", "join_timeout"})
    if ignored:
        warn_once(f"mindformers-hf launch: --rdzv_conf keys {ignored} are ignored (msrun's rendezvous takes only "
                  "the timeout)")
    value = args.join_timeout
    if value is None:
        value = conf.get("join_timeout", conf.get("timeout", DEFAULT_JOIN_TIMEOUT))
    try:
        value = int(float(value))
    except ValueError:
        raise LaunchError(f"the join timeout must be a number of seconds, got {value!r}") from None
    if value < 1:
        raise LaunchError(f"the join timeout must be at least 1 second, got {value}")
    return value


def _mesh_env(args, n):
    """accelerate's variables for --use_parallelism_config / --use_deepspeed --zero_stage (what `accelerate
    launch` exports; TrainingArguments and from_pretrained read them)."""
    env = {}
    if getattr(args, "use_deepspeed", False):
        stage = 2 if args.zero_stage is None else args.zero_stage  # accelerate's default stage is 2
        if stage not in (0, 1):
            raise LaunchError(f"DeepSpeed ZeRO stage {stage} is not supported: --use_deepspeed --zero_stage 1 "
                              "shards the optimizer state natively (no DeepSpeed engine; no stage 2 or 3)")
        env.update(ACCELERATE_USE_DEEPSPEED="true", ACCELERATE_DEEPSPEED_ZERO_STAGE=str(stage))
    sizes = {name: getattr(args, name, None) for name in _MESH_FLAGS}
    if getattr(args, "use_parallelism_config", False) or any(v is not None for v in sizes.values()):
        tp = sizes["parallelism_config_tp_size"] or 1
        dp = (sizes["parallelism_config_dp_replicate_size"] or 1) * (sizes["parallelism_config_dp_shard_size"] or 1)
        if tp < 1 or n % tp or (dp > 1 and dp * tp != n):
            raise LaunchError(f"--parallelism_config_tp_size {tp} (x data-parallel {dp}) does not fit num_processes "
                              f"{n}: the processes form a data-parallel x tensor-parallel mesh, n = dp x tp")
        env["ACCELERATE_USE_PARALLELISM_CONFIG"] = "true"
        env.update({name.upper(): str(value) for name, value in sizes.items() if value is not None})
    return env


def port_in_use(port, host=""):
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return True
    return False


def worker_env(resolved):
    env = dict(os.environ)
    # msrun starts workers with `python` from PATH: make that this interpreter
    env["PATH"] = os.path.dirname(sys.executable) + os.pathsep + env.get("PATH", "")
    env["ACCELERATE_MIXED_PRECISION"] = str(resolved["mixed_precision"])
    env.update(resolved.get("mesh_env", {}))
    if resolved["cpu"]:
        env["MINDFORMERS_HF_DEVICE"] = "CPU"
    if resolved["num_cpu_threads_per_process"]:
        env["OMP_NUM_THREADS"] = str(resolved["num_cpu_threads_per_process"])
    env.setdefault("GLOG_v", "2")  # MindSpore's INFO lines from every worker would drown the script's output
    return env


def torchrun_env(resolved):
    """What torchrun (and so `accelerate launch`) exports to every worker and is the same for all processes of
    this machine; RANK and LOCAL_RANK, which differ per process, are set in each worker (launch_worker.py)."""
    n, machines = int(resolved["num_processes"]), int(resolved["num_machines"])
    node = str(resolved["machine_rank"])
    return {"WORLD_SIZE": str(n), "LOCAL_WORLD_SIZE": str(n // machines), "NODE_RANK": node, "GROUP_RANK": node,
            "MASTER_ADDR": str(resolved["main_process_ip"]), "MASTER_PORT": str(resolved["main_process_port"])}


def msrun_command(resolved, log_dir, script, script_args):
    n, machines = int(resolved["num_processes"]), int(resolved["num_machines"])
    # msrun's own entry point (the `msrun` console script calls the same main), run by this interpreter: no PATH
    # lookup, no wrapper process (a pyenv shim) between the launcher and msrun
    head = [sys.executable, "-m", "mindspore.parallel.cluster.run"]
    return head + [f"--worker_num={n}", f"--local_worker_num={n // machines}",
                   f"--master_addr={resolved['main_process_ip']}", f"--master_port={resolved['main_process_port']}",
                   f"--node_rank={resolved['machine_rank']}", f"--log_dir={log_dir}", "--join=True",
                   f"--cluster_time_out={resolved.get('join_timeout', DEFAULT_JOIN_TIMEOUT)}",
                   # msrun runs `python <args>` when handed "python": each process sets its RANK/LOCAL_RANK first
                   "python", "-m", "mindformers_hf.commands.launch_worker", script] + list(script_args)


def launch_command(args):
    resolved = resolve_launch(args)
    script = args.training_script
    if not os.path.isfile(script):
        raise LaunchError(f"training script {script} does not exist")
    env = worker_env(resolved)
    n, machines = int(resolved["num_processes"]), int(resolved["num_machines"])
    restarts = int(args.max_restarts)
    env["TORCHELASTIC_MAX_RESTARTS"] = str(restarts)  # as torchrun: a script may tell a rerun from a first run
    if n == 1 and machines == 1:  # as accelerate: one process needs no launcher
        for attempt in range(restarts + 1):
            env["TORCHELASTIC_RESTART_COUNT"] = str(attempt)
            code = subprocess.call([sys.executable, script] + list(args.training_script_args), env=env)
            if code == 0 or attempt == restarts:
                return code
            print(f"mindformers-hf launch: the script failed (exit code {code}); restart {attempt + 1} of "
                  f"{restarts}", file=sys.stderr)
    port = int(resolved["main_process_port"])
    if int(resolved["machine_rank"]) == 0 and port_in_use(port):
        raise LaunchError(f"main_process_port {port} is already in use on this machine (another job?); pass a "
                          "free one with --main_process_port")
    env.update(torchrun_env(resolved))
    log_dir = os.path.abspath(args.log_dir or os.path.join(os.getcwd(), "msrun_log"))
    command = msrun_command(resolved, log_dir, script, args.training_script_args)
    if not args.quiet:
        print(f"mindformers-hf launch: {n} processes on {machines} machine(s) through msrun; worker logs in "
              f"{log_dir}", file=sys.stderr)
    for attempt in range(restarts + 1):
        env["TORCHELASTIC_RESTART_COUNT"] = str(attempt)
        run = MsrunRun(command, env)
        code = run.run()
        if code == 0 or run.interrupted:
            return 130 if run.interrupted else 0
        # as torchrun, a cluster that did not form is not retried: the missing machine would be waited for again
        last = attempt == restarts or cluster_timed_out(log_dir)
        logs = log_dir if last else archive_logs(log_dir, attempt)
        print("\n".join(failure_report(code, run, logs, resolved, resolved["join_timeout"])), file=sys.stderr)
        if last:
            break
        print(f"mindformers-hf launch: restarting the job ({attempt + 1} of {restarts} restarts); the "
              f"failed attempt's logs are in {logs}", file=sys.stderr)
    return code


# ---------------------------------------------------------------------------------------------- env
def env_command(args):
    import numpy
    import transformers

    import mindspore

    from .. import __version__
    from ..utils import device_target

    info = {
        "mindformers_hf version": __version__,
        "Platform": platform.platform(),
        "Python version": platform.python_version(),
        "MindSpore version": mindspore.__version__,
        "MindSpore device target": device_target(),
        "transformers version": transformers.__version__,
        "Numpy version": numpy.__version__,
        "msrun": shutil.which("msrun") or "not on PATH",
        "CPU count": os.cpu_count(),
    }
    print("\nCopy-and-paste the text below in your GitHub issue\n")
    print("\n".join(f"- `{k}`: {v}" for k, v in info.items()))
    config = read_config(args.config_file)
    if config:
        print("- `Accelerate` config passed:")
        print("\n".join(f"\t- {k}: {v}" for k, v in config.items()))
    else:
        print("- `Accelerate` default config:\n\tNot found")
    return 0
