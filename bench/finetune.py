"""The same LoRA supervised fine-tuning run (a) through Suanli — a real server on loopback with
the LLaMA-Factory of scripts/engine-llamafactory registered as its trainer, the run created
through the API — and (b) directly with `llamafactory-cli train` of the same environment on the
YAML Suanli wrote (only output_dir and the paths changed), in pairs that alternate their order,
because this machine is shared and noisy. Per run: tokens/s (LLaMA-Factory's trainer_log.jsonl
`throughput` of its last line, the same figure the run page charts), peak memory (Suanli: the
run's `usage.max_rss_bytes`; direct: `/usr/bin/time -v`'s maximum resident set size: both are
wait4's figure for the process tree), submit → first step (from the POST, or from the process's
start, to the first line of trainer_log.jsonl), and Suanli's memory estimate at create.

    python3 bench/finetune.py [--pairs 3] [--rows 256] [--hidden 384] [--layers 4] [--threads 1]

The trainer: $SUANLI_BENCH_LLAMAFACTORY_PREFIX, else .engines/llamafactory in the checkout.
See bench/README.md, "Fine-tuning"."""

import argparse
import json
import os
import random
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import psutil
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.conftest import RunningServer, start_server
from tests.finetune.helpers import api, push_dataset, push_model, trainers

ROOT = Path(__file__).resolve().parents[1]
PROJECT = "bench"
# Run with the trainer's interpreter: the tokenizer of tests/serving/tiny_model.py, a Llama of
# the shape given in argv, float32 weights (LLaMA-Factory keeps a model's dtype for frozen ones).
BUILD_MODEL = """
import sys
from pathlib import Path
sys.path.insert(0, sys.argv[1])
import torch
from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM
import tiny_model
out, hidden, layers = Path(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
tokenizer = tiny_model.train_tokenizer()
torch.manual_seed(tiny_model.SEED)
config = LlamaConfig(
    vocab_size=len(tokenizer), hidden_size=hidden, num_attention_heads=hidden // 64,
    num_key_value_heads=hidden // 64, head_dim=64, num_hidden_layers=layers,
    intermediate_size=hidden * 3, max_position_embeddings=512,
    bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
    pad_token_id=tokenizer.pad_token_id, tie_word_embeddings=False,
)
model = LlamaForCausalLM(config).to(torch.float32).eval()
model.generation_config = GenerationConfig(
    bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
    pad_token_id=tokenizer.pad_token_id,
)
model.save_pretrained(out, safe_serialization=True)
tokenizer.save_pretrained(out, save_jinja_files=False)
"""
WORDS = [
    "the", "cluster", "schedules", "jobs", "on", "nodes", "with", "free", "memory", "and",
    "cores", "while", "users", "wait", "for", "results", "from", "model", "server", "that",
    "streams", "tokens", "back", "to", "every", "client", "over", "http", "集群", "调度",
    "作业", "节点", "内存", "模型", "服务", "用户", "令牌", "推理", "训练", "数据",
]  # fmt: skip
RSS = re.compile(r"Maximum resident set size \(kbytes\): (\d+)")


@dataclass
class Result:
    """One run's figures."""

    tokens_per_second: float
    peak_bytes: int
    first_step_seconds: float
    total_seconds: float
    steps: int
    server_cpu: float = 0.0  # Suanli's server process: CPU seconds per second of the run


def trainer_prefix() -> Path:
    prefix = os.environ.get("SUANLI_BENCH_LLAMAFACTORY_PREFIX")
    return Path(prefix) if prefix else ROOT / ".engines/llamafactory"


def build_model(prefix: Path, target: Path, hidden: int, layers: int) -> None:
    command = [
        str(prefix / "bin/python"),
        "-c",
        BUILD_MODEL,
        str(ROOT / "tests/serving"),
        str(target),
        str(hidden),
        str(layers),
    ]
    subprocess.run(command, check=True, timeout=600)


def alpaca_rows(count: int) -> list[dict[str, str]]:
    """Generated rows of varied length, the same for every run (a fixed seed)."""
    rng = random.Random(17)

    def text(low: int, high: int) -> str:
        return " ".join(rng.choice(WORDS) for _ in range(rng.randint(low, high)))

    return [
        {"instruction": text(4, 20), "input": text(0, 10), "output": text(10, 60)}
        for _ in range(count)
    ]


def run_spec(args: argparse.Namespace) -> dict[str, Any]:
    """LoRA SFT in fp32 on the CPU; all the machine's cores (so that the cgroup's quota is
    not the difference); no merge, so that both sides do the same work: training alone."""
    return {
        "project": PROJECT,
        "model": "model",
        "datasets": ["rows"],
        "stage": "sft",
        "method": "lora",
        "template": "qwen",
        "training": {
            "epochs": 1.0,
            "batch_size": args.batch,
            "gradient_accumulation": 1,
            "cutoff_len": args.cutoff,
            "logging_steps": 1,  # the first line of trainer_log.jsonl is the first step
            "save_steps": 100000,
            "learning_rate": 1e-4,
            "compute_type": "fp32",
            "warmup_ratio": 0.0,
        },
        "lora": {"rank": 8, "alpha": 16},
        "resources": {"cpus": float(os.cpu_count() or 1), "memory": "8Gi"},
        "merge": False,
    }


def log_lines(output: Path) -> list[dict[str, Any]]:
    path = output / "trainer_log.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def wait_first_line(output: Path, started: float, done: Callable[[], bool]) -> float:
    """Seconds from `started` until trainer_log.jsonl has a line: the file is looked at every
    0.1 s, whether the run ended (an API request, for Suanli) every 2 s, so that the bench
    takes little of the CPU the trainer shares with the server."""
    check_at = time.monotonic() + 2
    path = output / "trainer_log.jsonl"
    while True:
        if path.exists() and path.stat().st_size > 0:
            return time.monotonic() - started
        if time.monotonic() >= check_at:
            if done():
                raise RuntimeError(f"the run ended with no line in {path}")
            check_at = time.monotonic() + 2
        time.sleep(0.1)


def wait_end(http: httpx.Client, run_id: int) -> dict[str, Any]:
    """The run's detail once it ended (polled every 2 s, as a run page would); it must
    have succeeded."""
    while True:
        detail = http.get(f"finetunes/{run_id}").json()
        if detail["state"] in ("succeeded", "failed", "cancelled"):
            break
        time.sleep(2)
    if detail["state"] != "succeeded":
        log = http.get(f"finetunes/{run_id}/log", params={"tail": 80}).text
        raise RuntimeError(f"run {run_id} is {detail['state']}:\n{log}")
    return detail


def throughput(output: Path) -> tuple[float, int]:
    """The last line's tokens/s (input tokens seen / elapsed, LLaMA-Factory's figure) and its
    step."""
    lines = [line for line in log_lines(output) if "throughput" in line]
    return float(lines[-1]["throughput"]), int(lines[-1]["current_steps"])


def through_suanli(
    http: httpx.Client, server: RunningServer, body: dict[str, Any]
) -> tuple[Result, dict[str, Any]]:
    server_cpu = psutil.Process(server.process.pid)
    cpu_before = sum(server_cpu.cpu_times()[:2])
    started = time.monotonic()
    answer = http.post("finetunes", json=body)
    answer.raise_for_status()
    run = answer.json()
    output = server.data_dir.parent / "work" / str(run["id"]) / "output"

    def ended() -> bool:
        state = http.get(f"finetunes/{run['id']}").json()["state"]
        return state in ("succeeded", "failed", "cancelled")

    first = wait_first_line(output, started, ended)
    detail = wait_end(http, run["id"])
    total = time.monotonic() - started
    share = (sum(server_cpu.cpu_times()[:2]) - cpu_before) / total
    tokens, steps = throughput(output)
    peak = int(detail["usage"]["max_rss_bytes"])
    return Result(tokens, peak, first, total, steps, share), {**run, "usage": detail["usage"]}


def direct(
    prefix: Path, trainer_env: dict[str, str], arguments: dict[str, Any], folder: Path
) -> Result:
    """`llamafactory-cli train` in the environment Suanli gives a run (its allow-list, the
    trainer's `env` and what Suanli adds), under /usr/bin/time."""
    folder.mkdir(parents=True)
    (folder / "train.yaml").write_text(yaml.safe_dump(arguments, sort_keys=False))
    env = {
        **{key: os.environ[key] for key in ("LANG", "HOME") if key in os.environ},
        **trainer_env,
        "PATH": f"{prefix / 'bin'}:{os.environ.get('PATH', '/usr/bin:/bin')}",
        "VIRTUAL_ENV": str(prefix),
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "HF_HOME": str(folder / ".cache" / "huggingface"),
        "PYTHONUNBUFFERED": "1",
        "DISABLE_VERSION_CHECK": "1",
    }
    output = Path(arguments["output_dir"])
    started = time.monotonic()
    with open(folder / "log.txt", "w") as log:
        process = subprocess.Popen(
            ["/usr/bin/time", "-v", "llamafactory-cli", "train", "train.yaml"],
            cwd=folder,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        first = wait_first_line(output, started, lambda: process.poll() is not None)
        code = process.wait(timeout=1800)
    total = time.monotonic() - started
    text = (folder / "log.txt").read_text()
    if code != 0:
        raise RuntimeError(f"direct run failed ({code}):\n{text[-3000:]}")
    tokens, steps = throughput(output)
    peak = int(RSS.findall(text)[-1]) * 1024
    return Result(tokens, peak, first, total, steps)


def direct_arguments(suanli_yaml: str, model: Path, data: Path, output: Path) -> dict[str, Any]:
    """Suanli's YAML with only the paths changed: the model, the dataset folder (a
    dataset_info.json of the same entry name, next to the same rows) and output_dir."""
    arguments = yaml.safe_load(suanli_yaml)
    arguments["model_name_or_path"] = str(model)
    arguments["dataset_dir"] = str(data)
    arguments["output_dir"] = str(output)
    return arguments


def write_dataset_info(suanli_yaml: str, folder: Path, rows: Path) -> None:
    name = yaml.safe_load(suanli_yaml)["dataset"]
    info = {name: {"file_name": str(rows), "formatting": "alpaca"}}
    (folder / "dataset_info.json").write_text(json.dumps(info))


def mib(size: int) -> str:
    return f"{size / 2**20:.0f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pairs", type=int, default=3)
    parser.add_argument("--rows", type=int, default=256)
    parser.add_argument("--hidden", type=int, default=384)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--cutoff", type=int, default=128)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="OMP_NUM_THREADS of both sides (the trainer's env); 0: torch's default, one a core",
    )
    args = parser.parse_args()
    prefix = trainer_prefix()
    base = Path(tempfile.mkdtemp(prefix="finetune-bench-"))
    model = base / "model"
    build_model(prefix, model, args.hidden, args.layers)
    rows = alpaca_rows(args.rows)
    # One thread by default: with two, a step waits for the slower thread, and on two cores
    # that another tenant also uses that made one run 30 times slower than the next.
    trainer_env = {"OMP_NUM_THREADS": str(args.threads)} if args.threads else {}
    registered = trainers(prefix)
    registered["llamafactory"]["env"] = trainer_env
    env = {"SUANLI_TRAINERS": json.dumps(registered)}  # the default watch interval, 2 s
    server = start_server(base / "data", f"sqlite:///{base / 'suanli.db'}", env)
    try:
        admin = server.login()
        http = api(server, admin.token)
        admin.projects.create(PROJECT)
        push_model(admin, PROJECT, "model", model)
        push_dataset(admin, PROJECT, "rows", rows, base)
        data = base / "direct-data"
        data.mkdir()
        (data / "data.json").write_text(json.dumps(rows, ensure_ascii=False))
        body = run_spec(args)
        print(
            f"model: Llama hidden {args.hidden}, {args.layers} layers; {args.rows} rows, "
            f"cutoff {args.cutoff}, batch {args.batch}, LoRA r8, fp32, "
            f"threads {args.threads or 'all'}, trainer {prefix}"
        )
        print(
            "| pair | side | tokens/s | peak MiB | submit → first step s | total s | steps "
            "| server CPU | estimate MiB | estimate / peak |"
        )
        print("|---|---|---|---|---|---|---|---|---|---|")
        pairs: list[tuple[Result, Result, int]] = []
        suanli_yaml = ""
        for number in range(1, args.pairs + 1):
            # The first pair starts with Suanli: its YAML is the one the direct runs read.
            order = ("suanli", "direct") if number % 2 else ("direct", "suanli")
            figures: dict[str, Result] = {}
            for side in order:
                if side == "suanli":
                    result, run = through_suanli(http, server, body)
                    suanli_yaml = suanli_yaml or run["yaml"]
                    estimate = int(run["estimate"]["per_device_bytes"])
                    ratio = f"{estimate / result.peak_bytes:.2f}"
                    extra = f"{result.server_cpu:.1%} | {mib(estimate)} | {ratio}"
                else:
                    write_dataset_info(suanli_yaml, data, data / "data.json")
                    output = base / f"direct-{number}" / "output"
                    arguments = direct_arguments(suanli_yaml, model, data, output)
                    result = direct(prefix, trainer_env, arguments, base / f"direct-{number}")
                    extra = " |  | "
                figures[side] = result
                print(
                    f"| {number} | {side} | {result.tokens_per_second:.0f} | "
                    f"{mib(result.peak_bytes)} | {result.first_step_seconds:.1f} | "
                    f"{result.total_seconds:.1f} | {result.steps} | {extra} |",
                    flush=True,
                )
            pairs.append((figures["suanli"], figures["direct"], estimate))
        report(pairs)
        print("Suanli's YAML:\n" + suanli_yaml)
    finally:
        server.stop()


def report(pairs: list[tuple[Result, Result, int]]) -> None:
    """Per pair and as medians: Suanli / direct for tokens/s and peak, the first-step times,
    and the estimate against Suanli's measured peak."""
    print(
        "\n| pair | tokens/s S/D | peak S/D | first step S − D s | estimate / peak S | server CPU |"
    )
    print("|---|---|---|---|---|---|")
    speed, memory, start, estimate, cpu = [], [], [], [], []
    for number, (suanli, plain, bytes_) in enumerate(pairs, 1):
        speed.append(suanli.tokens_per_second / plain.tokens_per_second)
        memory.append(suanli.peak_bytes / plain.peak_bytes)
        start.append(suanli.first_step_seconds - plain.first_step_seconds)
        estimate.append(bytes_ / suanli.peak_bytes)
        cpu.append(suanli.server_cpu)
        print(
            f"| {number} | {speed[-1]:.3f} | {memory[-1]:.3f} | {start[-1]:+.1f} "
            f"| {estimate[-1]:.2f} | {cpu[-1]:.1%} |"
        )
    print(
        f"| median | {statistics.median(speed):.3f} | {statistics.median(memory):.3f} "
        f"| {statistics.median(start):+.1f} | {statistics.median(estimate):.2f} "
        f"| {statistics.median(cpu):.1%} |"
    )


if __name__ == "__main__":
    main()
