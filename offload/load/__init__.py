"""Load and attach: resolve a PROGRAM argument, load it, attach it in the best mode with
fallback, pin what must outlive the command, and read or edit what is attached (status, stats,
filter).

May import: `offload.probe`, `offload.kernel`, `offload.errors`.
"""
