"""`suanli nodes` and `suanli gpus`: what the cluster has, what is free, who uses what."""

from typing import Annotated

import typer
from rich.text import Text

from suanli.cli.output import JsonOption, label, print_json, say, table
from suanli.cli.session import connect
from suanli.core import states
from suanli.core.quantities import format_bytes
from suanli.schemas.nodes import GpuOut

nodes_app = typer.Typer(help="Nodes: list, drain, undrain.", no_args_is_help=True)
gpus_app = typer.Typer(help="GPUs: list, drain, undrain, share.", no_args_is_help=True)
Reason = Annotated[str, typer.Option(help="Why, shown to users.")]
_STYLES = {
    "missing": "bold red",
    "drained": "yellow",
    "in_use": "green",
    "shared_in_use": "green",
    "free": "cyan",
    "shared_free": "cyan",
}


def gpu_state(gpu: GpuOut) -> Text:
    """The GPU's state word with a colour; simulated devices say so."""
    state = states.gpu_state(
        present=gpu.present,
        schedulable=gpu.schedulable,
        shared=gpu.shared,
        in_use=bool(gpu.used_by),
    )
    style = _STYLES[state]
    text = Text(label("gpu", state), style=style)
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
                sum(1 for g in n.gpus if g.present and g.schedulable and not g.used_by),
                label("node", "ready" if n.schedulable else "drained")
                + (f" ({n.drain_reason})" if n.drain_reason else ""),
            )
            for n in nodes
        ],
    )


@nodes_app.command()
def drain(name: str, reason: Reason = "") -> None:
    """Take no new work on a node (administrators); running work goes on."""
    with connect() as client:
        client.nodes.drain(name, reason)
    say("cli.node_drained", name=name)


@nodes_app.command()
def undrain(name: str) -> None:
    with connect() as client:
        client.nodes.undrain(name)
    say("cli.node_undrained", name=name)


@gpus_app.command("list")
def list_gpus(json: JsonOption = False) -> None:
    """Every GPU (and MIG instance): model, memory, state and who uses it."""
    with connect() as client:
        nodes = client.nodes.list()
    gpus = [(n.name, g) for n in nodes for g in n.gpus]
    if json:
        print_json([{"node": node, **g.model_dump(mode="json")} for node, g in gpus])
        return
    table(
        ["node", "index", "uuid", "model", "memory", "state", "used_by"],
        [
            (
                node,
                g.index if not g.mig_profile else f"{g.index}/{g.mig_profile}",
                g.uuid,
                g.model,
                format_bytes(g.memory_bytes),
                gpu_state(g),
                ", ".join(g.used_by),
            )
            for node, g in gpus
        ],
    )


@gpus_app.command("drain")
def drain_gpu(uuid: str, reason: Reason = "") -> None:
    """Take no new work on a GPU (administrators)."""
    with connect() as client:
        client.nodes.update_gpu(uuid, schedulable=False, reason=reason)
    say("cli.gpu_updated", uuid=uuid)


@gpus_app.command("undrain")
def undrain_gpu(uuid: str) -> None:
    with connect() as client:
        client.nodes.update_gpu(uuid, schedulable=True)
    say("cli.gpu_updated", uuid=uuid)


@gpus_app.command()
def share(
    uuid: str,
    exclusive: Annotated[bool, typer.Option("--exclusive", help="Whole GPUs only again.")] = False,
) -> None:
    """Let a GPU take fractions (memory and compute shares), or make it exclusive again."""
    with connect() as client:
        client.nodes.update_gpu(uuid, shared=not exclusive)
    say("cli.gpu_updated", uuid=uuid)
