"""HTML forms to the API's request schemas, and the schemas' errors back to form fields.

A form is validated by the very schema the REST API uses, so the console and the API accept
and refuse the same things with the same messages. Form inputs are named by the schema
field's dotted path (`resources.gpus`), which is also what an error names.
"""

import re
import shlex
from collections.abc import Mapping, Sequence
from typing import Any

import yaml
from pydantic import ValidationError
from starlette.datastructures import FormData
from starlette.requests import Request

from suanli.api.problems import field_errors
from suanli.core import documents
from suanli.core.errors import SuanliError
from suanli.core.quantities import parse_bytes
from suanli.i18n import translate
from suanli.schemas.jobs import SIZE_PATTERN

Errors = dict[str, str]


def fields(form: FormData) -> dict[str, str]:
    """The text fields of a form (the last value where a name repeats), CSRF token left out."""
    return {
        key: value
        for key, value in form.multi_items()
        if isinstance(value, str) and key != "csrf_token"
    }


def errors_of(error: ValidationError | SuanliError, language: str) -> Errors:
    """Field → message; a message about no field in particular goes under ""."""
    if isinstance(error, ValidationError):
        found: Errors = {}
        for entry in field_errors(error.errors(), language):
            found.setdefault(entry["field"], entry["message"])
        return found
    return {error.field or "": translate(error.key, language, **error.params)}


def refused(
    request: Request, error: ValidationError | SuanliError, prefix: str = ""
) -> tuple[Errors, int]:
    """What a refused form shows: its errors by field (named `prefix.field` where one page has
    several forms) in the reader's language, and the status to answer with."""
    found = errors_of(error, request.state.language)
    if prefix:
        found = {f"{prefix}.{key}" if key else prefix: message for key, message in found.items()}
    return found, error.status if isinstance(error, SuanliError) else 422


def number(value: str) -> int | float | str:
    """A typed number as a number; anything else stays text for the schema to refuse."""
    text = value.strip()
    try:
        return int(text)
    except ValueError:
        pass
    try:
        return float(text)
    except ValueError:
        return text


def size(value: str) -> int | str:
    """ "16Gi" or "1024" as bytes; anything else stays text for the schema to refuse."""
    text = value.strip()
    return parse_bytes(text) if re.match(SIZE_PATTERN, text) else text


def optional(values: Mapping[str, str], name: str) -> str | None:
    value = values.get(name, "").strip()
    return value or None


class FormError(Exception):
    """A field that could not even be read (bad YAML, an unclosed quote)."""

    def __init__(self, field: str, key: str, **params: Any):
        self.field, self.key, self.params = field, key, params
        super().__init__(key)


def job_spec(values: Mapping[str, str]) -> dict[str, Any]:
    """The job form (or its YAML text) as a JobSpec document. Sizes and durations stay as
    typed ("16Gi", "2h"): the schema reads them, and the YAML view shows them as written."""
    if values.get("mode") == "yaml":
        return yaml_spec(values.get("yaml", ""))
    spec: dict[str, Any] = {"project": values.get("project", "")}
    for name in ("name", "workdir", "launcher", "pool", "priority", "max_duration"):
        if value := optional(values, name):
            spec[name] = value
    if values.get("mode") == "script":
        spec["script"] = values.get("script", "").replace("\r\n", "\n")
    else:
        try:
            spec["command"] = shlex.split(values.get("command", ""))
        except ValueError:
            raise FormError("command", "web.error.unclosed_quote") from None
    env = key_values(values.get("env", ""), "env", "web.error.env_line")
    if env:
        spec["env"] = env
    resources: dict[str, Any] = {}
    if nodes := optional(values, "resources.nodes"):
        resources["nodes"] = number(nodes)
    resources.update(resources_of(values))
    if resources:
        spec["resources"] = resources
    if retries := optional(values, "retries"):
        spec["retries"] = number(retries)
    spec["preemptible"] = values.get("preemptible") == "on"
    return spec


def resources_of(values: Mapping[str, str]) -> dict[str, Any]:
    """GPUs (whole, a fraction or none, as the `gpu_kind` tabs say), CPUs and memory of a
    form, as the schema's `resources` (nodes aside): the job and dev environment forms ask
    for them alike."""
    resources: dict[str, Any] = {}
    gpu_kind = values.get("gpu_kind", "whole")
    if gpu_kind == "whole" and (gpus := optional(values, "resources.gpus")):
        resources["gpus"] = number(gpus)
        if model := optional(values, "resources.gpu_model"):
            resources["gpu_model"] = model
    if gpu_kind == "fraction":
        if memory := optional(values, "resources.gpu_memory"):
            resources["gpu_memory"] = memory
        if compute := optional(values, "resources.gpu_compute_percent"):
            resources["gpu_compute_percent"] = number(compute)
    if cpus := optional(values, "resources.cpus"):
        resources["cpus"] = number(cpus)
    if memory := optional(values, "resources.memory"):
        resources["memory"] = memory
    return resources


def devenv_spec(values: Mapping[str, str], tools: Sequence[str]) -> dict[str, Any]:
    """The dev environment form as a DevEnvSpec document. The tools are checkboxes (one
    name, several values), so they come apart from the text fields; durations and sizes
    stay as typed for the schema to read."""
    spec: dict[str, Any] = {
        "project": values.get("project", ""),
        "name": values.get("name", "").strip(),
        "tools": list(tools),
    }
    for name in ("environment", "workdir", "idle_timeout", "max_duration"):
        if value := optional(values, name):
            spec[name] = value
    if resources := resources_of(values):
        spec["resources"] = resources
    return spec


def key_values(text: str, field: str, message: str) -> dict[str, str]:
    """`key=value` lines (blank lines and # comments skipped), values as written; a line
    without "=" or without a key is a FormError on `field` with the catalogue `message`."""
    found: dict[str, str] = {}
    for line_number, line in enumerate(text.splitlines(), start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        key, sep, value = line.partition("=")
        if not sep or not key.strip():
            raise FormError(field, message, line=line_number)
        found[key.strip()] = value
    return found


def yaml_spec(text: str) -> dict[str, Any]:
    """The YAML field, read within bounds (no aliases, size and nesting capped): it is CPU
    work, so callers run it in a worker thread."""
    try:
        document = documents.load_yaml(text)
    except documents.DocumentError as error:
        raise FormError("yaml", error.key, **error.params) from None
    if not isinstance(document, dict):
        raise FormError("yaml", "web.error.yaml_mapping")
    return document


class _Dumper(yaml.SafeDumper):
    """Multi-line text (a script) as a literal block, the way people write it."""


def _text(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _text)
_SIZES = ("memory", "gpu_memory")
_DEFAULTS = {"preemptible": True, "retries": 0, "nodes": 1, "launcher": "none"}


def _readable(value: Any) -> Any:
    """Nothing empty, sizes as 16Gi rather than bytes, defaults left out."""
    if isinstance(value, Mapping):
        shown = {}
        for key, item in value.items():
            if item in (None, "", {}, []) or _DEFAULTS.get(key, object()) == item:
                continue
            shown[key] = (
                size_text(item) if key in _SIZES and isinstance(item, int) else _readable(item)
            )
        return shown
    return value


def spec_yaml(spec: Mapping[str, Any]) -> str:
    """A spec as the YAML `suanli submit -f` takes."""
    return yaml.dump(
        _readable(spec),
        Dumper=_Dumper,
        allow_unicode=True,
        sort_keys=False,
        default_flow_style=False,
    )


def form_of_spec(spec: Mapping[str, Any]) -> dict[str, str]:
    """A stored spec back into form fields: "edit and submit again" starts from it."""
    resources = spec.get("resources") or {}
    values = {
        "project": spec.get("project", ""),
        "name": spec.get("name") or "",
        "workdir": spec.get("workdir") or "",
        "launcher": spec.get("launcher") or "none",
        "pool": spec.get("pool") or "",
        "priority": spec.get("priority", "normal"),
        "max_duration": str(spec.get("max_duration") or ""),
        "retries": str(spec.get("retries") or ""),
        "preemptible": "on" if spec.get("preemptible", True) else "",
        "env": "\n".join(f"{k}={v}" for k, v in (spec.get("env") or {}).items()),
        "resources.nodes": str(resources.get("nodes", 1)),
        "resources.cpus": f"{resources.get('cpus', 1):g}",
        "resources.memory": size_text(resources.get("memory")),
    }
    if spec.get("script"):
        values.update(mode="script", script=spec["script"])
    else:
        values.update(mode="command", command=shlex.join(spec.get("command") or []))
    if resources.get("gpu_memory") or resources.get("gpu_compute_percent"):
        values["gpu_kind"] = "fraction"
        values["resources.gpu_memory"] = size_text(resources.get("gpu_memory"))
        values["resources.gpu_compute_percent"] = str(resources.get("gpu_compute_percent") or "")
    else:
        values["gpu_kind"] = "whole"
        values["resources.gpus"] = str(resources.get("gpus", 0))
        values["resources.gpu_model"] = resources.get("gpu_model") or ""
    return values


def size_text(value: int | None) -> str:
    """Bytes as the largest binary unit that divides them exactly: 17179869184 → "16Gi"."""
    if not value:
        return ""
    for unit, factor in (("Ti", 2**40), ("Gi", 2**30), ("Mi", 2**20), ("Ki", 2**10)):
        if value % factor == 0:
            return f"{value // factor}{unit}"
    return str(value)
