"""Workload kinds: what differs between a job, a dev environment and a deployment's replica.

Each kind is one module (`job`, `devenv`, `replica`) holding a `Kind` (see `base`): its
spec, how it launches, what its own stop reasons mean, and the loops it needs. The
controller, the scheduler and the backends know workloads only through `registry.kind_of`
and the stored scheduler request (`demand`); none of them names a kind. The recipe for a new
kind is in docs/architecture.md.
"""
