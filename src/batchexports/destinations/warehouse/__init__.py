"""The warehouse kit: what the sinks that load tables share. `staging` stages batches as Parquet parts
for Snowflake, BigQuery and Databricks; `sql_kit` is the PostgreSQL family's (PostgreSQL, Redshift)."""
