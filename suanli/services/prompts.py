"""A project's prompt templates, kept in versions: saving a template under a name adds a new
version; older ones stay readable. Variables are the {names} in the template and the system
prompt. Members save, everyone in the project reads."""

import string
from collections.abc import Sequence

from sqlalchemy import func, select
from sqlalchemy.orm import Session, selectinload

from suanli.core.errors import InvalidInput, NotFound
from suanli.core.roles import ProjectRole
from suanli.db.models import PromptTemplate
from suanli.schemas.services import PromptSpec
from suanli.services.actor import Actor
from suanli.services.common import commit
from suanli.services.projects import access, writable


def variables_of(*texts: str) -> list[str]:
    """The {names} of the texts, in order of first use; a malformed brace is refused."""
    found: list[str] = []
    for text in texts:
        try:
            parsed = list(string.Formatter().parse(text))
        except ValueError as error:
            raise InvalidInput("error.prompt_braces", field="template", reason=str(error)) from None
        for _, name, _, _ in parsed:
            if name is None:
                continue
            if not name.isidentifier():
                raise InvalidInput("error.prompt_variable", field="template", name=name)
            if name not in found:
                found.append(name)
    return found


def save(
    session: Session, actor: Actor, project_name: str, name: str, spec: PromptSpec
) -> PromptTemplate:
    project, _ = access(session, actor, project_name, ProjectRole.member)
    writable(project)
    names = variables_of(spec.system, spec.template)
    last = session.scalar(
        select(func.max(PromptTemplate.version)).where(
            PromptTemplate.project_id == project.id, PromptTemplate.name == name
        )
    )
    prompt = PromptTemplate(
        project=project,
        name=name,
        version=(last or 0) + 1,
        system=spec.system,
        template=spec.template,
        variables=names,
        parameters=dict(spec.parameters),
        user_name=actor.name,
    )
    session.add(prompt)
    commit(session, "error.prompt_saved_meanwhile", field="name", name=name)
    return prompt


def list_latest(session: Session, actor: Actor, project_name: str) -> Sequence[PromptTemplate]:
    """Each template's newest version."""
    project, _ = access(session, actor, project_name)
    newest = (
        select(PromptTemplate.name, func.max(PromptTemplate.version).label("version"))
        .where(PromptTemplate.project_id == project.id)
        .group_by(PromptTemplate.name)
        .subquery()
    )
    return session.scalars(
        select(PromptTemplate)
        .options(selectinload(PromptTemplate.project))
        .join(
            newest,
            (PromptTemplate.name == newest.c.name) & (PromptTemplate.version == newest.c.version),
        )
        .where(PromptTemplate.project_id == project.id)
        .order_by(PromptTemplate.name)
    ).all()


def versions(
    session: Session, actor: Actor, project_name: str, name: str
) -> Sequence[PromptTemplate]:
    """Newest first."""
    project, _ = access(session, actor, project_name)
    found = session.scalars(
        select(PromptTemplate)
        .options(selectinload(PromptTemplate.project))
        .where(PromptTemplate.project_id == project.id, PromptTemplate.name == name)
        .order_by(PromptTemplate.version.desc())
    ).all()
    if not found:
        raise NotFound("error.prompt_not_found", project=project_name, name=name)
    return found
