"""The export engine: everything that schedules and runs exports (Temporal lives here only)."""
