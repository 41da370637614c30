// SPDX-License-Identifier: GPL-2.0
/*
 * csvfs - requests to the local csvd, in the manner of fs/fuse.
 *
 * An operation declares its arguments (struct csvfs_args) and calls
 * csvfs_request(). The message is built once, kept with the request and a
 * clone of it is unicast to the registered daemon; the caller waits,
 * killably and at most the mount's timeout, for a CSVFS_CMD_REPLY with the
 * same REQ_ID. A request is never lost while it waits: when the daemon goes
 * away the request stays in the table and is sent again to the next daemon
 * that registers (HELLO bumps the daemon generation and wakes every
 * waiter, which re-sends its own request). Only the timeout or a fatal
 * signal ends a request without a reply.
 *
 * The reply handler (genl doit, under genl_mutex) claims the request by
 * removing it from the table, copies the declared results into the
 * caller's buffers and completes it. A waiter that times out after a reply
 * claimed its request waits, uninterruptibly and briefly, for that copy to
 * finish: the caller's buffers stay valid while anyone may write them.
 */
#define pr_fmt(fmt) KBUILD_MODNAME ": " fmt

#include <linux/hashtable.h>
#include <linux/random.h>
#include <linux/refcount.h>
#include <linux/sched/signal.h>
#include <linux/slab.h>
#include <linux/workqueue.h>

#include "csvfs.h"

/* Bits of csvfs_req.flags. */
enum {
	CSVFS_R_HASHED,		/* in the table: a reply may claim it */
	CSVFS_R_SENT,		/* sent to the daemon of generation seen_gen */
	CSVFS_R_REPLYING,	/* claimed by a reply, results being copied */
	CSVFS_R_DONE,		/* error and results are final */
};

struct csvfs_req {
	struct hlist_node	node;		/* csvfs_reqs, csvfs_req_lock */
	refcount_t		count;
	unsigned long		flags;		/* CSVFS_R_* bits */
	u64			id;
	unsigned int		seen_gen;	/* daemon generation last tried */
	int			error;
	struct sk_buff		*msg;		/* cloned for every send */
	struct csvfs_args	*args;		/* NULL for async requests */
	wait_queue_head_t	waitq;
	/* async requests only */
	struct work_struct	work;
	unsigned long		timeout;
	u8			cmd;
};

static DEFINE_HASHTABLE(csvfs_reqs, 7);
static DEFINE_SPINLOCK(csvfs_req_lock);
static atomic64_t csvfs_next_id = ATOMIC64_INIT(0);

/*
 * OP_ID of non-idempotent requests: unique on this node (31 random bits
 * per module load, then a counter), kept in the message across re-sends so
 * that the coordinator recognises a retry (docs/failover.md).
 */
static atomic64_t csvfs_next_op_id = ATOMIC64_INIT(0);

static bool csvfs_needs_op_id(u8 cmd)
{
	switch (cmd) {
	case CSVFS_CMD_CREATE:
	case CSVFS_CMD_MKDIR:
	case CSVFS_CMD_MKNOD:
	case CSVFS_CMD_SYMLINK:
	case CSVFS_CMD_LINK:
	case CSVFS_CMD_UNLINK:
	case CSVFS_CMD_RMDIR:
	case CSVFS_CMD_RENAME:
		return true;
	default:
		return false;
	}
}

static struct workqueue_struct *csvfs_wq;

static void csvfs_req_put(struct csvfs_req *req)
{
	if (refcount_dec_and_test(&req->count)) {
		kfree_skb(req->msg);
		kfree(req);
	}
}

static size_t csvfs_msg_size(const struct csvfs_args *args)
{
	size_t size = 3 * nla_total_size(sizeof(u64));	/* REQ_ID, SB_ID, OP_ID */
	int i;

	size += nla_total_size(CSVFS_MAX_VOLUME_NAME);	/* VOLUME */

	for (i = 0; i < args->in_numargs; i++)
		size += nla_total_size(args->in[i].len);
	return size;
}

static struct sk_buff *csvfs_msg_build(u64 id, u32 sb_id,
				       const struct csvfs_args *args)
{
	char volume[CSVFS_MAX_VOLUME_NAME];
	bool has_volume = false;
	struct sk_buff *skb;
	void *hdr;
	int i;

	skb = genlmsg_new(csvfs_msg_size(args), GFP_KERNEL);
	if (!skb)
		return NULL;
	hdr = genlmsg_put(skb, 0, 0, &csvfs_genl_family, 0, args->cmd);
	if (!hdr)
		goto out_free;
	if (nla_put(skb, CSVFS_A_REQ_ID, sizeof(id), &id))
		goto out_free;
	if (sb_id && nla_put_u32(skb, CSVFS_A_SB_ID, sb_id))
		goto out_free;
	if (csvfs_needs_op_id(args->cmd)) {
		u64 op_id = atomic64_inc_return(&csvfs_next_op_id);

		if (nla_put(skb, CSVFS_A_OP_ID, sizeof(op_id), &op_id))
			goto out_free;
	}
	for (i = 0; i < args->in_numargs; i++) {
		const struct csvfs_in_arg *in = &args->in[i];

		if (in->type == CSVFS_A_VOLUME)
			has_volume = true;
		if (nla_put(skb, in->type, in->len, in->value))
			goto out_free;
	}
	/*
	 * Every message names its volume, so that a daemon that restarted
	 * (and lost its SB_ID -> volume map) can route re-sent requests.
	 */
	if (sb_id && !has_volume && csvfs_sb_volume(sb_id, volume) &&
	    nla_put_string(skb, CSVFS_A_VOLUME, volume))
		goto out_free;
	genlmsg_end(skb, hdr);
	return skb;

out_free:
	WARN_ON_ONCE(1);	/* csvfs_msg_size() is wrong */
	kfree_skb(skb);
	return NULL;
}

static struct csvfs_req *csvfs_req_alloc(u32 sb_id, struct csvfs_args *args)
{
	struct csvfs_req *req;

	req = kzalloc(sizeof(*req), GFP_KERNEL);
	if (!req)
		return NULL;
	refcount_set(&req->count, 1);
	init_waitqueue_head(&req->waitq);
	req->id = atomic64_inc_return(&csvfs_next_id);
	req->cmd = args->cmd;
	req->args = args->async ? NULL : args;
	req->msg = csvfs_msg_build(req->id, sb_id, args);
	if (!req->msg) {
		kfree(req);
		return NULL;
	}
	spin_lock(&csvfs_req_lock);
	hash_add(csvfs_reqs, &req->node, req->id);
	set_bit(CSVFS_R_HASHED, &req->flags);
	spin_unlock(&csvfs_req_lock);
	return req;
}

/* Send a clone of the message to the daemon at port. */
static int csvfs_req_send(struct csvfs_req *req, u32 port)
{
	struct sk_buff *skb;
	int ret;

	skb = skb_clone(req->msg, GFP_KERNEL);
	if (!skb)
		return -ENOMEM;
	ret = genlmsg_unicast(&init_net, skb, port);
	if (!ret)
		set_bit(CSVFS_R_SENT, &req->flags);
	return ret;
}

/* DONE, and then error and results are visible to the waiter. */
static bool csvfs_req_done(struct csvfs_req *req)
{
	if (!test_bit(CSVFS_R_DONE, &req->flags))
		return false;
	smp_rmb();	/* pairs with smp_mb__before_atomic() in the reply */
	return true;
}

static bool csvfs_req_wake_cond(struct csvfs_req *req)
{
	return csvfs_req_done(req) ||
	       csvfs_daemon_gen() != req->seen_gen;
}

/* End a request without a reply, unless a reply has already claimed it. */
static int csvfs_req_abort(struct csvfs_req *req, int error)
{
	spin_lock(&csvfs_req_lock);
	if (test_and_clear_bit(CSVFS_R_HASHED, &req->flags)) {
		hash_del(&req->node);
		spin_unlock(&csvfs_req_lock);
		return error;
	}
	spin_unlock(&csvfs_req_lock);
	/* A reply owns it and is copying results: that does not block. */
	wait_event(req->waitq, csvfs_req_done(req));
	return req->error;
}

/*
 * Wait for the reply, (re-)sending the message whenever a daemon of a new
 * generation is registered, or soon again when its queue was full.
 */
static int csvfs_req_wait(struct csvfs_req *req, unsigned long timeout)
{
	unsigned long deadline = jiffies + timeout;
	bool resend = true;
	unsigned int gen;
	long left, slice, ret;
	u32 port;

	for (;;) {
		port = csvfs_daemon_port(&gen);
		if (gen != req->seen_gen) {
			resend = true;
			clear_bit(CSVFS_R_SENT, &req->flags);
		}
		req->seen_gen = gen;
		left = (long)(deadline - jiffies);
		slice = left;
		if (port && resend) {
			resend = csvfs_req_send(req, port) != 0;
			if (resend)
				slice = min_t(long, HZ / 10, left);
		}
		if (csvfs_req_done(req))
			return req->error;
		if (left <= 0)
			return csvfs_req_abort(req, -ETIMEDOUT);
		ret = wait_event_killable_timeout(req->waitq,
						  csvfs_req_wake_cond(req),
						  slice);
		if (csvfs_req_done(req))
			return req->error;
		if (ret == -ERESTARTSYS)
			return csvfs_req_abort(req, -EINTR);
	}
}

/*
 * Send a request and wait for its reply. Returns 0, the daemon's negative
 * errno, -EIO for a malformed reply, -ETIMEDOUT or -EINTR (fatal signal).
 */
int csvfs_request(u32 sb_id, unsigned long timeout, struct csvfs_args *args)
{
	struct csvfs_req *req;
	int ret;

	req = csvfs_req_alloc(sb_id, args);
	if (!req)
		return -ENOMEM;
	ret = csvfs_req_wait(req, timeout);
	csvfs_req_put(req);
	return ret;
}

static void csvfs_req_async_work(struct work_struct *work)
{
	struct csvfs_req *req = container_of(work, struct csvfs_req, work);
	int ret;

	ret = csvfs_req_wait(req, req->timeout);
	if (ret && ret != -ENOENT)
		pr_warn_ratelimited("async request %u failed: %d\n",
				    req->cmd, ret);
	csvfs_req_put(req);
}

/*
 * Send a request that nobody waits for (RELEASE): a worker waits for it,
 * with the same re-send and timeout rules. Results are not copied.
 */
int csvfs_request_async(u32 sb_id, unsigned long timeout,
			struct csvfs_args *args)
{
	struct csvfs_req *req;

	args->async = true;
	args->out_numargs = 0;
	req = csvfs_req_alloc(sb_id, args);
	if (!req)
		return -ENOMEM;
	req->timeout = timeout;
	INIT_WORK(&req->work, csvfs_req_async_work);
	queue_work(csvfs_wq, &req->work);
	return 0;
}

/* Copy the declared results of a successful reply, checking each one. */
static int csvfs_copy_out(struct csvfs_args *args, struct nlattr **attrs)
{
	struct csvfs_out_arg *out;
	struct nlattr *nla;
	u32 len;
	int i;

	for (i = 0; i < args->out_numargs; i++) {
		out = &args->out[i];
		nla = attrs[out->type];
		if (!nla) {
			if (!(out->flags & CSVFS_OUT_OPTIONAL))
				return -EIO;
			continue;
		}
		len = nla_len(nla);
		if (out->flags & CSVFS_OUT_HANDLE) {
			struct csvfs_handle *fh = out->value;

			if (len > sizeof(fh->data))
				return -EIO;
			memcpy(fh->data, nla_data(nla), len);
			fh->size = len;
			if (csvfs_handle_check(fh))
				return -EIO;
		} else {
			if (out->flags & CSVFS_OUT_VARLEN ? len > out->size :
							    len != out->size)
				return -EIO;
			memcpy(out->value, nla_data(nla), len);
		}
		out->len = len;
		out->present = true;
	}
	return 0;
}

/* An errno from the daemon: only what userspace may see, else -EIO. */
static int csvfs_reply_errno(s32 err)
{
	if (err > 0 || err < -EHWPOISON)
		return -EIO;
	return err;
}

/*
 * CSVFS_CMD_REPLY from the registered daemon (checked by the caller).
 * valid is the result of the strict policy check of the whole message: a
 * reply that fails it still ends its request, with -EIO.
 */
int csvfs_request_reply(struct genl_info *info, int valid)
{
	struct csvfs_req *req = NULL, *r;
	u64 id;
	int err;

	id = nla_get_u64(info->attrs[CSVFS_A_REQ_ID]);
	spin_lock(&csvfs_req_lock);
	hash_for_each_possible(csvfs_reqs, r, node, id) {
		if (r->id == id && test_bit(CSVFS_R_HASHED, &r->flags)) {
			req = r;
			break;
		}
	}
	if (req) {
		hash_del(&req->node);
		clear_bit(CSVFS_R_HASHED, &req->flags);
		set_bit(CSVFS_R_REPLYING, &req->flags);
		refcount_inc(&req->count);
	}
	spin_unlock(&csvfs_req_lock);
	if (!req) {
		GENL_SET_ERR_MSG(info, "csvfs: no such request");
		return -ENOENT;
	}

	err = csvfs_reply_errno(nla_get_s32(info->attrs[CSVFS_A_ERRNO]));
	if (valid)
		err = -EIO;
	else if (!err && req->args)
		err = csvfs_copy_out(req->args, info->attrs);
	if (err == -EIO)
		GENL_SET_ERR_MSG(info, "csvfs: malformed reply");
	req->error = err;
	/* error and results are visible before DONE is */
	smp_mb__before_atomic();
	set_bit(CSVFS_R_DONE, &req->flags);
	wake_up(&req->waitq);
	csvfs_req_put(req);
	return 0;
}

/* A daemon registered or went away: every waiter looks again. */
void csvfs_requests_resend(void)
{
	struct csvfs_req *req;
	int bkt;

	spin_lock(&csvfs_req_lock);
	hash_for_each(csvfs_reqs, bkt, req, node)
		wake_up(&req->waitq);
	spin_unlock(&csvfs_req_lock);
}

/*
 * Send a message that nobody waits for (a REPLY to the daemon's own
 * request, PATH_ERROR) once, to the daemon registered now. id 0: a new one.
 */
int csvfs_notify(u64 id, u32 sb_id, struct csvfs_args *args)
{
	struct sk_buff *skb;
	unsigned int gen;
	u32 port;

	port = csvfs_daemon_port(&gen);
	if (!port)
		return -ENOTCONN;
	if (!id)
		id = atomic64_inc_return(&csvfs_next_id);
	skb = csvfs_msg_build(id, sb_id, args);
	if (!skb)
		return -ENOMEM;
	return genlmsg_unicast(&init_net, skb, port);
}

/* Work that must finish before the module goes (invalidations). */
void csvfs_queue_work(struct work_struct *work)
{
	queue_work(csvfs_wq, work);
}

void csvfs_queue_delayed_work(struct delayed_work *dwork, unsigned long delay)
{
	queue_delayed_work(csvfs_wq, dwork, delay);
}

int __init csvfs_request_init(void)
{
	atomic64_set(&csvfs_next_op_id,
		     (u64)(get_random_u32() & 0x7fffffff) << 32);
	csvfs_wq = alloc_workqueue("csvfs", WQ_UNBOUND | WQ_MEM_RECLAIM, 0);
	return csvfs_wq ? 0 : -ENOMEM;
}

void csvfs_request_exit(void)
{
	destroy_workqueue(csvfs_wq);	/* waits for async requests */
	WARN_ON_ONCE(!hash_empty(csvfs_reqs));
}

/* KUnit (kernels with KUnit built in, e.g. the lab's debug kernel) */
#if IS_BUILTIN(CONFIG_KUNIT)
#include "tests/request_test.c"
#endif
