"""Databricks: rows loaded into a Unity Catalog table through a volume and a stage table. `config`
(schema and spec), `checks` (test steps), `sink` (SQL connector, OAuth, merge, error classification)."""
