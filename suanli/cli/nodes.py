"""`suanli nodes` and `suanli gpus`: what the cluster has, what is free, who uses what."""

from typing import Annotated

import typer
from rich.text import Text

from suanli.cli.commands import App
from suanli.cli.output import JsonOption, label, print_json, report, table
from suanli.cli.session import connect
from suanli.core import states
from suanli.core.quantities import format_bytes
from suanli.schemas.nodes import GpuOut, NodeOut

nodes_app = App(help="Nodes: list, drain, undrain.", no_args_is_help=True)
gpus_app = App(help="GPUs: list, drain, undrain, share.", no_args_is_help=True)
Reason = Annotated[str, typer.Option(help="Why, shown to users.")]
_STYLES = {
    "missing": "bold red",
    "drained": "yellow",
    "in_use": "green",
    "shared_in_use": "green",
    "free": "cyan",
    "shared_free": "cyan",
}


def takes_work(node: NodeOut) -> bool:
    """Whether new work may start on the node: not drained in Suanli, and its cluster engine
    (Slurm) has it up (not down, drained or unresponsive), as the scheduler counts it."""
    return node.schedulable and node.available


def free_gpus(node: NodeOut) -> int:
    """GPUs where new work could start now: none on a node that takes no work."""
    if not takes_work(node):
        return 0
    return sum(1 for g in node.gpus if g.present and g.schedulable and not g.used_by)


def node_state(node: NodeOut) -> Text:
    """Ready, drained (Suanli's own flag) and/or unavailable with the engine's own state and
    reason (Slurm: `down+drain (Not responding)`)."""
    parts = []
    if not node.schedulable:
        reason = f" ({node.drain_reason})" if node.drain_reason else ""
        parts.append(label("node", "drained") + reason)
    if not node.available:
        engine = node.engine_state + (f" ({node.engine_reason})" if node.engine_reason else "")
        parts.append(f"{label('node', 'unavailable')}: {engine or '-'}")
    if parts:
        return Text("; ".join(parts), style="bold red" if not node.available else "yellow")
    engine = f" ({node.engine_state})" if node.engine_state else ""
    return Text(label("node", "ready") + engine, style="green")


def gpu_state(gpu: GpuOut, node: NodeOut) -> Text:
    """The GPU's state word with a colour, its node's drain and engine state included;
    simulated devices say so."""
    if gpu.present and not node.available:
        text = Text(label("gpu", "unavailable"), style="bold red")
    else:
        state = states.gpu_state(
            present=gpu.present,
            schedulable=gpu.schedulable and node.schedulable,
            shared=gpu.shared,
            in_use=bool(gpu.used_by),
        )
        text = Text(label("gpu", state), style=_STYLES[state])
    if gpu.simulated:
        text.append(" " + label("gpu", "simulated"), style="dim")
    return text


@nodes_app.command("list")
def list_nodes(json: JsonOption = False) -> None:
    """Nodes with their CPUs, memory and GPUs."""
    with connect() as client:
        nodes = client.nodes.list()
    if json:
        print_json(nodes)
        return
    table(
        ["name", "cpus", "memory", "gpus", "free_gpus", "state"],
        [
            (
                n.name,
                n.cpus,
                format_bytes(n.memory_bytes),
                len(n.gpus),
                free_gpus(n),
                node_state(n),
            )
            for n in nodes
        ],
    )


@nodes_app.command()
def drain(name: str, reason: Reason = "", json: JsonOption = False) -> None:
    """Take no new work on a node (administrators); running work goes on."""
    with connect() as client:
        node = client.nodes.drain(name, reason)
    report(json, "cli.node_drained", node, name=name)


@nodes_app.command()
def undrain(name: str, json: JsonOption = False) -> None:
    """Let a drained node take work again (administrators)."""
    with connect() as client:
        node = client.nodes.undrain(name)
    report(json, "cli.node_undrained", node, name=name)


@gpus_app.command("list")
def list_gpus(json: JsonOption = False) -> None:
    """Every GPU (and MIG instance): model, memory, state and who uses it."""
    with connect() as client:
        nodes = client.nodes.list()
    gpus = [(n, g) for n in nodes for g in n.gpus]
    if json:
        print_json([{"node": node.name, **g.model_dump(mode="json")} for node, g in gpus])
        return
    table(
        ["node", "index", "uuid", "model", "memory", "state", "used_by"],
        [
            (
                node.name,
                g.index if not g.mig_profile else f"{g.index}/{g.mig_profile}",
                g.uuid,
                g.model,
                format_bytes(g.memory_bytes),
                gpu_state(g, node),
                ", ".join(g.used_by),
            )
            for node, g in gpus
        ],
    )


@gpus_app.command("drain")
def drain_gpu(uuid: str, reason: Reason = "", json: JsonOption = False) -> None:
    """Take no new work on a GPU (administrators)."""
    with connect() as client:
        gpu = client.nodes.update_gpu(uuid, schedulable=False, reason=reason)
    report(json, "cli.gpu_updated", gpu, uuid=uuid)


@gpus_app.command("undrain")
def undrain_gpu(uuid: str, json: JsonOption = False) -> None:
    """Let a drained GPU take work again (administrators)."""
    with connect() as client:
        gpu = client.nodes.update_gpu(uuid, schedulable=True)
    report(json, "cli.gpu_updated", gpu, uuid=uuid)


@gpus_app.command()
def share(
    uuid: str,
    exclusive: Annotated[bool, typer.Option("--exclusive", help="Whole GPUs only again.")] = False,
    json: JsonOption = False,
) -> None:
    """Let a GPU take fractions (memory and compute shares), or make it exclusive again."""
    with connect() as client:
        gpu = client.nodes.update_gpu(uuid, shared=not exclusive)
    report(json, "cli.gpu_updated", gpu, uuid=uuid)
