/* redirect: send every frame out of another interface through a devmap (XDP_REDIRECT).
 *
 * Parameter: target (offload attach ... --param target=IFNAME fills the devmap's one entry).
 * The target must accept redirected frames: a veth only does when its peer runs XDP or has GRO.
 * Counters: xdp_stats[ifindex].action[XDP_REDIRECT] for frames handed to the devmap, xdp_stats[ifindex].action[XDP_ABORTED] when
 * the devmap has no entry.
 */
#include "offload_stats.h"

struct {
    __uint(type, BPF_MAP_TYPE_DEVMAP);
    __uint(max_entries, 1);
    __type(key, __u32);
    __type(value, __u32);
} tx_port SEC(".maps");

SEC("xdp")
int redirect(struct xdp_md *ctx)
{
    int action = bpf_redirect_map(&tx_port, 0, 0);
    return count(ctx, action == XDP_REDIRECT ? XDP_REDIRECT : XDP_ABORTED);
}
