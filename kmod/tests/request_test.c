// SPDX-License-Identifier: GPL-2.0
/*
 * KUnit suite "csvfs_request": the request table and reply validation of
 * request.c, and the family's strict attribute policy (netlink.c).
 *
 * Compiled into request.c itself (included at its end) when the kernel has
 * KUnit built in - the lab's debug kernel (docs/debug-kernel.md) - so the
 * tests drive the real table: requests are allocated, claimed by
 * csvfs_request_reply() exactly as the REPLY handler calls it (with the
 * attributes a parsed reply would have), aborted and freed. No message is
 * sent: nothing here calls csvfs_req_send(), and the one test that waits
 * skips itself if a daemon is registered. Results after insmod:
 * /sys/kernel/debug/kunit/csvfs_request/results.
 */
#include <kunit/test.h>

/* One attribute as the netlink parser leaves it: header + payload. */
static struct nlattr *rt_attr(struct kunit *test, u16 type, const void *data,
			      int len)
{
	struct nlattr *nla;

	nla = kunit_kzalloc(test, nla_total_size(len), GFP_KERNEL);
	KUNIT_ASSERT_NOT_NULL(test, nla);
	nla->nla_type = type;
	nla->nla_len = nla_attr_size(len);
	if (len)
		memcpy(nla_data(nla), data, len);
	return nla;
}

/* A parsed CSVFS_CMD_REPLY: REQ_ID, ERRNO, and whatever the test adds. */
struct rt_reply {
	struct nlattr		*attrs[CSVFS_A_MAX + 1];
	struct netlink_ext_ack	extack;
	struct genl_info	info;
};

static struct rt_reply *rt_reply(struct kunit *test, u64 id, s32 err)
{
	struct rt_reply *r = kunit_kzalloc(test, sizeof(*r), GFP_KERNEL);

	KUNIT_ASSERT_NOT_NULL(test, r);
	r->info.attrs = r->attrs;
	r->info.extack = &r->extack;
	r->attrs[CSVFS_A_REQ_ID] = rt_attr(test, CSVFS_A_REQ_ID, &id,
					   sizeof(id));
	r->attrs[CSVFS_A_ERRNO] = rt_attr(test, CSVFS_A_ERRNO, &err,
					  sizeof(err));
	return r;
}

static bool rt_hashed(struct csvfs_req *req)
{
	struct csvfs_req *r;
	bool found = false;

	spin_lock(&csvfs_req_lock);
	hash_for_each_possible(csvfs_reqs, r, node, req->id)
		found |= r == req;
	spin_unlock(&csvfs_req_lock);
	return found;
}

/* The attribute TYPE of a request's message, or NULL. */
static struct nlattr *rt_msg_attr(struct csvfs_req *req, int type)
{
	return nlmsg_find_attr(nlmsg_hdr(req->msg),
			       GENL_HDRLEN + csvfs_genl_family.hdrsize, type);
}

/* Free a request the test owns: out of the table first, then the ref. */
static void rt_free(struct csvfs_req *req)
{
	csvfs_req_abort(req, -ECANCELED);
	csvfs_req_put(req);
}

static void request_test_table(struct kunit *test)
{
	struct csvfs_args args = { .cmd = CSVFS_CMD_GETATTR };
	u8 fh[24] = { 1, 2, 3 };
	struct csvfs_req *a, *b;
	struct nlattr *nla;
	struct rt_reply *r;

	csvfs_in(&args, CSVFS_A_FH, sizeof(fh), fh);
	a = csvfs_req_alloc(0, &args);
	KUNIT_ASSERT_NOT_NULL(test, a);
	b = csvfs_req_alloc(0, &args);
	KUNIT_ASSERT_NOT_NULL(test, b);
	KUNIT_EXPECT_GT(test, b->id, a->id);
	KUNIT_EXPECT_TRUE(test, test_bit(CSVFS_R_HASHED, &a->flags));
	KUNIT_EXPECT_TRUE(test, rt_hashed(a));
	KUNIT_EXPECT_TRUE(test, rt_hashed(b));
	KUNIT_EXPECT_EQ(test, refcount_read(&a->count), 1);

	/* the message: REQ_ID, the inputs as given, no OP_ID, no SB_ID */
	nla = rt_msg_attr(a, CSVFS_A_REQ_ID);
	KUNIT_ASSERT_NOT_NULL(test, nla);
	KUNIT_EXPECT_EQ(test, nla_get_u64(nla), a->id);
	nla = rt_msg_attr(a, CSVFS_A_FH);
	KUNIT_ASSERT_NOT_NULL(test, nla);
	KUNIT_EXPECT_EQ(test, nla_len(nla), (int)sizeof(fh));
	KUNIT_EXPECT_EQ(test, memcmp(nla_data(nla), fh, sizeof(fh)), 0);
	KUNIT_EXPECT_NULL(test, rt_msg_attr(a, CSVFS_A_OP_ID));
	KUNIT_EXPECT_NULL(test, rt_msg_attr(a, CSVFS_A_SB_ID));

	/* an aborted request leaves the table; a late reply finds nothing */
	KUNIT_EXPECT_EQ(test, csvfs_req_abort(a, -ETIMEDOUT), -ETIMEDOUT);
	KUNIT_EXPECT_FALSE(test, rt_hashed(a));
	KUNIT_EXPECT_FALSE(test, test_bit(CSVFS_R_HASHED, &a->flags));
	r = rt_reply(test, a->id, 0);
	KUNIT_EXPECT_EQ(test, csvfs_request_reply(&r->info, 0), -ENOENT);
	KUNIT_ASSERT_NOT_NULL(test, r->extack._msg);
	KUNIT_EXPECT_STREQ(test, r->extack._msg, "csvfs: no such request");
	KUNIT_EXPECT_FALSE(test, test_bit(CSVFS_R_DONE, &a->flags));
	/* b is unaffected */
	KUNIT_EXPECT_TRUE(test, rt_hashed(b));
	csvfs_req_put(a);
	rt_free(b);
}

/* Non-idempotent requests carry an OP_ID, fixed for every re-send. */
static void request_test_op_id(struct kunit *test)
{
	struct csvfs_args create = { .cmd = CSVFS_CMD_CREATE };
	struct csvfs_req *a, *b;
	struct nlattr *na, *nb;
	u64 ida, idb;

	a = csvfs_req_alloc(0, &create);
	KUNIT_ASSERT_NOT_NULL(test, a);
	b = csvfs_req_alloc(0, &create);
	KUNIT_ASSERT_NOT_NULL(test, b);
	na = rt_msg_attr(a, CSVFS_A_OP_ID);
	nb = rt_msg_attr(b, CSVFS_A_OP_ID);
	KUNIT_ASSERT_NOT_NULL(test, na);
	KUNIT_ASSERT_NOT_NULL(test, nb);
	ida = nla_get_u64(na);
	idb = nla_get_u64(nb);
	KUNIT_EXPECT_GT(test, idb, ida);
	/* 31 random bits per module load in the upper half */
	KUNIT_EXPECT_EQ(test, ida >> 32, idb >> 32);
	KUNIT_EXPECT_EQ(test, ida >> 63, 0ULL);
	/* every send is a clone of the one message: same OP_ID */
	KUNIT_EXPECT_EQ(test, nla_get_u64(rt_msg_attr(a, CSVFS_A_OP_ID)), ida);
	KUNIT_EXPECT_TRUE(test, csvfs_needs_op_id(CSVFS_CMD_RENAME));
	KUNIT_EXPECT_FALSE(test, csvfs_needs_op_id(CSVFS_CMD_GETATTR));
	rt_free(a);
	rt_free(b);
}

/* A good reply: claimed, results copied, DONE, out of the table. */
static void request_test_reply_copies(struct kunit *test)
{
	struct csvfs_args args = { .cmd = CSVFS_CMD_GETATTR };
	struct csvfs_attr attr = {}, sent = { .ino = 42, .size = 4096 };
	struct csvfs_out_arg *o_attr, *o_data, *o_open;
	char data[64] = {}, payload[10] = "123456789";
	struct csvfs_req *req;
	struct rt_reply *r;
	u64 open_id = 7;

	o_attr = csvfs_out(&args, CSVFS_A_ATTR, 0, sizeof(attr), &attr);
	o_data = csvfs_out(&args, CSVFS_A_DATA, CSVFS_OUT_VARLEN, sizeof(data),
			   data);
	o_open = csvfs_out(&args, CSVFS_A_OPEN_ID, CSVFS_OUT_OPTIONAL,
			   sizeof(open_id), &open_id);
	req = csvfs_req_alloc(0, &args);
	KUNIT_ASSERT_NOT_NULL(test, req);

	r = rt_reply(test, req->id, 0);
	r->attrs[CSVFS_A_ATTR] = rt_attr(test, CSVFS_A_ATTR, &sent,
					 sizeof(sent));
	r->attrs[CSVFS_A_DATA] = rt_attr(test, CSVFS_A_DATA, payload,
					 sizeof(payload));
	KUNIT_EXPECT_EQ(test, csvfs_request_reply(&r->info, 0), 0);
	KUNIT_EXPECT_TRUE(test, csvfs_req_done(req));
	KUNIT_EXPECT_TRUE(test, test_bit(CSVFS_R_REPLYING, &req->flags));
	KUNIT_EXPECT_FALSE(test, rt_hashed(req));
	KUNIT_EXPECT_EQ(test, req->error, 0);
	KUNIT_EXPECT_EQ(test, refcount_read(&req->count), 1);
	KUNIT_EXPECT_EQ(test, attr.ino, 42ULL);
	KUNIT_EXPECT_EQ(test, attr.size, 4096ULL);
	KUNIT_EXPECT_TRUE(test, o_attr->present);
	KUNIT_EXPECT_EQ(test, o_data->len, (u32)sizeof(payload));
	KUNIT_EXPECT_STREQ(test, data, "123456789");
	KUNIT_EXPECT_FALSE(test, o_open->present);
	KUNIT_EXPECT_EQ(test, open_id, 7ULL);
	/* a second reply (a duplicate) finds nothing to claim */
	r = rt_reply(test, req->id, 0);
	KUNIT_EXPECT_EQ(test, csvfs_request_reply(&r->info, 0), -ENOENT);
	/* abort after a reply returns the reply's result */
	KUNIT_EXPECT_EQ(test, csvfs_req_abort(req, -ETIMEDOUT), 0);
	csvfs_req_put(req);
}

/* One reply to a one-result request; returns the request's error. */
static int rt_reply_error(struct kunit *test, s32 err, int valid,
			  struct nlattr *result, u32 *value,
			  const char **msg)
{
	struct csvfs_args args = { .cmd = CSVFS_CMD_GETATTR };
	struct csvfs_req *req;
	struct rt_reply *r;
	int error;

	csvfs_out(&args, CSVFS_A_MODE, 0, sizeof(*value), value);
	req = csvfs_req_alloc(0, &args);
	KUNIT_ASSERT_NOT_NULL(test, req);
	r = rt_reply(test, req->id, err);
	r->attrs[CSVFS_A_MODE] = result;
	KUNIT_EXPECT_EQ(test, csvfs_request_reply(&r->info, valid), 0);
	KUNIT_EXPECT_TRUE(test, csvfs_req_done(req));
	error = req->error;
	*msg = r->extack._msg;
	csvfs_req_put(req);
	return error;
}

static void request_test_reply_errors(struct kunit *test)
{
	u32 mode = 0644, value;
	struct nlattr *good = rt_attr(test, CSVFS_A_MODE, &mode, sizeof(mode));
	const char *msg;

	value = 1;
	KUNIT_EXPECT_EQ(test, rt_reply_error(test, 0, 0, good, &value, &msg),
			0);
	KUNIT_EXPECT_EQ(test, value, 0644U);
	KUNIT_EXPECT_NULL(test, msg);
	/* the daemon's errno: results are not copied */
	value = 1;
	KUNIT_EXPECT_EQ(test, rt_reply_error(test, -ENOENT, 0, good, &value,
					     &msg), -ENOENT);
	KUNIT_EXPECT_EQ(test, value, 1U);
	KUNIT_EXPECT_EQ(test, rt_reply_error(test, -EHWPOISON, 0, good,
					     &value, &msg), -EHWPOISON);
	/* errnos userspace must not see, or positive: malformed */
	KUNIT_EXPECT_EQ(test, rt_reply_error(test, -ERESTARTSYS, 0, good,
					     &value, &msg), -EIO);
	KUNIT_ASSERT_NOT_NULL(test, msg);
	KUNIT_EXPECT_STREQ(test, msg, "csvfs: malformed reply");
	KUNIT_EXPECT_EQ(test, rt_reply_error(test, 5, 0, good, &value, &msg),
			-EIO);
	KUNIT_EXPECT_EQ(test, rt_reply_error(test, S32_MIN, 0, good, &value,
					     &msg), -EIO);
	/* the strict policy check failed: -EIO whatever the errno */
	value = 1;
	KUNIT_EXPECT_EQ(test, rt_reply_error(test, 0, -EINVAL, good, &value,
					     &msg), -EIO);
	KUNIT_EXPECT_EQ(test, value, 1U);
	/* a declared result missing, or of the wrong size */
	KUNIT_EXPECT_EQ(test, rt_reply_error(test, 0, 0, NULL, &value, &msg),
			-EIO);
	KUNIT_EXPECT_EQ(test, rt_reply_error(test, 0, 0,
					     rt_attr(test, CSVFS_A_MODE, &mode,
						     2),
					     &value, &msg), -EIO);
}

static void request_test_reply_errno_range(struct kunit *test)
{
	KUNIT_EXPECT_EQ(test, csvfs_reply_errno(0), 0);
	KUNIT_EXPECT_EQ(test, csvfs_reply_errno(-EPERM), -EPERM);
	KUNIT_EXPECT_EQ(test, csvfs_reply_errno(-EHWPOISON), -EHWPOISON);
	KUNIT_EXPECT_EQ(test, csvfs_reply_errno(-EHWPOISON - 1), -EIO);
	KUNIT_EXPECT_EQ(test, csvfs_reply_errno(-EIOCBQUEUED), -EIO);
	KUNIT_EXPECT_EQ(test, csvfs_reply_errno(1), -EIO);
	KUNIT_EXPECT_EQ(test, csvfs_reply_errno(S32_MAX), -EIO);
}

/* csvfs_copy_out() on its own: sizes, optional results, file handles. */
static void request_test_copy_out(struct kunit *test)
{
	struct nlattr *attrs[CSVFS_A_MAX + 1] = {};
	struct csvfs_args args = {};
	struct csvfs_handle fh = {};
	u8 raw[CSVFS_MAX_FH + 8] = {};
	struct csvfs_fh *h = (struct csvfs_fh *)raw;
	char buf[8];

	/* VARLEN: up to the size */
	csvfs_out(&args, CSVFS_A_TARGET, CSVFS_OUT_VARLEN, sizeof(buf), buf);
	attrs[CSVFS_A_TARGET] = rt_attr(test, CSVFS_A_TARGET, "abcdefg", 8);
	KUNIT_EXPECT_EQ(test, csvfs_copy_out(&args, attrs), 0);
	KUNIT_EXPECT_EQ(test, args.out[0].len, 8U);
	attrs[CSVFS_A_TARGET] = rt_attr(test, CSVFS_A_TARGET, "abcdefgh", 9);
	KUNIT_EXPECT_EQ(test, csvfs_copy_out(&args, attrs), -EIO);

	/* handles: header + len bytes, len > 0, at most CSVFS_MAX_FH */
	args = (struct csvfs_args) {};
	attrs[CSVFS_A_TARGET] = NULL;
	csvfs_out(&args, CSVFS_A_FH, CSVFS_OUT_HANDLE, sizeof(fh), &fh);
	h->type = 1;
	h->len = 8;
	attrs[CSVFS_A_FH] = rt_attr(test, CSVFS_A_FH, raw, sizeof(*h) + 8);
	KUNIT_EXPECT_EQ(test, csvfs_copy_out(&args, attrs), 0);
	KUNIT_EXPECT_EQ(test, fh.size, (u32)sizeof(*h) + 8);
	KUNIT_EXPECT_EQ(test, csvfs_handle_check(&fh), 0);
	h->len = 9;	/* inconsistent with the attribute's length */
	attrs[CSVFS_A_FH] = rt_attr(test, CSVFS_A_FH, raw, sizeof(*h) + 8);
	KUNIT_EXPECT_EQ(test, csvfs_copy_out(&args, attrs), -EIO);
	h->len = 0;	/* header only */
	attrs[CSVFS_A_FH] = rt_attr(test, CSVFS_A_FH, raw, sizeof(*h));
	KUNIT_EXPECT_EQ(test, csvfs_copy_out(&args, attrs), -EIO);
	h->len = CSVFS_MAX_FH + 8 - sizeof(*h);	/* too big */
	attrs[CSVFS_A_FH] = rt_attr(test, CSVFS_A_FH, raw, sizeof(raw));
	KUNIT_EXPECT_EQ(test, csvfs_copy_out(&args, attrs), -EIO);
	h->len = CSVFS_MAX_FH - sizeof(*h);	/* the largest */
	attrs[CSVFS_A_FH] = rt_attr(test, CSVFS_A_FH, raw, CSVFS_MAX_FH);
	KUNIT_EXPECT_EQ(test, csvfs_copy_out(&args, attrs), 0);
	/* absent and not optional */
	attrs[CSVFS_A_FH] = NULL;
	KUNIT_EXPECT_EQ(test, csvfs_copy_out(&args, attrs), -EIO);
}

/* No daemon: the wait ends with -ETIMEDOUT and the request unhashed. */
static void request_test_timeout(struct kunit *test)
{
	struct csvfs_args args = { .cmd = CSVFS_CMD_GETATTR };
	struct csvfs_req *req;
	struct rt_reply *r;

	if (csvfs_daemon_registered())
		kunit_skip(test, "a daemon is registered: it would get the request");
	req = csvfs_req_alloc(0, &args);
	KUNIT_ASSERT_NOT_NULL(test, req);
	KUNIT_EXPECT_EQ(test, csvfs_req_wait(req, HZ / 10), -ETIMEDOUT);
	KUNIT_EXPECT_FALSE(test, rt_hashed(req));
	KUNIT_EXPECT_FALSE(test, test_bit(CSVFS_R_SENT, &req->flags));
	r = rt_reply(test, req->id, 0);
	KUNIT_EXPECT_EQ(test, csvfs_request_reply(&r->info, 0), -ENOENT);
	csvfs_req_put(req);
}

/* The family policy (CSVFS_ATTR_TABLE) as the REPLY handler applies it. */
static int rt_validate(struct kunit *test, u16 type, const void *data,
		       int len)
{
	struct nlattr *nla = rt_attr(test, type, data, len);

	return nla_validate(nla, nla_total_size(len), CSVFS_A_MAX,
			    csvfs_genl_family.policy, NULL);
}

static void request_test_policy(struct kunit *test)
{
	u8 big[CSVFS_MAX_FH + 1] = {};
	struct csvfs_attr attr = {};
	u64 id = 1;
	u32 mode = 0;
	char *name;

	KUNIT_ASSERT_NOT_NULL(test, csvfs_genl_family.policy);
	KUNIT_EXPECT_EQ(test, csvfs_genl_family.maxattr, (unsigned int)CSVFS_A_MAX);
	KUNIT_EXPECT_EQ(test, rt_validate(test, CSVFS_A_REQ_ID, &id, 8), 0);
	KUNIT_EXPECT_NE(test, rt_validate(test, CSVFS_A_REQ_ID, &id, 4), 0);
	KUNIT_EXPECT_EQ(test, rt_validate(test, CSVFS_A_MODE, &mode, 4), 0);
	KUNIT_EXPECT_NE(test, rt_validate(test, CSVFS_A_MODE, &mode, 2), 0);
	KUNIT_EXPECT_EQ(test, rt_validate(test, CSVFS_A_ATTR, &attr,
					  sizeof(attr)), 0);
	KUNIT_EXPECT_NE(test, rt_validate(test, CSVFS_A_ATTR, &attr,
					  sizeof(attr) - 1), 0);
	KUNIT_EXPECT_EQ(test, rt_validate(test, CSVFS_A_FH, big,
					  CSVFS_MAX_FH), 0);
	KUNIT_EXPECT_NE(test, rt_validate(test, CSVFS_A_FH, big,
					  CSVFS_MAX_FH + 1), 0);
	KUNIT_EXPECT_EQ(test, rt_validate(test, CSVFS_A_NAME, "name", 5), 0);
	/* NAME_MAX characters and the NUL fit, one more does not */
	name = kunit_kzalloc(test, CSVFS_MAX_NAME + 1, GFP_KERNEL);
	KUNIT_ASSERT_NOT_NULL(test, name);
	memset(name, 'a', CSVFS_MAX_NAME - 1);
	KUNIT_EXPECT_EQ(test, rt_validate(test, CSVFS_A_NAME, name,
					  CSVFS_MAX_NAME), 0);
	name[CSVFS_MAX_NAME - 1] = 'a';
	KUNIT_EXPECT_NE(test, rt_validate(test, CSVFS_A_NAME, name,
					  CSVFS_MAX_NAME + 1), 0);
	/* not NUL-terminated */
	KUNIT_EXPECT_NE(test, rt_validate(test, CSVFS_A_NAME, "name", 4), 0);
	/* attributes the family does not know are refused */
	KUNIT_EXPECT_NE(test, rt_validate(test, CSVFS_A_MAX + 1, &id, 8), 0);
}

static struct kunit_case csvfs_request_cases[] = {
	KUNIT_CASE(request_test_table),
	KUNIT_CASE(request_test_op_id),
	KUNIT_CASE(request_test_reply_copies),
	KUNIT_CASE(request_test_reply_errors),
	KUNIT_CASE(request_test_reply_errno_range),
	KUNIT_CASE(request_test_copy_out),
	KUNIT_CASE(request_test_timeout),
	KUNIT_CASE(request_test_policy),
	{}
};

static struct kunit_suite csvfs_request_suite = {
	.name = "csvfs_request",
	.test_cases = csvfs_request_cases,
};

kunit_test_suite(csvfs_request_suite);
