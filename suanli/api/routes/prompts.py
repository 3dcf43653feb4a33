"""A project's prompt templates, in versions."""

from typing import Annotated

from fastapi import APIRouter, Path

from suanli.api.deps import CallerDep, SessionDep
from suanli.db.models import PromptTemplate
from suanli.schemas.services import PromptOut, PromptSpec
from suanli.schemas.types import Name
from suanli.services import prompts

router = APIRouter(prefix="/projects/{project}/prompts", tags=["services"])
ProjectName = Annotated[Name, Path()]
PromptName = Annotated[Name, Path()]


def _out(prompt: PromptTemplate) -> PromptOut:
    return PromptOut(
        id=prompt.id,
        project=prompt.project.name,
        name=prompt.name,
        version=prompt.version,
        system=prompt.system,
        template=prompt.template,
        variables=list(prompt.variables),
        parameters=dict(prompt.parameters),
        user=prompt.user_name,
        created_at=prompt.created_at,
    )


@router.get("", response_model=list[PromptOut])
def list_prompts(project: ProjectName, caller: CallerDep, session: SessionDep) -> list[PromptOut]:
    """Each template's newest version."""
    return [_out(p) for p in prompts.list_latest(session, caller.actor, project)]


@router.post("/{name}", response_model=PromptOut, status_code=201)
def save(
    project: ProjectName, name: PromptName, spec: PromptSpec, caller: CallerDep, session: SessionDep
) -> PromptOut:
    """Save a new version of the template `name` (the first makes it)."""
    return _out(prompts.save(session, caller.actor, project, name, spec))


@router.get("/{name}", response_model=list[PromptOut])
def versions(
    project: ProjectName, name: PromptName, caller: CallerDep, session: SessionDep
) -> list[PromptOut]:
    """Every version, newest first."""
    return [_out(p) for p in prompts.versions(session, caller.actor, project, name)]
