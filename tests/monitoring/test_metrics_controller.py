"""The metrics loop's pure parts: shares of GPUs per job, job series, lost GPUs."""

from types import SimpleNamespace

from suanli.controllers.metrics import busy_of, gpu_shares, job_samples, lost_gpus
from suanli.monitoring.model import Sample, labels_of


def job(job_id: int, *gpus: dict) -> SimpleNamespace:
    return SimpleNamespace(id=job_id, placement={"node": "n1", "gpus": list(gpus)})


def gpu_sample(name: str, uuid: str, value: float) -> Sample:
    return Sample(name, labels_of({"node": "n1", "uuid": uuid, "gpu": uuid[-1]}), value)


def test_whole_gpus_count_fully_and_fractions_by_their_compute_share() -> None:
    shares = gpu_shares(
        [
            job(1, {"uuid": "GPU-a"}, {"uuid": "GPU-b"}),
            job(2, {"uuid": "GPU-c", "memory_bytes": 10, "compute_percent": 30}),
            job(3, {"uuid": "GPU-c", "memory_bytes": 10, "compute_percent": 80}),
        ]
    )
    assert shares == {1: {"GPU-a": 1.0, "GPU-b": 1.0}, 2: {"GPU-c": 0.3}, 3: {"GPU-c": 0.8}}
    assert busy_of(shares) == {"GPU-a": 1.0, "GPU-b": 1.0, "GPU-c": 1.0}  # capped at the GPU


def test_a_jobs_power_is_its_share_of_its_gpus_and_its_memory_its_processes() -> None:
    shares = {1: {"GPU-a": 1.0, "GPU-b": 1.0}, 2: {"GPU-c": 0.25}}
    samples = [
        gpu_sample("gpu_power_watts", "GPU-a", 300),
        gpu_sample("gpu_power_watts", "GPU-b", 100),
        gpu_sample("gpu_power_watts", "GPU-c", 200),
        gpu_sample("gpu_utilization_percent", "GPU-a", 90),
        gpu_sample("gpu_utilization_percent", "GPU-b", 50),
        Sample("gpu_process_memory_bytes", labels_of({"pid": 7, "job": 2}), 1024),
        Sample("gpu_process_memory_bytes", labels_of({"pid": 8, "job": 2}), 1024),
        Sample("gpu_process_memory_bytes", labels_of({"pid": 9}), 4096),  # not a job's
    ]
    found = {(s.name, s.label("job")): s.value for s in job_samples(shares, samples, "n1")}
    assert found[("job_gpu_power_watts", "1")] == 400
    assert found[("job_gpu_power_watts", "2")] == 50
    assert found[("job_gpu_utilization_percent", "1")] == 70
    assert found[("job_gpu_memory_used_bytes", "2")] == 2048
    assert ("job_gpu_memory_used_bytes", "1") not in found


def test_a_gpu_the_inventory_lost_stays_reported_as_absent() -> None:
    lost = SimpleNamespace(
        node_name="n1", index=3, uuid="GPU-d", model="A100", simulated=False, present=False
    )
    here = SimpleNamespace(
        node_name="n1", index=0, uuid="GPU-a", model="A100", simulated=False, present=True
    )
    (sample,) = lost_gpus([lost, here], [gpu_sample("gpu_present", "GPU-a", 1)])
    assert (sample.name, sample.value, sample.label("uuid"), sample.label("gpu")) == (
        "gpu_present",
        0.0,
        "GPU-d",
        "3",
    )
    # The sampler still answering for it (as 0) is not doubled.
    assert lost_gpus([lost], [gpu_sample("gpu_present", "GPU-d", 0)]) == []
