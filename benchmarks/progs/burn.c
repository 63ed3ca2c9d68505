/* burn: count_drop plus a known amount of extra work per frame, for `offload bench compare`'s
 * detection benchmark (benchmarks/compare_ab.py).
 *
 * `loops` (a --param, 0..4096) rounds of a 64-bit linear congruential step on a value the
 * compiler cannot fold (the frame's length); the result decides nothing but is kept alive by
 * the branch at the end. llvm-objdump -d shows the loop body's instruction count.
 */
#include "../../bpf/offload_stats.h"

#define BURN_MAX 4096

const volatile __u32 loops = 0;

SEC("xdp")
int burn(struct xdp_md *ctx)
{
    __u64 x = ctx->data_end - ctx->data;

    for (__u32 i = 0; i < BURN_MAX; i++) {
        if (i >= loops)
            break;
        x = x * 6364136223846793005ULL + 1442695040888963407ULL;
    }
    if (x == 1)   /* never for a real frame length; keeps the loop from being optimised away */
        return count(ctx, XDP_PASS);
    return count(ctx, XDP_DROP);
}
