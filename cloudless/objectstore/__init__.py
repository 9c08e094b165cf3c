"""Cloudless's replicated object store with an S3 API (issue 16). See ``README.md``."""
