/* SPDX-License-Identifier: GPL-2.0 */
/*
 * csvfs - Cluster Shared Volumes for Linux: in-kernel structures.
 */
#ifndef _CSVFS_H
#define _CSVFS_H

#include <linux/fs.h>
#include <net/genetlink.h>
#include <uapi/linux/csvfs.h>

#define CSVFS_MAGIC		0x43535646	/* "CSVF" */
#define CSVFS_VERSION		"0.1.0"

#define csvfs_err(sb, fmt, ...)						\
	pr_err("csvfs (%s): " fmt "\n", (sb)->s_id, ##__VA_ARGS__)
#define csvfs_info(sb, fmt, ...)					\
	pr_info("csvfs (%s): " fmt "\n", (sb)->s_id, ##__VA_ARGS__)

/* netlink.c */
extern struct genl_family csvfs_genl_family;
int csvfs_netlink_init(void);
void csvfs_netlink_exit(void);
bool csvfs_daemon_registered(void);

/* super.c */
extern struct file_system_type csvfs_fs_type;

#endif /* _CSVFS_H */
