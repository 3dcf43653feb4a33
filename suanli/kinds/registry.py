"""Every kind this server runs, by the name its rows carry."""

from suanli.kinds import devenv, finetune, job, replica, service
from suanli.kinds.base import Kind, Unreadable

KINDS: dict[str, Kind] = {
    kind.name: kind for kind in (job.KIND, devenv.KIND, replica.KIND, service.KIND, finetune.KIND)
}


def kind_of(name: str) -> Kind:
    try:
        return KINDS[name]
    except KeyError:
        raise Unreadable(f"unknown workload kind {name!r}") from None
