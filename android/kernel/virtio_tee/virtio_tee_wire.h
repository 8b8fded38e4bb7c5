/* SPDX-License-Identifier: GPL-2.0 */
/*
 * virtio-tee wire format (virtio device ID 46), as specified in vmstack's
 * docs/virtio-tee.md. All fields are little-endian; every structure has a
 * fixed size with explicit padding.
 */
#ifndef VIRTIO_TEE_WIRE_H
#define VIRTIO_TEE_WIRE_H

#include <linux/build_bug.h>
#include <linux/types.h>

#ifndef VIRTIO_ID_TEE
#define VIRTIO_ID_TEE			46
#endif

/* Shared memory is described in 4 KiB frames whatever the page size. */
#define VIRTIO_TEE_FRAME_SHIFT		12
#define VIRTIO_TEE_FRAME_SIZE		(1UL << VIRTIO_TEE_FRAME_SHIFT)

#define VIRTIO_TEE_REQ_OPEN_SESSION	1
#define VIRTIO_TEE_REQ_CLOSE_SESSION	2
#define VIRTIO_TEE_REQ_INVOKE		3
#define VIRTIO_TEE_REQ_CANCEL		4
#define VIRTIO_TEE_REQ_SHM_REGISTER	5
#define VIRTIO_TEE_REQ_SHM_UNREGISTER	6

#define VIRTIO_TEE_S_OK			0
#define VIRTIO_TEE_S_INVALID		1
#define VIRTIO_TEE_S_UNSUPPORTED	2
#define VIRTIO_TEE_S_BAD_ADDRESS	3
#define VIRTIO_TEE_S_NO_SPACE		4
#define VIRTIO_TEE_S_TOO_LARGE		5
#define VIRTIO_TEE_S_NOT_FOUND		6
#define VIRTIO_TEE_S_SERVICE_ERROR	7

/* The values of Linux's TEE_IOCTL_PARAM_ATTR_TYPE_*. */
#define VIRTIO_TEE_PARAM_NONE		0
#define VIRTIO_TEE_PARAM_VALUE_INPUT	1
#define VIRTIO_TEE_PARAM_VALUE_OUTPUT	2
#define VIRTIO_TEE_PARAM_VALUE_INOUT	3
#define VIRTIO_TEE_PARAM_MEMREF_INPUT	5
#define VIRTIO_TEE_PARAM_MEMREF_OUTPUT	6
#define VIRTIO_TEE_PARAM_MEMREF_INOUT	7

#define VIRTIO_TEE_NUM_PARAMS		4

struct virtio_tee_config {
	__le32 max_sessions;
	__le32 max_shm_regions;
	__le32 max_shm_frames;
	__le32 max_memref_size;
};

struct virtio_tee_req_hdr {
	__le32 type;
	__le32 flags;
	__le64 request_id;
};

struct virtio_tee_resp_hdr {
	__le32 status;
	__le32 reserved;
	__le64 request_id;
};

struct virtio_tee_param {
	__le32 type;
	__le32 reserved;
	union {
		struct {
			__le64 a;
			__le64 b;
			__le64 c;
		} value;
		struct {
			__le64 shm_id;
			__le64 offset;
			__le64 size;
		} memref;
	} u;
};

struct virtio_tee_open_session_req {
	__u8 uuid[16];
	__u8 client_uuid[16];
	__le32 login;
	__le32 reserved;
	struct virtio_tee_param params[VIRTIO_TEE_NUM_PARAMS];
};

struct virtio_tee_invoke_req {
	__le32 session;
	__le32 func;
	struct virtio_tee_param params[VIRTIO_TEE_NUM_PARAMS];
};

struct virtio_tee_close_session_req {
	__le32 session;
	__le32 reserved;
};

struct virtio_tee_cancel_req {
	__le64 request_id;
};

struct virtio_tee_shm_register_req {
	__le64 size;
	__le32 offset;
	__le32 num_frames;
	__le64 frames[];
};

struct virtio_tee_shm_unregister_req {
	__le64 shm_id;
};

struct virtio_tee_op_resp {
	__le32 ret;
	__le32 ret_origin;
	__le32 session;
	__le32 reserved;
	struct virtio_tee_param params[VIRTIO_TEE_NUM_PARAMS];
};

struct virtio_tee_shm_register_resp {
	__le64 shm_id;
};

static_assert(sizeof(struct virtio_tee_config) == 16);
static_assert(sizeof(struct virtio_tee_req_hdr) == 16);
static_assert(sizeof(struct virtio_tee_resp_hdr) == 16);
static_assert(sizeof(struct virtio_tee_param) == 32);
static_assert(sizeof(struct virtio_tee_open_session_req) == 168);
static_assert(sizeof(struct virtio_tee_invoke_req) == 136);
static_assert(sizeof(struct virtio_tee_close_session_req) == 8);
static_assert(sizeof(struct virtio_tee_cancel_req) == 8);
static_assert(sizeof(struct virtio_tee_shm_register_req) == 16);
static_assert(sizeof(struct virtio_tee_shm_unregister_req) == 8);
static_assert(sizeof(struct virtio_tee_op_resp) == 144);
static_assert(sizeof(struct virtio_tee_shm_register_resp) == 8);

#endif /* VIRTIO_TEE_WIRE_H */
