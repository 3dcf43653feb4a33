"""Fine-tuning with LLaMA-Factory: built-in datasets, memory estimates and the run's YAML."""
