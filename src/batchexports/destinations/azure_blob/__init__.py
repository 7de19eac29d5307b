"""Azure Blob Storage: files in a container. `config` (schema and spec), `checks` (test steps),
`store` (the object store over the Azure SDK, imported only when used); the file kit writes the files."""
