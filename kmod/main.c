// SPDX-License-Identifier: GPL-2.0
/*
 * csvfs - Cluster Shared Volumes for Linux: module entry points.
 */
#define pr_fmt(fmt) KBUILD_MODNAME ": " fmt

#include <linux/module.h>

#include "csvfs.h"

static int __init csvfs_init(void)
{
	int ret;

	ret = csvfs_inode_cache_init();
	if (ret)
		return ret;
	ret = csvfs_layout_cache_init();
	if (ret)
		goto out_cache;
	ret = csvfs_direct_init();
	if (ret)
		goto out_layout;
	ret = csvfs_request_init();
	if (ret)
		goto out_direct;
	ret = csvfs_netlink_init();
	if (ret)
		goto out_request;
	csvfs_stats_init();
	ret = register_filesystem(&csvfs_fs_type);
	if (ret)
		goto out_stats;

	pr_info("version %s, abi %d, genl family \"%s\"\n", CSVFS_VERSION,
		CSVFS_ABI_VERSION, CSVFS_GENL_NAME);
	return 0;

out_stats:
	csvfs_stats_exit();
	csvfs_netlink_exit();
out_request:
	csvfs_request_exit();
out_direct:
	csvfs_direct_exit();
out_layout:
	csvfs_layout_cache_exit();
out_cache:
	csvfs_inode_cache_exit();
	return ret;
}

static void __exit csvfs_exit(void)
{
	unregister_filesystem(&csvfs_fs_type);
	csvfs_stats_exit();
	csvfs_netlink_exit();
	csvfs_request_exit();
	csvfs_direct_exit();
	csvfs_layout_cache_exit();
	csvfs_inode_cache_exit();
}

module_init(csvfs_init);
module_exit(csvfs_exit);

MODULE_DESCRIPTION("csvfs: Cluster Shared Volumes for Linux");
MODULE_AUTHOR("csvfs developers");
MODULE_LICENSE("GPL");
MODULE_VERSION(CSVFS_VERSION);
MODULE_ALIAS_FS("csvfs");
MODULE_ALIAS_GENL_FAMILY(CSVFS_GENL_NAME);
