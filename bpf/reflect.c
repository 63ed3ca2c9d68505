/* reflect: send every Ethernet frame back out of the interface it came in on, with source and
 * destination MAC swapped (XDP_TX). Frames too short for an Ethernet header are dropped.
 *
 * Counters: xdp_stats[ifindex].action[XDP_TX] and xdp_stats[ifindex].action[XDP_DROP].
 */
#include "offload_stats.h"
#include <linux/if_ether.h>

SEC("xdp")
int reflect(struct xdp_md *ctx)
{
    void *data = (void *)(long)ctx->data;
    void *data_end = (void *)(long)ctx->data_end;
    struct ethhdr *eth = data;
    unsigned char tmp[ETH_ALEN];

    if ((void *)(eth + 1) > data_end)
        return count(ctx, XDP_DROP);
    __builtin_memcpy(tmp, eth->h_source, ETH_ALEN);
    __builtin_memcpy(eth->h_source, eth->h_dest, ETH_ALEN);
    __builtin_memcpy(eth->h_dest, tmp, ETH_ALEN);
    return count(ctx, XDP_TX);
}
