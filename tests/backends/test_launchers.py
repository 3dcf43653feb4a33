"""The launchers' pure functions: the command each node runs and the rendezvous environment
every process gets, for each launcher. Both backends build on these, so a job moves between
them unchanged; a wrong flag here breaks every multi-GPU job at once."""

import pytest

from suanli.backends import launchers

RENDEZVOUS = {
    "nodes": 2,
    "gpus_per_node": 4,
    "node_rank": "1",
    "master_addr": "10.0.0.7",
    "master_port": "23456",
}
ARGV = ("python", "train.py", "--epochs", "3")


def test_none_runs_the_command_as_written() -> None:
    command = launchers.node_command("none", ARGV, **RENDEZVOUS)
    assert command == ["python", "train.py", "--epochs", "3"]
    assert isinstance(command, list)  # a fresh list: callers may extend it


def test_torchrun_starts_one_process_per_gpu_without_python() -> None:
    assert launchers.node_command("torchrun", ARGV, **RENDEZVOUS) == [
        "torchrun",
        "--nnodes=2",
        "--nproc-per-node=4",
        "--node-rank=1",
        "--master-addr=10.0.0.7",
        "--master-port=23456",
        "--no-python",
        "python",
        "train.py",
        "--epochs",
        "3",
    ]


def test_deepspeed_uses_its_own_flag_spelling() -> None:
    assert launchers.node_command("deepspeed", ARGV, **RENDEZVOUS) == [
        "deepspeed",
        "--num_nodes=2",
        "--num_gpus=4",
        "--node_rank=1",
        "--master_addr=10.0.0.7",
        "--master_port=23456",
        "--no_ssh",
        "--no_python",
        "python",
        "train.py",
        "--epochs",
        "3",
    ]


def test_mpirun_starts_one_rank_per_gpu_of_every_node() -> None:
    assert launchers.node_command("mpirun", ARGV, **RENDEZVOUS) == [
        "mpirun",
        "-np",
        "8",
        "python",
        "train.py",
        "--epochs",
        "3",
    ]


def test_a_job_without_gpus_still_runs_one_process_per_node() -> None:
    assert launchers.processes_per_node(0) == 1
    assert launchers.processes_per_node(1) == 1
    assert launchers.processes_per_node(8) == 8
    cpu_only = {**RENDEZVOUS, "gpus_per_node": 0, "nodes": 3}
    assert launchers.node_command("mpirun", ARGV, **cpu_only)[:3] == ["mpirun", "-np", "3"]
    assert "--nproc-per-node=1" in launchers.node_command("torchrun", ARGV, **cpu_only)
    assert "--num_gpus=1" in launchers.node_command("deepspeed", ARGV, **cpu_only)


def test_shell_words_pass_through_unchanged() -> None:
    """The slurm backend hands placeholders in for values only the node knows."""
    words = {"node_rank": "$NODE_RANK", "master_addr": "$MASTER_ADDR", "master_port": "$P"}
    command = launchers.node_command("torchrun", ARGV, **{**RENDEZVOUS, **words})
    assert command[3:6] == [
        "--node-rank=$NODE_RANK",
        "--master-addr=$MASTER_ADDR",
        "--master-port=$P",
    ]


def test_rendezvous_env_for_none_makes_each_node_one_rank() -> None:
    assert launchers.rendezvous_env("none", **RENDEZVOUS) == {
        "MASTER_ADDR": "10.0.0.7",
        "MASTER_PORT": "23456",
        "NNODES": "2",
        "NODE_RANK": "1",
        "GPUS_PER_NODE": "4",
        "RANK": "1",
        "LOCAL_RANK": "0",
        "WORLD_SIZE": "2",
    }


@pytest.mark.parametrize("launcher", ["torchrun", "deepspeed", "mpirun"])
def test_rendezvous_env_leaves_ranks_to_the_launcher(launcher: str) -> None:
    """A launcher sets RANK, LOCAL_RANK and WORLD_SIZE per process; ours would be wrong."""
    assert launchers.rendezvous_env(launcher, **RENDEZVOUS) == {
        "MASTER_ADDR": "10.0.0.7",
        "MASTER_PORT": "23456",
        "NNODES": "2",
        "NODE_RANK": "1",
        "GPUS_PER_NODE": "4",
    }


def test_rendezvous_env_reports_zero_gpus_as_zero() -> None:
    env = launchers.rendezvous_env("none", **{**RENDEZVOUS, "gpus_per_node": 0})
    assert env["GPUS_PER_NODE"] == "0"


@pytest.mark.parametrize(
    ("job_id", "port"),
    [(0, 20000), (1, 20001), (9999, 29999), (10000, 20000), (123456, 23456)],
)
def test_master_port_stays_in_its_range(job_id: int, port: int) -> None:
    assert launchers.master_port(job_id) == port
    assert launchers.PORT_BASE <= port < launchers.PORT_BASE + launchers.PORT_SPAN
    assert launchers.PORT_BASE + launchers.PORT_SPAN <= 32768  # below Linux's ephemeral ports
