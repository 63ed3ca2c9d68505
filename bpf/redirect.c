/* redirect: send every frame out of another interface through a devmap (XDP_REDIRECT).
 *
 * Parameter: TARGET_IFINDEX (offload attach ... --param target=IFNAME sets it and fills the devmap).
 * The target must accept redirected frames: a veth only does when its peer runs XDP or has GRO.
 * Counters: xdp_stats[XDP_REDIRECT] for frames handed to the devmap, xdp_stats[XDP_ABORTED] when
 * the devmap has no entry.
 */
#include "offload_stats.h"

BPF_DEVMAP(tx_port, 1);

int redirect(struct xdp_md *ctx)
{
    int action = tx_port.redirect_map(0, 0);
    return count(ctx, action == XDP_REDIRECT ? XDP_REDIRECT : XDP_ABORTED);
}
