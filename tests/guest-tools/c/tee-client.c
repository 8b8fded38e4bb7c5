// SPDX-License-Identifier: Apache-2.0
/*
 * tee-client: a GlobalPlatform TEE Client API program for the arm64 guest,
 * linked against Debian's unmodified libteec1 (OP-TEE's client library), so
 * the stock library drives /dev/teeN of the virtio_tee driver.
 *
 *   tee-client init              TEEC_InitializeContext(NULL): prints the result
 *   tee-client echo [SIZE...]    echo TA: values, whole registered/allocated
 *                                shared memory and temporary memory references
 *                                of each SIZE, checked byte for byte
 *   tee-client cancel            echo WAIT of 30 s, TEEC_RequestCancellation after 0.5 s
 *   tee-client message UUID HEX  one message to a message TA; prints the reply
 *   tee-client pipe UUID         one session; each stdin line a message in hex,
 *                                each stdout line its response in hex
 *
 * TA commands follow vmstack's docs/trusty.md. Output: one TEEC-... line per
 * result; errors: "tee-client: error: ..." and exit status 1.
 */
#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <tee_client_api.h>

#define ECHO_UUID "b4270f96-0acb-5e22-88f7-2ea945e72654"
#define ECHO_FUNC_ECHO 0
#define ECHO_FUNC_WAIT 1
#define FUNC_MESSAGE 0
#define MESSAGE_MAX 4096

static void fail(const char *what, TEEC_Result res, uint32_t origin)
{
	fprintf(stderr, "tee-client: error: %s: 0x%08x origin %u\n", what,
		(unsigned int)res, (unsigned int)origin);
	exit(1);
}

static int hex_digit(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

/* Parses hex digits (dashes skipped) into at most max bytes; returns the
 * count or -1. */
static long parse_hex(const char *s, uint8_t *out, size_t max)
{
	size_t n = 0;
	int hi = -1;

	for (; *s; s++) {
		int d;

		if (*s == '-')
			continue;
		d = hex_digit(*s);
		if (d < 0)
			return -1;
		if (hi < 0) {
			hi = d;
			continue;
		}
		if (n == max)
			return -1;
		out[n++] = (uint8_t)(hi << 4 | d);
		hi = -1;
	}
	return hi < 0 ? (long)n : -1;
}

static TEEC_UUID parse_uuid(const char *s)
{
	uint8_t b[16];
	TEEC_UUID u;

	if (parse_hex(s, b, sizeof(b)) != 16) {
		fprintf(stderr, "tee-client: error: bad UUID %s\n", s);
		exit(1);
	}
	u.timeLow = (uint32_t)b[0] << 24 | (uint32_t)b[1] << 16 |
		    (uint32_t)b[2] << 8 | b[3];
	u.timeMid = (uint16_t)(b[4] << 8 | b[5]);
	u.timeHiAndVersion = (uint16_t)(b[6] << 8 | b[7]);
	memcpy(u.clockSeqAndNode, b + 8, 8);
	return u;
}

static void fill(uint8_t *p, size_t n, uint32_t salt)
{
	uint32_t x = salt * 2654435761u + (uint32_t)n;
	size_t i;

	for (i = 0; i < n; i++) {
		x ^= x << 13;
		x ^= x >> 17;
		x ^= x << 5;
		p[i] = (uint8_t)x;
	}
}

static long ms_since(const struct timespec *t0)
{
	struct timespec t;

	clock_gettime(CLOCK_MONOTONIC, &t);
	return (t.tv_sec - t0->tv_sec) * 1000 +
	       (t.tv_nsec - t0->tv_nsec) / 1000000;
}

static void open_session(TEEC_Context *ctx, TEEC_Session *sess,
			 const char *uuid)
{
	TEEC_UUID u = parse_uuid(uuid);
	uint32_t origin = 0;
	TEEC_Result res;

	res = TEEC_InitializeContext(NULL, ctx);
	if (res != TEEC_SUCCESS)
		fail("TEEC_InitializeContext", res, 0);
	res = TEEC_OpenSession(ctx, sess, &u, TEEC_LOGIN_PUBLIC, NULL, NULL,
			       &origin);
	if (res != TEEC_SUCCESS)
		fail("TEEC_OpenSession", res, origin);
}

/* Echo through whole shared-memory objects: the input allocated by the
 * library, the output this program's own memory registered in place. */
static void echo_whole(TEEC_Context *ctx, TEEC_Session *sess, size_t size,
		       uint32_t salt)
{
	TEEC_SharedMemory in = { .size = size, .flags = TEEC_MEM_INPUT };
	TEEC_SharedMemory out = { .size = size, .flags = TEEC_MEM_OUTPUT };
	TEEC_Operation op;
	uint32_t origin = 0;
	TEEC_Result res;

	res = TEEC_AllocateSharedMemory(ctx, &in);
	if (res != TEEC_SUCCESS)
		fail("TEEC_AllocateSharedMemory", res, 0);
	out.buffer = calloc(1, size);
	if (!out.buffer)
		fail("calloc", TEEC_ERROR_OUT_OF_MEMORY, 0);
	res = TEEC_RegisterSharedMemory(ctx, &out);
	if (res != TEEC_SUCCESS)
		fail("TEEC_RegisterSharedMemory", res, 0);
	fill(in.buffer, size, salt);

	memset(&op, 0, sizeof(op));
	op.paramTypes = TEEC_PARAM_TYPES(TEEC_VALUE_INPUT, TEEC_VALUE_OUTPUT,
					 TEEC_MEMREF_WHOLE, TEEC_MEMREF_WHOLE);
	op.params[0].value.a = (uint32_t)size;
	op.params[0].value.b = salt;
	op.params[2].memref.parent = &in;
	op.params[3].memref.parent = &out;
	res = TEEC_InvokeCommand(sess, ECHO_FUNC_ECHO, &op, &origin);
	if (res != TEEC_SUCCESS)
		fail("echo (whole shared memory)", res, origin);
	if (op.params[1].value.a != size || op.params[1].value.b != salt)
		fail("echo (whole shared memory): values differ", TEEC_ERROR_GENERIC, 0);
	if (op.params[3].memref.size != size ||
	    memcmp(in.buffer, out.buffer, size) != 0)
		fail("echo (whole shared memory): bytes differ", TEEC_ERROR_GENERIC, 0);
	TEEC_ReleaseSharedMemory(&in);
	TEEC_ReleaseSharedMemory(&out);
	free(out.buffer);
}

/* Echo through temporary memory references (the library registers the
 * caller's buffers for the one call). */
static void echo_temp(TEEC_Session *sess, size_t size, uint32_t salt)
{
	uint8_t *in = malloc(size), *out = calloc(1, size);
	TEEC_Operation op;
	uint32_t origin = 0;
	TEEC_Result res;

	if (!in || !out)
		fail("malloc", TEEC_ERROR_OUT_OF_MEMORY, 0);
	fill(in, size, salt);
	memset(&op, 0, sizeof(op));
	op.paramTypes = TEEC_PARAM_TYPES(TEEC_MEMREF_TEMP_INPUT,
					 TEEC_MEMREF_TEMP_OUTPUT, TEEC_NONE,
					 TEEC_NONE);
	op.params[0].tmpref.buffer = in;
	op.params[0].tmpref.size = size;
	op.params[1].tmpref.buffer = out;
	op.params[1].tmpref.size = size;
	res = TEEC_InvokeCommand(sess, ECHO_FUNC_ECHO, &op, &origin);
	if (res != TEEC_SUCCESS)
		fail("echo (temporary memory references)", res, origin);
	if (op.params[1].tmpref.size != size || memcmp(in, out, size) != 0)
		fail("echo (temporary memory references): bytes differ",
		     TEEC_ERROR_GENERIC, 0);
	free(in);
	free(out);
}

static int cmd_echo(int argc, char **argv)
{
	static const size_t defaults[] = { 1, 4096, 4097, 65536, 1 << 20 };
	TEEC_Context ctx;
	TEEC_Session sess;
	size_t n = argc > 0 ? (size_t)argc : sizeof(defaults) / sizeof(defaults[0]);
	size_t i;

	open_session(&ctx, &sess, ECHO_UUID);
	for (i = 0; i < n; i++) {
		size_t size = argc > 0 ? strtoul(argv[i], NULL, 0) : defaults[i];
		struct timespec t0;

		if (size < 1 || size > (1 << 20)) {
			fprintf(stderr, "tee-client: error: bad size %zu: want 1..1048576\n", size);
			return 1;
		}
		clock_gettime(CLOCK_MONOTONIC, &t0);
		echo_whole(&ctx, &sess, size, (uint32_t)i);
		echo_temp(&sess, size, (uint32_t)i + 1000);
		printf("TEEC-ECHO-OK size=%zu ms=%ld\n", size, ms_since(&t0));
	}
	TEEC_CloseSession(&sess);
	TEEC_FinalizeContext(&ctx);
	return 0;
}

struct waiter {
	TEEC_Session *sess;
	TEEC_Operation op;
	TEEC_Result res;
	uint32_t origin;
};

static void *wait_thread(void *arg)
{
	struct waiter *w = arg;

	w->res = TEEC_InvokeCommand(w->sess, ECHO_FUNC_WAIT, &w->op, &w->origin);
	return NULL;
}

static int cmd_cancel(void)
{
	struct waiter w = { 0 };
	struct timespec t0;
	TEEC_Context ctx;
	TEEC_Session sess;
	pthread_t t;
	long ms;

	open_session(&ctx, &sess, ECHO_UUID);
	w.sess = &sess;
	w.op.paramTypes = TEEC_PARAM_TYPES(TEEC_VALUE_INPUT, TEEC_NONE,
					   TEEC_NONE, TEEC_NONE);
	w.op.params[0].value.a = 30000;
	clock_gettime(CLOCK_MONOTONIC, &t0);
	if (pthread_create(&t, NULL, wait_thread, &w))
		fail("pthread_create", TEEC_ERROR_GENERIC, 0);
	usleep(500 * 1000);
	TEEC_RequestCancellation(&w.op);
	pthread_join(t, NULL);
	ms = ms_since(&t0);
	if (w.res != TEEC_ERROR_CANCEL)
		fail("cancelled WAIT did not end with TEEC_ERROR_CANCEL", w.res,
		     w.origin);
	printf("TEEC-CANCEL-OK ms=%ld\n", ms);
	TEEC_CloseSession(&sess);
	TEEC_FinalizeContext(&ctx);
	return 0;
}

/* Sends one message (len bytes of msg) on a message TA session; the
 * response goes to reply (MESSAGE_MAX bytes), its length is returned. */
static size_t send_message(TEEC_Session *sess, uint8_t *msg, size_t len,
			   uint8_t *reply)
{
	TEEC_Operation op;
	uint32_t origin = 0;
	TEEC_Result res;

	memset(&op, 0, sizeof(op));
	op.paramTypes = TEEC_PARAM_TYPES(TEEC_MEMREF_TEMP_INPUT,
					 TEEC_MEMREF_TEMP_OUTPUT,
					 TEEC_VALUE_OUTPUT, TEEC_NONE);
	op.params[0].tmpref.buffer = msg;
	op.params[0].tmpref.size = len;
	op.params[1].tmpref.buffer = reply;
	op.params[1].tmpref.size = MESSAGE_MAX;
	res = TEEC_InvokeCommand(sess, FUNC_MESSAGE, &op, &origin);
	if (res != TEEC_SUCCESS)
		fail("message", res, origin);
	if (op.params[2].value.b != 1 || op.params[1].tmpref.size > MESSAGE_MAX)
		fail("message: no response", TEEC_ERROR_GENERIC, 0);
	return op.params[1].tmpref.size;
}

static void print_hex(const uint8_t *p, size_t n)
{
	size_t i;

	for (i = 0; i < n; i++)
		printf("%02x", p[i]);
	printf("\n");
}

static int cmd_message(const char *uuid, const char *hex)
{
	static uint8_t msg[MESSAGE_MAX], reply[MESSAGE_MAX];
	TEEC_Context ctx;
	TEEC_Session sess;
	long len = parse_hex(hex, msg, sizeof(msg));
	size_t n;

	if (len < 1) {
		fprintf(stderr, "tee-client: error: a message is 1-%d bytes of hex\n",
			MESSAGE_MAX);
		return 1;
	}
	open_session(&ctx, &sess, uuid);
	n = send_message(&sess, msg, (size_t)len, reply);
	printf("TEEC-MESSAGE len=%zu responses=1 reply=", n);
	print_hex(reply, n);
	TEEC_CloseSession(&sess);
	TEEC_FinalizeContext(&ctx);
	return 0;
}

/* One session for many messages: each stdin line is a message in hex,
 * answered by one stdout line, the response in hex; EOF closes the
 * session. tee-test --via libteec builds and checks the messages. */
static int cmd_pipe(const char *uuid)
{
	static char line[2 * MESSAGE_MAX + 16];
	static uint8_t msg[MESSAGE_MAX], reply[MESSAGE_MAX];
	TEEC_Context ctx;
	TEEC_Session sess;

	open_session(&ctx, &sess, uuid);
	while (fgets(line, sizeof(line), stdin)) {
		long len;

		line[strcspn(line, "\r\n")] = 0;
		len = parse_hex(line, msg, sizeof(msg));
		if (len < 1) {
			fprintf(stderr, "tee-client: error: pipe: a message is 1-%d bytes of hex\n",
				MESSAGE_MAX);
			return 1;
		}
		print_hex(reply, send_message(&sess, msg, (size_t)len, reply));
		fflush(stdout);
	}
	TEEC_CloseSession(&sess);
	TEEC_FinalizeContext(&ctx);
	return 0;
}

int main(int argc, char **argv)
{
	if (argc >= 2 && !strcmp(argv[1], "init")) {
		TEEC_Context ctx;
		TEEC_Result res = TEEC_InitializeContext(NULL, &ctx);

		printf("TEEC-INIT 0x%08x\n", (unsigned int)res);
		if (res == TEEC_SUCCESS)
			TEEC_FinalizeContext(&ctx);
		return res == TEEC_SUCCESS ? 0 : 1;
	}
	if (argc >= 2 && !strcmp(argv[1], "echo"))
		return cmd_echo(argc - 2, argv + 2);
	if (argc == 2 && !strcmp(argv[1], "cancel"))
		return cmd_cancel();
	if (argc == 4 && !strcmp(argv[1], "message"))
		return cmd_message(argv[2], argv[3]);
	if (argc == 3 && !strcmp(argv[1], "pipe"))
		return cmd_pipe(argv[2]);
	fprintf(stderr,
		"usage: tee-client init | echo [SIZE...] | cancel | message UUID HEX | pipe UUID\n");
	return 2;
}
