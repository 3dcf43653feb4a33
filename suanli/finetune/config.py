"""A fine-tuning run as LLaMA-Factory's own files: the training YAML, `dataset_info.json`, the
export YAML that merges a LoRA adapter, and a DeepSpeed configuration. Pure functions of the
kept spec and the run's folder, so the YAML a run page shows is the one the run read.

The layout of a run's folder (the workload's own):

    models/<base>/        the base model version (read-only)
    datasets/<name>/      each dataset version (read-only)
    dataset_info.json     LLaMA-Factory's dataset registry (the folder is its dataset_dir)
    builtin-<name>.json   each built-in dataset chosen, identity filled in
    train.yaml export.yaml deepspeed.json run.sh
    output/               LLaMA-Factory's output_dir: checkpoints, trainer_log.jsonl, the result
    merged/               LoRA merged into the base (export), when asked
"""

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from suanli.schemas.finetune import FinetuneSpec

TRAIN_FILE, EXPORT_FILE, DEEPSPEED_FILE = "train.yaml", "export.yaml", "deepspeed.json"
OUTPUT, MERGED = "output", "merged"
INFO_FILE, SCRIPT_FILE = "dataset_info.json", "run.sh"
LOG_FILE = "trainer_log.jsonl"


@dataclass(frozen=True)
class Entry:
    """One dataset as LLaMA-Factory reads it: its dataset_info.json entry, the file given
    relative to the run's folder (a dataset version's file, or a built-in one)."""

    name: str
    file: str
    formatting: str
    ranking: bool = False
    columns: dict[str, str] | None = None
    tags: dict[str, str] | None = None

    def as_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "file": self.file,
            "formatting": self.formatting,
            "ranking": self.ranking,
            "columns": self.columns,
            "tags": self.tags,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "Entry":
        return cls(
            name=str(data["name"]),
            file=str(data["file"]),
            formatting=str(data["formatting"]),
            ranking=bool(data.get("ranking")),
            columns=data.get("columns"),
            tags=data.get("tags"),
        )


def model_folder(spec: FinetuneSpec) -> str:
    """The base model's folder in the run's folder: models/<name of its reference>."""
    return f"models/{reference_name(spec.model)}"


def reference_name(ref: str) -> str:
    """`proj/name@3` → `name`: the folder a workload finds a version in."""
    return ref.split("/")[-1].split("@")[0]


def dataset_info(entries: list[Entry], folder: Path) -> dict[str, Any]:
    """dataset_info.json: every entry by name, its file as an absolute path in the folder."""
    info: dict[str, Any] = {}
    for entry in entries:
        attributes: dict[str, Any] = {
            "file_name": str(folder / entry.file),
            "formatting": entry.formatting,
        }
        if entry.ranking:
            attributes["ranking"] = True
        if entry.columns:
            attributes["columns"] = entry.columns
        if entry.tags:
            attributes["tags"] = entry.tags
        info[entry.name] = attributes
    return info


def train_arguments(
    spec: FinetuneSpec, entries: list[Entry], folder: Path, *, on_gpu: bool
) -> dict[str, Any]:
    """The training YAML. The output folder is never overwritten: a run started again after
    a stop or a preemption finds its checkpoints there and LLaMA-Factory resumes from the
    last one."""
    training = spec.training
    arguments: dict[str, Any] = {
        "model_name_or_path": str(folder / model_folder(spec)),
        "trust_remote_code": False,
        "stage": spec.stage,
        "do_train": True,
        "finetuning_type": spec.method,
        "dataset": ",".join(entry.name for entry in entries),
        "dataset_dir": str(folder),
        "template": spec.template,
        "cutoff_len": training.cutoff_len,
        "overwrite_cache": True,
        "dataloader_num_workers": 0,
        "output_dir": str(folder / OUTPUT),
        "overwrite_output_dir": False,
        "logging_steps": training.logging_steps,
        # A NaN loss is logged as NaN (not averaged away), so that a diverged run is seen.
        "logging_nan_inf_filter": False,
        "save_steps": training.save_steps,
        "plot_loss": False,
        "report_to": "none",
        "include_num_input_tokens_seen": True,
        "per_device_train_batch_size": training.batch_size,
        "gradient_accumulation_steps": training.gradient_accumulation,
        "learning_rate": training.learning_rate,
        "num_train_epochs": training.epochs,
        "lr_scheduler_type": training.lr_scheduler,
        "warmup_ratio": training.warmup_ratio,
        "seed": training.seed,
        "ddp_timeout": 180000000,
    }
    if training.max_samples is not None:
        arguments["max_samples"] = training.max_samples
    if training.compute_type != "fp32":
        arguments[training.compute_type] = True
    if not on_gpu:
        arguments["use_cpu"] = True
    if training.val_size > 0:
        arguments |= {
            "val_size": training.val_size,
            "per_device_eval_batch_size": training.batch_size,
            "eval_strategy": "steps",
            "eval_steps": training.save_steps,
        }
    if spec.stage == "dpo":
        arguments |= {"pref_beta": training.pref_beta, "pref_loss": "sigmoid"}
    if spec.method == "lora":
        lora = spec.lora
        arguments |= {
            "lora_rank": lora.rank,
            "lora_alpha": lora.alpha or 2 * lora.rank,
            "lora_dropout": lora.dropout,
            "lora_target": ",".join(lora.target),
        }
        if lora.quantization_bit:
            arguments |= {"quantization_bit": lora.quantization_bit, "quantization_method": "bnb"}
    elif spec.method == "freeze":
        arguments |= {
            "freeze_trainable_layers": spec.freeze.trainable_layers,
            "freeze_trainable_modules": ",".join(spec.freeze.trainable_modules),
        }
    if spec.deepspeed.stage:
        arguments["deepspeed"] = str(folder / DEEPSPEED_FILE)
    return arguments


def export_arguments(spec: FinetuneSpec, folder: Path) -> dict[str, Any]:
    """LoRA merged into the base: the full weights an engine can serve."""
    return {
        "model_name_or_path": str(folder / model_folder(spec)),
        "adapter_name_or_path": str(folder / OUTPUT),
        "template": spec.template,
        "finetuning_type": "lora",
        "trust_remote_code": False,
        "export_dir": str(folder / MERGED),
        "export_size": 5,
        "export_device": "cpu",
        "export_legacy_format": False,
    }


def merges(spec: FinetuneSpec) -> bool:
    return spec.method == "lora" and spec.merge


def deepspeed_config(spec: FinetuneSpec) -> dict[str, Any]:
    """ZeRO stage 2 or 3 with values left to the trainer ("auto"), as DeepSpeed's Hugging
    Face integration documents; offload puts optimiser states (and, at stage 3, weights) in
    host memory."""
    zero: dict[str, Any] = {
        "stage": spec.deepspeed.stage,
        "overlap_comm": False,
        "contiguous_gradients": True,
    }
    if spec.deepspeed.offload:
        zero["offload_optimizer"] = {"device": "cpu", "pin_memory": True}
        if spec.deepspeed.stage == 3:
            zero["offload_param"] = {"device": "cpu", "pin_memory": True}
    if spec.deepspeed.stage == 3:
        zero["stage3_gather_16bit_weights_on_model_save"] = True
    return {
        "train_batch_size": "auto",
        "train_micro_batch_size_per_gpu": "auto",
        "gradient_accumulation_steps": "auto",
        "gradient_clipping": "auto",
        "zero_allow_untested_optimizer": True,
        "fp16": {"enabled": "auto"},
        "bf16": {"enabled": "auto"},
        "zero_optimization": zero,
    }


def render(arguments: dict[str, Any]) -> str:
    """YAML as LLaMA-Factory's examples write it: keys in the order given."""
    return yaml.safe_dump(arguments, sort_keys=False, allow_unicode=True)


def render_json(data: Any) -> str:
    return json.dumps(data, ensure_ascii=False, indent=1)


def run_script(spec: FinetuneSpec, *, processes: int, nodes: int) -> str:
    """What the workload runs on each node, as its own account: set aside a checkpoint whose
    writing did not finish (a full disk, a kill), so that resuming starts from the last whole
    one; train (LLaMA-Factory starts torchrun itself for several processes or nodes, with the
    rendezvous the platform set: NNODES, NODE_RANK, MASTER_ADDR, MASTER_PORT); then, on the
    first node, merge a LoRA adapter when asked."""
    lines = [
        "set -euo pipefail",
        'cd "$(dirname "$0")"',
        f"for checkpoint in {OUTPUT}/checkpoint-*; do",
        '  if [ -d "$checkpoint" ] && [ ! -f "$checkpoint/trainer_state.json" ]; then',
        '    echo "suanli: setting aside $checkpoint: it was not written to the end" >&2',
        '    mv "$checkpoint" "$checkpoint.incomplete.$(date +%s)"',
        "  fi",
        "done",
    ]
    # One process a node as the platform started it: torchrun, where LLaMA-Factory starts
    # it, sets each process's rank; a single process must not look distributed.
    lines.append("unset RANK LOCAL_RANK WORLD_SIZE")
    if processes > 1 or nodes > 1:
        lines += ["export FORCE_TORCHRUN=1", f"export NPROC_PER_NODE={processes}"]
    lines.append(f"llamafactory-cli train {TRAIN_FILE}")
    if merges(spec):
        lines += [
            'if [ "${NODE_RANK:-0}" = 0 ]; then',
            f"  llamafactory-cli export {EXPORT_FILE}",
            "fi",
        ]
    return "\n".join(lines) + "\n"
