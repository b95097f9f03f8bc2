"""The local development stack: demo upstreams, a Milvus server fixture and the process runner.

Never imported by the router; `make run`, the tests, the benchmarks and the Compose demo use it.
"""
