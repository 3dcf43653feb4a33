"""CPU and memory of each running job, for its charts: the wrapper process and everything
below it, read from /proc through psutil once per collection.

CPU is the difference of the processes' CPU time between two collections (100 % = one core);
processes that ended in between take their time with them, so a job of many short processes
reads low rather than high. Memory is the sum of resident set sizes (shared pages counted in
each process, as `ps` does).
"""

from collections import defaultdict
from collections.abc import Mapping

import psutil

from suanli.monitoring.model import Sample, labels_of


class JobStats:
    def __init__(self, node: str):
        self.node = node
        self._cpu: dict[int, tuple[float, float]] = {}  # job -> (when, cpu seconds)

    def sample(self, now: float, roots: Mapping[int, int]) -> list[Sample]:
        """Samples of `job_cpu_percent` and `job_memory_bytes` for each job, given the pid
        of its wrapper (the root of its process tree)."""
        if not roots:
            self._cpu.clear()
            return []
        children: dict[int, list[int]] = defaultdict(list)
        for process in psutil.process_iter(["pid", "ppid"]):
            children[process.info["ppid"]].append(process.info["pid"])
        samples: list[Sample] = []
        for job_id, root in roots.items():
            cpu, memory = self._tree(root, children)
            labels = labels_of({"job": job_id, "node": self.node})
            samples.append(Sample("job_memory_bytes", labels, memory))
            previous = self._cpu.get(job_id)
            if previous is not None and now > previous[0]:
                percent = max(0.0, (cpu - previous[1]) / (now - previous[0]) * 100)
                samples.append(Sample("job_cpu_percent", labels, percent))
            self._cpu[job_id] = (now, cpu)
        for gone in set(self._cpu) - set(roots):
            del self._cpu[gone]
        return samples

    @staticmethod
    def _tree(root: int, children: Mapping[int, list[int]]) -> tuple[float, float]:
        cpu = memory = 0.0
        stack, seen = [root], set()
        while stack:
            pid = stack.pop()
            if pid in seen:
                continue
            seen.add(pid)
            stack.extend(children.get(pid, ()))
            try:
                process = psutil.Process(pid)
                with process.oneshot():
                    times = process.cpu_times()
                    cpu += times.user + times.system + times.children_user + times.children_system
                    memory += process.memory_info().rss
            except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
                continue
        return cpu, memory
