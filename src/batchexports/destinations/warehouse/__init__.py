"""The warehouse kit: what the sinks that load tables share."""
