// SPDX-License-Identifier: GPL-2.0
/*
 * csvfs - the generic netlink channel to the local csvd.
 *
 * The attribute policy is expanded from CSVFS_ATTR_TABLE in the uapi
 * header, the single source of the attribute set shared with the daemon.
 * Every operation needs CAP_NET_ADMIN (GENL_ADMIN_PERM), every message is
 * validated strictly against the policy, and only the registered daemon
 * may answer requests or push events.
 *
 * Handlers run under genl_mutex: they never wait for a request.
 */
#define pr_fmt(fmt) KBUILD_MODNAME ": " fmt

#include <linux/mutex.h>

#include "csvfs.h"

#define CSVFS_POLICY_U8(max)	 { .type = NLA_U8 }
#define CSVFS_POLICY_U32(max)	 { .type = NLA_U32 }
#define CSVFS_POLICY_U64(max)	 { .type = NLA_U64 }
#define CSVFS_POLICY_S32(max)	 { .type = NLA_S32 }
#define CSVFS_POLICY_FLAG(max)	 { .type = NLA_FLAG }
#define CSVFS_POLICY_STRING(max) { .type = NLA_NUL_STRING, .len = (max) - 1 }
#define CSVFS_POLICY_BINARY(max) { .type = NLA_BINARY, .len = (max) }
#define CSVFS_POLICY_STRUCT(max) NLA_POLICY_EXACT_LEN(max)

static const struct nla_policy csvfs_policy[CSVFS_A_MAX + 1] = {
#define CSVFS_X_POLICY(name, type, maxlen) \
	[CSVFS_A_##name] = CSVFS_POLICY_##type(maxlen),
	CSVFS_ATTR_TABLE(CSVFS_X_POLICY)
#undef CSVFS_X_POLICY
};

/*
 * The daemon that answers requests; port 0 when none is registered. The
 * generation changes whenever a daemon registers or goes away, so that
 * waiting requests know to send themselves again.
 */
static DEFINE_MUTEX(csvfs_daemon_lock);
static u32 csvfs_daemon_portid;		/* guarded by csvfs_daemon_lock */
static unsigned int csvfs_daemon_generation;	/* written under the lock */

u32 csvfs_daemon_port(unsigned int *gen)
{
	u32 port;

	mutex_lock(&csvfs_daemon_lock);
	port = csvfs_daemon_portid;
	*gen = csvfs_daemon_generation;
	mutex_unlock(&csvfs_daemon_lock);
	return port;
}

unsigned int csvfs_daemon_gen(void)
{
	return READ_ONCE(csvfs_daemon_generation);
}

bool csvfs_daemon_registered(void)
{
	unsigned int gen;

	return csvfs_daemon_port(&gen) != 0;
}

static void csvfs_daemon_set(u32 port)
{
	mutex_lock(&csvfs_daemon_lock);
	csvfs_daemon_portid = port;
	WRITE_ONCE(csvfs_daemon_generation, csvfs_daemon_generation + 1);
	mutex_unlock(&csvfs_daemon_lock);
	csvfs_requests_resend();
}

static bool csvfs_from_daemon(struct genl_info *info)
{
	bool ok;

	mutex_lock(&csvfs_daemon_lock);
	ok = csvfs_daemon_portid && info->snd_portid == csvfs_daemon_portid;
	mutex_unlock(&csvfs_daemon_lock);
	if (!ok)
		GENL_SET_ERR_MSG(info, "csvfs: not the registered daemon");
	return ok;
}

static int csvfs_nl_hello(struct sk_buff *skb, struct genl_info *info)
{
	u32 version;

	if (GENL_REQ_ATTR_CHECK(info, CSVFS_A_ABI_VERSION))
		return -EINVAL;

	version = nla_get_u32(info->attrs[CSVFS_A_ABI_VERSION]);
	if (version != CSVFS_ABI_VERSION) {
		GENL_SET_ERR_MSG(info, "csvfs ABI version mismatch");
		return -EPROTO;
	}

	csvfs_daemon_set(info->snd_portid);
	csvfs_layouts_end_everywhere();
	pr_info("daemon registered (port %u)\n", info->snd_portid);
	return 0;
}

/*
 * REPLY is parsed with a lenient policy (csvfs_reply_policy) so that a
 * reply whose results break the family policy still ends its request, with
 * -EIO, instead of leaving it to time out; the strict check follows here.
 */
static const struct nla_policy csvfs_reply_policy[CSVFS_A_MAX + 1] = {
	[CSVFS_A_REQ_ID]	= { .type = NLA_U64 },
	[CSVFS_A_ERRNO]		= { .type = NLA_S32 },
	[CSVFS_A_SB_ID ... CSVFS_A_MAX] = { .type = NLA_BINARY },
};

static int csvfs_nl_reply(struct sk_buff *skb, struct genl_info *info)
{
	int valid;

	if (!csvfs_from_daemon(info))
		return -EPERM;
	if (GENL_REQ_ATTR_CHECK(info, CSVFS_A_REQ_ID) ||
	    GENL_REQ_ATTR_CHECK(info, CSVFS_A_ERRNO))
		return -EINVAL;
	valid = nla_validate(genlmsg_data(info->genlhdr),
			     genlmsg_len(info->genlhdr), CSVFS_A_MAX,
			     csvfs_policy, info->extack);
	return csvfs_request_reply(info, valid);
}

/* Copy a file handle attribute, if present; -EINVAL if malformed. */
static int csvfs_nl_handle(struct genl_info *info, int type,
			   struct csvfs_handle *fh, bool *present)
{
	struct nlattr *nla = info->attrs[type];

	*present = nla != NULL;
	if (!nla)
		return 0;
	if (nla_len(nla) > sizeof(fh->data))
		return -EINVAL;
	fh->size = nla_len(nla);
	memcpy(fh->data, nla_data(nla), fh->size);
	return csvfs_handle_check(fh);
}

/*
 * CSVFS_CMD_INVALIDATE: SB_ID, INVAL_FLAGS and FH (attributes, data) or
 * PARENT_FH + NAME (a dentry). The work is done later, outside genl_mutex.
 */
static int csvfs_nl_invalidate(struct sk_buff *skb, struct genl_info *info)
{
	struct csvfs_handle *fh, *parent;
	bool has_fh, has_parent;
	const char *name = NULL;
	int ret;

	if (!csvfs_from_daemon(info))
		return -EPERM;
	if (GENL_REQ_ATTR_CHECK(info, CSVFS_A_SB_ID) ||
	    GENL_REQ_ATTR_CHECK(info, CSVFS_A_INVAL_FLAGS))
		return -EINVAL;

	fh = kmalloc(sizeof(*fh), GFP_KERNEL);
	parent = kmalloc(sizeof(*parent), GFP_KERNEL);
	ret = -ENOMEM;
	if (!fh || !parent)
		goto out;
	ret = csvfs_nl_handle(info, CSVFS_A_FH, fh, &has_fh);
	if (!ret)
		ret = csvfs_nl_handle(info, CSVFS_A_PARENT_FH, parent,
				      &has_parent);
	if (ret) {
		GENL_SET_ERR_MSG(info, "csvfs: malformed file handle");
		goto out;
	}
	if (info->attrs[CSVFS_A_NAME])
		name = nla_data(info->attrs[CSVFS_A_NAME]);
	if (!has_fh && !(has_parent && name)) {
		GENL_SET_ERR_MSG(info, "csvfs: FH or PARENT_FH and NAME needed");
		ret = -EINVAL;
		goto out;
	}
	csvfs_invalidate(nla_get_u32(info->attrs[CSVFS_A_SB_ID]),
			 nla_get_u32(info->attrs[CSVFS_A_INVAL_FLAGS]),
			 has_fh ? fh : NULL, has_parent ? parent : NULL, name);
out:
	kfree(fh);
	kfree(parent);
	return ret;
}

/*
 * CSVFS_CMD_VOLUME_STATE: SB_ID, EPOCH [, IO_MODE, MODE_REASON, LEASE_MS].
 * LEASE_MS renews the node's lease: direct I/O stops when it runs out
 * (docs/failover.md).
 */
static int csvfs_nl_volume_state(struct sk_buff *skb, struct genl_info *info)
{
	struct nlattr *mode_nla = info->attrs[CSVFS_A_IO_MODE];
	struct nlattr *lease_nla = info->attrs[CSVFS_A_LEASE_MS];
	u32 mode = 0, lease_ms = 0;

	if (!csvfs_from_daemon(info))
		return -EPERM;
	if (GENL_REQ_ATTR_CHECK(info, CSVFS_A_SB_ID) ||
	    GENL_REQ_ATTR_CHECK(info, CSVFS_A_EPOCH))
		return -EINVAL;
	if (mode_nla) {
		mode = nla_get_u32(mode_nla);
		if (mode >= __CSVFS_IO_MAX) {
			GENL_SET_ERR_MSG(info, "csvfs: unknown I/O mode");
			return -EINVAL;
		}
	}
	if (lease_nla) {
		lease_ms = nla_get_u32(lease_nla);
		if (lease_ms > 3600 * MSEC_PER_SEC) {
			GENL_SET_ERR_MSG(info, "csvfs: lease longer than an hour");
			return -EINVAL;
		}
	}
	csvfs_volume_state(nla_get_u32(info->attrs[CSVFS_A_SB_ID]),
			   nla_get_u64(info->attrs[CSVFS_A_EPOCH]),
			   mode_nla ? &mode : NULL,
			   lease_nla ? &lease_ms : NULL);
	return 0;
}

/*
 * CSVFS_CMD_LAYOUT_RECALL: REQ_ID, SB_ID, FH, OFFSET, LENGTH. Answered
 * later with a REPLY of the same REQ_ID, once the range's direct I/O has
 * drained (which may need requests: never under genl_mutex).
 */
static int csvfs_nl_layout_recall(struct sk_buff *skb, struct genl_info *info)
{
	struct csvfs_handle *fh;
	bool present;
	int ret;

	if (!csvfs_from_daemon(info))
		return -EPERM;
	if (GENL_REQ_ATTR_CHECK(info, CSVFS_A_REQ_ID) ||
	    GENL_REQ_ATTR_CHECK(info, CSVFS_A_SB_ID) ||
	    GENL_REQ_ATTR_CHECK(info, CSVFS_A_FH) ||
	    GENL_REQ_ATTR_CHECK(info, CSVFS_A_OFFSET) ||
	    GENL_REQ_ATTR_CHECK(info, CSVFS_A_LENGTH))
		return -EINVAL;
	fh = kmalloc(sizeof(*fh), GFP_KERNEL);
	if (!fh)
		return -ENOMEM;
	ret = csvfs_nl_handle(info, CSVFS_A_FH, fh, &present);
	if (ret) {
		GENL_SET_ERR_MSG(info, "csvfs: malformed file handle");
		goto out;
	}
	ret = csvfs_layout_recall(nla_get_u64(info->attrs[CSVFS_A_REQ_ID]),
				  nla_get_u32(info->attrs[CSVFS_A_SB_ID]), fh,
				  nla_get_u64(info->attrs[CSVFS_A_OFFSET]),
				  nla_get_u64(info->attrs[CSVFS_A_LENGTH]));
out:
	kfree(fh);
	return ret;
}

/*
 * CSVFS_CMD_LAYOUT_RECALL_ALL: REQ_ID, SB_ID. Answered later, once direct
 * I/O that may still use a layout of the volume has reached the device.
 */
static int csvfs_nl_layout_recall_all(struct sk_buff *skb,
				      struct genl_info *info)
{
	if (!csvfs_from_daemon(info))
		return -EPERM;
	if (GENL_REQ_ATTR_CHECK(info, CSVFS_A_REQ_ID) ||
	    GENL_REQ_ATTR_CHECK(info, CSVFS_A_SB_ID))
		return -EINVAL;
	return csvfs_layout_recall(nla_get_u64(info->attrs[CSVFS_A_REQ_ID]),
				   nla_get_u32(info->attrs[CSVFS_A_SB_ID]), NULL, 0, 0);
}

/*
 * CSVFS_CMD_LEASE_BREAK: REQ_ID, SB_ID, FH, LEASE (the level we may keep).
 * Answered later with a REPLY of the same REQ_ID, once the page cache is
 * written back and, for LEASE_NONE, dropped (never under genl_mutex).
 */
static int csvfs_nl_lease_break(struct sk_buff *skb, struct genl_info *info)
{
	struct csvfs_handle *fh;
	bool present;
	int ret;

	if (!csvfs_from_daemon(info))
		return -EPERM;
	if (GENL_REQ_ATTR_CHECK(info, CSVFS_A_REQ_ID) ||
	    GENL_REQ_ATTR_CHECK(info, CSVFS_A_SB_ID) ||
	    GENL_REQ_ATTR_CHECK(info, CSVFS_A_FH) ||
	    GENL_REQ_ATTR_CHECK(info, CSVFS_A_LEASE))
		return -EINVAL;
	if (nla_get_u32(info->attrs[CSVFS_A_LEASE]) >= __CSVFS_LEASE_MAX) {
		GENL_SET_ERR_MSG(info, "csvfs: unknown lease level");
		return -EINVAL;
	}
	fh = kmalloc(sizeof(*fh), GFP_KERNEL);
	if (!fh)
		return -ENOMEM;
	ret = csvfs_nl_handle(info, CSVFS_A_FH, fh, &present);
	if (ret) {
		GENL_SET_ERR_MSG(info, "csvfs: malformed file handle");
		goto out;
	}
	ret = csvfs_lease_break(nla_get_u64(info->attrs[CSVFS_A_REQ_ID]),
				nla_get_u32(info->attrs[CSVFS_A_SB_ID]), fh,
				nla_get_u32(info->attrs[CSVFS_A_LEASE]));
out:
	kfree(fh);
	return ret;
}

/* Answer a request of the daemon's (LAYOUT_RECALL, LEASE_BREAK). */
void csvfs_reply_daemon(u64 req_id, u32 sb_id, s32 err)
{
	struct csvfs_args args = { .cmd = CSVFS_CMD_REPLY };

	csvfs_in(&args, CSVFS_A_ERRNO, sizeof(err), &err);
	if (csvfs_notify(req_id, sb_id, &args))
		pr_warn_ratelimited("lost the reply to daemon request %llu\n",
				    req_id);
}

/* Tell the daemon that a device I/O failed on this node's path. */
void csvfs_path_error(struct csvfs_sb_info *sbi, u64 dev_offset, u64 length,
		      int err)
{
	struct csvfs_args args = { .cmd = CSVFS_CMD_PATH_ERROR };
	s32 errno_val = err;

	csvfs_warn(sbi->sb, "device I/O at %llu failed (%d): redirecting",
		   dev_offset, err);
	csvfs_in(&args, CSVFS_A_DEV_OFFSET, sizeof(dev_offset), &dev_offset);
	csvfs_in(&args, CSVFS_A_LENGTH, sizeof(length), &length);
	csvfs_in(&args, CSVFS_A_ERRNO, sizeof(errno_val), &errno_val);
	csvfs_notify(0, sbi->sb_id, &args);
}

static const struct genl_small_ops csvfs_genl_ops[] = {
	{
		.cmd	= CSVFS_CMD_HELLO,
		.doit	= csvfs_nl_hello,
		.flags	= GENL_ADMIN_PERM,
	},
	{
		.cmd	= CSVFS_CMD_INVALIDATE,
		.doit	= csvfs_nl_invalidate,
		.flags	= GENL_ADMIN_PERM,
	},
	{
		.cmd	= CSVFS_CMD_VOLUME_STATE,
		.doit	= csvfs_nl_volume_state,
		.flags	= GENL_ADMIN_PERM,
	},
	{
		.cmd	= CSVFS_CMD_LAYOUT_RECALL,
		.doit	= csvfs_nl_layout_recall,
		.flags	= GENL_ADMIN_PERM,
	},
	{
		.cmd	= CSVFS_CMD_LEASE_BREAK,
		.doit	= csvfs_nl_lease_break,
		.flags	= GENL_ADMIN_PERM,
	},
	{
		.cmd	= CSVFS_CMD_LAYOUT_RECALL_ALL,
		.doit	= csvfs_nl_layout_recall_all,
		.flags	= GENL_ADMIN_PERM,
	},
};

static const struct genl_ops csvfs_genl_full_ops[] = {
	{
		.cmd	= CSVFS_CMD_REPLY,
		.doit	= csvfs_nl_reply,
		.flags	= GENL_ADMIN_PERM,
		.policy	= csvfs_reply_policy,
		.maxattr = CSVFS_A_MAX,
	},
};

static int csvfs_nl_notify(struct notifier_block *nb, unsigned long state,
			   void *ptr)
{
	struct netlink_notify *n = ptr;
	bool gone = false;

	if (state != NETLINK_URELEASE || n->protocol != NETLINK_GENERIC ||
	    !net_eq(n->net, &init_net))
		return NOTIFY_DONE;

	mutex_lock(&csvfs_daemon_lock);
	if (csvfs_daemon_portid && n->portid == csvfs_daemon_portid) {
		csvfs_daemon_portid = 0;
		WRITE_ONCE(csvfs_daemon_generation,
			   csvfs_daemon_generation + 1);
		gone = true;
	}
	mutex_unlock(&csvfs_daemon_lock);
	if (gone) {
		pr_info("daemon gone (port %u); requests wait for the next\n",
			n->portid);
		csvfs_requests_resend();
	}
	return NOTIFY_DONE;
}

static struct notifier_block csvfs_nl_notifier = {
	.notifier_call = csvfs_nl_notify,
};

struct genl_family csvfs_genl_family __ro_after_init = {
	.name		= CSVFS_GENL_NAME,
	.version	= CSVFS_GENL_VERSION,
	.maxattr	= CSVFS_A_MAX,
	.policy		= csvfs_policy,
	.netnsok	= false,
	.module		= THIS_MODULE,
	.ops		= csvfs_genl_full_ops,
	.n_ops		= ARRAY_SIZE(csvfs_genl_full_ops),
	.small_ops	= csvfs_genl_ops,
	.n_small_ops	= ARRAY_SIZE(csvfs_genl_ops),
	.resv_start_op	= 0,	/* strict validation for every command */
};

int __init csvfs_netlink_init(void)
{
	int ret;

	ret = genl_register_family(&csvfs_genl_family);
	if (ret)
		return ret;
	ret = netlink_register_notifier(&csvfs_nl_notifier);
	if (ret)
		genl_unregister_family(&csvfs_genl_family);
	return ret;
}

void csvfs_netlink_exit(void)
{
	netlink_unregister_notifier(&csvfs_nl_notifier);
	genl_unregister_family(&csvfs_genl_family);
}
