"""The warehouse kit shared by the sinks that load staged files (Snowflake, BigQuery, Databricks):
staging batches as Parquet parts, stage names and the mark that tells a stale stage table apart."""
