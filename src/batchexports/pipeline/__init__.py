"""The data plane: source -> Arrow record batches -> format writer -> sink. No Django here."""
