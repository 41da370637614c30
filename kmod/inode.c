// SPDX-License-Identifier: GPL-2.0
/*
 * csvfs - inodes, dentries and the namespace operations.
 *
 * Inodes are keyed by the coordinator's file handles. Attributes and
 * dentries are cached for attr_timeout (mount option) and dropped early by
 * INVALIDATE messages; every open revalidates attributes (close-to-open).
 * Permission checks are local, on the coordinator's mode and owners.
 */
#define pr_fmt(fmt) KBUILD_MODNAME ": " fmt

#include <linux/cred.h>
#include <linux/jhash.h>
#include <linux/namei.h>
#include <linux/pagemap.h>
#include <linux/slab.h>
#include <linux/xattr.h>

#include "csvfs.h"

static const struct inode_operations csvfs_dir_iops;
static const struct inode_operations csvfs_file_iops;
static const struct inode_operations csvfs_symlink_iops;
static const struct inode_operations csvfs_special_iops;

/* A handle from the daemon: struct csvfs_fh whose len matches the size. */
int csvfs_handle_check(const struct csvfs_handle *fh)
{
	const struct csvfs_fh *h = (const struct csvfs_fh *)fh->data;

	if (fh->size <= sizeof(*h) || fh->size > CSVFS_MAX_FH)
		return -EIO;
	if (h->len != fh->size - sizeof(*h))
		return -EIO;
	return 0;
}

static void csvfs_in_fh(struct csvfs_args *args, u16 type, struct inode *inode)
{
	struct csvfs_handle *fh = &CSVFS_I(inode)->fh;

	csvfs_in(args, type, fh->size, fh->data);
}

static void csvfs_in_name(struct csvfs_args *args, u16 type,
			  const struct qstr *name)
{
	csvfs_in_str(args, type, name->name, name->len);
}

/* inode cache keyed by handle */

static unsigned long csvfs_handle_hash(const struct csvfs_handle *fh)
{
	return jhash(fh->data, fh->size, 0);
}

static int csvfs_inode_test(struct inode *inode, void *data)
{
	const struct csvfs_handle *fh = data, *mine = &CSVFS_I(inode)->fh;

	return mine->size == fh->size && !memcmp(mine->data, fh->data,
						 fh->size);
}

static int csvfs_inode_set(struct inode *inode, void *data)
{
	const struct csvfs_handle *fh = data;
	struct csvfs_handle *mine = &CSVFS_I(inode)->fh;

	mine->size = fh->size;
	memcpy(mine->data, fh->data, fh->size);
	return 0;
}

struct inode *csvfs_ilookup(struct super_block *sb,
			    const struct csvfs_handle *fh)
{
	return ilookup5(sb, csvfs_handle_hash(fh), csvfs_inode_test,
			(void *)fh);
}

static bool csvfs_attr_ok(const struct csvfs_attr *attr)
{
	switch (attr->mode & S_IFMT) {
	case S_IFREG: case S_IFDIR: case S_IFLNK: case S_IFCHR:
	case S_IFBLK: case S_IFIFO: case S_IFSOCK:
		return true;
	}
	return false;
}

static struct timespec64 csvfs_time(s64 sec, u32 nsec)
{
	return (struct timespec64) {
		.tv_sec = sec,
		.tv_nsec = min_t(u32, nsec, NSEC_PER_SEC - 1),
	};
}

/*
 * The local link count after an unlink, rmdir or rename over the inode,
 * under ci->lock: a refresh (csvfs_set_attr) may set the coordinator's
 * count at the same time, and drop_nlink() warns on a count already 0.
 */
static void csvfs_unlinked(struct inode *inode, bool dir)
{
	struct csvfs_inode *ci = CSVFS_I(inode);

	spin_lock(&ci->lock);
	if (dir)
		clear_nlink(inode);
	else if (inode->i_nlink)
		drop_nlink(inode);
	spin_unlock(&ci->lock);
}

/* Take the coordinator's attributes; the file type never changes. */
void csvfs_set_attr(struct inode *inode, const struct csvfs_attr *attr)
{
	struct csvfs_inode *ci = CSVFS_I(inode);
	unsigned long timeout = CSVFS_SB(inode->i_sb)->attr_timeout;

	spin_lock(&ci->lock);
	inode->i_ino = attr->ino;
	inode->i_mode = (inode->i_mode & S_IFMT) | (attr->mode & S_IALLUGO);
	/*
	 * S_NOSEC spares every write a security.capability lookup (a round
	 * trip under the inode lock, which a hung daemon would stall); it
	 * holds only while the coordinator says the file has no capability
	 * xattr, so a setcap on another node is seen at the next refresh.
	 */
	inode->i_flags &= ~S_NOSEC;
	if (attr->flags & CSVFS_ATTR_NO_CAPS)
		inode_has_no_xattr(inode);	/* S_NOSEC unless set-id */
	set_nlink(inode, attr->nlink);
	inode->i_uid = make_kuid(&init_user_ns, attr->uid);
	inode->i_gid = make_kgid(&init_user_ns, attr->gid);
	inode->i_blocks = attr->blocks;
	inode->i_generation = attr->generation;
	inode->i_atime = csvfs_time(attr->atime, attr->atime_nsec);
	inode->i_mtime = csvfs_time(attr->mtime, attr->mtime_nsec);
	inode->i_ctime = csvfs_time(attr->ctime, attr->ctime_nsec);
	i_size_write(inode, min_t(u64, attr->size, MAX_LFS_FILESIZE));
	ci->attr_expire = jiffies + timeout;
	clear_bit(CSVFS_I_ATTR_STALE, &ci->flags);
	spin_unlock(&ci->lock);
}

static void csvfs_init_inode(struct inode *inode, const struct csvfs_attr *attr)
{
	inode->i_mode = attr->mode & S_IFMT;
	switch (inode->i_mode) {
	case S_IFREG:
		inode->i_op = &csvfs_file_iops;
		inode->i_fop = &csvfs_file_fops;
		inode->i_data.a_ops = &csvfs_aops;
		break;
	case S_IFDIR:
		inode->i_op = &csvfs_dir_iops;
		inode->i_fop = &csvfs_dir_fops;
		break;
	case S_IFLNK:
		inode->i_op = &csvfs_symlink_iops;
		break;
	default:
		inode->i_op = &csvfs_special_iops;
		init_special_inode(inode, inode->i_mode,
				   new_decode_dev(attr->rdev));
		break;
	}
}

struct inode *csvfs_iget(struct super_block *sb, const struct csvfs_handle *fh,
			 const struct csvfs_attr *attr)
{
	struct inode *inode;

	if (!csvfs_attr_ok(attr))
		return ERR_PTR(-EIO);
	inode = iget5_locked(sb, csvfs_handle_hash(fh), csvfs_inode_test,
			     csvfs_inode_set, (void *)fh);
	if (!inode)
		return ERR_PTR(-ENOMEM);
	if (inode->i_state & I_NEW) {
		csvfs_init_inode(inode, attr);
		csvfs_set_attr(inode, attr);
		unlock_new_inode(inode);
		return inode;
	}
	if ((inode->i_mode ^ attr->mode) & S_IFMT) {
		csvfs_warn(sb, "file handle changed type");
		iput(inode);
		return ERR_PTR(-EIO);
	}
	csvfs_set_attr(inode, attr);
	return inode;
}

void csvfs_attr_stale(struct inode *inode)
{
	set_bit(CSVFS_I_ATTR_STALE, &CSVFS_I(inode)->flags);
}

static int csvfs_getattr_req(struct inode *inode, struct csvfs_attr *attr)
{
	struct csvfs_args args = { .cmd = CSVFS_CMD_GETATTR };

	csvfs_in_fh(&args, CSVFS_A_FH, inode);
	csvfs_out(&args, CSVFS_A_ATTR, 0, sizeof(*attr), attr);
	return csvfs_sb_request(inode->i_sb, &args);
}

/* Refetch attributes if stale, expired or forced. */
int csvfs_refresh(struct inode *inode, bool force)
{
	struct csvfs_inode *ci = CSVFS_I(inode);
	struct csvfs_attr attr;
	int ret;

	if (!force && !test_bit(CSVFS_I_ATTR_STALE, &ci->flags) &&
	    time_before(jiffies, READ_ONCE(ci->attr_expire)))
		return 0;
	ret = csvfs_getattr_req(inode, &attr);
	if (ret)
		return ret;
	if (!csvfs_attr_ok(&attr) || ((inode->i_mode ^ attr.mode) & S_IFMT))
		return -EIO;
	csvfs_set_attr(inode, &attr);
	return 0;
}

/* dentries */

static void csvfs_dentry_settime(struct dentry *dentry)
{
	dentry->d_time = jiffies + CSVFS_SB(dentry->d_sb)->attr_timeout;
}

void csvfs_dentry_expire(struct dentry *dentry)
{
	dentry->d_time = jiffies - 1;
}

static int csvfs_lookup_req(struct inode *dir, const struct qstr *name,
			    struct csvfs_handle *fh, struct csvfs_attr *attr)
{
	struct csvfs_args args = { .cmd = CSVFS_CMD_LOOKUP };

	if (name->len > NAME_MAX)
		return -ENAMETOOLONG;
	csvfs_in_fh(&args, CSVFS_A_PARENT_FH, dir);
	csvfs_in_name(&args, CSVFS_A_NAME, name);
	csvfs_out(&args, CSVFS_A_FH, CSVFS_OUT_HANDLE, 0, fh);
	csvfs_out(&args, CSVFS_A_ATTR, 0, sizeof(*attr), attr);
	return csvfs_sb_request(dir->i_sb, &args);
}

static int csvfs_revalidate_slow(struct dentry *dentry)
{
	struct inode *inode = d_inode(dentry);
	struct csvfs_handle *fh;
	struct csvfs_attr attr;
	struct dentry *parent;
	int ret;

	fh = kmalloc(sizeof(*fh), GFP_KERNEL);
	if (!fh)
		return -ENOMEM;
	parent = dget_parent(dentry);
	ret = csvfs_lookup_req(d_inode(parent), &dentry->d_name, fh, &attr);
	dput(parent);
	if (ret == -ENOENT) {
		ret = inode ? 0 : 1;	/* still negative: still valid */
	} else if (!ret) {
		ret = inode && csvfs_inode_test(inode, fh) &&
		      !((inode->i_mode ^ attr.mode) & S_IFMT);
		if (ret)
			csvfs_set_attr(inode, &attr);
	}
	if (ret == 1)
		csvfs_dentry_settime(dentry);
	kfree(fh);
	return ret;
}

static int csvfs_d_revalidate(struct dentry *dentry, unsigned int flags)
{
	if (IS_ROOT(dentry) || time_before(jiffies, READ_ONCE(dentry->d_time)))
		return 1;
	if (flags & LOOKUP_RCU)
		return -ECHILD;
	return csvfs_revalidate_slow(dentry);
}

const struct dentry_operations csvfs_dentry_ops = {
	.d_revalidate	= csvfs_d_revalidate,
};

static struct dentry *csvfs_lookup(struct inode *dir, struct dentry *dentry,
				   unsigned int flags)
{
	struct inode *inode = NULL;
	struct csvfs_handle *fh;
	struct csvfs_attr attr;
	struct dentry *res;
	int ret;

	fh = kmalloc(sizeof(*fh), GFP_KERNEL);
	if (!fh)
		return ERR_PTR(-ENOMEM);
	ret = csvfs_lookup_req(dir, &dentry->d_name, fh, &attr);
	if (!ret)
		inode = csvfs_iget(dir->i_sb, fh, &attr);
	else if (ret != -ENOENT)
		inode = ERR_PTR(ret);
	kfree(fh);
	if (IS_ERR(inode))
		return ERR_CAST(inode);
	csvfs_dentry_settime(dentry);
	res = d_splice_alias(inode, dentry);
	if (!IS_ERR_OR_NULL(res))
		csvfs_dentry_settime(res);
	return res;
}

/* An operation whose outcome is unknown (timeout, signal): forget state. */
static int csvfs_ns_done(struct inode *dir, struct dentry *dentry, int ret)
{
	csvfs_attr_stale(dir);
	if (ret == -ETIMEDOUT || ret == -EINTR)
		csvfs_dentry_expire(dentry);
	return ret;
}

/*
 * New objects belong to the caller, as on a local filesystem: the create
 * requests carry UID/GID; a daemon that ignored them is corrected here.
 */
static int csvfs_set_owner(struct inode *dir, const struct csvfs_handle *fh,
			   struct csvfs_attr *attr)
{
	kuid_t uid = current_fsuid();
	kgid_t gid = dir->i_mode & S_ISGID ? dir->i_gid : current_fsgid();
	struct csvfs_args args = { .cmd = CSVFS_CMD_SETATTR };
	struct csvfs_setattr sa = {};

	if (attr->uid != from_kuid(&init_user_ns, uid)) {
		sa.valid |= CSVFS_SETATTR_UID;
		sa.uid = from_kuid(&init_user_ns, uid);
	}
	if (attr->gid != from_kgid(&init_user_ns, gid)) {
		sa.valid |= CSVFS_SETATTR_GID;
		sa.gid = from_kgid(&init_user_ns, gid);
	}
	if (!sa.valid)
		return 0;
	csvfs_in(&args, CSVFS_A_FH, fh->size, fh->data);
	csvfs_in(&args, CSVFS_A_SETATTR, sizeof(sa), &sa);
	csvfs_out(&args, CSVFS_A_ATTR, 0, sizeof(*attr), attr);
	return csvfs_sb_request(dir->i_sb, &args);
}

/*
 * Shared tail of CREATE, MKNOD, MKDIR, SYMLINK: args carry the command's
 * own attributes; add the common ones, send, make the inode.
 */
static int csvfs_make(struct inode *dir, struct dentry *dentry,
		      struct csvfs_args *args, u64 *open_id)
{
	u32 uid = from_kuid(&init_user_ns, current_fsuid());
	u32 gid = from_kgid(&init_user_ns, current_fsgid());
	struct csvfs_handle *fh;
	struct csvfs_attr attr;
	struct inode *inode;
	int ret;

	if (dentry->d_name.len > NAME_MAX)
		return -ENAMETOOLONG;
	fh = kmalloc(sizeof(*fh), GFP_KERNEL);
	if (!fh)
		return -ENOMEM;
	csvfs_in_fh(args, CSVFS_A_PARENT_FH, dir);
	csvfs_in_name(args, CSVFS_A_NAME, &dentry->d_name);
	csvfs_in(args, CSVFS_A_UID, sizeof(uid), &uid);
	csvfs_in(args, CSVFS_A_GID, sizeof(gid), &gid);
	csvfs_out(args, CSVFS_A_FH, CSVFS_OUT_HANDLE, 0, fh);
	csvfs_out(args, CSVFS_A_ATTR, 0, sizeof(attr), &attr);
	if (open_id)
		csvfs_out(args, CSVFS_A_OPEN_ID, 0, sizeof(*open_id), open_id);
	ret = csvfs_sb_request(dir->i_sb, args);
	if (ret)
		goto out;
	ret = csvfs_set_owner(dir, fh, &attr);
	if (!ret) {
		inode = csvfs_iget(dir->i_sb, fh, &attr);
		ret = PTR_ERR_OR_ZERO(inode);
	}
	if (ret) {
		if (open_id)
			csvfs_release_req_fh(dir->i_sb, fh, *open_id);
		goto out;
	}
	d_instantiate(dentry, inode);
	csvfs_dentry_settime(dentry);
out:
	kfree(fh);
	return csvfs_ns_done(dir, dentry, ret);
}

static int csvfs_mknod(struct user_namespace *ns, struct inode *dir,
		       struct dentry *dentry, umode_t mode, dev_t rdev)
{
	struct csvfs_args args = { .cmd = CSVFS_CMD_MKNOD };
	u32 m = mode, dev = new_encode_dev(rdev);

	csvfs_in(&args, CSVFS_A_MODE, sizeof(m), &m);
	csvfs_in(&args, CSVFS_A_RDEV, sizeof(dev), &dev);
	return csvfs_make(dir, dentry, &args, NULL);
}

static int csvfs_create(struct user_namespace *ns, struct inode *dir,
			struct dentry *dentry, umode_t mode, bool excl)
{
	return csvfs_mknod(ns, dir, dentry, (mode & ~S_IFMT) | S_IFREG, 0);
}

static int csvfs_mkdir(struct user_namespace *ns, struct inode *dir,
		       struct dentry *dentry, umode_t mode)
{
	struct csvfs_args args = { .cmd = CSVFS_CMD_MKDIR };
	u32 m = mode | S_IFDIR;

	csvfs_in(&args, CSVFS_A_MODE, sizeof(m), &m);
	return csvfs_make(dir, dentry, &args, NULL);
}

static int csvfs_symlink(struct user_namespace *ns, struct inode *dir,
			 struct dentry *dentry, const char *target)
{
	struct csvfs_args args = { .cmd = CSVFS_CMD_SYMLINK };
	size_t len = strlen(target);

	if (len >= CSVFS_MAX_PATH)
		return -ENAMETOOLONG;
	csvfs_in_str(&args, CSVFS_A_TARGET, target, len);
	return csvfs_make(dir, dentry, &args, NULL);
}

/* CREATE with the open: the file is opened by the same request. */
static int csvfs_create_open(struct inode *dir, struct dentry *dentry,
			     struct file *file, unsigned int flags,
			     umode_t mode)
{
	struct csvfs_args args = { .cmd = CSVFS_CMD_CREATE };
	u32 m = (mode & ~S_IFMT) | S_IFREG;
	u32 f = (flags & (O_ACCMODE | O_SYNC | O_EXCL)) | O_CREAT;
	u64 open_id;
	int ret;

	csvfs_in(&args, CSVFS_A_MODE, sizeof(m), &m);
	csvfs_in(&args, CSVFS_A_FLAGS, sizeof(f), &f);
	ret = csvfs_make(dir, dentry, &args, &open_id);
	if (ret)
		return ret;
	ret = csvfs_file_attach(d_inode(dentry), file, open_id);
	if (ret) {
		csvfs_release_req(d_inode(dentry), open_id);
		return ret;
	}
	file->f_mode |= FMODE_CREATED;
	ret = finish_open(file, dentry, generic_file_open);
	if (ret)
		csvfs_file_detach(d_inode(dentry), file);
	return ret;
}

static int csvfs_atomic_open(struct inode *dir, struct dentry *dentry,
			     struct file *file, unsigned int flags,
			     umode_t mode)
{
	struct dentry *res = NULL;
	int ret;

	if (d_in_lookup(dentry)) {
		res = csvfs_lookup(dir, dentry, 0);
		if (IS_ERR(res))
			return PTR_ERR(res);
		if (res)
			dentry = res;
	}
	if (!(flags & O_CREAT) || d_really_is_positive(dentry))
		return finish_no_open(file, res);
	ret = csvfs_create_open(dir, dentry, file, flags, mode);
	dput(res);
	return ret;
}

static int csvfs_link(struct dentry *old, struct inode *dir,
		      struct dentry *dentry)
{
	struct csvfs_args args = { .cmd = CSVFS_CMD_LINK };
	struct inode *inode = d_inode(old);
	struct csvfs_attr attr;
	int ret;

	csvfs_in_fh(&args, CSVFS_A_FH, inode);
	csvfs_in_fh(&args, CSVFS_A_NEW_PARENT_FH, dir);
	csvfs_in_name(&args, CSVFS_A_NEW_NAME, &dentry->d_name);
	csvfs_out(&args, CSVFS_A_ATTR, CSVFS_OUT_OPTIONAL, sizeof(attr),
		  &attr);
	ret = csvfs_sb_request(dir->i_sb, &args);
	if (!ret) {
		if (args.out[0].present &&
		    !((inode->i_mode ^ attr.mode) & S_IFMT))
			csvfs_set_attr(inode, &attr);
		else
			csvfs_attr_stale(inode);
		ihold(inode);
		d_instantiate(dentry, inode);
		csvfs_dentry_settime(dentry);
	}
	return csvfs_ns_done(dir, dentry, ret);
}

static int csvfs_remove(struct inode *dir, struct dentry *dentry, u8 cmd)
{
	struct csvfs_args args = { .cmd = cmd };
	struct inode *inode = d_inode(dentry);
	int ret;

	csvfs_in_fh(&args, CSVFS_A_PARENT_FH, dir);
	csvfs_in_name(&args, CSVFS_A_NAME, &dentry->d_name);
	ret = csvfs_sb_request(dir->i_sb, &args);
	if (!ret) {
		csvfs_attr_stale(inode);
		csvfs_unlinked(inode, cmd == CSVFS_CMD_RMDIR);
	} else if (ret == -ENOENT) {
		csvfs_dentry_expire(dentry);	/* gone elsewhere */
	}
	return csvfs_ns_done(dir, dentry, ret);
}

static int csvfs_unlink(struct inode *dir, struct dentry *dentry)
{
	return csvfs_remove(dir, dentry, CSVFS_CMD_UNLINK);
}

static int csvfs_rmdir(struct inode *dir, struct dentry *dentry)
{
	return csvfs_remove(dir, dentry, CSVFS_CMD_RMDIR);
}

static int csvfs_rename(struct user_namespace *ns, struct inode *old_dir,
			struct dentry *old, struct inode *new_dir,
			struct dentry *new, unsigned int flags)
{
	struct csvfs_args args = { .cmd = CSVFS_CMD_RENAME };
	u32 f = flags;
	int ret;

	if (flags & ~(RENAME_NOREPLACE | RENAME_EXCHANGE))
		return -EINVAL;
	csvfs_in_fh(&args, CSVFS_A_PARENT_FH, old_dir);
	csvfs_in_name(&args, CSVFS_A_NAME, &old->d_name);
	csvfs_in_fh(&args, CSVFS_A_NEW_PARENT_FH, new_dir);
	csvfs_in_name(&args, CSVFS_A_NEW_NAME, &new->d_name);
	csvfs_in(&args, CSVFS_A_FLAGS, sizeof(f), &f);
	ret = csvfs_sb_request(old_dir->i_sb, &args);
	csvfs_attr_stale(old_dir);
	csvfs_attr_stale(new_dir);
	if (!ret) {
		csvfs_attr_stale(d_inode(old));
		if (d_really_is_positive(new)) {
			struct inode *target = d_inode(new);

			csvfs_attr_stale(target);
			if (!(flags & RENAME_EXCHANGE))
				csvfs_unlinked(target, S_ISDIR(target->i_mode));
		}
	} else if (ret == -ETIMEDOUT || ret == -EINTR) {
		csvfs_dentry_expire(old);
		csvfs_dentry_expire(new);
	}
	return ret;
}

/* attributes */

int csvfs_setattr_req(struct inode *inode, const struct csvfs_setattr *sa,
		      struct file *file)
{
	struct csvfs_args args = { .cmd = CSVFS_CMD_SETATTR };
	struct csvfs_file *cf = file ? file->private_data : NULL;
	struct csvfs_attr attr;
	int ret;

	csvfs_in_fh(&args, CSVFS_A_FH, inode);
	csvfs_in(&args, CSVFS_A_SETATTR, sizeof(*sa), sa);
	if (cf)
		csvfs_in(&args, CSVFS_A_OPEN_ID, sizeof(cf->open_id),
			 &cf->open_id);
	csvfs_out(&args, CSVFS_A_ATTR, 0, sizeof(attr), &attr);
	ret = csvfs_sb_request(inode->i_sb, &args);
	if (ret) {
		csvfs_attr_stale(inode);
		return ret;
	}
	if ((inode->i_mode ^ attr.mode) & S_IFMT)
		return -EIO;
	csvfs_set_attr(inode, &attr);
	return 0;
}

static void csvfs_iattr_to_setattr(const struct iattr *ia,
				   struct csvfs_setattr *sa)
{
	unsigned int v = ia->ia_valid;

	if (v & ATTR_MODE) {
		sa->valid |= CSVFS_SETATTR_MODE;
		sa->mode = ia->ia_mode & S_IALLUGO;
	}
	if (v & ATTR_UID) {
		sa->valid |= CSVFS_SETATTR_UID;
		sa->uid = from_kuid(&init_user_ns, ia->ia_uid);
	}
	if (v & ATTR_GID) {
		sa->valid |= CSVFS_SETATTR_GID;
		sa->gid = from_kgid(&init_user_ns, ia->ia_gid);
	}
	if (v & ATTR_SIZE) {
		sa->valid |= CSVFS_SETATTR_SIZE;
		sa->size = ia->ia_size;
	}
	if ((v & (ATTR_ATIME | ATTR_ATIME_SET)) == ATTR_ATIME) {
		sa->valid |= CSVFS_SETATTR_ATIME_NOW;
	} else if (v & ATTR_ATIME) {
		sa->valid |= CSVFS_SETATTR_ATIME;
		sa->atime = ia->ia_atime.tv_sec;
		sa->atime_nsec = ia->ia_atime.tv_nsec;
	}
	if ((v & (ATTR_MTIME | ATTR_MTIME_SET)) == ATTR_MTIME) {
		sa->valid |= CSVFS_SETATTR_MTIME_NOW;
	} else if (v & ATTR_MTIME) {
		sa->valid |= CSVFS_SETATTR_MTIME;
		sa->mtime = ia->ia_mtime.tv_sec;
		sa->mtime_nsec = ia->ia_mtime.tv_nsec;
	}
}

static int csvfs_setattr(struct user_namespace *ns, struct dentry *dentry,
			 struct iattr *ia)
{
	struct inode *inode = d_inode(dentry);
	struct csvfs_setattr sa = {};
	struct file *file = ia->ia_valid & ATTR_FILE ? ia->ia_file : NULL;
	int ret;

	ret = setattr_prepare(&init_user_ns, dentry, ia);
	if (ret)
		return ret;
	csvfs_iattr_to_setattr(ia, &sa);
	if (!sa.valid)
		return 0;
	if ((sa.valid & CSVFS_SETATTR_SIZE) && S_ISREG(inode->i_mode)) {
		inode_dio_wait(inode);
		ret = filemap_write_and_wait(inode->i_mapping);
		if (ret)
			return ret;
		/* the coordinator frees the blocks past the new size */
		csvfs_layout_forget(inode, round_down(sa.size, 512), 0);
	}
	ret = csvfs_setattr_req(inode, &sa, file);
	if (!ret && (sa.valid & CSVFS_SETATTR_SIZE))
		truncate_pagecache(inode, i_size_read(inode));
	return ret;
}

static int csvfs_getattr(struct user_namespace *ns, const struct path *path,
			 struct kstat *stat, u32 request_mask,
			 unsigned int flags)
{
	struct inode *inode = d_inode(path->dentry);
	unsigned int sync = flags & AT_STATX_SYNC_TYPE;
	int ret = 0;

	if (sync != AT_STATX_DONT_SYNC)
		ret = csvfs_refresh(inode, sync == AT_STATX_FORCE_SYNC);
	if (ret)
		return ret;
	generic_fillattr(&init_user_ns, inode, stat);
	return 0;
}

/* symlinks */

static const char *csvfs_get_link(struct dentry *dentry, struct inode *inode,
				  struct delayed_call *done)
{
	struct csvfs_args args = { .cmd = CSVFS_CMD_READLINK };
	struct csvfs_out_arg *out;
	char *buf;
	int ret;

	if (!dentry)
		return ERR_PTR(-ECHILD);
	buf = kmalloc(CSVFS_MAX_PATH, GFP_KERNEL);
	if (!buf)
		return ERR_PTR(-ENOMEM);
	csvfs_in_fh(&args, CSVFS_A_FH, inode);
	out = csvfs_out(&args, CSVFS_A_TARGET, CSVFS_OUT_VARLEN,
			CSVFS_MAX_PATH, buf);
	ret = csvfs_sb_request(inode->i_sb, &args);
	/* the policy guarantees a NUL; an empty target is not a link */
	if (!ret && (out->len < 2 || strnlen(buf, out->len) == 0))
		ret = -EIO;
	if (ret) {
		kfree(buf);
		return ERR_PTR(ret);
	}
	set_delayed_call(done, kfree_link, buf);
	return buf;
}

/* extended attributes, forwarded whole: the handler takes every name */

static int csvfs_xattr_result(struct csvfs_out_arg *value, u32 size_reply,
			      bool has_size, size_t size)
{
	if (value->present)
		return value->len;
	if (!has_size)
		return -EIO;
	if (size_reply > CSVFS_MAX_XATTR_VALUE)
		return -E2BIG;
	if (size && size_reply > size)
		return -ERANGE;
	if (size)
		return -EIO;
	return size_reply;
}

static int csvfs_xattr_get(const struct xattr_handler *handler,
			   struct dentry *dentry, struct inode *inode,
			   const char *name, void *buffer, size_t size)
{
	struct csvfs_args args = { .cmd = CSVFS_CMD_GETXATTR };
	struct csvfs_out_arg *value, *sz;
	u32 want = min_t(size_t, size, CSVFS_MAX_XATTR_VALUE), got = 0;
	int ret;

	csvfs_in_fh(&args, CSVFS_A_FH, inode);
	csvfs_in_str(&args, CSVFS_A_XATTR_NAME, name, strlen(name));
	csvfs_in(&args, CSVFS_A_SIZE, sizeof(want), &want);
	value = csvfs_out(&args, CSVFS_A_XATTR_VALUE,
			  CSVFS_OUT_OPTIONAL | CSVFS_OUT_VARLEN, want, buffer);
	sz = csvfs_out(&args, CSVFS_A_SIZE, CSVFS_OUT_OPTIONAL, sizeof(got),
		       &got);
	ret = csvfs_sb_request(inode->i_sb, &args);
	if (ret)
		return ret;
	return csvfs_xattr_result(value, got, sz->present, size);
}

static int csvfs_xattr_set(const struct xattr_handler *handler,
			   struct user_namespace *ns, struct dentry *dentry,
			   struct inode *inode, const char *name,
			   const void *value, size_t size, int flags)
{
	struct csvfs_args args = { .cmd = CSVFS_CMD_SETXATTR };
	u32 f = flags;
	int ret;

	if (size > CSVFS_MAX_XATTR_VALUE)
		return -E2BIG;
	csvfs_in_fh(&args, CSVFS_A_FH, inode);
	csvfs_in_str(&args, CSVFS_A_XATTR_NAME, name, strlen(name));
	if (value) {
		csvfs_in(&args, CSVFS_A_XATTR_VALUE, size, value);
		csvfs_in(&args, CSVFS_A_FLAGS, sizeof(f), &f);
	} else {
		args.cmd = CSVFS_CMD_REMOVEXATTR;
	}
	ret = csvfs_sb_request(inode->i_sb, &args);
	csvfs_attr_stale(inode);	/* ctime */
	return ret;
}

static ssize_t csvfs_listxattr(struct dentry *dentry, char *list, size_t size)
{
	struct inode *inode = d_inode(dentry);
	struct csvfs_args args = { .cmd = CSVFS_CMD_LISTXATTR };
	struct csvfs_out_arg *value, *sz;
	u32 want = min_t(size_t, size, CSVFS_MAX_XATTR_LIST), got = 0;
	int ret;

	csvfs_in_fh(&args, CSVFS_A_FH, inode);
	csvfs_in(&args, CSVFS_A_SIZE, sizeof(want), &want);
	value = csvfs_out(&args, CSVFS_A_XATTR_VALUE,
			  CSVFS_OUT_OPTIONAL | CSVFS_OUT_VARLEN, want, list);
	sz = csvfs_out(&args, CSVFS_A_SIZE, CSVFS_OUT_OPTIONAL, sizeof(got),
		       &got);
	ret = csvfs_sb_request(inode->i_sb, &args);
	if (ret)
		return ret;
	/* a list is NUL-terminated names */
	if (value->present && value->len && list[value->len - 1])
		return -EIO;
	return csvfs_xattr_result(value, got, sz->present, size);
}

static const struct xattr_handler csvfs_xattr_handler = {
	.prefix	= "",
	.get	= csvfs_xattr_get,
	.set	= csvfs_xattr_set,
};

const struct xattr_handler *csvfs_xattr_handlers[] = {
	&csvfs_xattr_handler,
	NULL
};

static const struct inode_operations csvfs_dir_iops = {
	.lookup		= csvfs_lookup,
	.atomic_open	= csvfs_atomic_open,
	.create		= csvfs_create,
	.mknod		= csvfs_mknod,
	.mkdir		= csvfs_mkdir,
	.symlink	= csvfs_symlink,
	.link		= csvfs_link,
	.unlink		= csvfs_unlink,
	.rmdir		= csvfs_rmdir,
	.rename		= csvfs_rename,
	.getattr	= csvfs_getattr,
	.setattr	= csvfs_setattr,
	.listxattr	= csvfs_listxattr,
};

static const struct inode_operations csvfs_file_iops = {
	.getattr	= csvfs_getattr,
	.setattr	= csvfs_setattr,
	.listxattr	= csvfs_listxattr,
};

static const struct inode_operations csvfs_symlink_iops = {
	.get_link	= csvfs_get_link,
	.getattr	= csvfs_getattr,
	.setattr	= csvfs_setattr,
	.listxattr	= csvfs_listxattr,
};

static const struct inode_operations csvfs_special_iops = {
	.getattr	= csvfs_getattr,
	.setattr	= csvfs_setattr,
	.listxattr	= csvfs_listxattr,
};
