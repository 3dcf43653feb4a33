"""Launchers: the one command a user writes, started on one node or many.

A job names the command one process runs (`python train.py --epochs 3`) and a launcher;
both backends start it the same way, so a job moves from one GPU server to a Slurm cluster
unchanged:

- `none`: the command once per node;
- `torchrun` / `deepspeed`: their own launcher once per node, which starts one process per
  GPU (`--no-python`: the command is run as written, `python` included);
- `mpirun`: one MPI rank per GPU, started once from the first node (Open MPI and MPICH find
  the other nodes from Slurm's allocation themselves).

Every process also gets the rendezvous environment: MASTER_ADDR, MASTER_PORT, NNODES,
NODE_RANK, GPUS_PER_NODE, and for `none` also RANK, LOCAL_RANK and WORLD_SIZE (one process a
node), so `torch.distributed.init_process_group("env://")` works without a launcher.
Pure functions: the backends decide where the values come from.
"""

from collections.abc import Sequence

# Distinct per job on a shared first node, away from the ephemeral range.
PORT_BASE = 20000
PORT_SPAN = 10000


def master_port(job_id: int) -> int:
    return PORT_BASE + job_id % PORT_SPAN


def processes_per_node(gpus_per_node: int) -> int:
    return max(gpus_per_node, 1)


def node_command(
    launcher: str,
    argv: Sequence[str],
    *,
    nodes: int,
    gpus_per_node: int,
    node_rank: str,
    master_addr: str,
    master_port: str,
) -> list[str]:
    """The argument vector run once on each node (for `mpirun`: once, on the first node).
    `node_rank`, `master_addr` and `master_port` are values, or shell words such as
    "$NODE_RANK" where the caller renders a script that sets them."""
    per_node = str(processes_per_node(gpus_per_node))
    if launcher == "torchrun":
        return [
            "torchrun",
            f"--nnodes={nodes}",
            f"--nproc-per-node={per_node}",
            f"--node-rank={node_rank}",
            f"--master-addr={master_addr}",
            f"--master-port={master_port}",
            "--no-python",
            *argv,
        ]
    if launcher == "deepspeed":
        return [
            "deepspeed",
            f"--num_nodes={nodes}",
            f"--num_gpus={per_node}",
            f"--node_rank={node_rank}",
            f"--master_addr={master_addr}",
            f"--master_port={master_port}",
            "--no_ssh",
            "--no_python",
            *argv,
        ]
    if launcher == "mpirun":
        return ["mpirun", "-np", str(nodes * processes_per_node(gpus_per_node)), *argv]
    return list(argv)


def rendezvous_env(
    launcher: str,
    *,
    nodes: int,
    gpus_per_node: int,
    node_rank: str,
    master_addr: str,
    master_port: str,
) -> dict[str, str]:
    env = {
        "MASTER_ADDR": master_addr,
        "MASTER_PORT": master_port,
        "NNODES": str(nodes),
        "NODE_RANK": node_rank,
        "GPUS_PER_NODE": str(gpus_per_node),
    }
    if launcher == "none":
        env.update(RANK=node_rank, LOCAL_RANK="0", WORLD_SIZE=str(nodes))
    return env
