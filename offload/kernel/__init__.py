"""Kernel adapters: thin, typed access to what the kernel offers, and no decisions.

rtnetlink (`rtnl`), the ethtool and `netdev` generic-netlink families (`genl`), devlink, XDP
attach/detach through rtnetlink with the kernel's extack (`xdp`), bpf(2) through libbpf
(`bpfsys`), the GDRVINFO ioctl (`drvinfo`), sysfs identity through pyudev (`identity`), network
namespaces, capabilities and kernel version parsing.

May import: `offload.errors` and third-party libraries only. Nothing here knows about modes,
profiles, pins or policies.
"""
