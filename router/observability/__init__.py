"""Operations: Prometheus metrics, structured logs, health endpoints and config hot reload.

Import the submodules directly (`from router.observability import metrics`); nothing here has
import-time side effects beyond creating the router's own metric registry.
"""
