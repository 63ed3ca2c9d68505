/* count_pass: count every frame, then hand it to the stack (XDP_PASS).
 *
 * Observes traffic without changing it. Offloadable like count_drop.
 * Counters: xdp_stats[ifindex].action[XDP_PASS] (native/generic), xdp_stats_hw (hw).
 */
#include "offload_stats.h"

SEC("xdp")
int count_pass(struct xdp_md *ctx)
{
    return count(ctx, XDP_PASS);
}
