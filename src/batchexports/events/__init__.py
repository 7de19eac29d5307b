"""The events store: what capture writes and what runs export (events, persons, sessions).

This package knows nothing about destinations or Temporal; the API's capture views are the
only Django-facing part (`capture.py`).
"""
