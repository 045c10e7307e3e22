"""`mindformers-hf launch | config | env`: accelerate's flags and config file, mapped onto msrun."""
import socket
import textwrap

import pytest

from mindformers_hf.commands import launch as L
from mindformers_hf.commands.cli import build_parser


def _parse(*argv):
    return build_parser().parse_args(list(argv))


def test_config_default_writes_what_accelerate_reads(tmp_path):
    from accelerate.commands.config.config_args import load_config_from_file

    path = str(tmp_path / "cfg.yaml")
    assert L.config_command(_parse("config", "default", "--config_file", path, "--mixed_precision", "bf16")) == 0
    theirs = load_config_from_file(path)  # accelerate's own reader accepts our file
    assert (theirs.num_processes, theirs.num_machines, theirs.machine_rank, theirs.mixed_precision) == (1, 1, 0, "bf16")
    assert theirs.distributed_type == "NO" and theirs.use_cpu is True
    # the keys are those accelerate's write_basic_config writes on a CPU machine
    from accelerate.utils import write_basic_config

    import yaml

    write_basic_config("bf16", str(tmp_path / "theirs.yaml"))
    with open(tmp_path / "theirs.yaml") as f:
        basic = yaml.safe_load(f)
    with open(path) as f:
        ours = yaml.safe_load(f)
    assert set(basic) <= set(ours)
    for key in basic:
        assert ours[key] == basic[key], key
    # never overwrites
    assert L.config_command(_parse("config", "default", "--config_file", path)) == 1


def test_launch_flags_override_the_config_file(tmp_path):
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(textwrap.dedent("""\
        distributed_type: MULTI_CPU
        num_processes: 16
        num_machines: 2
        machine_rank: 1
        main_process_ip: 10.0.0.1
        main_process_port: 8118
        mixed_precision: fp16
        use_cpu: true
    """))
    args = _parse("launch", "--config_file", str(cfg), "--machine-rank", "0", "train.py", "--lr", "1")
    resolved = L.resolve_launch(args)
    assert resolved["num_processes"] == 16 and resolved["machine_rank"] == 0 and resolved["cpu"] is True
    assert args.training_script_args == ["--lr", "1"]
    command = L.msrun_command(resolved, "/tmp/logs", "train.py", ["--lr", "1"])
    for flag in ("--worker_num=16", "--local_worker_num=8", "--master_addr=10.0.0.1", "--master_port=8118",
                 "--node_rank=0", "--join=True", "--cluster_time_out=600"):
        assert flag in command
    assert command[-3:] == ["train.py", "--lr", "1"]
    assert L.worker_env(resolved)["ACCELERATE_MIXED_PRECISION"] == "fp16"
    # the join timeout: accelerate's --rdzv_conf timeout=N (torch's static rendezvous key), --join_timeout over it
    timeout = L.resolve_launch(_parse("launch", "--rdzv_conf", "timeout=30", "train.py"))["join_timeout"]
    assert timeout == 30 and "--cluster_time_out=30" in L.msrun_command({**resolved, "join_timeout": 30}, "l", "t", [])
    assert L.resolve_launch(_parse("launch", "--rdzv_conf", "timeout=30", "--join_timeout", "7",
                                   "train.py"))["join_timeout"] == 7
    # what torchrun exports on machine 0 of 2 with 8 workers each (RANK / LOCAL_RANK come per worker)
    assert L.torchrun_env(resolved) == {"WORLD_SIZE": "16", "LOCAL_WORLD_SIZE": "8", "NODE_RANK": "0",
                                        "GROUP_RANK": "0", "MASTER_ADDR": "10.0.0.1", "MASTER_PORT": "8118"}


@pytest.mark.parametrize("argv, message", [
    (("--use_deepspeed",), "DeepSpeed"),
    (("--use_fsdp",), "FSDP"),
    (("--dynamo_backend", "inductor"), "torch.compile"),
    (("--num_processes", "3", "--num_machines", "2"), "multiple of num_machines"),
    (("--join_timeout", "0"), "at least 1 second"),
    (("--max_restarts", "-1"), "max_restarts must be >= 0"),
])
def test_launch_refuses_what_it_cannot_run(argv, message):
    with pytest.raises(SystemExit, match=message):
        L.resolve_launch(_parse("launch", *argv, "train.py"))


def test_busy_port_is_a_clear_error(tmp_path):
    script = tmp_path / "s.py"
    script.write_text("print('never runs')\n")
    with socket.socket() as s:
        s.bind(("", 0))
        s.listen(1)
        port = s.getsockname()[1]
        with pytest.raises(SystemExit, match=f"main_process_port {port} is already in use"):
            L.launch_command(_parse("launch", "--num_processes", "2", "--main_process_port", str(port), str(script)))


def test_env_prints_versions(capsys):
    assert L.env_command(_parse("env")) == 0
    out = capsys.readouterr().out
    assert "MindSpore version" in out and "transformers version" in out
