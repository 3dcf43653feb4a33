"""The overview: what the cluster has and what is free, my work, my projects' quotas."""

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response

from suanli.api.deps import SessionDep
from suanli.api.outputs import job_out
from suanli.schemas.jobs import JobListQuery
from suanli.services import cluster, jobs, nodes, projects
from suanli.web import render, session
from suanli.web.session import Viewer

# The overview shows the newest of my running and waiting jobs; the rest are a click away.
MY_JOBS = 20
router = APIRouter(include_in_schema=False, dependencies=[Depends(session.check_csrf)])


@router.get("/")
def overview(
    request: Request, db: SessionDep, viewer: Viewer = Depends(session.require_viewer)
) -> Response:
    all_nodes = nodes.list_nodes(db)
    holders = cluster.gpu_holders(db, viewer.actor)
    views = projects.list_projects(db, viewer.actor)
    # An administrator's overview lists every project; a member's, only theirs.
    usage = cluster.project_usage(db, [v.project.id for v in views])
    mine = jobs.list_jobs(
        db, viewer.actor, JobListQuery(user=viewer.actor.name, state="active", limit=MY_JOBS + 1)
    )
    shared = [(node, gpu) for node in all_nodes for gpu in node.gpus if gpu.shared and gpu.present]
    return render.page(
        request,
        "overview.html",
        nav="overview",
        capacity=cluster.capacity(all_nodes, holders),
        nodes=all_nodes,
        holders=holders,
        shared=shared,
        projects=[(v, usage[v.project.id]) for v in views],
        my_jobs=[job_out(job, request.state.language) for job in mine[:MY_JOBS]],
        more_jobs=len(mine) > MY_JOBS,
    )
