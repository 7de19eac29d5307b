"""The file kit of every destination that writes files (local folder, S3, Azure Blob): formats and
writers, deterministic keys, size-bounded parts and their manifest, object stores, leftovers.

It imports the core and nothing of the pipeline, the engine or Django."""
