"""Why a workload waits: the codes of `PendingReason`, each with a `reason.<code>` entry in
the catalogues (suanli/i18n). Every message also takes `{position}` (the reason's
position, 1-based, in the project's queue of waiting workloads).

Sizes in params are GiB (numbers rounded for people); GPU counts may be fractions (a GPU
fraction counts as its share of one GPU, see devices.gpu_charge). Capacity and backfill
reasons may also carry `expected_start` (on the snapshot's clock) when a backfill
reservation predicts when the workload, or the one it waits for, can start.
"""

# Project quota (quota.py); params: used, limit, requested (GPUs, CPUs, or *_gib).
QUOTA_MAX_GPUS = "quota_max_gpus"  # used, limit, requested
QUOTA_USER_GPUS = "quota_user_gpus"  # user, used, limit, requested
QUOTA_CPUS = "quota_cpus"  # used, limit, requested
QUOTA_MEMORY = "quota_memory"  # used_gib, limit_gib, requested_gib
# Not preemptible and beyond its project's guarantee: may only use GPUs that no project is
# guaranteed. used / limit: such GPUs held by non-preemptible work / there are; guaranteed.
QUOTA_NONPREEMPTIBLE = "quota_nonpreemptible"  # used, limit, requested, guaranteed

# Capacity (placement.py). Params describe the best node now.
CAPACITY_GPUS = "capacity_gpus"  # requested, free (most free on one node), largest, model
CAPACITY_GPU_MODEL = "capacity_gpu_model"  # model: no device of that model or MIG profile
CAPACITY_NO_GPUS = "capacity_no_gpus"  # no exclusive GPU (whole GPUs) or shared GPU (fractions)
CAPACITY_FRACTION = "capacity_fraction"  # memory_gib, compute, free_memory_gib, free_compute
# A fraction that would fit now but for the Unix identity rule: the shared GPUs with room
# serve another identity's fractions (MPS serves one user per GPU). memory_gib, compute.
GPU_SHARED_OTHER_USER = "gpu_shared_other_user"
CAPACITY_CPUS_MEMORY = "capacity_cpus_memory"  # cpus, memory_gib, free_cpus, free_memory_gib
NODE_DRAINED = "node_drained"  # model, requested: would fit only on drained nodes or GPUs
MULTI_NODE = "multi_node"  # nodes: multi-node work needs an engine that places it (Slurm)

# Order and preemption.
BACKFILL_RESERVED = "backfill_reserved"  # job: the waiting workload the capacity is kept for
WAITING_FOR_HIGHER_PRIORITY = "waiting_for_higher_priority"  # job: same, of higher priority
PREEMPTING = "preempting"  # victims: workloads being stopped to make room for this one

CODES = (
    QUOTA_MAX_GPUS,
    QUOTA_USER_GPUS,
    QUOTA_CPUS,
    QUOTA_MEMORY,
    QUOTA_NONPREEMPTIBLE,
    CAPACITY_GPUS,
    CAPACITY_GPU_MODEL,
    CAPACITY_NO_GPUS,
    CAPACITY_FRACTION,
    GPU_SHARED_OTHER_USER,
    CAPACITY_CPUS_MEMORY,
    NODE_DRAINED,
    MULTI_NODE,
    BACKFILL_RESERVED,
    WAITING_FOR_HIGHER_PRIORITY,
    PREEMPTING,
)
