"""The slurm backend: jobs admitted by Suanli run on a Slurm cluster (see `backend`)."""
