"""Monitoring in the console: the charts' data, a node's and a GPU's page with their charts.

Charts are drawn in the browser (static/console/charts.js, with the vendored uPlot) from
`GET /charts/query`, which takes the API's `MetricQuery` and applies the same access rules
(services.monitoring). It answers JSON, errors too, so that a chart can say why it is empty.
"""

from collections.abc import Mapping
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Request
from fastapi.responses import JSONResponse, Response
from pydantic import ValidationError
from sqlalchemy.orm import Session

from suanli.api.deps import SessionDep
from suanli.core.errors import NotFound, SuanliError
from suanli.db.models import GpuDevice, Node
from suanli.i18n import translate
from suanli.monitoring.model import METRICS
from suanli.schemas.metrics import MetricQuery
from suanli.services import cluster, monitoring, nodes
from suanli.web import forms, render, session
from suanli.web.session import Viewer

router = APIRouter(include_in_schema=False, dependencies=[Depends(session.check_csrf)])
ViewerDep = Annotated[Viewer, Depends(session.require_viewer)]
NodeName = Annotated[str, Path(max_length=255, pattern=r"^[^\x00/]+$")]
GpuUuid = Annotated[str, Path(max_length=96, pattern=r"^[A-Za-z0-9-]+$")]


# -- the charts' data --------------------------------------------------------------------------


@router.get("/charts/query")
def chart_query(request: Request, db: SessionDep, viewer: ViewerDep) -> Response:
    """A metric's series for a chart, as `GET /api/v1/metrics/query` answers them, with the
    session's cookie. Errors are JSON as well ({status, detail, errors}), never a page."""
    params = request.query_params
    raw: dict[str, Any] = {
        key: params[key] for key in ("metric", "range", "end", "step") if params.get(key)
    }
    raw["label"] = params.getlist("label")
    language = request.state.language
    try:
        answer = monitoring.query(db, viewer.actor, MetricQuery.model_validate(raw))
    except ValidationError as error:
        found = forms.errors_of(error, language)
        return _problem(422, " ".join(f"{k}: {v}" for k, v in found.items()), found)
    except SuanliError as error:
        return _problem(error.status, translate(error.key, language, **error.params), {})
    response = JSONResponse(answer.model_dump(mode="json"))
    response.headers["Cache-Control"] = "no-store"
    return response


def _problem(status: int, detail: str, errors: Mapping[str, str]) -> JSONResponse:
    return JSONResponse(
        {"status": status, "detail": detail, "errors": dict(errors)},
        status_code=status,
        headers={"Cache-Control": "no-store"},
    )


# -- chart specifications (what charts.js draws) ------------------------------------------------


def _q(metric: str, labels: Mapping[str, str], name: str = "", **extra: Any) -> dict[str, Any]:
    """One query of a chart: a metric, its label matchers, how its lines are named.
    `require`/`exclude`: keep only series with / without that label; `dash`: a limit line;
    `names`: label values as shown."""
    if metric not in METRICS:
        raise ValueError(f"no metric {metric!r}")
    return {"metric": metric, "labels": dict(labels), "name": name, **extra}


def _chart(
    title: str, unit: str, *queries: dict[str, Any], optional: bool = False, test: str = ""
) -> dict[str, Any]:
    return {
        "title": title,
        "unit": unit,
        "queries": list(queries),
        "optional": optional,
        "test": test,
    }


def node_charts(name: str, language: str) -> list[dict[str, Any]]:
    def t(key: str) -> str:
        return translate(key, language)

    on = {"node": name}
    mounts = {"data": t("web.monitoring.data_dir")}
    protocols = {"tcp": "TCP", "udp": "UDP"}
    return [
        _chart(
            t("web.monitoring.cpu_total"),
            "percent",
            _q("node_cpu_percent", on, t("web.monitoring.cpu_busy"), exclude="cpu"),
            test="cpu",
        ),
        _chart(
            t("web.monitoring.cpu_cores"),
            "percent",
            _q("node_cpu_percent", on, require="cpu"),
            test="cpu-cores",
        ),
        _chart(
            t("web.monitoring.load"),
            "count",
            _q("node_load1", on, t("web.monitoring.load_one")),
            _q("node_load5", on, t("web.monitoring.load_five")),
            _q("node_load15", on, t("web.monitoring.load_fifteen")),
            test="load",
        ),
        _chart(
            t("web.monitoring.memory_swap"),
            "bytes",
            _q("node_memory_used_bytes", on, t("web.monitoring.memory_used")),
            _q("node_memory_total_bytes", on, t("web.monitoring.memory_total"), dash=True),
            _q("node_swap_used_bytes", on, t("web.monitoring.swap_used")),
            test="memory",
        ),
        _chart(
            t("web.monitoring.disk_used"),
            "percent",
            _q("node_disk_percent", on, names=mounts),
            test="disk",
        ),
        _chart(
            t("web.monitoring.disk_io"),
            "bytes_per_second",
            _q("node_disk_read_bytes_per_second", on, t("web.monitoring.read"), names=mounts),
            _q("node_disk_write_bytes_per_second", on, t("web.monitoring.write"), names=mounts),
            test="disk-io",
        ),
        _chart(
            t("web.monitoring.network"),
            "bytes_per_second",
            _q("node_network_receive_bytes_per_second", on, t("web.monitoring.received")),
            _q("node_network_transmit_bytes_per_second", on, t("web.monitoring.sent")),
            test="network",
        ),
        _chart(
            t("web.monitoring.connections"),
            "count",
            _q("node_connections", on, names=protocols),
            test="connections",
        ),
        _chart(
            t("web.monitoring.cpu_temperature"),
            "celsius",
            _q("node_cpu_temperature_celsius", on),
            optional=True,
            test="cpu-temperature",
        ),
    ]


def gpu_charts(gpu: GpuDevice, language: str) -> list[dict[str, Any]]:
    def t(key: str) -> str:
        return translate(key, language)

    # A MIG instance's telemetry is its parent GPU's; its own is the memory it uses.
    on = {"uuid": gpu.parent_uuid or gpu.uuid}
    charts = [
        _chart(
            t("web.monitoring.utilization"),
            "percent",
            _q("gpu_utilization_percent", on, t("web.monitoring.sm")),
            _q("gpu_memory_utilization_percent", on, t("web.monitoring.memory_controller")),
            test="utilization",
        ),
        _chart(
            t("web.monitoring.gpu_memory"),
            "bytes",
            _q("gpu_memory_used_bytes", on, t("web.monitoring.memory_used")),
            _q("gpu_memory_total_bytes", on, t("web.monitoring.memory_total"), dash=True),
            test="gpu-memory",
        ),
        _chart(
            t("web.monitoring.temperature"),
            "celsius",
            _q("gpu_temperature_celsius", on, t("web.monitoring.temperature")),
            test="temperature",
        ),
        _chart(
            t("web.monitoring.power"),
            "watts",
            _q("gpu_power_watts", on, t("web.monitoring.power_draw")),
            _q("gpu_power_limit_watts", on, t("web.monitoring.power_limit"), dash=True),
            test="power",
        ),
        _chart(
            t("web.monitoring.clocks"),
            "mhz",
            _q("gpu_sm_clock_mhz", on, t("web.monitoring.sm")),
            _q("gpu_memory_clock_mhz", on, t("web.monitoring.memory_clock")),
            test="clocks",
        ),
        _chart(
            t("web.monitoring.ecc"),
            "count",
            _q("gpu_ecc_corrected_volatile", on, t("web.monitoring.ecc_corrected")),
            _q("gpu_ecc_uncorrected_volatile", on, t("web.monitoring.ecc_uncorrected")),
            _q("gpu_ecc_corrected_aggregate", on, t("web.monitoring.ecc_corrected_life")),
            _q("gpu_ecc_uncorrected_aggregate", on, t("web.monitoring.ecc_uncorrected_life")),
            test="ecc",
        ),
        _chart(
            t("web.monitoring.pcie"),
            "bytes_per_second",
            _q("gpu_pcie_tx_bytes_per_second", on, t("web.monitoring.sent")),
            _q("gpu_pcie_rx_bytes_per_second", on, t("web.monitoring.received")),
            optional=True,
            test="pcie",
        ),
        _chart(
            t("web.monitoring.process_memory"),
            "bytes",
            _q("gpu_process_memory_bytes", on, legend="job"),
            optional=True,
            test="processes",
        ),
    ]
    if gpu.parent_uuid:
        charts.insert(
            2,
            _chart(
                t("web.monitoring.mig_memory"),
                "bytes",
                _q("gpu_mig_memory_used_bytes", {"mig_uuid": gpu.uuid}, gpu.mig_profile or ""),
                test="mig-memory",
            ),
        )
    return charts


# -- a node, a GPU -----------------------------------------------------------------------------


def _find_node(db: Session, name: str) -> Node:
    for node in nodes.list_nodes(db):
        if node.name == name:
            return node
    raise NotFound("error.node_not_found", name=name)


@router.get("/nodes/{name}")
def show_node(name: NodeName, request: Request, db: SessionDep, viewer: ViewerDep) -> Response:
    node = _find_node(db, name)
    holders = cluster.gpu_holders(db)
    return render.page(
        request,
        "node.html",
        nav="nodes",
        node=node,
        holders=holders,
        states={gpu.uuid: cluster.state_of(gpu, holders) for gpu in node.gpus},
        charts=node_charts(node.name, request.state.language),
    )


@router.get("/gpus/{uuid}")
def show_gpu(uuid: GpuUuid, request: Request, db: SessionDep, viewer: ViewerDep) -> Response:
    found = [g for n in nodes.list_nodes(db) for g in n.gpus if g.uuid == uuid]
    if not found:
        raise NotFound("error.gpu_not_found", uuid=uuid)
    gpu = found[0]
    holders = cluster.gpu_holders(db)
    return render.page(
        request,
        "gpu.html",
        nav="nodes",
        gpu=gpu,
        node=gpu.node,
        state=cluster.state_of(gpu, holders),
        held=holders.get(gpu.uuid, []),
        charts=gpu_charts(gpu, request.state.language),
    )
