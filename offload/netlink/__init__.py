"""Thin, typed adapters over netlink (rtnetlink, ethtool, netdev and devlink generic netlink).

Each adapter answers with one dump for all devices of the current network namespace, so a probe
costs a fixed number of round trips whatever the number of interfaces.
"""
