"""The Redshift destination: config (DRF serializer and spec), sink, test steps; nothing is imported here."""
