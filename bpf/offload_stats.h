/* Per-action counters shared by offload's XDP programs (libbpf style: BTF-defined maps).
 *
 * Native and generic mode: per-CPU counters per receiving interface, each entry packets and bytes
 * for every XDP action (XDP_ABORTED=0, DROP=1, PASS=2, TX=3, REDIRECT=4): no atomics, no
 * cache-line bouncing. An interface counts in its slot of a small per-CPU array (xdp_stats_fast)
 * when it holds the slot on that CPU, else in a hash keyed by ifindex (xdp_stats); its counters
 * are the sum of both (offload/load/stats.py: counters).
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

#define OFFLOAD_ACTIONS 5          /* XDP_ABORTED .. XDP_REDIRECT */
#define OFFLOAD_MAX_IFACES 1024    /* interfaces one loaded program counts for (load/loader.py: SHARED_BY) */

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
/* Keyed by the receiving interface (ctx->ingress_ifindex), so one loaded program serves many
 * interfaces (offload apply and watch load a library program once per batch and attach it to
 * each) and `offload stats IFACE` reads its own interface's entry. Allocated on an interface's
 * first frame (BPF_F_NO_PREALLOC): a program on one interface holds one entry, not 1,024. */
struct offload_datarec {
    __u64 packets;
    __u64 bytes;
};
struct offload_counters {
    struct offload_datarec action[OFFLOAD_ACTIONS];
};
struct {
    __uint(type, BPF_MAP_TYPE_PERCPU_HASH);
    __uint(map_flags, BPF_F_NO_PREALLOC);
    __uint(max_entries, OFFLOAD_MAX_IFACES);
    __type(key, __u32);
    __type(value, struct offload_counters);
} xdp_stats SEC(".maps");

/* The fast path: the hash's lookup is a helper call the verifier does not inline (about 10 ns a
 * frame in generic mode, docs/benchmarks.md); an array's it does. Slot ifindex &
 * (OFFLOAD_FAST_SLOTS - 1), tagged with the ifindex that claimed it on that CPU (0: free).
 * Per-CPU, and an attached XDP program runs with bottom halves disabled (never re-entered on a
 * CPU), so claiming needs no atomics. An interface whose slot another holds on a CPU counts in
 * the hash there: exact either way, only slower. */
#define OFFLOAD_FAST_SLOTS 64      /* a power of two: the slot is a mask of the ifindex */
struct offload_fast_slot {
    __u32 ifindex;                 /* the interface counting here on this CPU; 0: free */
    __u32 pad;
    struct offload_counters c;
};
struct {
    __uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
    __uint(max_entries, OFFLOAD_FAST_SLOTS);
    __type(key, __u32);
    __type(value, struct offload_fast_slot);
} xdp_stats_fast SEC(".maps");

static __always_inline struct offload_counters *counters_of(__u32 key)
{
    __u32 slot = key & (OFFLOAD_FAST_SLOTS - 1);
    struct offload_fast_slot *f = bpf_map_lookup_elem(&xdp_stats_fast, &slot);
    if (f) {
        if (f->ifindex == 0)
            f->ifindex = key;
        if (f->ifindex == key)
            return &f->c;
    }
    struct offload_counters *rec = bpf_map_lookup_elem(&xdp_stats, &key);
    if (!rec) {
        struct offload_counters zero = {};
        /* BPF_NOEXIST: another CPU may have made it first; then the lookup below finds theirs */
        bpf_map_update_elem(&xdp_stats, &key, &zero, BPF_NOEXIST);
        rec = bpf_map_lookup_elem(&xdp_stats, &key);
    }
    return rec;
}

static __always_inline int count(struct xdp_md *ctx, int action)
{
    struct offload_counters *rec = counters_of(ctx->ingress_ifindex);
    if (rec && action >= 0 && action < OFFLOAD_ACTIONS) {
        rec->action[action].packets++;
        rec->action[action].bytes += ctx->data_end - ctx->data;
    }
    return action;
}
#endif

char _license[] SEC("license") = "GPL";

#endif
