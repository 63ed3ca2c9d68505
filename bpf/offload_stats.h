/* Per-action counters shared by offload's XDP programs (libbpf style: BTF-defined maps).
 *
 * Native and generic mode: a per-CPU array indexed by the XDP action (XDP_ABORTED=0, DROP=1,
 * PASS=2, TX=3, REDIRECT=4), packets and bytes: no atomics, no cache-line bouncing.
 *
 * Hardware offload (the NAME.hw.o variant, built with -DOFFLOAD_HW): the device decides what it
 * takes, and offload-capable NICs refuse per-CPU maps (nfp, netdevsim) and netdevsim keeps at most
 * 2 entries per map. So the offloadable form is a plain ARRAY of 2 u64 (packets, bytes) counting
 * the program's verdicts whatever they are, updated with atomic adds.
 */
#ifndef OFFLOAD_STATS_H
#define OFFLOAD_STATS_H

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#ifdef OFFLOAD_HW
struct {
    __uint(type, BPF_MAP_TYPE_ARRAY);
    __uint(max_entries, 2);
    __type(key, __u32);
    __type(value, __u64);
} xdp_stats_hw SEC(".maps");

static __always_inline int count(struct xdp_md *ctx, int action)
{
    __u32 k0 = 0, k1 = 1;
    __u64 *pkts = bpf_map_lookup_elem(&xdp_stats_hw, &k0);
    __u64 *bytes = bpf_map_lookup_elem(&xdp_stats_hw, &k1);
    if (pkts)
        __sync_fetch_and_add(pkts, 1);
    if (bytes)
        __sync_fetch_and_add(bytes, (__u64)(ctx->data_end - ctx->data));
    return action;
}
#else
struct offload_datarec {
    __u64 packets;
    __u64 bytes;
};
struct {
    __uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
    __uint(max_entries, 5);
    __type(key, __u32);
    __type(value, struct offload_datarec);
} xdp_stats SEC(".maps");

static __always_inline int count(struct xdp_md *ctx, int action)
{
    __u32 key = action;
    struct offload_datarec *rec = bpf_map_lookup_elem(&xdp_stats, &key);
    if (rec) {
        rec->packets++;
        rec->bytes += ctx->data_end - ctx->data;
    }
    return action;
}
#endif

char _license[] SEC("license") = "GPL";

#endif
