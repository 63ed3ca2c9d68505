"""Probe and decide: gather facts per interface, apply the driver profiles, and decide which XDP
modes each interface takes, with a reason for every verdict (pure functions over plain data).

`facts` gathers (the only module here that talks to the kernel, through `offload.kernel`),
`profiles` loads the per-driver YAML, `modes` holds the ranked mode vocabulary and the
verdicts, `report` builds the documented probe report and `assess()`, `render` prints it for a
person.

May import: `offload.kernel`, `offload.errors`.
"""
