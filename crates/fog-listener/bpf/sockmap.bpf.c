// SPDX-License-Identifier: GPL-2.0
//
// fog-listener's kernel data path: an sk_skb stream verdict program that moves every
// byte arriving on a proxied socket straight to its peer socket's send side, without a
// trip through user space. Compiled by build.rs (clang -target bpf) and loaded by
// src/kernel.rs. User space pairs the sockets, handles set-up, fencing and closing.
//
// Maps (names are part of the contract with src/kernel.rs):
//   fog_socks  SOCKHASH  socket cookie -> socket (the redirect targets)
//   fog_peers  HASH      socket cookie -> { peer cookie, bytes redirected, spills }

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

struct {
	__uint(type, BPF_MAP_TYPE_SOCKHASH);
	__uint(max_entries, 65536);
	__type(key, __u64);
	__type(value, __u32);
} fog_socks SEC(".maps");

struct fog_peer {
	// Cookie of the socket this socket's input goes to.
	__u64 peer;
	// Bytes redirected to the peer (the listener's byte counters, read at session end).
	__u64 bytes;
	// Packets that could not be redirected (the peer was not in fog_socks yet) and were
	// left on this socket for user space to read and forward.
	__u64 spilled;
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__type(key, __u64);
	__type(value, struct fog_peer);
} fog_peers SEC(".maps");

SEC("sk_skb/stream_verdict")
int fog_verdict(struct __sk_buff *skb)
{
	__u64 cookie = bpf_get_socket_cookie(skb);
	struct fog_peer *p = bpf_map_lookup_elem(&fog_peers, &cookie);

	// Not a paired socket (never expected): leave the data where user space can read it.
	if (!p)
		return SK_PASS;
	__u64 peer = p->peer;
	if (bpf_sk_redirect_hash(skb, &fog_socks, &peer, 0) == SK_PASS) {
		__sync_fetch_and_add(&p->bytes, skb->len);
		return SK_PASS;
	}
	__sync_fetch_and_add(&p->spilled, 1);
	return SK_PASS;
}

char LICENSE[] SEC("license") = "GPL";
