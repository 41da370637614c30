// SPDX-License-Identifier: GPL-2.0
/*
 * csvfs - the generic netlink channel to the local csvd.
 *
 * The attribute policy is expanded from CSVFS_ATTR_TABLE in the uapi
 * header, the single source of the attribute set shared with the daemon.
 * Every operation needs CAP_NET_ADMIN (GENL_ADMIN_PERM).
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

/* The daemon that answers requests; 0 when none is registered. */
static DEFINE_MUTEX(csvfs_daemon_lock);
static u32 csvfs_daemon_portid;	/* guarded by csvfs_daemon_lock */

bool csvfs_daemon_registered(void)
{
	bool registered;

	mutex_lock(&csvfs_daemon_lock);
	registered = csvfs_daemon_portid != 0;
	mutex_unlock(&csvfs_daemon_lock);
	return registered;
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

	mutex_lock(&csvfs_daemon_lock);
	csvfs_daemon_portid = info->snd_portid;
	mutex_unlock(&csvfs_daemon_lock);
	pr_info("daemon registered (port %u)\n", info->snd_portid);
	return 0;
}

static int csvfs_nl_reply(struct sk_buff *skb, struct genl_info *info)
{
	bool from_daemon;

	mutex_lock(&csvfs_daemon_lock);
	from_daemon = csvfs_daemon_portid &&
		      info->snd_portid == csvfs_daemon_portid;
	mutex_unlock(&csvfs_daemon_lock);
	if (!from_daemon)
		return -EPERM;
	if (GENL_REQ_ATTR_CHECK(info, CSVFS_A_REQ_ID) ||
	    GENL_REQ_ATTR_CHECK(info, CSVFS_A_ERRNO))
		return -EINVAL;
	/* No request is ever outstanding in this version. */
	return -ENOENT;
}

static const struct genl_small_ops csvfs_genl_ops[] = {
	{
		.cmd	= CSVFS_CMD_HELLO,
		.doit	= csvfs_nl_hello,
		.flags	= GENL_ADMIN_PERM,
	},
	{
		.cmd	= CSVFS_CMD_REPLY,
		.doit	= csvfs_nl_reply,
		.flags	= GENL_ADMIN_PERM,
	},
};

static int csvfs_nl_notify(struct notifier_block *nb, unsigned long state,
			   void *ptr)
{
	struct netlink_notify *n = ptr;

	if (state != NETLINK_URELEASE || n->protocol != NETLINK_GENERIC)
		return NOTIFY_DONE;

	mutex_lock(&csvfs_daemon_lock);
	if (n->portid == csvfs_daemon_portid) {
		csvfs_daemon_portid = 0;
		pr_info("daemon gone (port %u)\n", n->portid);
	}
	mutex_unlock(&csvfs_daemon_lock);
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
