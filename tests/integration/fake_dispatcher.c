/* Stands in for libxdp's dispatcher where the kernel refuses freplace (EXT) programs, which libxdp
 * needs to build one: a program named xdp_dispatcher whose .rodata holds a version-2
 * struct xdp_dispatcher_config, so offload's reading of it is tested against a real kernel map. */
#include <linux/bpf.h>
#define SEC(n) __attribute__((section(n), used))
struct xdp_dispatcher_config {
	__u8 magic, dispatcher_version, num_progs_enabled, is_xdp_frags;
	__u32 chain_call_actions[10];
	__u32 run_prios[10];
	__u32 program_flags[10];
};
volatile const struct xdp_dispatcher_config conf = {
	236, 2, 2, 0, {1 << XDP_PASS, (1 << XDP_PASS) | (1 << XDP_DROP)}, {10, 20}};
SEC("xdp") int xdp_dispatcher(struct xdp_md *ctx) { return conf.num_progs_enabled ? XDP_PASS : XDP_DROP; }
char _license[] SEC("license") = "GPL";
