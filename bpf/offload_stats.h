/* Per-action counters shared by offload's XDP programs (compiled by bcc).
 *
 * Native and generic mode: a per-CPU array indexed by the XDP action (XDP_ABORTED=0, DROP=1,
 * PASS=2, TX=3, REDIRECT=4), packets and bytes: no atomics, no cache-line bouncing.
 *
 * Hardware offload (OFFLOAD_HW defined by the loader): the device decides what it takes, and
 * offload-capable NICs refuse per-CPU maps (nfp, netdevsim) and netdevsim keeps at most 2 entries
 * per map. So the offloadable form is a plain ARRAY of 2 u64 (packets, bytes) counting the
 * program's verdicts whatever they are, updated with atomic adds.
 */
#ifndef OFFLOAD_STATS_H
#define OFFLOAD_STATS_H

#include <uapi/linux/bpf.h>

#ifdef OFFLOAD_HW
BPF_ARRAY(xdp_stats_hw, u64, 2);

static __always_inline int count(struct xdp_md *ctx, int action)
{
    int k0 = 0, k1 = 1;
    u64 *pkts = xdp_stats_hw.lookup(&k0);
    u64 *bytes = xdp_stats_hw.lookup(&k1);
    if (pkts)
        __sync_fetch_and_add(pkts, 1);
    if (bytes)
        __sync_fetch_and_add(bytes, (u64)(ctx->data_end - ctx->data));
    return action;
}
#else
struct offload_datarec {
    u64 packets;
    u64 bytes;
};
BPF_PERCPU_ARRAY(xdp_stats, struct offload_datarec, 5);

static __always_inline int count(struct xdp_md *ctx, int action)
{
    u32 key = action;
    struct offload_datarec *rec = xdp_stats.lookup(&key);
    if (rec) {
        rec->packets++;
        rec->bytes += ctx->data_end - ctx->data;
    }
    return action;
}
#endif

#endif
