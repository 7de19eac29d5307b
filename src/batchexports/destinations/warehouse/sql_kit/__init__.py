"""The SQL kit of the PostgreSQL-protocol sinks (PostgreSQL, Redshift): connections, quoting, dialects,
cleaning, stage tables, load plans, merge statements, error translation and the sink skeleton."""
