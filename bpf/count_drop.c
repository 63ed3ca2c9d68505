/* count_drop: count every frame, then drop it (XDP_DROP).
 *
 * The receive side of the benchmarks and the simplest sink. Offloadable: built with OFFLOAD_HW
 * (NAME.hw.o) it uses only a 2-entry plain array, which netdevsim and nfp accept.
 * Counters: xdp_stats[ifindex].action[XDP_DROP] (native/generic), xdp_stats_hw (hw).
 */
#include "offload_stats.h"

SEC("xdp")
int count_drop(struct xdp_md *ctx)
{
    return count(ctx, XDP_DROP);
}
