/* The smallest XDP program: pass everything. Built by the tests with clang to attach through
 * iproute2, independently of offload's own loader. */
#include <linux/bpf.h>
#define SEC(n) __attribute__((section(n), used))
SEC("xdp") int xdp_pass(struct xdp_md *ctx) { return XDP_PASS; }
char _license[] SEC("license") = "GPL";
