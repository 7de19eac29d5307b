"""Destinations: for each type, a folder with its configuration schema and spec, its test steps and
its sink; the file kit (`files/`) and the warehouse kit (`warehouse/`) they share; the registry.

This package imports the core only: never the pipeline, the engine, the events store or Django
models (`.importlinter`). The API validates a destination's config through
`registry.get(type).config_serializer`, and the pipeline writes through `spec.sink_factory(config)`;
neither names a destination.
"""
