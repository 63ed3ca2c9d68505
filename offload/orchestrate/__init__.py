"""Orchestration: a declarative policy (`policy`), the plan of what to change (`plan`, pure),
apply with locking, journal and rollback (`apply`), reaction to interfaces coming and going
(`watch`), and fleet exports (NFD labels, Prometheus metrics).

May import: `offload.load`, `offload.probe`, `offload.kernel`, `offload.errors`.
"""
