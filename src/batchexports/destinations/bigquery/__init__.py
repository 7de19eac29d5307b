"""BigQuery: rows loaded into a table through a stage table. `config` (schema and spec), `checks`
(test steps), `sink` (load jobs, merge, error classification; imports google-cloud-bigquery when used)."""
