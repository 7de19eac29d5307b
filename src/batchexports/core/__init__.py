"""The plain-data core: what a run is, interval calendars, the models' rules, error classes, the
no-progress watchdog. It imports nothing of the project and no framework (an import-linter
contract in `.importlinter`), so every part above it can share these facts without cycles."""
