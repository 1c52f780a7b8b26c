"""The application layer: registry, app verbs, engine and workers."""
