/* filter: drop IPv4 and IPv6 frames whose source address is in a blocklist, pass the rest.
 *
 * The blocklists are LPM tries keyed by prefix (offload filter add|del|list edits them in place).
 * Not offloadable: hardware offload refuses LPM tries (nfp, netdevsim), so in auto mode it falls
 * back to native with the kernel's reason. VLAN-tagged frames (one tag) are looked into.
 * Counters: xdp_stats[XDP_DROP] (blocked), xdp_stats[XDP_PASS] (everything else).
 */
#include "offload_stats.h"
#include <linux/if_ether.h>
#include <linux/ip.h>
#include <linux/ipv6.h>

struct lpm_v4 {
    u32 prefixlen;
    u32 addr;
};
struct lpm_v6 {
    u32 prefixlen;
    u8 addr[16];
};
BPF_LPM_TRIE(blocklist_v4, struct lpm_v4, u8, 16384);
BPF_LPM_TRIE(blocklist_v6, struct lpm_v6, u8, 16384);

struct vlan_hdr {
    __be16 tci;
    __be16 proto;
};

int filter(struct xdp_md *ctx)
{
    void *data = (void *)(long)ctx->data;
    void *data_end = (void *)(long)ctx->data_end;
    struct ethhdr *eth = data;
    void *l3;
    u16 proto;

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
        if (blocklist_v4.lookup(&key))
            return count(ctx, XDP_DROP);
    } else if (proto == bpf_htons(ETH_P_IPV6)) {
        struct ipv6hdr *ip6 = l3;
        if ((void *)(ip6 + 1) > data_end)
            return count(ctx, XDP_PASS);
        struct lpm_v6 key = {.prefixlen = 128};
        __builtin_memcpy(key.addr, &ip6->saddr, 16);
        if (blocklist_v6.lookup(&key))
            return count(ctx, XDP_DROP);
    }
    return count(ctx, XDP_PASS);
}
