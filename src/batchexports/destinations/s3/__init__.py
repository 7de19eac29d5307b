"""S3 and S3-compatible stores: files in a bucket. `config` (the three schemas and specs), `checks` (test
steps), `store` (the object store over boto3, imported only when used); the file kit writes the files."""
