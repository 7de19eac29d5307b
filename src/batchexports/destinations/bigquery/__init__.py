"""The bigquery destination: `config` (schema and definition), `checks` (test steps), and its sink or store."""
