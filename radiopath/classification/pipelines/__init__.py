"""Built-in classification pipelines; each module registers its own with ``PIPELINES.register``."""
