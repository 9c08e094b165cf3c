"""The S3 API: SigV4 authentication, request parsing and XML answers over the object engine.

``server.py`` is the aiohttp application; ``sigv4.py`` and ``chunked.py`` authenticate
requests and bodies; ``iam.py`` holds access keys and bucket permissions (in etcd);
``errors.py`` is the one place S3 error codes live.
"""
