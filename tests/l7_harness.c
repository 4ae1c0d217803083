// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * l7_harness.c - src/bpf/l7.h in user space, for tests/test_l7_signatures.py
 * (built there with the system compiler; never part of the product). Each
 * input line is "<tcp|tcpo|udp> <payload length> <hex bytes>" (tcpo: a TCP
 * flow whose opening SYN the table saw); each output line
 * the label l7_classify gives (the hex bytes are the captured payload, at
 * most L7_WINDOW of them are looked at, as the programs do).
 */
#include <stdio.h>
#include <string.h>

#include "l7.h"

int main(void) {
	char proto[8], hex[4096];
	unsigned plen;

	while (scanf("%7s %u %4095s", proto, &plen, hex) == 3) {
		struct l7_buf in = {.plen = plen, .l4 = strncmp(proto, "tcp", 3) ? L7_UDP : L7_TCP};

		in.opened = !strcmp(proto, "tcpo");

		for (size_t i = 0; hex[i] && hex[i + 1] && in.have < L7_WINDOW; i += 2) {
			unsigned x;
			sscanf(hex + i, "%2x", &x);
			in.b[in.have++] = (__u8)x;
		}
		printf("%d\n", l7_classify(&in));
	}
	return 0;
}
