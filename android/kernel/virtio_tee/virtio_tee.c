// SPDX-License-Identifier: GPL-2.0
/*
 * virtio_tee: a driver for the virtio TEE device (virtio device ID 46).
 *
 * It registers the device with the kernel's TEE subsystem, so /dev/teeN
 * appears and the stock GlobalPlatform client library (OP-TEE's libteec)
 * reaches the trusted applications the host serves. The wire format is
 * specified in vmstack's docs/virtio-tee.md.
 *
 * Shared memory is always guest memory the TEE subsystem owns: its pool
 * allocations (TEE_IOC_SHM_ALLOC, kernel clients) and pinned user pages
 * (TEE_IOC_SHM_REGISTER). The driver describes their pages to the device as
 * lists of guest-physical 4 KiB frames, and the device reads and writes them
 * in place; the request queue carries only metadata.
 *
 * Every request is one chain (request bytes, then a response buffer), and
 * the device may complete requests in any order. A request's buffers, and
 * the shared memory it names, stay in use until the device returns the
 * chain, so every caller waits for that; a caller killed while waiting
 * first asks the device to cancel the request.
 */

#include <linux/atomic.h>
#include <linux/completion.h>
#include <linux/kref.h>
#include <linux/list.h>
#include <linux/mm.h>
#include <linux/module.h>
#include <linux/mutex.h>
#include <linux/scatterlist.h>
#include <linux/semaphore.h>
#include <linux/slab.h>
#include <linux/spinlock.h>
#include <linux/tee_core.h>
#include <linux/uuid.h>
#include <linux/virtio.h>
#include <linux/virtio_config.h>
#include <linux/wait.h>

#include "virtio_tee_wire.h"

/* TEE_IOC_VERSION impl_id: private ("VTEE"), none of the TEE_IMPL_ID_*. */
#define VTEE_IMPL_ID		0x56544545
/* The driver's own cap on the frames of one region (a 32 KiB list). */
#define VTEE_MAX_FRAMES		4096
/* Requests one TEE_IOC_CANCEL cancels at most. */
#define VTEE_CANCEL_BATCH	32
/* Queue chains kept free of requests the device may hold for long (open
 * session, invoke, shm register): room for the cancel, close and
 * unregister requests that end them. */
#define VTEE_RESERVED_CHAINS	4

/* How a request waits for room in the queue. */
enum vtee_wait {
	VTEE_WAIT_KILLABLE,	/* an ioctl: a fatal signal ends the wait */
	VTEE_WAIT_ALWAYS,	/* clean-up that must reach the device */
	VTEE_WAIT_NEVER,	/* -ENOSPC at once when the queue is full */
};

struct vtee_dev {
	struct virtio_device *vdev;
	struct virtqueue *vq;
	spinlock_t lock;		/* vq, pending, broken */
	struct list_head pending;	/* requests the device holds */
	bool broken;			/* going away: no new requests */
	wait_queue_head_t space;	/* woken when the device returns chains */
	struct semaphore held;		/* chains for requests the device may hold */
	atomic64_t next_id;
	atomic_t sessions;		/* open sessions, <= max_sessions */
	atomic_t regions;		/* registered regions, <= max_regions */
	u32 max_sessions;
	u32 max_regions;
	u32 max_frames;
	u32 max_memref;
	struct tee_shm_pool pool;
	struct tee_device *teedev;
};

struct vtee_session {
	struct list_head node;
	u32 id;
};

/* Per open /dev/teeN (tee_context.data): the sessions it opened. */
struct vtee_ctx {
	struct mutex lock;
	struct list_head sessions;
};

struct vtee_req {
	struct kref ref;		/* the caller's, and the device's while it holds it */
	struct list_head node;		/* in vtee_dev.pending */
	struct completion done;
	u32 used;			/* bytes the device wrote */
	struct tee_context *ctx;	/* for cancellation */
	u32 type;
	u32 session;
	u32 cancel_id;
	u64 id;
	size_t out_len;
	size_t in_len;
	void *out;			/* device-readable: header + body */
	void *in;			/* device-writable: response */
	u8 buf[];
};

static void vtee_req_free(struct kref *ref)
{
	kfree(container_of(ref, struct vtee_req, ref));
}

static void vtee_req_put(struct vtee_req *req)
{
	kref_put(&req->ref, vtee_req_free);
}

/* A request of @type with a zeroed body of @body bytes and room for a
 * response of @resp bytes after the response header. */
static struct vtee_req *vtee_req_alloc(struct vtee_dev *vd, u32 type,
				       size_t body, size_t resp)
{
	size_t out_len = sizeof(struct virtio_tee_req_hdr) + body;
	size_t in_off = ALIGN(out_len, L1_CACHE_BYTES);
	size_t in_len = sizeof(struct virtio_tee_resp_hdr) + resp;
	struct virtio_tee_req_hdr *hdr;
	struct vtee_req *req;

	/* A close or unregister that could not be sent would leave the slot
	 * in use on the device for good: those (small) never fail. */
	gfp_t gfp = GFP_KERNEL;

	if (type == VIRTIO_TEE_REQ_CLOSE_SESSION ||
	    type == VIRTIO_TEE_REQ_SHM_UNREGISTER)
		gfp |= __GFP_NOFAIL;
	req = kzalloc(sizeof(*req) + in_off + in_len, gfp);
	if (!req)
		return NULL;
	kref_init(&req->ref);
	INIT_LIST_HEAD(&req->node);
	init_completion(&req->done);
	req->type = type;
	req->id = atomic64_inc_return(&vd->next_id);
	req->out = req->buf;
	req->out_len = out_len;
	req->in = req->buf + in_off;
	req->in_len = in_len;
	hdr = req->out;
	hdr->type = cpu_to_le32(type);
	hdr->request_id = cpu_to_le64(req->id);
	return req;
}

static void *vtee_req_body(struct vtee_req *req)
{
	return (u8 *)req->out + sizeof(struct virtio_tee_req_hdr);
}

static void *vtee_resp_body(struct vtee_req *req)
{
	return (u8 *)req->in + sizeof(struct virtio_tee_resp_hdr);
}

/* The queue's callback: completes every request the device returned. */
static void vtee_done(struct virtqueue *vq)
{
	struct vtee_dev *vd = vq->vdev->priv;
	struct vtee_req *req;
	unsigned long flags;
	unsigned int len;

	spin_lock_irqsave(&vd->lock, flags);
	do {
		virtqueue_disable_cb(vq);
		while ((req = virtqueue_get_buf(vq, &len))) {
			req->used = min_t(unsigned int, len, req->in_len);
			list_del_init(&req->node);
			complete(&req->done);
			vtee_req_put(req);
		}
	} while (!virtqueue_enable_cb(vq));
	spin_unlock_irqrestore(&vd->lock, flags);
	wake_up_all(&vd->space);
}

static bool vtee_has_room(struct vtee_dev *vd)
{
	return READ_ONCE(vd->vq->num_free) >= 2 || READ_ONCE(vd->broken);
}

/* Hands @req to the device. */
static int vtee_submit(struct vtee_dev *vd, struct vtee_req *req,
		       enum vtee_wait wait)
{
	struct scatterlist sg_out, sg_in, *sgs[] = { &sg_out, &sg_in };
	unsigned long flags;
	bool notify = false;
	int rc;

	sg_init_one(&sg_out, req->out, req->out_len);
	sg_init_one(&sg_in, req->in, req->in_len);
	for (;;) {
		spin_lock_irqsave(&vd->lock, flags);
		if (vd->broken)
			rc = -ENODEV;
		else
			rc = virtqueue_add_sgs(vd->vq, sgs, 1, 1, req, GFP_ATOMIC);
		if (rc != -ENOSPC || wait == VTEE_WAIT_NEVER)
			break;
		spin_unlock_irqrestore(&vd->lock, flags);
		/* Room comes back as the device completes requests. */
		if (wait == VTEE_WAIT_KILLABLE) {
			if (wait_event_killable(vd->space, vtee_has_room(vd)))
				return -EINTR;
		} else {
			wait_event(vd->space, vtee_has_room(vd));
		}
	}
	if (!rc) {
		kref_get(&req->ref);
		list_add_tail(&req->node, &vd->pending);
		notify = virtqueue_kick_prepare(vd->vq);
	}
	spin_unlock_irqrestore(&vd->lock, flags);
	if (notify)
		virtqueue_notify(vd->vq);
	return rc;
}

/* A request asking the device to cancel the pending request @id. */
static struct vtee_req *vtee_cancel_alloc(struct vtee_dev *vd, u64 id)
{
	struct virtio_tee_cancel_req *body;
	struct vtee_req *req;

	req = vtee_req_alloc(vd, VIRTIO_TEE_REQ_CANCEL, sizeof(*body), 0);
	if (!req)
		return NULL;
	body = vtee_req_body(req);
	body->request_id = cpu_to_le64(id);
	return req;
}

/* Asks the device to cancel the pending request @id; does not wait for
 * the answer (the callback drops the last reference). */
static void vtee_send_cancel(struct vtee_dev *vd, u64 id, enum vtee_wait wait)
{
	struct vtee_req *req = vtee_cancel_alloc(vd, id);

	if (!req)
		return;
	vtee_submit(vd, req, wait);
	vtee_req_put(req);
}

/* Waits until the device returned @req. */
static void vtee_wait_done(struct vtee_dev *vd, struct vtee_req *req)
{
	struct vtee_req *cancel;

	if (!wait_for_completion_killable(&req->done))
		return;
	/* Killed: the buffers and the shared memory stay in use until the
	 * device lets go, so ask it to hurry up and wait. The cancel is not
	 * dropped when the queue is full: requests the device may hold never
	 * take the last VTEE_RESERVED_CHAINS chains, so room comes back as
	 * the short requests ahead of it complete (or @req completes). */
	if (req->type == VIRTIO_TEE_REQ_OPEN_SESSION ||
	    req->type == VIRTIO_TEE_REQ_INVOKE) {
		cancel = vtee_cancel_alloc(vd, req->id);
		while (cancel && !completion_done(&req->done) &&
		       vtee_submit(vd, cancel, VTEE_WAIT_NEVER) == -ENOSPC)
			wait_event(vd->space, vtee_has_room(vd) ||
					      completion_done(&req->done));
		if (cancel)
			vtee_req_put(cancel);
	}
	wait_for_completion(&req->done);
}

static int vtee_status_errno(u32 status)
{
	switch (status) {
	case VIRTIO_TEE_S_OK:
		return 0;
	case VIRTIO_TEE_S_INVALID:
		return -EINVAL;
	case VIRTIO_TEE_S_UNSUPPORTED:
		return -EOPNOTSUPP;
	case VIRTIO_TEE_S_BAD_ADDRESS:
		return -EFAULT;
	case VIRTIO_TEE_S_NO_SPACE:
		return -ENOMEM;
	case VIRTIO_TEE_S_TOO_LARGE:
		return -E2BIG;
	case VIRTIO_TEE_S_NOT_FOUND:
		return -ENOENT;
	default:
		return -EIO;
	}
}

/* Whether the device may hold a request of @type for long (a TA that
 * takes its time): such requests share vtee_dev.held, so they never fill
 * the queue and a cancel, close or unregister always finds room. */
static bool vtee_may_hold(u32 type)
{
	return type == VIRTIO_TEE_REQ_OPEN_SESSION ||
	       type == VIRTIO_TEE_REQ_INVOKE ||
	       type == VIRTIO_TEE_REQ_SHM_REGISTER;
}

/* Takes a vtee_dev.held slot for a request of @type (killable). */
static int vtee_hold_slot(struct vtee_dev *vd, u32 type)
{
	if (!vtee_may_hold(type))
		return 0;
	return down_killable(&vd->held) ? -EINTR : 0;
}

static void vtee_release_slot(struct vtee_dev *vd, u32 type)
{
	if (vtee_may_hold(type))
		up(&vd->held);
}

/* Waits for the answer to the submitted @req and checks its header; on
 * success the response body of @resp bytes is in vtee_resp_body(req). */
static int vtee_finish(struct vtee_dev *vd, struct vtee_req *req, size_t resp)
{
	struct virtio_tee_resp_hdr *hdr = req->in;
	u32 status;

	vtee_wait_done(vd, req);
	if (req->used < sizeof(*hdr) ||
	    le64_to_cpu(hdr->request_id) != req->id) {
		dev_warn_ratelimited(&vd->vdev->dev,
				     "request %llu: malformed response (%u bytes)\n",
				     req->id, req->used);
		return -EIO;
	}
	status = le32_to_cpu(hdr->status);
	if (status != VIRTIO_TEE_S_OK) {
		dev_dbg(&vd->vdev->dev, "request %llu (type %u): status %u\n",
			req->id, req->type, status);
		return vtee_status_errno(status);
	}
	if (req->used < sizeof(*hdr) + resp)
		return -EIO;
	return 0;
}

/* Sends @req (holding a vtee_dev.held slot while the device has it, if its
 * type needs one), waits for the answer and checks it (vtee_finish). */
static int vtee_call(struct vtee_dev *vd, struct vtee_req *req, size_t resp,
		     enum vtee_wait wait)
{
	int rc;

	rc = vtee_hold_slot(vd, req->type);
	if (rc)
		return rc;
	rc = vtee_submit(vd, req, wait);
	if (!rc)
		rc = vtee_finish(vd, req, resp);
	vtee_release_slot(vd, req->type);
	return rc;
}

static int vtee_params_to_wire(struct vtee_dev *vd,
			       struct virtio_tee_param *w, size_t num,
			       const struct tee_param *p)
{
	size_t i;

	if (num > VIRTIO_TEE_NUM_PARAMS)
		return -EINVAL;
	for (i = 0; i < num; i++) {
		u32 type = p[i].attr & TEE_IOCTL_PARAM_ATTR_TYPE_MASK;
		const struct tee_shm *shm;

		/* Meta parameters are OP-TEE's; this device has none. */
		if (p[i].attr & ~(u64)TEE_IOCTL_PARAM_ATTR_TYPE_MASK)
			return -EINVAL;
		switch (type) {
		case TEE_IOCTL_PARAM_ATTR_TYPE_NONE:
			break;
		case TEE_IOCTL_PARAM_ATTR_TYPE_VALUE_INPUT:
		case TEE_IOCTL_PARAM_ATTR_TYPE_VALUE_OUTPUT:
		case TEE_IOCTL_PARAM_ATTR_TYPE_VALUE_INOUT:
			w[i].u.value.a = cpu_to_le64(p[i].u.value.a);
			w[i].u.value.b = cpu_to_le64(p[i].u.value.b);
			w[i].u.value.c = cpu_to_le64(p[i].u.value.c);
			break;
		case TEE_IOCTL_PARAM_ATTR_TYPE_MEMREF_INPUT:
		case TEE_IOCTL_PARAM_ATTR_TYPE_MEMREF_OUTPUT:
		case TEE_IOCTL_PARAM_ATTR_TYPE_MEMREF_INOUT:
			shm = p[i].u.memref.shm;
			/* No NULL memory references (no TEE_GEN_CAP_MEMREF_NULL);
			 * every tee_shm of this device is registered. */
			if (!shm || !shm->sec_world_id ||
			    p[i].u.memref.size > vd->max_memref)
				return -EINVAL;
			w[i].u.memref.shm_id = cpu_to_le64(shm->sec_world_id);
			w[i].u.memref.offset = cpu_to_le64(p[i].u.memref.shm_offs);
			w[i].u.memref.size = cpu_to_le64(p[i].u.memref.size);
			break;
		default:
			return -EINVAL;
		}
		w[i].type = cpu_to_le32(type);
	}
	return 0;
}

/* Copies what the TA returned (output values, output sizes) back. After
 * a success (@ok) an output size cannot exceed the buffer it describes;
 * after TEEC_ERROR_SHORT_BUFFER it is the size the TA needs, any size. */
static int vtee_params_from_wire(const struct virtio_tee_param *w, size_t num,
				 struct tee_param *p, bool ok)
{
	u64 size;
	size_t i;

	for (i = 0; i < num && i < VIRTIO_TEE_NUM_PARAMS; i++) {
		u32 type = le32_to_cpu(w[i].type);

		if (type != (p[i].attr & TEE_IOCTL_PARAM_ATTR_TYPE_MASK))
			return -EIO;
		switch (type) {
		case TEE_IOCTL_PARAM_ATTR_TYPE_VALUE_OUTPUT:
		case TEE_IOCTL_PARAM_ATTR_TYPE_VALUE_INOUT:
			p[i].u.value.a = le64_to_cpu(w[i].u.value.a);
			p[i].u.value.b = le64_to_cpu(w[i].u.value.b);
			p[i].u.value.c = le64_to_cpu(w[i].u.value.c);
			break;
		case TEE_IOCTL_PARAM_ATTR_TYPE_MEMREF_OUTPUT:
		case TEE_IOCTL_PARAM_ATTR_TYPE_MEMREF_INOUT:
			size = le64_to_cpu(w[i].u.memref.size);
			if (ok && size > p[i].u.memref.size)
				return -EIO;
			p[i].u.memref.size = size;
			break;
		default:
			break;
		}
	}
	return 0;
}

static struct vtee_dev *vtee_of(struct tee_context *ctx)
{
	return tee_get_drvdata(ctx->teedev);
}

/* Whether @id is one of @c's sessions; @c->lock held. */
static bool vtee_ctx_has_session_locked(struct vtee_ctx *c, u32 id)
{
	struct vtee_session *s;

	list_for_each_entry(s, &c->sessions, node) {
		if (s->id == id)
			return true;
	}
	return false;
}

static bool vtee_ctx_has_session(struct vtee_ctx *c, u32 id)
{
	bool found;

	mutex_lock(&c->lock);
	found = vtee_ctx_has_session_locked(c, id);
	mutex_unlock(&c->lock);
	return found;
}

static int vtee_close_on_device(struct vtee_dev *vd, u32 session)
{
	struct virtio_tee_close_session_req *body;
	struct vtee_req *req;
	int rc;

	req = vtee_req_alloc(vd, VIRTIO_TEE_REQ_CLOSE_SESSION, sizeof(*body), 0);
	if (!req)
		return -ENOMEM;
	body = vtee_req_body(req);
	body->session = cpu_to_le32(session);
	rc = vtee_call(vd, req, 0, VTEE_WAIT_ALWAYS);
	vtee_req_put(req);
	return rc;
}

static void vtee_get_version(struct tee_device *teedev,
			     struct tee_ioctl_version_data *vers)
{
	vers->impl_id = VTEE_IMPL_ID;
	vers->impl_caps = 0;
	vers->gen_caps = TEE_GEN_CAP_GP | TEE_GEN_CAP_REG_MEM;
}

static int vtee_open(struct tee_context *ctx)
{
	struct vtee_ctx *c = kzalloc(sizeof(*c), GFP_KERNEL);

	if (!c)
		return -ENOMEM;
	mutex_init(&c->lock);
	INIT_LIST_HEAD(&c->sessions);
	ctx->data = c;
	return 0;
}

static void vtee_release(struct tee_context *ctx)
{
	struct vtee_dev *vd = vtee_of(ctx);
	struct vtee_ctx *c = ctx->data;
	struct vtee_session *s, *tmp;

	if (!c)
		return;
	list_for_each_entry_safe(s, tmp, &c->sessions, node) {
		vtee_close_on_device(vd, s->id);
		list_del(&s->node);
		kfree(s);
		atomic_dec(&vd->sessions);
	}
	mutex_destroy(&c->lock);
	kfree(c);
	ctx->data = NULL;
}

static int vtee_open_session(struct tee_context *ctx,
			     struct tee_ioctl_open_session_arg *arg,
			     struct tee_param *param)
{
	struct vtee_dev *vd = vtee_of(ctx);
	struct vtee_ctx *c = ctx->data;
	struct virtio_tee_open_session_req *body;
	struct virtio_tee_op_resp *resp;
	struct vtee_session *sess;
	struct vtee_req *req;
	uuid_t client;
	int rc;

	rc = tee_session_calc_client_uuid(&client, arg->clnt_login,
					  arg->clnt_uuid);
	if (rc)
		return rc;
	sess = kzalloc(sizeof(*sess), GFP_KERNEL);
	if (!sess)
		return -ENOMEM;
	if (atomic_inc_return(&vd->sessions) > vd->max_sessions) {
		rc = -ENOMEM;
		goto out_count;
	}
	req = vtee_req_alloc(vd, VIRTIO_TEE_REQ_OPEN_SESSION, sizeof(*body),
			     sizeof(*resp));
	if (!req) {
		rc = -ENOMEM;
		goto out_count;
	}
	body = vtee_req_body(req);
	memcpy(body->uuid, arg->uuid, sizeof(body->uuid));
	export_uuid(body->client_uuid, &client);
	body->login = cpu_to_le32(arg->clnt_login);
	rc = vtee_params_to_wire(vd, body->params, arg->num_params, param);
	if (rc)
		goto out_req;
	req->ctx = ctx;
	req->cancel_id = arg->cancel_id;
	rc = vtee_call(vd, req, sizeof(*resp), VTEE_WAIT_KILLABLE);
	if (rc)
		goto out_req;
	resp = vtee_resp_body(req);
	arg->ret = le32_to_cpu(resp->ret);
	arg->ret_origin = le32_to_cpu(resp->ret_origin);
	rc = vtee_params_from_wire(resp->params, arg->num_params, param,
				   !arg->ret);
	if (arg->ret)
		goto out_req;
	sess->id = le32_to_cpu(resp->session);
	if (!sess->id) {
		/* The spec's ids are non-zero: nothing to close either. */
		dev_warn_ratelimited(&vd->vdev->dev,
				     "request %llu: session id 0\n", req->id);
		rc = -EIO;
		goto out_req;
	}
	if (rc) {
		vtee_close_on_device(vd, sess->id);
		goto out_req;
	}
	arg->session = sess->id;
	mutex_lock(&c->lock);
	list_add(&sess->node, &c->sessions);
	mutex_unlock(&c->lock);
	vtee_req_put(req);
	return 0;

out_req:
	vtee_req_put(req);
out_count:
	atomic_dec(&vd->sessions);
	kfree(sess);
	return rc;
}

static int vtee_close_session(struct tee_context *ctx, u32 session)
{
	struct vtee_dev *vd = vtee_of(ctx);
	struct vtee_ctx *c = ctx->data;
	struct vtee_session *s, *found = NULL;
	int rc;

	mutex_lock(&c->lock);
	list_for_each_entry(s, &c->sessions, node) {
		if (s->id == session) {
			list_del(&s->node);
			found = s;
			break;
		}
	}
	mutex_unlock(&c->lock);
	if (!found)
		return -EINVAL;
	rc = vtee_close_on_device(vd, session);
	kfree(found);
	atomic_dec(&vd->sessions);
	return rc;
}

static int vtee_invoke_func(struct tee_context *ctx,
			    struct tee_ioctl_invoke_arg *arg,
			    struct tee_param *param)
{
	struct vtee_dev *vd = vtee_of(ctx);
	struct vtee_ctx *c = ctx->data;
	struct virtio_tee_invoke_req *body;
	struct virtio_tee_op_resp *resp;
	struct vtee_req *req;
	int rc;

	req = vtee_req_alloc(vd, VIRTIO_TEE_REQ_INVOKE, sizeof(*body),
			     sizeof(*resp));
	if (!req)
		return -ENOMEM;
	body = vtee_req_body(req);
	body->session = cpu_to_le32(arg->session);
	body->func = cpu_to_le32(arg->func);
	rc = vtee_params_to_wire(vd, body->params, arg->num_params, param);
	if (rc)
		goto out;
	req->ctx = ctx;
	req->session = arg->session;
	req->cancel_id = arg->cancel_id;
	rc = vtee_hold_slot(vd, req->type);
	if (rc)
		goto out;
	/*
	 * A context reaches only its own sessions. The check and the submit
	 * happen under the context's lock, so a close of the session cannot
	 * come between them and the device hand its id to another context
	 * before this request names it (the device takes requests in queue
	 * order).
	 */
	for (;;) {
		/* Never sleeps under the lock (a cancel or close of this file
		 * takes it): a full queue is waited for outside, then the
		 * session is checked again. */
		mutex_lock(&c->lock);
		if (vtee_ctx_has_session_locked(c, arg->session))
			rc = vtee_submit(vd, req, VTEE_WAIT_NEVER);
		else
			rc = -EINVAL;
		mutex_unlock(&c->lock);
		if (rc != -ENOSPC)
			break;
		if (wait_event_killable(vd->space, vtee_has_room(vd))) {
			rc = -EINTR;
			break;
		}
	}
	if (!rc)
		rc = vtee_finish(vd, req, sizeof(*resp));
	vtee_release_slot(vd, req->type);
	if (rc)
		goto out;
	resp = vtee_resp_body(req);
	arg->ret = le32_to_cpu(resp->ret);
	arg->ret_origin = le32_to_cpu(resp->ret_origin);
	rc = vtee_params_from_wire(resp->params, arg->num_params, param,
				   !arg->ret);
out:
	vtee_req_put(req);
	return rc;
}

/*
 * Cancels this context's pending requests with @cancel_id: the invocations
 * of @session if it is one of the context's sessions, else its pending
 * open-session requests (a session being opened has no id yet).
 */
static int vtee_cancel_req(struct tee_context *ctx, u32 cancel_id,
			   u32 session)
{
	struct vtee_dev *vd = vtee_of(ctx);
	bool is_session = vtee_ctx_has_session(ctx->data, session);
	u64 ids[VTEE_CANCEL_BATCH];
	struct vtee_req *req;
	unsigned long flags;
	size_t n = 0, i;

	spin_lock_irqsave(&vd->lock, flags);
	list_for_each_entry(req, &vd->pending, node) {
		bool match;

		if (req->ctx != ctx || req->cancel_id != cancel_id)
			continue;
		if (is_session)
			match = req->type == VIRTIO_TEE_REQ_INVOKE &&
				req->session == session;
		else
			match = req->type == VIRTIO_TEE_REQ_OPEN_SESSION;
		if (match && n < ARRAY_SIZE(ids))
			ids[n++] = req->id;
	}
	spin_unlock_irqrestore(&vd->lock, flags);
	for (i = 0; i < n; i++)
		vtee_send_cancel(vd, ids[i], VTEE_WAIT_KILLABLE);
	return 0;
}

static int vtee_shm_register(struct tee_context *ctx, struct tee_shm *shm,
			     struct page **pages, size_t num_pages,
			     unsigned long start)
{
	struct vtee_dev *vd = vtee_of(ctx);
	const size_t per_page = PAGE_SIZE >> VIRTIO_TEE_FRAME_SHIFT;
	/* Byte 0 of the object in its first page: @start is page-aligned for
	 * user memory (the subsystem keeps the offset in the tee_shm) and for
	 * pool allocations (offset 0). */
	unsigned long in_page = tee_shm_get_page_offset(shm);
	size_t skip = in_page >> VIRTIO_TEE_FRAME_SHIFT;
	u32 offset = in_page & (VIRTIO_TEE_FRAME_SIZE - 1);
	struct virtio_tee_shm_register_resp *resp;
	struct virtio_tee_shm_register_req *body;
	struct vtee_req *req;
	u64 frames, i;
	int rc;

	if (!shm->size)
		return -EINVAL;
	frames = DIV_ROUND_UP((u64)offset + shm->size, VIRTIO_TEE_FRAME_SIZE);
	if (frames > vd->max_frames)
		return -E2BIG;
	if (skip + frames > (u64)num_pages * per_page)
		return -EINVAL;
	if (atomic_inc_return(&vd->regions) > vd->max_regions) {
		rc = -ENOMEM;
		goto out_count;
	}
	req = vtee_req_alloc(vd, VIRTIO_TEE_REQ_SHM_REGISTER,
			     struct_size(body, frames, frames), sizeof(*resp));
	if (!req) {
		rc = -ENOMEM;
		goto out_count;
	}
	body = vtee_req_body(req);
	body->size = cpu_to_le64(shm->size);
	body->offset = cpu_to_le32(offset);
	body->num_frames = cpu_to_le32(frames);
	for (i = 0; i < frames; i++) {
		size_t f = skip + i;
		phys_addr_t pa = page_to_phys(pages[f / per_page]) +
				 (f % per_page) * VIRTIO_TEE_FRAME_SIZE;

		body->frames[i] = cpu_to_le64(pa);
	}
	rc = vtee_call(vd, req, sizeof(*resp), VTEE_WAIT_KILLABLE);
	if (!rc) {
		resp = vtee_resp_body(req);
		shm->sec_world_id = le64_to_cpu(resp->shm_id);
		if (!shm->sec_world_id)
			rc = -EIO;
	}
	vtee_req_put(req);
	if (!rc)
		return 0;
out_count:
	atomic_dec(&vd->regions);
	return rc;
}

static int vtee_shm_unregister(struct tee_context *ctx, struct tee_shm *shm)
{
	struct vtee_dev *vd = vtee_of(ctx);
	struct virtio_tee_shm_unregister_req *body;
	struct vtee_req *req;
	int rc;

	if (!shm->sec_world_id)
		return 0;
	req = vtee_req_alloc(vd, VIRTIO_TEE_REQ_SHM_UNREGISTER, sizeof(*body),
			     0);
	if (req) {
		body = vtee_req_body(req);
		body->shm_id = cpu_to_le64(shm->sec_world_id);
		rc = vtee_call(vd, req, 0, VTEE_WAIT_ALWAYS);
		vtee_req_put(req);
	} else {
		rc = -ENOMEM;
	}
	/* Even if the device did not hear of it: no request names the
	 * region any more, so it is never accessed again. */
	shm->sec_world_id = 0;
	atomic_dec(&vd->regions);
	return rc;
}

/* The pool behind TEE_IOC_SHM_ALLOC: page-aligned kernel pages, each
 * allocation registered with the device. */
static int vtee_pool_alloc(struct tee_shm_pool *pool, struct tee_shm *shm,
			   size_t size, size_t align)
{
	struct vtee_dev *vd = container_of(pool, struct vtee_dev, pool);

	/* Before the helper allocates (one contiguous block): a size of 0 or
	 * beyond the page allocator's largest order would warn there, and
	 * anything larger than one region would be allocated only to be
	 * refused. */
	if (!size || DIV_ROUND_UP(size, VIRTIO_TEE_FRAME_SIZE) > vd->max_frames ||
	    size > (PAGE_SIZE << MAX_PAGE_ORDER))
		return -EINVAL;
	return tee_dyn_shm_alloc_helper(shm, size, align, vtee_shm_register);
}

static void vtee_pool_free(struct tee_shm_pool *pool, struct tee_shm *shm)
{
	tee_dyn_shm_free_helper(shm, vtee_shm_unregister);
}

static void vtee_pool_destroy(struct tee_shm_pool *pool)
{
	/* Embedded in struct vtee_dev. */
}

static const struct tee_shm_pool_ops vtee_pool_ops = {
	.alloc = vtee_pool_alloc,
	.free = vtee_pool_free,
	.destroy_pool = vtee_pool_destroy,
};

static const struct tee_driver_ops vtee_ops = {
	.get_version = vtee_get_version,
	.open = vtee_open,
	.release = vtee_release,
	.open_session = vtee_open_session,
	.close_session = vtee_close_session,
	.invoke_func = vtee_invoke_func,
	.cancel_req = vtee_cancel_req,
	.shm_register = vtee_shm_register,
	.shm_unregister = vtee_shm_unregister,
};

static const struct tee_desc vtee_desc = {
	.name = KBUILD_MODNAME,
	.ops = &vtee_ops,
	.owner = THIS_MODULE,
};

static int vtee_read_config(struct vtee_dev *vd)
{
	struct virtio_device *vdev = vd->vdev;

	virtio_cread_le(vdev, struct virtio_tee_config, max_sessions,
			&vd->max_sessions);
	virtio_cread_le(vdev, struct virtio_tee_config, max_shm_regions,
			&vd->max_regions);
	virtio_cread_le(vdev, struct virtio_tee_config, max_shm_frames,
			&vd->max_frames);
	virtio_cread_le(vdev, struct virtio_tee_config, max_memref_size,
			&vd->max_memref);
	if (!vd->max_sessions || !vd->max_regions || !vd->max_frames ||
	    !vd->max_memref) {
		dev_err(&vdev->dev, "configuration has a zero limit\n");
		return -EINVAL;
	}
	vd->max_frames = min_t(u32, vd->max_frames, VTEE_MAX_FRAMES);
	return 0;
}

/* Completes every request the device still holds (after a reset). */
static void vtee_abandon_pending(struct vtee_dev *vd)
{
	struct vtee_req *req;
	unsigned long flags;

	spin_lock_irqsave(&vd->lock, flags);
	vd->broken = true;
	while ((req = virtqueue_detach_unused_buf(vd->vq))) {
		req->used = 0;
		list_del_init(&req->node);
		complete(&req->done);
		vtee_req_put(req);
	}
	spin_unlock_irqrestore(&vd->lock, flags);
	wake_up_all(&vd->space);
}

static int vtee_probe(struct virtio_device *vdev)
{
	struct vtee_dev *vd;
	unsigned int chains;
	int rc;

	vd = kzalloc(sizeof(*vd), GFP_KERNEL);
	if (!vd)
		return -ENOMEM;
	vd->vdev = vdev;
	vdev->priv = vd;
	spin_lock_init(&vd->lock);
	INIT_LIST_HEAD(&vd->pending);
	init_waitqueue_head(&vd->space);
	atomic64_set(&vd->next_id, 0);
	atomic_set(&vd->sessions, 0);
	atomic_set(&vd->regions, 0);
	vd->pool.ops = &vtee_pool_ops;

	/* Frames are guest physical addresses, not DMA addresses: a device
	 * behind an IOMMU (or a protected guest's bounce buffers) would
	 * access other memory than the driver means (docs/virtio-tee.md). */
	if (virtio_has_feature(vdev, VIRTIO_F_ACCESS_PLATFORM)) {
		dev_err(&vdev->dev, "VIRTIO_F_ACCESS_PLATFORM is not supported\n");
		rc = -EINVAL;
		goto out_free;
	}
	rc = vtee_read_config(vd);
	if (rc)
		goto out_free;
	vd->vq = virtio_find_single_vq(vdev, vtee_done, "requestq");
	if (IS_ERR(vd->vq)) {
		rc = PTR_ERR(vd->vq);
		goto out_free;
	}
	/* Two descriptors per request (no indirect descriptors). */
	chains = virtqueue_get_vring_size(vd->vq) / 2;
	if (chains <= VTEE_RESERVED_CHAINS) {
		dev_err(&vdev->dev, "request queue too small (%u chains)\n",
			chains);
		rc = -EINVAL;
		goto out_del;
	}
	sema_init(&vd->held, chains - VTEE_RESERVED_CHAINS);
	virtio_device_ready(vdev);

	vd->teedev = tee_device_alloc(&vtee_desc, &vdev->dev, &vd->pool, vd);
	if (IS_ERR(vd->teedev)) {
		rc = PTR_ERR(vd->teedev);
		goto out_reset;
	}
	rc = tee_device_register(vd->teedev);
	if (rc) {
		tee_device_unregister(vd->teedev);
		goto out_reset;
	}
	dev_info(&vdev->dev,
		 "%s: %u sessions, %u regions of %u frames, memrefs up to %u bytes\n",
		 dev_name(&vd->teedev->dev), vd->max_sessions, vd->max_regions,
		 vd->max_frames, vd->max_memref);
	return 0;

out_reset:
	virtio_reset_device(vdev);
	vtee_abandon_pending(vd);
out_del:
	vdev->config->del_vqs(vdev);
out_free:
	kfree(vd);
	return rc;
}

static void vtee_remove(struct virtio_device *vdev)
{
	struct vtee_dev *vd = vdev->priv;

	/* Stop the device first: a device that no longer answers (surprise
	 * removal, a queue the core marked broken) would otherwise leave the
	 * waiters below, and so tee_device_unregister(), waiting for good.
	 * Pending requests complete with -EIO, new ones get -ENODEV. */
	virtio_reset_device(vdev);
	vtee_abandon_pending(vd);
	/* Waits until every context and shared-memory object is gone. */
	tee_device_unregister(vd->teedev);
	vdev->config->del_vqs(vdev);
	kfree(vd);
}

static const struct virtio_device_id vtee_id_table[] = {
	{ VIRTIO_ID_TEE, VIRTIO_DEV_ANY_ID },
	{ 0 },
};
MODULE_DEVICE_TABLE(virtio, vtee_id_table);

static struct virtio_driver vtee_driver = {
	.driver.name = KBUILD_MODNAME,
	.id_table = vtee_id_table,
	.probe = vtee_probe,
	.remove = vtee_remove,
};
module_virtio_driver(vtee_driver);

MODULE_DESCRIPTION("virtio TEE device (ID 46) for the kernel TEE subsystem");
MODULE_AUTHOR("vmstack");
MODULE_LICENSE("GPL");
