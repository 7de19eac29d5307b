"""Destinations: for each type, its configuration schema and (later) its sink.

This package must not import Django models or know about the API's views: the API
validates a destination's config through `registry.get(type).config_serializer`, and the
pipeline writes through the sink; neither names a destination.
"""
