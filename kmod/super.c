// SPDX-License-Identifier: GPL-2.0
/*
 * csvfs - the filesystem type: mount options, superblock, inode cache,
 * invalidations pushed by the daemon.
 *
 * A mount opens the shared block device non-exclusively (the direct data
 * path uses it later), registers the superblock with the daemon
 * (CSVFS_CMD_MOUNT) and gets the volume's root file handle back. Each
 * mount has its own anonymous superblock; a volume is mounted at most once
 * per node.
 */
#define pr_fmt(fmt) KBUILD_MODNAME ": " fmt

#include <linux/backing-dev.h>
#include <linux/blkdev.h>
#include <linux/fs_context.h>
#include <linux/fs_parser.h>
#include <linux/idr.h>
#include <linux/pagemap.h>
#include <linux/seq_file.h>
#include <linux/slab.h>
#include <linux/statfs.h>
#include <linux/workqueue.h>

#include "csvfs.h"

#define CSVFS_BDEV_MODE	(FMODE_READ | FMODE_WRITE)

/* Mounted volumes, for INVALIDATE and the one-mount-per-volume rule. */
static DEFINE_MUTEX(csvfs_sb_lock);
static LIST_HEAD(csvfs_sbs);			/* guarded by csvfs_sb_lock */
static DEFINE_IDA(csvfs_sb_ida);
static struct kmem_cache *csvfs_inode_cachep;

/* inode cache */

static struct inode *csvfs_alloc_inode(struct super_block *sb)
{
	struct csvfs_inode *ci;

	ci = alloc_inode_sb(sb, csvfs_inode_cachep, GFP_KERNEL);
	if (!ci)
		return NULL;
	ci->fh.size = 0;
	ci->attr_expire = jiffies;
	ci->flags = 0;
	INIT_LIST_HEAD(&ci->open_files);
	csvfs_layout_init(ci);
	atomic_set(&ci->recalls, 0);
	csvfs_lease_init(ci);
	return &ci->vfs_inode;
}

static void csvfs_free_inode(struct inode *inode)
{
	kmem_cache_free(csvfs_inode_cachep, CSVFS_I(inode));
}

static void csvfs_inode_init_once(void *obj)
{
	struct csvfs_inode *ci = obj;

	spin_lock_init(&ci->lock);
	spin_lock_init(&ci->layout_lock);
	init_rwsem(&ci->lease_sem);
	inode_init_once(&ci->vfs_inode);
}

int __init csvfs_inode_cache_init(void)
{
	csvfs_inode_cachep = kmem_cache_create("csvfs_inode",
					       sizeof(struct csvfs_inode), 0,
					       SLAB_RECLAIM_ACCOUNT |
					       SLAB_ACCOUNT,
					       csvfs_inode_init_once);
	return csvfs_inode_cachep ? 0 : -ENOMEM;
}

void csvfs_inode_cache_exit(void)
{
	rcu_barrier();	/* inodes are freed after an RCU grace period */
	kmem_cache_destroy(csvfs_inode_cachep);
}

/* superblock */

static int csvfs_statfs(struct dentry *dentry, struct kstatfs *buf)
{
	struct super_block *sb = dentry->d_sb;
	struct csvfs_statfs st;
	struct csvfs_args args = { .cmd = CSVFS_CMD_STATFS };
	int ret;

	csvfs_out(&args, CSVFS_A_STATFS, 0, sizeof(st), &st);
	ret = csvfs_sb_request(sb, &args);
	if (ret)
		return ret;
	buf->f_type = CSVFS_MAGIC;
	buf->f_bsize = st.bsize;
	buf->f_frsize = st.frsize ?: st.bsize;
	buf->f_blocks = st.blocks;
	buf->f_bfree = st.bfree;
	buf->f_bavail = st.bavail;
	buf->f_files = st.files;
	buf->f_ffree = st.ffree;
	buf->f_namelen = min_t(u32, st.namelen ?: NAME_MAX, NAME_MAX);
	return 0;
}

static int csvfs_show_options(struct seq_file *m, struct dentry *root)
{
	struct csvfs_sb_info *sbi = CSVFS_SB(root->d_sb);

	seq_show_option(m, "volume", sbi->volume);
	if (sbi->timeout != CSVFS_DEFAULT_TIMEOUT * HZ)
		seq_printf(m, ",timeout=%lu", sbi->timeout / HZ);
	if (sbi->attr_timeout != msecs_to_jiffies(CSVFS_DEFAULT_ATTR_MS))
		seq_printf(m, ",attr_timeout_ms=%u",
			   jiffies_to_msecs(sbi->attr_timeout));
	if (sbi->redirect == CSVFS_IO_BLOCK_REDIRECTED)
		seq_puts(m, ",redirect=block");
	else if (sbi->redirect == CSVFS_IO_FILE_REDIRECTED)
		seq_puts(m, ",redirect=file");
	return 0;
}

static void csvfs_evict_inode(struct inode *inode)
{
	truncate_inode_pages_final(&inode->i_data);
	csvfs_lease_return(inode);
	csvfs_layout_destroy(inode);
	clear_inode(inode);
}

static const struct super_operations csvfs_super_ops = {
	.alloc_inode	= csvfs_alloc_inode,
	.free_inode	= csvfs_free_inode,
	.evict_inode	= csvfs_evict_inode,
	.drop_inode	= generic_delete_inode,
	.statfs		= csvfs_statfs,
	.show_options	= csvfs_show_options,
};

static void csvfs_sbi_free(struct csvfs_sb_info *sbi)
{
	if (!sbi)
		return;
	if (sbi->bdev)
		blkdev_put(sbi->bdev, CSVFS_BDEV_MODE);
	if (sbi->sb_id)
		ida_free(&csvfs_sb_ida, sbi->sb_id);
	kfree(sbi->device);
	kfree(sbi);
}

/* Register the volume as mounted here, once per node; assign an id. */
static int csvfs_sb_register(struct fs_context *fc, struct csvfs_sb_info *sbi)
{
	struct csvfs_sb_info *other;
	int id;

	mutex_lock(&csvfs_sb_lock);
	list_for_each_entry(other, &csvfs_sbs, list) {
		if (!strcmp(other->volume, sbi->volume)) {
			mutex_unlock(&csvfs_sb_lock);
			return invalfc(fc, "volume %s is already mounted",
				       sbi->volume);
		}
	}
	id = ida_alloc_min(&csvfs_sb_ida, 1, GFP_KERNEL);
	if (id >= 0) {
		sbi->sb_id = id;
		list_add(&sbi->list, &csvfs_sbs);
	}
	mutex_unlock(&csvfs_sb_lock);
	return id < 0 ? id : 0;
}

static void csvfs_sb_unregister(struct csvfs_sb_info *sbi)
{
	mutex_lock(&csvfs_sb_lock);
	if (!list_empty(&sbi->list))
		list_del_init(&sbi->list);
	mutex_unlock(&csvfs_sb_lock);
}

/* CSVFS_CMD_MOUNT: the daemon attaches the volume; get its root. */
static int csvfs_mount_req(struct super_block *sb, struct csvfs_handle *root,
			   struct csvfs_attr *attr)
{
	struct csvfs_sb_info *sbi = CSVFS_SB(sb);
	struct csvfs_args args = { .cmd = CSVFS_CMD_MOUNT };
	struct csvfs_out_arg *attr_out;
	int ret;

	csvfs_in_str(&args, CSVFS_A_VOLUME, sbi->volume, strlen(sbi->volume));
	csvfs_in_str(&args, CSVFS_A_DEVICE, sbi->device, strlen(sbi->device));
	csvfs_out(&args, CSVFS_A_FH, CSVFS_OUT_HANDLE, 0, root);
	attr_out = csvfs_out(&args, CSVFS_A_ATTR, CSVFS_OUT_OPTIONAL,
			     sizeof(*attr), attr);
	csvfs_out(&args, CSVFS_A_EPOCH, CSVFS_OUT_OPTIONAL, sizeof(u64),
		  &sbi->epoch);
	csvfs_out(&args, CSVFS_A_DEV_SIZE, CSVFS_OUT_OPTIONAL, sizeof(u64),
		  &sbi->dev_size);
	ret = csvfs_sb_request(sb, &args);
	if (ret || attr_out->present)
		return ret;
	/* the root's attributes, if MOUNT did not carry them */
	args = (struct csvfs_args) { .cmd = CSVFS_CMD_GETATTR };
	csvfs_in(&args, CSVFS_A_FH, root->size, root->data);
	csvfs_out(&args, CSVFS_A_ATTR, 0, sizeof(*attr), attr);
	return csvfs_sb_request(sb, &args);
}

static int csvfs_fill_super(struct super_block *sb, struct fs_context *fc)
{
	struct csvfs_sb_info *sbi = CSVFS_SB(sb);
	struct csvfs_handle *root_fh;
	struct csvfs_attr attr;
	struct inode *root;
	int ret;

	sbi->sb = sb;
	sb->s_magic = CSVFS_MAGIC;
	sb->s_op = &csvfs_super_ops;
	sb->s_d_op = &csvfs_dentry_ops;
	sb->s_xattr = csvfs_xattr_handlers;
	sb->s_maxbytes = MAX_LFS_FILESIZE;
	sb->s_time_gran = 1;
	sb->s_blocksize = PAGE_SIZE;
	sb->s_blocksize_bits = PAGE_SHIFT;
	sb->s_flags |= SB_NOATIME;	/* the coordinator keeps atime */
	/*
	 * Remember "no set-id bits, no capabilities xattr" (S_NOSEC) so that
	 * writes do not ask the coordinator for security.capability every
	 * time; csvfs_set_attr sets or clears it with every attribute
	 * refresh, as the coordinator's CSVFS_ATTR_NO_CAPS says.
	 */
	sb->s_flags |= SB_NOSEC;
	snprintf(sb->s_id, sizeof(sb->s_id), "%s", sbi->volume);

	ret = csvfs_sb_register(fc, sbi);
	if (ret)
		return ret;
	/* writeback of mmap'ed pages needs a bdi of our own */
	ret = super_setup_bdi(sb);
	if (ret)
		return ret;

	root_fh = kmalloc(sizeof(*root_fh), GFP_KERNEL);
	if (!root_fh)
		return -ENOMEM;
	ret = csvfs_mount_req(sb, root_fh, &attr);
	if (ret) {
		if (ret == -ETIMEDOUT)
			errorfc(fc, "csvd did not answer MOUNT in time");
		else
			errorfc(fc, "csvd refused to mount %s: %d",
				sbi->volume, ret);
		goto out;
	}
	sbi->mounted = true;
	if (!S_ISDIR(attr.mode)) {
		errorfc(fc, "the root of %s is not a directory", sbi->volume);
		ret = -EIO;
		goto out;
	}
	root = csvfs_iget(sb, root_fh, &attr);
	if (IS_ERR(root)) {
		ret = PTR_ERR(root);
		goto out;
	}
	sb->s_root = d_make_root(root);
	ret = sb->s_root ? 0 : -ENOMEM;
	if (!ret)
		csvfs_info(sb, "mounted %s, epoch %llu", sbi->device,
			   sbi->epoch);
out:
	kfree(root_fh);
	return ret;
}

static void csvfs_unmount_req(struct csvfs_sb_info *sbi)
{
	struct csvfs_args args = { .cmd = CSVFS_CMD_UNMOUNT };
	int ret;

	if (!csvfs_daemon_registered()) {
		pr_warn("%s: no daemon to tell about the unmount\n",
			sbi->volume);
		return;
	}
	ret = csvfs_request(sbi->sb_id, min(sbi->timeout,
					    (unsigned long)CSVFS_UNMOUNT_TIMEOUT),
			    &args);
	if (ret)
		pr_warn("%s: UNMOUNT failed: %d\n", sbi->volume, ret);
}

static void csvfs_kill_sb(struct super_block *sb)
{
	struct csvfs_sb_info *sbi = CSVFS_SB(sb);

	kill_anon_super(sb);	/* writes back and evicts every inode */
	if (!sbi)
		return;
	csvfs_stats_remove(sbi);
	csvfs_sb_unregister(sbi);
	if (sbi->mounted)
		csvfs_unmount_req(sbi);
	csvfs_sbi_free(sbi);
}

/* mount options */

struct csvfs_fs_context {
	char *volume;
	unsigned int timeout;		/* seconds */
	unsigned int attr_timeout_ms;
	u32 redirect;			/* CSVFS_IO_*, DIRECT: not forced */
};

enum csvfs_param {
	Opt_volume, Opt_timeout, Opt_attr_timeout_ms, Opt_redirect,
};

static const struct constant_table csvfs_redirect_modes[] = {
	{ "none",	CSVFS_IO_DIRECT },
	{ "block",	CSVFS_IO_BLOCK_REDIRECTED },
	{ "file",	CSVFS_IO_FILE_REDIRECTED },
	{}
};

static const struct fs_parameter_spec csvfs_fs_parameters[] = {
	fsparam_string("volume", Opt_volume),
	fsparam_u32("timeout", Opt_timeout),
	fsparam_u32("attr_timeout_ms", Opt_attr_timeout_ms),
	fsparam_enum("redirect", Opt_redirect, csvfs_redirect_modes),
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
		if (!*param->string || strchr(param->string, '/'))
			return invalfc(fc, "bad volume name");
		if (strnlen(param->string, CSVFS_MAX_VOLUME_NAME) >=
		    CSVFS_MAX_VOLUME_NAME)
			return invalfc(fc, "volume name too long");
		kfree(ctx->volume);
		ctx->volume = param->string;
		param->string = NULL;
		break;
	case Opt_timeout:
		if (result.uint_32 < 1 || result.uint_32 > 3600)
			return invalfc(fc, "timeout must be 1..3600 seconds");
		ctx->timeout = result.uint_32;
		break;
	case Opt_attr_timeout_ms:
		if (result.uint_32 > 60000)
			return invalfc(fc, "attr_timeout_ms must be 0..60000");
		ctx->attr_timeout_ms = result.uint_32;
		break;
	case Opt_redirect:
		ctx->redirect = result.uint_32;
		break;
	}
	return 0;
}

static int csvfs_get_tree(struct fs_context *fc)
{
	struct csvfs_fs_context *ctx = fc->fs_private;
	struct csvfs_sb_info *sbi;
	struct super_block *sb;
	int ret;

	if (!ctx->volume)
		return invalfc(fc, "the volume= option is required");
	if (!fc->source)
		return invalfc(fc, "a block device is required");
	if (!csvfs_daemon_registered()) {
		errorfc(fc, "csvd is not running on this node");
		return -ENOTCONN;
	}

	sbi = kzalloc(sizeof(*sbi), GFP_KERNEL);
	if (!sbi)
		return -ENOMEM;
	INIT_LIST_HEAD(&sbi->list);
	strscpy(sbi->volume, ctx->volume, sizeof(sbi->volume));
	sbi->timeout = ctx->timeout * HZ;
	sbi->attr_timeout = msecs_to_jiffies(ctx->attr_timeout_ms);
	sbi->redirect = ctx->redirect;
	sbi->io_mode = CSVFS_IO_DIRECT;
	sbi->path_failed_until = jiffies;
	sbi->device = kstrdup(fc->source, GFP_KERNEL);
	if (!sbi->device) {
		csvfs_sbi_free(sbi);
		return -ENOMEM;
	}
	sbi->bdev = blkdev_get_by_path(fc->source, CSVFS_BDEV_MODE, NULL);
	if (IS_ERR(sbi->bdev)) {
		ret = PTR_ERR(sbi->bdev);
		sbi->bdev = NULL;
		csvfs_sbi_free(sbi);
		return invalfc(fc, "cannot open %s: %d", fc->source, ret);
	}

	fc->s_fs_info = sbi;
	sb = sget_fc(fc, NULL, set_anon_super_fc);
	if (IS_ERR(sb))
		return PTR_ERR(sb);	/* sbi is freed with fc */

	ret = csvfs_fill_super(sb, fc);
	if (ret) {
		deactivate_locked_super(sb);
		return ret;
	}
	sb->s_flags |= SB_ACTIVE;
	csvfs_stats_add(CSVFS_SB(sb));
	fc->root = dget(sb->s_root);
	return 0;
}

static void csvfs_free_fc(struct fs_context *fc)
{
	struct csvfs_fs_context *ctx = fc->fs_private;

	csvfs_sbi_free(fc->s_fs_info);
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
	ctx->timeout = CSVFS_DEFAULT_TIMEOUT;
	ctx->attr_timeout_ms = CSVFS_DEFAULT_ATTR_MS;
	fc->fs_private = ctx;
	fc->ops = &csvfs_context_ops;
	return 0;
}

struct file_system_type csvfs_fs_type = {
	.owner			= THIS_MODULE,
	.name			= "csvfs",
	.init_fs_context	= csvfs_init_fs_context,
	.parameters		= csvfs_fs_parameters,
	.kill_sb		= csvfs_kill_sb,
	.fs_flags		= FS_REQUIRES_DEV,
};

/* invalidations pushed by the daemon */

struct csvfs_inval {
	struct work_struct	work;
	u32			sb_id;
	u32			flags;
	bool			has_fh;
	bool			has_parent;
	struct csvfs_handle	fh;
	struct csvfs_handle	parent;
	char			name[CSVFS_MAX_NAME];
};

/*
 * Copy the volume name of registered superblock sb_id into buf
 * (CSVFS_MAX_VOLUME_NAME bytes); false if there is none.
 */
bool csvfs_sb_volume(u32 sb_id, char *buf)
{
	struct csvfs_sb_info *sbi;
	bool found = false;

	mutex_lock(&csvfs_sb_lock);
	list_for_each_entry(sbi, &csvfs_sbs, list) {
		if (sbi->sb_id == sb_id) {
			strscpy(buf, sbi->volume, CSVFS_MAX_VOLUME_NAME);
			found = true;
			break;
		}
	}
	mutex_unlock(&csvfs_sb_lock);
	return found;
}

/* Find a mounted volume by id and hold it active, or NULL. */
struct super_block *csvfs_sb_get(u32 sb_id)
{
	struct csvfs_sb_info *sbi;
	struct super_block *sb = NULL;

	mutex_lock(&csvfs_sb_lock);
	list_for_each_entry(sbi, &csvfs_sbs, list) {
		if (sbi->sb_id == sb_id && sbi->sb && sbi->sb->s_root &&
		    atomic_inc_not_zero(&sbi->sb->s_active)) {
			sb = sbi->sb;
			break;
		}
	}
	mutex_unlock(&csvfs_sb_lock);
	return sb;
}

static void csvfs_inval_inode(struct super_block *sb, struct csvfs_inval *iv)
{
	struct inode *inode = csvfs_ilookup(sb, &iv->fh);

	if (!inode)
		return;
	if (iv->flags & (CSVFS_INVAL_ATTR | CSVFS_INVAL_DATA))
		csvfs_attr_stale(inode);
	if (iv->flags & CSVFS_INVAL_DATA) {
		set_bit(CSVFS_I_DATA_STALE, &CSVFS_I(inode)->flags);
		if (S_ISREG(inode->i_mode))
			invalidate_inode_pages2(inode->i_mapping);
	}
	iput(inode);
}

static void csvfs_inval_entry(struct super_block *sb, struct csvfs_inval *iv)
{
	struct inode *dir = csvfs_ilookup(sb, &iv->parent);
	struct dentry *parent, *dentry;

	if (!dir)
		return;
	csvfs_attr_stale(dir);
	parent = d_find_alias(dir);
	if (parent) {
		struct qstr q = QSTR_INIT(iv->name, strlen(iv->name));

		dentry = d_hash_and_lookup(parent, &q);
		if (!IS_ERR_OR_NULL(dentry)) {
			csvfs_dentry_expire(dentry);
			if (d_really_is_positive(dentry))
				csvfs_attr_stale(d_inode(dentry));
			dput(dentry);
		}
		dput(parent);
	}
	iput(dir);
}

static void csvfs_inval_work(struct work_struct *work)
{
	struct csvfs_inval *iv = container_of(work, struct csvfs_inval, work);
	struct super_block *sb = csvfs_sb_get(iv->sb_id);

	if (sb) {
		if (iv->has_fh)
			csvfs_inval_inode(sb, iv);
		if (iv->has_parent && (iv->flags & CSVFS_INVAL_ENTRY))
			csvfs_inval_entry(sb, iv);
		deactivate_super(sb);
	}
	kfree(iv);
}

/*
 * VOLUME_STATE from the daemon: keep the epoch and the I/O mode; LEASE_MS
 * (0: none left) sets the deadline of direct I/O, counted from now. A lease
 * that ran out ends every cached layout (layout.c).
 */
void csvfs_volume_state(u32 sb_id, u64 epoch, const u32 *io_mode,
			const u32 *lease_ms)
{
	struct csvfs_sb_info *sbi;

	mutex_lock(&csvfs_sb_lock);
	list_for_each_entry(sbi, &csvfs_sbs, list) {
		if (sbi->sb_id != sb_id)
			continue;
		if (lease_ms && (!*lease_ms || !csvfs_lease_ok(sbi))) {
			if (*lease_ms)
				WRITE_ONCE(sbi->lease_lapses,
					   sbi->lease_lapses + 1);
			csvfs_layouts_end(sbi);
			/* the era is seen before the lease that follows it */
			smp_wmb();
		}
		WRITE_ONCE(sbi->epoch, epoch);
		if (lease_ms) {
			bool was_ok = csvfs_lease_ok(sbi);

			WRITE_ONCE(sbi->lease_until,
				   jiffies + msecs_to_jiffies(*lease_ms));
			WRITE_ONCE(sbi->lease_until_real, ktime_get_real_ns() +
				   (u64)*lease_ms * NSEC_PER_MSEC);
			WRITE_ONCE(sbi->lease_set, true);
			if (!*lease_ms && was_ok)
				pr_info("%s: lease given up: no direct I/O\n",
					sbi->volume);
		}
		if (io_mode && *io_mode != READ_ONCE(sbi->io_mode)) {
			pr_info("%s: I/O mode %u -> %u\n", sbi->volume,
				READ_ONCE(sbi->io_mode), *io_mode);
			WRITE_ONCE(sbi->io_mode, *io_mode);
		}
	}
	mutex_unlock(&csvfs_sb_lock);
}

/*
 * A daemon registered: it knows nothing of the layouts its predecessor's
 * coordinators handed out, and none of them will recall them.
 */
void csvfs_layouts_end_everywhere(void)
{
	struct csvfs_sb_info *sbi;

	mutex_lock(&csvfs_sb_lock);
	list_for_each_entry(sbi, &csvfs_sbs, list)
		csvfs_layouts_end(sbi);
	mutex_unlock(&csvfs_sb_lock);
}

/* Called by the INVALIDATE handler under genl_mutex: defer the work. */
void csvfs_invalidate(u32 sb_id, u32 flags, const struct csvfs_handle *fh,
		      const struct csvfs_handle *parent, const char *name)
{
	struct csvfs_inval *iv;

	iv = kzalloc(sizeof(*iv), GFP_KERNEL);
	if (!iv)
		return;
	INIT_WORK(&iv->work, csvfs_inval_work);
	iv->sb_id = sb_id;
	iv->flags = flags;
	if (fh) {
		iv->fh = *fh;
		iv->has_fh = true;
	}
	if (parent && name) {
		iv->parent = *parent;
		iv->has_parent = true;
		strscpy(iv->name, name, sizeof(iv->name));
	}
	csvfs_queue_work(&iv->work);
}
