"""Built-in classification pipelines; each module registers its own with ``register_pipeline``."""
