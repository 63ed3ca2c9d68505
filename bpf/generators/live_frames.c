/* live_frames: the packet generator of `offload bench --generator live-frames`.
 *
 * Run by BPF_PROG_RUN with BPF_F_TEST_XDP_LIVE_FRAMES (Linux >= 5.18), not attached anywhere: the
 * kernel replays the frame it is given `repeat` times and this program redirects each one out of
 * the tx device (the `tx_ifindex` global, set before load), through its ndo_xdp_xmit. The whole
 * data path stays in the kernel.
 */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

const volatile __u32 tx_ifindex = 0;

SEC("xdp")
int live_frames(struct xdp_md *ctx)
{
    return bpf_redirect(tx_ifindex, 0);
}

char _license[] SEC("license") = "GPL";
