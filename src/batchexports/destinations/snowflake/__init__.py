"""Snowflake: rows loaded into a table through a table stage. `config` (schema and spec), `checks`
(test steps), `sink` (connector, key-pair auth, merge, error classification)."""
