"""NoOp: accepts any config and exports nothing. `config` (schema and spec), `sink` (never given rows)."""
