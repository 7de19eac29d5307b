"""The local folder ("File"): files under the service's export directory. `config` (schema and spec),
`checks` (test steps, and where a config's folder is), `store` (the folder as an object store)."""
