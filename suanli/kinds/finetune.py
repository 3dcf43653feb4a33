"""A fine-tuning run: LLaMA-Factory (`llamafactory-cli train`) in the trainer environment an
administrator registered, reading the YAML and dataset_info.json Suanli writes in the run's
folder (suanli.finetune.config). Every attempt of a run uses the same folder, so a run that
starts again (preempted, failed and retried, resumed after a stop) continues from its last
checkpoint. Its progress is read from LLaMA-Factory's trainer_log.jsonl by the `finetune-watch`
loop (suanli.controllers.finetunes), which also stops a run whose loss is no longer a number
and registers the result of a run that succeeded.
"""

from collections.abc import Callable, Mapping
from typing import Annotated, Any, ClassVar

from pydantic import Field

from suanli.config import Settings, Trainer
from suanli.controllers.loop import Ticking
from suanli.db.engine import Database
from suanli.finetune import builtin
from suanli.finetune import config as files
from suanli.kinds.base import Kind, Launch, Start, Unsupported, data_inputs
from suanli.schemas.finetune import FinetuneSpec
from suanli.services import workfolders

NAME = "finetune"


class FinetuneRun(FinetuneSpec):
    """The spec as a run keeps it: the user's, with the datasets' entries the server read
    from the dataset versions when it accepted the run (not something a user sends)."""

    entries: Annotated[list[dict[str, Any]], Field(max_length=64)] = Field(default_factory=list)


class FinetuneKind(Kind):
    name = NAME
    spec_model = FinetuneRun
    stops: ClassVar[Mapping[str, str]] = {"diverged": "event.stopped_diverged"}

    def launch(self, start: Start) -> Launch:
        spec: FinetuneRun = start.spec
        trainer = trainer_of(start.settings, spec.trainer)
        folder, account = start.folder, start.account
        entries = [files.Entry.from_json(item) for item in spec.entries]
        identity = (spec.identity.name, spec.identity.author) if spec.identity else None
        for name in spec.builtin_datasets:
            dataset = builtin.get(name)
            if dataset is None:
                raise Unsupported(f"the built-in dataset {name!r} is not shipped any more")
            content = builtin.content(dataset, identity).decode()
            workfolders.write(folder, builtin_file(name), content, account)
        on_gpu = spec.resources.gpus > 0
        arguments = files.train_arguments(spec, entries, folder, on_gpu=on_gpu)
        workfolders.write(folder, files.TRAIN_FILE, files.render(arguments), account)
        info = files.render_json(files.dataset_info(entries, folder))
        workfolders.write(folder, files.INFO_FILE, info, account)
        if files.merges(spec):
            export = files.render(files.export_arguments(spec, folder))
            workfolders.write(folder, files.EXPORT_FILE, export, account)
        if spec.deepspeed.stage:
            deepspeed = files.render_json(files.deepspeed_config(spec))
            workfolders.write(folder, files.DEEPSPEED_FILE, deepspeed, account)
        script = files.run_script(
            spec, processes=max(spec.resources.gpus, 1), nodes=spec.resources.nodes
        )
        run = workfolders.write(folder, files.SCRIPT_FILE, script, account)
        mounts, inputs = data_inputs(start)
        env = {
            **start.env,
            **trainer.env,
            **inputs,
            "PATH": f"{trainer.prefix / 'bin'}:{start.env.get('PATH', '/usr/bin:/bin')}",
            "VIRTUAL_ENV": str(trainer.prefix),
            # Nothing is fetched from a model hub: the models and datasets are the run's.
            "HF_HUB_OFFLINE": "1",
            "HF_DATASETS_OFFLINE": "1",
            "HF_HOME": str(folder / ".cache" / "huggingface"),
            "PYTHONUNBUFFERED": "1",
            "DISABLE_VERSION_CHECK": "1",
        }
        return Launch(argv=("/bin/bash", str(run)), workdir=folder, env=env, mounts=mounts)

    def controllers(
        self, settings: Settings, database: Database, wake: Callable[[], None]
    ) -> list[Ticking]:
        from suanli.controllers.finetunes import FinetuneWatch  # the loop imports the kinds

        return [FinetuneWatch(settings, database, wake)]


KIND = FinetuneKind()


def builtin_file(name: str) -> str:
    """The file a built-in dataset is written to in the run's folder."""
    return f"builtin-{name}.json"


def trainer_of(settings: Settings, name: str) -> Trainer:
    trainer = settings.trainers.get(name)
    if trainer is None:
        raise Unsupported(f"the trainer {name!r} is not registered on this server")
    return trainer
