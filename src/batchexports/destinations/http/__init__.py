"""HTTP: events posted to another PostHog's `/batch/` endpoint. `config` (schema and spec), `checks`
(test steps), `sink` (batching, gzip, retries, error classification)."""
