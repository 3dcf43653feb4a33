"""A deployment's replica: a job-like command that runs until its deployment stops it. The
deployment controller (suanli.controllers.deployments) starts, stops and replaces replicas;
here is only how one runs and what its stop means."""

from collections.abc import Mapping
from typing import ClassVar

from suanli.kinds.job import JobKind
from suanli.schemas.deployments import ReplicaSpec


class ReplicaKind(JobKind):
    name = "replica"
    spec_model = ReplicaSpec
    # Surplus after a scale-down, or its deployment stopped.
    stops: ClassVar[Mapping[str, str]] = {"scaled_down": "event.stopped_scaled_down"}


KIND = ReplicaKind()
