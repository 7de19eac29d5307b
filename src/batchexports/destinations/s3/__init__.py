"""The s3 destination: `config` (schema and definition), `checks` (test steps), and its sink or store."""
