"""GPUs of this host: discovery through NVML, MIG instances, topology, and simulated devices
declared in the settings for machines without a driver (always labelled as simulated)."""
