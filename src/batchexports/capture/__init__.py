"""PostHog's SDK-facing endpoints: capture (`/e/`, `/batch/`, …), `/flags/`, `/decide/` and the remote
config. They resolve project tokens (accounts), so they live apart from `events/`, which stays free
of Django and only stores and reads events."""
