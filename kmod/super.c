// SPDX-License-Identifier: GPL-2.0
/*
 * csvfs - the filesystem type and mount options.
 *
 * This first version parses and checks the mount options and refuses to
 * mount until the VFS client lands: a mount never half-succeeds.
 */
#define pr_fmt(fmt) KBUILD_MODNAME ": " fmt

#include <linux/fs_context.h>
#include <linux/fs_parser.h>
#include <linux/slab.h>

#include "csvfs.h"

struct csvfs_fs_context {
	char *volume;
};

enum csvfs_param { Opt_volume };

static const struct fs_parameter_spec csvfs_fs_parameters[] = {
	fsparam_string("volume", Opt_volume),
	{}
};

static int csvfs_parse_param(struct fs_context *fc, struct fs_parameter *param)
{
	struct csvfs_fs_context *ctx = fc->fs_private;
	struct fs_parse_result result;
	int opt;

	opt = fs_parse(fc, csvfs_fs_parameters, param, &result);
	if (opt < 0)
		return opt;

	switch (opt) {
	case Opt_volume:
		if (strnlen(param->string, CSVFS_MAX_VOLUME_NAME) >=
		    CSVFS_MAX_VOLUME_NAME)
			return invalf(fc, "csvfs: volume name too long");
		kfree(ctx->volume);
		ctx->volume = param->string;
		param->string = NULL;
		break;
	}
	return 0;
}

static int csvfs_get_tree(struct fs_context *fc)
{
	struct csvfs_fs_context *ctx = fc->fs_private;

	if (!ctx->volume)
		return invalf(fc, "csvfs: the volume= option is required");
	if (!fc->source)
		return invalf(fc, "csvfs: a block device is required");
	if (!csvfs_daemon_registered())
		return invalf(fc, "csvfs: csvd is not running on this node");
	return invalf(fc, "csvfs: mounting is not implemented in this version");
}

static void csvfs_free_fc(struct fs_context *fc)
{
	struct csvfs_fs_context *ctx = fc->fs_private;

	if (ctx)
		kfree(ctx->volume);
	kfree(ctx);
}

static const struct fs_context_operations csvfs_context_ops = {
	.parse_param	= csvfs_parse_param,
	.get_tree	= csvfs_get_tree,
	.free		= csvfs_free_fc,
};

static int csvfs_init_fs_context(struct fs_context *fc)
{
	struct csvfs_fs_context *ctx;

	ctx = kzalloc(sizeof(*ctx), GFP_KERNEL);
	if (!ctx)
		return -ENOMEM;
	fc->fs_private = ctx;
	fc->ops = &csvfs_context_ops;
	return 0;
}

struct file_system_type csvfs_fs_type = {
	.owner			= THIS_MODULE,
	.name			= "csvfs",
	.init_fs_context	= csvfs_init_fs_context,
	.parameters		= csvfs_fs_parameters,
	.kill_sb		= kill_anon_super,
	.fs_flags		= FS_REQUIRES_DEV,
};
