"""The azure_blob destination: `config` (schema and definition), `checks` (test steps), and its sink or store."""
