"""Fine-tuning runs: what is refused before a run starts (datasets that do not match their
format, a method the base model or the hardware cannot take, a run that will not fit in
memory), the run as a workload of kind `finetune`, stop and resume, the result registered as
a model version with its lineage, and comparisons of the base and the tuned model.
"""

import json
import math
import re
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from suanli.config import Settings
from suanli.core.errors import Conflict, InvalidInput
from suanli.core.names import NAME_PATTERN
from suanli.core.roles import ProjectRole
from suanli.core.states import TERMINAL, State
from suanli.data import formats, harvest
from suanli.data.store import BlobStore
from suanli.db.models import DataVersion, Finetune, Job, Project, Repository, User
from suanli.finetune import builtin, memory, progress
from suanli.finetune import config as files
from suanli.kinds import finetune as finetune_kind
from suanli.kinds import job as job_kind
from suanli.scheduler import model as sched
from suanli.schemas.data import ManifestEntry, VersionCreate
from suanli.schemas.finetune import FinetuneSpec
from suanli.schemas.jobs import JobListQuery, JobSpec, Resources
from suanli.services import audit, data, inspection, jobs, workfolders
from suanli.services.actor import Actor
from suanli.services.common import commit
from suanli.services.projects import access, writable

KIND = finetune_kind.NAME
LOG_BYTES = 16 * 2**20  # the end of trainer_log.jsonl a chart reads: ~60,000 logging steps
# What the watch loop reads each tick (~1,000 logging steps, far more than a tick's worth):
# where the run stands and whether its loss is still a number need only the newest lines.
WATCH_BYTES = 256 * 2**10
MAX_CONFIG = 2**20
COMPARE_FILE = "compare.json"
COMPARE_SCRIPT = Path(__file__).resolve().parents[1] / "finetune" / "compare.py"
MAX_COMPARE_BYTES = 2**20
STOPPABLE_AGAIN = (State.cancelled, State.failed)
PRETRAINING_SKIPPED = ("web.data.format.missing_column", "web.data.format.empty_response")


@dataclass(frozen=True)
class Estimate:
    """Memory per device for a run, against what one device it asked for has."""

    estimate: memory.Estimate
    available_bytes: int | None
    suggested: dict[str, Any] | None  # the spec's fields to change so that it fits

    @property
    def fits(self) -> bool | None:
        if self.available_bytes is None:
            return None
        return self.estimate.per_device_bytes <= self.available_bytes

    def as_json(self) -> dict[str, Any]:
        return {
            "per_device_bytes": self.estimate.per_device_bytes,
            "available_bytes": self.available_bytes,
            "fits": self.fits,
            "parameters": self.estimate.parameters,
            "trainable_parameters": self.estimate.trainable_parameters,
            "parts": dict(self.estimate.parts),
            "suggested": self.suggested,
        }


# --- before a run starts ---------------------------------------------------------------------


def check_spec(spec: FinetuneSpec, settings: Settings) -> None:
    """Rules across fields that the schema cannot state, each naming its field."""
    if spec.trainer not in settings.trainers:
        raise InvalidInput("error.finetune_no_trainer", field="trainer", name=spec.trainer)
    gpus = spec.resources.gpus
    if spec.method == "lora" and spec.lora.quantization_bit and not gpus:
        raise InvalidInput("error.finetune_qlora_needs_gpu", field="lora.quantization_bit")
    if spec.training.compute_type == "fp16" and not gpus:
        raise InvalidInput("error.finetune_fp16_needs_gpu", field="training.compute_type")
    if spec.deepspeed.stage and not gpus:
        raise InvalidInput("error.finetune_deepspeed_needs_gpu", field="deepspeed.stage")
    if spec.resources.is_fraction:
        raise InvalidInput("error.finetune_whole_gpus", field="resources")
    for index, name in enumerate(spec.builtin_datasets):
        dataset = builtin.get(name)
        where = f"builtin_datasets.{index}"
        if dataset is None:
            raise InvalidInput("error.finetune_no_builtin", field=where, name=name)
        if dataset.stage != spec.stage:
            raise InvalidInput(
                "error.finetune_dataset_stage",
                field=where,
                name=name,
                stage=dataset.stage,
                wanted=spec.stage,
            )
    if "identity" in spec.builtin_datasets and spec.identity is None:
        raise InvalidInput("error.finetune_identity_missing", field="identity")


def base_version(
    session: Session, actor: Actor, project: Project, spec: FinetuneSpec
) -> DataVersion:
    """The base model's version, read with the actor's rights."""
    resolved = data.resolve(session, actor, project, "model", [spec.model], "model")
    return session.get_one(DataVersion, resolved[0]["version_id"])


def model_shape(
    session: Session, store: BlobStore, version: DataVersion, field: str = "model"
) -> memory.ModelShape:
    """The base model's shape from its config.json; a version LLaMA-Factory cannot load (no
    Hugging Face layout: a GGUF file, an adapter alone) is refused here, not after a queue."""
    layout = inspection.model_layout(session, store, version)
    config_file = inspection.blobs_of(session, store, version).get("config.json")
    if layout.format != "huggingface" or config_file is None:
        raise InvalidInput("error.finetune_model_format", field=field, format=layout.format)
    try:
        with config_file.open("rb") as handle:
            config = json.loads(handle.read(MAX_CONFIG))
    except (OSError, ValueError):
        config = None
    shape = memory.ModelShape.from_config(config, layout.parameters) if config else None
    if shape is None:
        raise InvalidInput("error.finetune_model_config", field=field)
    return shape


def plan_of(spec: FinetuneSpec) -> memory.Plan:
    return memory.Plan(
        method=spec.method,
        stage=spec.stage,
        compute_type=spec.training.compute_type,
        quantization_bit=spec.lora.quantization_bit if spec.method == "lora" else None,
        lora_rank=spec.lora.rank,
        freeze_trainable_layers=spec.freeze.trainable_layers,
        batch_size=spec.training.batch_size,
        gradient_accumulation=spec.training.gradient_accumulation,
        cutoff_len=spec.training.cutoff_len,
        gpus_per_node=spec.resources.gpus,
        nodes=spec.resources.nodes,
        deepspeed_stage=spec.deepspeed.stage,
        offload=spec.deepspeed.offload,
        on_gpu=spec.resources.gpus > 0,
    )


def available_memory(spec: FinetuneSpec, nodes: Sequence[sched.Node]) -> int | None:
    """What one device of the run has: the smallest GPU of the model asked for (any model:
    the smallest there is), or, on CPUs, the memory the run asked for."""
    if not spec.resources.gpus:
        return spec.resources.memory
    sizes = [
        device.memory_bytes
        for node in nodes
        for device in node.devices
        if spec.resources.gpu_model in (None, device.model) and device.memory_bytes
    ]
    return min(sizes) if sizes else None


def estimate_for(
    spec: FinetuneSpec, shape: memory.ModelShape, nodes: Sequence[sched.Node]
) -> Estimate:
    plan = plan_of(spec)
    found = memory.estimate(shape, plan)
    available = available_memory(spec, nodes)
    suggested = None
    if available is not None and found.per_device_bytes > available:
        better = memory.suggest(shape, plan, available)
        suggested = changes(plan, better) if better is not None else None
    return Estimate(found, available, suggested)


def changes(plan: memory.Plan, better: memory.Plan) -> dict[str, Any]:
    """A suggested plan as the fields of a spec that change (dotted, as the form names them)."""
    fields = {
        "batch_size": "training.batch_size",
        "gradient_accumulation": "training.gradient_accumulation",
        "method": "method",
        "quantization_bit": "lora.quantization_bit",
        "gpus_per_node": "resources.gpus",
        "nodes": "resources.nodes",
        "deepspeed_stage": "deepspeed.stage",
        "offload": "deepspeed.offload",
        "compute_type": "training.compute_type",
        "cutoff_len": "training.cutoff_len",
    }
    return {
        name: getattr(better, attribute)
        for attribute, name in fields.items()
        if getattr(better, attribute) != getattr(plan, attribute)
    }


def estimate(
    session: Session,
    actor: Actor,
    spec: FinetuneSpec,
    store: BlobStore,
    nodes: Sequence[sched.Node],
) -> Estimate:
    """The memory a run would take per device, before it is created."""
    project, _ = access(session, actor, spec.project, ProjectRole.member)
    return estimate_for(
        spec, model_shape(session, store, base_version(session, actor, project, spec)), nodes
    )


def dataset_entries(
    session: Session, actor: Actor, project: Project, spec: FinetuneSpec, store: BlobStore
) -> list[files.Entry]:
    """Every dataset as a dataset_info.json entry, each version's records checked as
    LLaMA-Factory will read them: a dataset whose columns do not match its format is refused
    here, naming its record."""
    resolved = data.resolve(session, actor, project, "dataset", spec.datasets, "datasets")
    entries: list[files.Entry] = []
    for index, item in enumerate(resolved):
        where = f"datasets.{index}"
        version = session.get_one(DataVersion, item["version_id"])
        blobs = inspection.blobs_of(session, store, version)
        check = inspection.check_dataset(blobs)
        folder = f"datasets/{item['name']}"
        found = _entries_of(check, blobs, folder, spec.stage, where, str(item["ref"]))
        if not found:
            raise InvalidInput("error.finetune_dataset_empty", field=where, name=item["ref"])
        entries += found
    for name in spec.builtin_datasets:
        dataset = builtin.get(name)
        if dataset is None:  # check_spec refused it
            continue
        entry = builtin.entry(dataset)
        entries.append(
            files.Entry(
                name=f"builtin_{name}",
                file=finetune_kind.builtin_file(name),
                formatting=dataset.formatting,
                ranking=dataset.ranking,
                columns=entry.get("columns"),
                tags=entry.get("tags"),
            )
        )
    return entries


def _entries_of(
    check: inspection.DatasetCheck,
    blobs: Mapping[str, Path],
    folder: str,
    stage: str,
    where: str,
    ref: str,
) -> list[files.Entry]:
    entries: list[files.Entry] = []
    for position, checked in enumerate(check.files):
        if checked.problem is not None:
            raise InvalidInput(
                checked.problem.key, field=where, **{"name": checked.path, **checked.problem.params}
            )
        report = checked.report
        if report is None:
            continue
        findings = [f for f in report.findings if not _pretraining_answer(stage, f)]
        if report.formatting is None or findings:
            first = (findings or report.findings)[0].problem
            raise InvalidInput(first.key, field=where, **{"name": checked.path, **first.params})
        info_entry = check.info.entries.get(checked.entry or "") if check.info else None
        name = f"{folder.split('/')[-1]}_{position}".replace("-", "_").replace(".", "_")
        if info_entry is not None:
            entry = files.Entry(
                name=name,
                file=f"{folder}/{checked.path}",
                formatting=info_entry.formatting,
                ranking=info_entry.ranking,
                columns=info_entry.columns,
                tags=info_entry.tags if info_entry.formatting != "alpaca" else None,
            )
        else:
            entry = _guessed_entry(
                name, f"{folder}/{checked.path}", report.formatting, blobs, checked
            )
        if (stage == "dpo") != entry.ranking:
            raise InvalidInput(
                "error.finetune_dataset_ranking"
                if stage == "dpo"
                else "error.finetune_dataset_ranked",
                field=where,
                name=ref,
            )
        entries.append(entry)
    return entries


def _pretraining_answer(stage: str, finding: formats.Finding) -> bool:
    """Pre-training reads text alone: no answer column is missing."""
    answer = finding.problem.params.get("column") == formats.COLUMN_DEFAULTS["response"]
    return stage == "pt" and answer and finding.problem.key in PRETRAINING_SKIPPED


def _guessed_entry(
    name: str,
    file: str,
    formatting: str,
    blobs: Mapping[str, Path],
    checked: inspection.FileCheck,
) -> files.Entry:
    """The entry LLaMA-Factory needs for a file without a dataset_info.json, from its first
    record: `messages` or `conversations`, role/content or from/value, chosen/rejected."""
    first = inspection.first_record(blobs[checked.path], checked.path)
    return files.Entry(name=name, file=file, **formats.entry_fields(formatting, first))


def output_name(spec: FinetuneSpec, run_id: int) -> str:
    return spec.output or (spec.name if _is_name(spec.name) else f"finetune-{run_id}")


def _is_name(text: str) -> bool:
    return bool(text) and re.fullmatch(NAME_PATTERN, text) is not None


# --- the run ---------------------------------------------------------------------------------


def create(
    session: Session,
    actor: Actor,
    spec: FinetuneSpec,
    store: BlobStore,
    settings: Settings,
    nodes: Sequence[sched.Node],
) -> Job:
    project, _ = access(session, actor, spec.project, ProjectRole.member)
    writable(project)
    check_spec(spec, settings)
    shape = model_shape(session, store, base_version(session, actor, project, spec))
    if spec.method == "freeze" and abs(spec.freeze.trainable_layers) > shape.num_layers:
        raise InvalidInput(
            "error.finetune_freeze_layers", field="freeze.trainable_layers", layers=shape.num_layers
        )
    found = estimate_for(spec, shape, nodes)
    if found.fits is False:
        raise InvalidInput(
            "error.finetune_does_not_fit",
            field="resources.gpus" if spec.resources.gpus else "resources.memory",
            needed=_gib(found.estimate.per_device_bytes),
            available=_gib(found.available_bytes or 0),
            suggestion=", ".join(f"{k} = {v}" for k, v in (found.suggested or {}).items()) or "-",
        )
    entries = dataset_entries(session, actor, project, spec, store)
    stored = {**spec.model_dump(mode="json"), "entries": [e.as_json() for e in entries]}
    job = jobs.submit(
        session, actor, spec, nodes, settings.unix_users, kind=finetune_kind.KIND, stored=stored
    )
    session.add(Finetune(job_id=job.id, estimate=found.as_json()))
    commit(session, "error.conflict")
    return job


def _gib(size: int) -> str:
    return f"{size / 2**30:.1f}"


def list_runs(
    session: Session, actor: Actor, query: JobListQuery
) -> list[tuple[Job, Finetune | None]]:
    found = jobs.list_jobs(session, actor, query, kind=KIND)
    rows = {
        row.job_id: row
        for row in session.scalars(
            select(Finetune).where(Finetune.job_id.in_([job.id for job in found]))
        )
    }
    return [(job, rows.get(job.id)) for job in found]


def get(session: Session, actor: Actor, run_id: int) -> tuple[Job, Finetune]:
    job = jobs.get_job(session, actor, run_id, kind=KIND)
    row = session.get(Finetune, job.id)
    if row is None:  # a run accepted by a server that died before writing its row
        row = Finetune(job_id=job.id)
        session.add(row)
        session.flush()
    return job, row


def stop(session: Session, actor: Actor, run_id: int) -> Job:
    return jobs.cancel(session, actor, run_id, kind=KIND)


def resume(session: Session, actor: Actor, run_id: int) -> Job:
    """A stopped or failed run queued again, in place: the same folder, so LLaMA-Factory
    continues from the last checkpoint it wrote (not from zero), and the same page and chart.
    It may be retried as often again as its spec says."""
    job = jobs.get_job(session, actor, run_id, kind=KIND)
    jobs.may_manage(session, actor, job)
    writable(job.project)
    if job.state not in STOPPABLE_AGAIN:
        raise Conflict("error.finetune_not_resumable", state=job.state)
    job.handle, job.placement, job.stop_reason, job.stop_sent_at = None, None, "", None
    job.exit_reason, job.exit_code, job.exit_signal, job.exit_detail = "", None, None, ""
    job.finished_at = None
    # Its retries again, counted from here: the folder (and so its checkpoints) stays, as
    # every later attempt of a workload keeps its folder.
    retries = int((job.spec or {}).get("retries", 0))
    job.request = {**(job.request or {}), "retries": job.attempts + retries}
    row = session.get(Finetune, job.id)
    if row is not None:
        row.registration, row.register_problem = "none", {}
    jobs.move(job, State.pending, "event.resumed_by", user=actor.name)
    audit.record(
        session, actor, "finetune.resume", target_type=KIND, target=str(job.id), project=job.project
    )
    commit(session, "error.conflict")
    return job


def read_progress(
    settings: Settings, job: Job, after: int = 0, limit: int = LOG_BYTES
) -> progress.Progress:
    """The end (`limit` bytes) of the run's trainer_log.jsonl as its workload wrote it (never
    through a link)."""
    folder = jobs.work_folder(settings, job.id)
    data_read = workfolders.read_tail(folder, f"{files.OUTPUT}/{files.LOG_FILE}", limit)
    return progress.read(data_read or b"", after=after)


def training_yaml(settings: Settings, job: Job) -> str:
    """The YAML the run reads, as this server writes it for the run's folder."""
    spec = finetune_kind.KIND.load(job.spec, job.spec_version)
    entries = [files.Entry.from_json(item) for item in spec.entries]
    folder = jobs.work_folder(settings, job.id)
    arguments = files.train_arguments(spec, entries, folder, on_gpu=spec.resources.gpus > 0)
    return files.render(arguments)


# --- at the end: the result as a model version ------------------------------------------------


def register(
    session: Session, settings: Settings, store: BlobStore, job: Job, row: Finetune
) -> None:
    """The result of a run that succeeded as a new version of its output model repository
    (made in the run's project when missing), with its lineage: the base model's and the
    datasets' versions; the run's parameters and final metrics travel in the version as
    suanli-finetune.json. For LoRA merged, the merged weights are the version's root (what an
    engine serves) and the adapter is under adapter/; else the output folder's files, without
    the checkpoints unless the run asked to keep them."""
    spec = finetune_kind.KIND.load(job.spec, job.spec_version)
    folder = jobs.work_folder(settings, job.id)
    project = session.get_one(Project, job.project_id)
    repository = _output_repository(session, project, output_name(spec, job.id), job)
    final = _final_metrics(folder)
    room = data.room_left(session, project)

    def held(sha256: str, size: int) -> None:
        data.hold(session, project.id, sha256, size)

    collected: list[ManifestEntry] = []
    if files.merges(spec):
        collected += _harvest(folder, files.MERGED, "", store, room, held, keep=True)
        collected += _harvest(folder, files.OUTPUT, "adapter/", store, room, held, keep=False)
    else:
        keep = spec.keep_checkpoints
        collected += _harvest(folder, files.OUTPUT, "", store, room, held, keep=keep)
    lineage = [str(item["ref"]) for item in job.inputs or []]
    about = {
        "run": job.id,
        "base_model": _input_ref(job, "model"),
        "datasets": [str(i["ref"]) for i in job.inputs or [] if i.get("kind") == "dataset"],
        "builtin_datasets": spec.builtin_datasets,
        "parameters": spec.model_dump(mode="json", exclude={"entries"}),
        "final_metrics": final,
    }
    blob = store.new_incoming()
    blob.write_text(json.dumps(about, ensure_ascii=False, indent=1, default=str))
    sha256, size = store.add(blob)
    held(sha256, size)
    collected.append(ManifestEntry(path="suanli-finetune.json", sha256=sha256, size=size))
    session.flush()
    author = session.get(User, job.user_id) if job.user_id else None
    if author is None:
        raise harvest.HarvestError("error.finetune_author_gone")
    actor = Actor(author)
    version = data.create_version(
        session,
        actor,
        store,
        repository,
        VersionCreate(message=f"fine-tuned by run #{job.id}", files=collected),
        source="job",
        job_id=job.id,
        lineage=lineage,
    )
    row.output_version_id = version.id
    row.final_metrics = final
    row.registration = "registered"


def _input_ref(job: Job, kind: str) -> str:
    return next((str(i["ref"]) for i in job.inputs or [] if i.get("kind") == kind), "")


def _harvest(
    folder: Path,
    relative: str,
    prefix: str,
    store: BlobStore,
    room: int | None,
    held: Any,
    *,
    keep: bool,
) -> list[ManifestEntry]:
    found = harvest.collect(folder, relative, store, room, held, skip=None if keep else _checkpoint)
    return [
        ManifestEntry(
            path=f"checkpoints/{f.path}" if _checkpoint(f.path) else f"{prefix}{f.path}",
            sha256=f.sha256,
            size=f.size,
        )
        for f in found
    ]


def _checkpoint(path: str) -> bool:
    return path.split("/")[0].startswith("checkpoint-")


def _final_metrics(folder: Path) -> dict[str, float]:
    """LLaMA-Factory's all_results.json: train_loss, eval_loss, runtime, samples per second."""
    raw = workfolders.read(folder, f"{files.OUTPUT}/all_results.json", 2**16)
    try:
        document = json.loads(raw or b"{}")
    except ValueError:
        return {}
    if not isinstance(document, dict):
        return {}
    return {
        str(key)[:64]: float(value)
        for key, value in list(document.items())[:50]
        if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    }


def _output_repository(session: Session, project: Project, name: str, job: Job) -> Repository:
    existing = session.scalar(
        select(Repository).where(
            Repository.kind == "model", Repository.project_id == project.id, Repository.name == name
        )
    )
    if existing is not None:
        return existing
    repository = Repository(
        kind="model",
        name=name,
        project=project,
        description=f"fine-tuned by run #{job.id}",
        visibility="project",
        user_id=job.user_id,
        user_name=job.user_name,
    )
    session.add(repository)
    session.flush()
    return repository


# --- comparison: the same prompts, the base and the tuned model --------------------------------


def compare(
    session: Session,
    actor: Actor,
    run_id: int,
    prompts: list[str],
    settings: Settings,
    nodes: Sequence[sched.Node],
) -> Finetune:
    """A job in the run's project, as the caller, that loads the base and the registered
    result with the trainer's Python and answers each prompt with both (greedy)."""
    job, row = get(session, actor, run_id)
    project = job.project
    access(session, actor, project.name, ProjectRole.member)
    if row.output_version_id is None:
        raise Conflict("error.finetune_no_output", field="run")
    if row.compare_state == "running":
        raise Conflict("error.finetune_compare_running", field="run")
    spec = finetune_kind.KIND.load(job.spec, job.spec_version)
    trainer = settings.trainers.get(spec.trainer)
    if trainer is None:
        raise InvalidInput("error.finetune_no_trainer", field="trainer", name=spec.trainer)
    version = session.get_one(DataVersion, row.output_version_id)
    output = f"{version.repository.project.name}/{version.repository.name}@{version.number}"
    base = _input_ref(job, "model")
    base_name, tuned_name = files.reference_name(base), files.reference_name(output)
    if base_name == tuned_name:
        raise InvalidInput("error.finetune_compare_same_name", field="run", name=base_name)
    python = shlex.quote(str(trainer.prefix / "bin" / "python"))
    script = "\n".join(
        [
            "set -e",
            "cat > prompts.json <<'SUANLI_PROMPTS'",
            json.dumps(prompts, ensure_ascii=False),
            "SUANLI_PROMPTS",
            f"{python} - prompts.json models/{base_name} models/{tuned_name} {COMPARE_FILE}"
            " <<'SUANLI_COMPARE'",
            COMPARE_SCRIPT.read_text(encoding="utf-8"),
            "SUANLI_COMPARE",
        ]
    )
    compare_job = jobs.submit(
        session,
        actor,
        JobSpec(
            project=project.name,
            name=f"compare-{job.id}",
            script=script + "\n",
            env={"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"},
            models=[base, output],
            resources=Resources(cpus=1.0, memory=spec.resources.memory),
        ),
        nodes,
        settings.unix_users,
        kind=job_kind.KIND,
    )
    row = session.get_one(Finetune, job.id)
    row.compare_job_id = compare_job.id
    row.compare_state = "running"
    row.compare_prompts = list(prompts)
    row.compare_answers = []
    commit(session, "error.conflict")
    return row


def settle_compare(settings: Settings, row: Finetune, job: Job | None) -> None:
    """A comparison whose job ended: its answers read from the job's folder (untrusted:
    bounded, and only strings kept)."""
    if job is not None and job.state not in TERMINAL:
        return
    answers: list[dict[str, str]] = []
    if job is not None and job.state == State.succeeded:
        raw = workfolders.read(jobs.work_folder(settings, job.id), COMPARE_FILE, MAX_COMPARE_BYTES)
        answers = _answers(raw, row.compare_prompts)
    row.compare_answers = answers
    row.compare_state = "succeeded" if answers else "failed"


def _answers(raw: bytes | None, prompts: list[str]) -> list[dict[str, str]]:
    try:
        document = json.loads(raw or b"[]")
    except ValueError:
        return []
    if not isinstance(document, list) or len(document) != len(prompts):
        return []
    found = []
    for prompt, item in zip(prompts, document, strict=True):
        if not isinstance(item, dict):
            return []
        base, tuned = item.get("base"), item.get("tuned")
        if not isinstance(base, str) or not isinstance(tuned, str):
            return []
        found.append({"prompt": prompt, "base": base[:8000], "tuned": tuned[:8000]})
    return found
