"""The warehouse kit shared by the sinks that load staged files (Snowflake, BigQuery, Databricks)."""
