/* filter: drop IPv4 and IPv6 frames whose source address is in a blocklist, pass the rest.
 *
 * The blocklists are LPM tries keyed by prefix (offload filter add|del|list edits them in place).
 * Not offloadable: hardware offload refuses LPM tries (nfp, netdevsim), so in auto mode it falls
 * back to native with the kernel's reason. VLAN-tagged frames (one tag) are looked into.
 * Counters: xdp_stats[ifindex].action[XDP_DROP] (blocked), xdp_stats[ifindex].action[XDP_PASS] (everything else).
 */
#include "offload_stats.h"
#include <linux/if_ether.h>
#include <linux/ip.h>
#include <linux/ipv6.h>

struct lpm_v4 {
    __u32 prefixlen;
    __u32 addr;
};
struct lpm_v6 {
    __u32 prefixlen;
    __u8 addr[16];
};
struct {
    __uint(type, BPF_MAP_TYPE_LPM_TRIE);
    __uint(max_entries, 16384);
    __uint(map_flags, BPF_F_NO_PREALLOC);
    __type(key, struct lpm_v4);
    __type(value, __u8);
} blocklist_v4 SEC(".maps");
struct {
    __uint(type, BPF_MAP_TYPE_LPM_TRIE);
    __uint(max_entries, 16384);
    __uint(map_flags, BPF_F_NO_PREALLOC);
    __type(key, struct lpm_v6);
    __type(value, __u8);
} blocklist_v6 SEC(".maps");

struct vlan_hdr {
    __be16 tci;
    __be16 proto;
};

SEC("xdp")
int filter(struct xdp_md *ctx)
{
    void *data = (void *)(long)ctx->data;
    void *data_end = (void *)(long)ctx->data_end;
    struct ethhdr *eth = data;
    void *l3;
    __u16 proto;

    if ((void *)(eth + 1) > data_end)
        return count(ctx, XDP_PASS);
    proto = eth->h_proto;
    l3 = eth + 1;
    if (proto == bpf_htons(ETH_P_8021Q) || proto == bpf_htons(ETH_P_8021AD)) {
        struct vlan_hdr *vh = l3;
        if ((void *)(vh + 1) > data_end)
            return count(ctx, XDP_PASS);
        proto = vh->proto;
        l3 = vh + 1;
    }
    if (proto == bpf_htons(ETH_P_IP)) {
        struct iphdr *ip = l3;
        if ((void *)(ip + 1) > data_end)
            return count(ctx, XDP_PASS);
        struct lpm_v4 key = {.prefixlen = 32, .addr = ip->saddr};
        if (bpf_map_lookup_elem(&blocklist_v4, &key))
            return count(ctx, XDP_DROP);
    } else if (proto == bpf_htons(ETH_P_IPV6)) {
        struct ipv6hdr *ip6 = l3;
        if ((void *)(ip6 + 1) > data_end)
            return count(ctx, XDP_PASS);
        struct lpm_v6 key = {.prefixlen = 128};
        __builtin_memcpy(key.addr, &ip6->saddr, 16);
        if (bpf_map_lookup_elem(&blocklist_v6, &key))
            return count(ctx, XDP_DROP);
    }
    return count(ctx, XDP_PASS);
}
