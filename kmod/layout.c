// SPDX-License-Identifier: GPL-2.0
/*
 * csvfs - the layout cache: where a file's bytes are on the shared device.
 *
 * Each inode keeps the extents the coordinator handed out (LAYOUT_GET) in
 * an rbtree keyed by file offset, under csvfs_inode.layout_lock. It is a
 * plain data structure after fs/nfs/blocklayout/extent_tree.c: functions
 * with a "__" prefix expect the caller to hold the lock; lookups copy the
 * extent out, so the I/O path holds neither the lock nor a pointer into the
 * tree. Units: file offsets, lengths and device offsets are bytes, each a
 * multiple of 512.
 *
 * A reply is decoded into a temporary array, every extent is verified, and
 * only then is it inserted - and only if no recall or local invalidation
 * happened since the request was sent (layout_gen), so an answer that
 * crossed a recall on the wire can never resurrect recalled extents.
 *
 * Layouts also end all at once (layout_era): when a new coordinator recalls
 * them all before it serves (it does not know which ones the old one
 * handed out, and would free their blocks without a recall), when a new
 * daemon registers, and when the node's lease ran out, since recalls sent
 * meanwhile were given up on. Until a new coordinator's recall, layouts
 * stay usable: direct I/O goes on while the volume is paused for a move or
 * a failover. Each inode drops its extents the first time it sees a new
 * era.
 */
#define pr_fmt(fmt) KBUILD_MODNAME ": " fmt

#include <linux/blkdev.h>
#include <linux/rbtree.h>
#include <linux/slab.h>

#include "csvfs.h"

/* How much of a file one LAYOUT_GET asks for, at least. */
#define CSVFS_LAYOUT_MIN_GET	(64ULL << 20)

struct csvfs_lext {
	struct rb_node		node;	/* in csvfs_inode.extents */
	struct list_head	list;	/* on a private list, outside the tree */
	struct csvfs_extent	ext;
};

static struct kmem_cache *csvfs_lext_cachep;

static u64 csvfs_ext_end(const struct csvfs_extent *e)
{
	return e->file_offset + e->length;
}

static void csvfs_commit_work(struct work_struct *work);

void csvfs_layout_init(struct csvfs_inode *ci)
{
	ci->extents = RB_ROOT;
	ci->layout_gen = 0;
	INIT_DELAYED_WORK(&ci->commit_work, csvfs_commit_work);
}

/* The first extent that ends after pos, or NULL. */
static struct csvfs_lext *__csvfs_layout_find(struct csvfs_inode *ci, u64 pos)
{
	struct rb_node *n = ci->extents.rb_node;
	struct csvfs_lext *found = NULL, *le;

	while (n) {
		le = rb_entry(n, struct csvfs_lext, node);
		if (pos < csvfs_ext_end(&le->ext)) {
			found = le;
			if (pos >= le->ext.file_offset)
				break;
			n = n->rb_left;
		} else {
			n = n->rb_right;
		}
	}
	return found;
}

static void __csvfs_layout_insert(struct csvfs_inode *ci,
				  struct csvfs_lext *new)
{
	struct rb_node **p = &ci->extents.rb_node, *parent = NULL;
	struct csvfs_lext *le;

	while (*p) {
		parent = *p;
		le = rb_entry(parent, struct csvfs_lext, node);
		if (new->ext.file_offset < le->ext.file_offset)
			p = &(*p)->rb_left;
		else
			p = &(*p)->rb_right;
	}
	rb_link_node(&new->node, parent, p);
	rb_insert_color(&new->node, &ci->extents);
}

/* Drop every extent that overlaps [start, end); they go on the list. */
static void __csvfs_layout_remove(struct csvfs_inode *ci, u64 start, u64 end,
				  struct list_head *freed)
{
	struct csvfs_lext *le = __csvfs_layout_find(ci, start);
	struct rb_node *next;

	while (le && le->ext.file_offset < end) {
		next = rb_next(&le->node);
		rb_erase(&le->node, &ci->extents);
		list_add(&le->list, freed);
		le = next ? rb_entry(next, struct csvfs_lext, node) : NULL;
	}
}

static void csvfs_lext_free_list(struct list_head *freed)
{
	struct csvfs_lext *le, *tmp;

	list_for_each_entry_safe(le, tmp, freed, list)
		kmem_cache_free(csvfs_lext_cachep, le);
}

/* Drop every extent cached before the volume's current layout era. */
static void __csvfs_layout_era(struct inode *inode, struct list_head *freed)
{
	struct csvfs_inode *ci = CSVFS_I(inode);
	unsigned long era;

	/* pairs with csvfs_volume_state(): a renewed lease implies its era */
	smp_rmb();
	era = atomic_long_read(&CSVFS_SB(inode->i_sb)->layout_era);
	if (likely(ci->layout_era == era))
		return;
	__csvfs_layout_remove(ci, 0, U64_MAX, freed);
	ci->layout_era = era;
	ci->layout_gen++;
}

/* Copy out the cached extent that holds pos; false on a miss. */
bool csvfs_layout_lookup(struct inode *inode, u64 pos,
			 struct csvfs_extent *out)
{
	struct csvfs_inode *ci = CSVFS_I(inode);
	struct csvfs_lext *le;
	LIST_HEAD(freed);
	bool hit = false;

	spin_lock(&ci->layout_lock);
	__csvfs_layout_era(inode, &freed);
	le = __csvfs_layout_find(ci, pos);
	if (le && le->ext.file_offset <= pos) {
		*out = le->ext;
		hit = true;
	}
	spin_unlock(&ci->layout_lock);
	csvfs_lext_free_list(&freed);
	return hit;
}

/*
 * Forget [start, start + len) (len 0: to the end of the file). Extents that
 * overlap it are dropped whole; the next I/O asks again.
 */
void csvfs_layout_forget(struct inode *inode, u64 start, u64 len)
{
	struct csvfs_inode *ci = CSVFS_I(inode);
	u64 end = len && start + len > start ? start + len : U64_MAX;
	LIST_HEAD(freed);

	spin_lock(&ci->layout_lock);
	ci->layout_gen++;
	__csvfs_layout_remove(ci, start, end, &freed);
	spin_unlock(&ci->layout_lock);
	csvfs_lext_free_list(&freed);
}

void csvfs_layout_destroy(struct inode *inode)
{
	/* the work uses the inode without a reference: gone before it is */
	cancel_delayed_work_sync(&CSVFS_I(inode)->commit_work);
	csvfs_layout_forget(inode, 0, 0);
}

/* Verify a decoded reply: sorted, disjoint, in bounds, known states. */
static int csvfs_layout_verify(struct inode *inode,
			       const struct csvfs_extent *ext, int n, u64 pos)
{
	u64 dev_size = bdev_nr_bytes(CSVFS_SB(inode->i_sb)->bdev);
	u64 prev_end = 0;
	int i;

	if (n <= 0 || ext[0].file_offset > pos)
		return -EIO;
	for (i = 0; i < n; i++) {
		const struct csvfs_extent *e = &ext[i];

		if (!e->length || ((e->file_offset | e->length) & 511) ||
		    e->state >= __CSVFS_EXT_MAX ||
		    e->file_offset + e->length < e->file_offset ||
		    (i && e->file_offset < prev_end))
			return -EIO;
		if (e->state == CSVFS_EXT_WRITTEN ||
		    e->state == CSVFS_EXT_UNWRITTEN) {
			if ((e->dev_offset & 511) || e->dev_offset > dev_size ||
			    e->length > dev_size - e->dev_offset)
				return -EIO;
		}
		prev_end = csvfs_ext_end(e);
	}
	return 0;
}

/* Insert a verified reply unless the layout changed since gen. */
static int csvfs_layout_insert(struct inode *inode,
			       const struct csvfs_extent *ext, int n,
			       unsigned long gen)
{
	struct csvfs_inode *ci = CSVFS_I(inode);
	struct csvfs_lext *le, *tmp;
	LIST_HEAD(fresh);
	LIST_HEAD(freed);
	int i, ret = 0;

	/* DELALLOC means "no direct mapping here": not cached, asked again */
	for (i = 0; i < n; i++) {
		if (ext[i].state == CSVFS_EXT_DELALLOC)
			continue;
		le = kmem_cache_alloc(csvfs_lext_cachep, GFP_NOFS);
		if (!le) {
			ret = -ENOMEM;
			goto out_free;
		}
		le->ext = ext[i];
		list_add_tail(&le->list, &fresh);
	}

	spin_lock(&ci->layout_lock);
	__csvfs_layout_era(inode, &freed);
	if (ci->layout_gen != gen) {
		spin_unlock(&ci->layout_lock);
		ret = -EAGAIN;
		goto out_free;
	}
	__csvfs_layout_remove(ci, ext[0].file_offset,
			      csvfs_ext_end(&ext[n - 1]), &freed);
	list_for_each_entry_safe(le, tmp, &fresh, list) {
		list_del(&le->list);
		__csvfs_layout_insert(ci, le);
	}
	spin_unlock(&ci->layout_lock);
out_free:
	csvfs_lext_free_list(&freed);
	csvfs_lext_free_list(&fresh);
	return ret;
}

/*
 * LAYOUT_GET for [pos, pos + len) - at least CSVFS_LAYOUT_MIN_GET, always
 * read-write (BLOCK_WRITE needs an RW layout) - and cache the answer.
 * Any error means "no direct mapping now": the caller redirects.
 */
int csvfs_layout_get(struct inode *inode, u64 pos, u64 len)
{
	struct csvfs_inode *ci = CSVFS_I(inode);
	struct csvfs_args args = { .cmd = CSVFS_CMD_LAYOUT_GET };
	const size_t size = CSVFS_MAX_EXTENTS * sizeof(struct csvfs_extent);
	u64 off = round_down(pos, 512);
	u64 length = max_t(u64, len + (pos - off), CSVFS_LAYOUT_MIN_GET);
	u32 iomode = CSVFS_LAYOUT_RW;
	struct csvfs_out_arg *out;
	struct csvfs_extent *ext;
	unsigned long gen;
	LIST_HEAD(freed);
	int ret, n;

	ext = kvmalloc(size, GFP_NOFS);
	if (!ext)
		return -ENOMEM;
	spin_lock(&ci->layout_lock);
	__csvfs_layout_era(inode, &freed);
	gen = ci->layout_gen;
	spin_unlock(&ci->layout_lock);
	csvfs_lext_free_list(&freed);

	csvfs_in(&args, CSVFS_A_FH, ci->fh.size, ci->fh.data);
	csvfs_in(&args, CSVFS_A_OFFSET, sizeof(off), &off);
	csvfs_in(&args, CSVFS_A_LENGTH, sizeof(length), &length);
	csvfs_in(&args, CSVFS_A_LAYOUT_IOMODE, sizeof(iomode), &iomode);
	out = csvfs_out(&args, CSVFS_A_EXTENTS, CSVFS_OUT_VARLEN, size, ext);
	ret = csvfs_sb_request(inode->i_sb, &args);
	if (ret)
		goto out;
	ret = -EIO;
	if (out->len % sizeof(*ext))
		goto out;
	n = out->len / sizeof(*ext);
	ret = csvfs_layout_verify(inode, ext, n, pos);
	if (ret) {
		csvfs_warn(inode->i_sb, "malformed layout of inode %lu",
			   inode->i_ino);
		goto out;
	}
	ret = csvfs_layout_insert(inode, ext, n, gen);
out:
	kvfree(ext);
	return ret;
}

/*
 * LAYOUT_COMMIT after direct writes: bring mtime to the coordinator (direct
 * writes never change the size). durable (fsync, close): flush the
 * device's write cache first. The timer that only makes mtime visible does
 * not: O_DIRECT promises no durability, and a flush every second made
 * direct writes wait for the device's cache (or the lab host's page cache)
 * to drain, where the raw device never does.
 */
int csvfs_layout_commit(struct inode *inode, bool durable)
{
	struct csvfs_inode *ci = CSVFS_I(inode);
	struct csvfs_args args = { .cmd = CSVFS_CMD_LAYOUT_COMMIT };
	struct csvfs_setattr sa = { .valid = CSVFS_SETATTR_MTIME };
	struct csvfs_out_arg *attr_out;
	struct csvfs_attr attr;
	int ret;

	if (durable && test_and_clear_bit(CSVFS_I_DEVICE_DIRTY, &ci->flags)) {
		ret = blkdev_issue_flush(CSVFS_SB(inode->i_sb)->bdev);
		if (ret) {
			set_bit(CSVFS_I_DEVICE_DIRTY, &ci->flags);
			return ret;
		}
	}
	if (!test_and_clear_bit(CSVFS_I_LAYOUT_DIRTY, &ci->flags))
		return 0;
	spin_lock(&ci->lock);
	sa.mtime = inode->i_mtime.tv_sec;
	sa.mtime_nsec = inode->i_mtime.tv_nsec;
	spin_unlock(&ci->lock);
	csvfs_in(&args, CSVFS_A_FH, ci->fh.size, ci->fh.data);
	csvfs_in(&args, CSVFS_A_SETATTR, sizeof(sa), &sa);
	attr_out = csvfs_out(&args, CSVFS_A_ATTR, CSVFS_OUT_OPTIONAL,
			     sizeof(attr), &attr);
	ret = csvfs_sb_request(inode->i_sb, &args);
	if (!ret && attr_out->present &&
	    !((inode->i_mode ^ attr.mode) & S_IFMT))
		csvfs_set_attr(inode, &attr);
	if (ret)
		set_bit(CSVFS_I_LAYOUT_DIRTY, &ci->flags);
	return ret;
}

/*
 * Direct writes changed mtime locally: other nodes see it after close or
 * fsync, or at the latest CSVFS_COMMIT_DELAY after the first such write of
 * a file that stays open (a VM image is never closed).
 */
void csvfs_layout_dirty(struct inode *inode)
{
	struct csvfs_inode *ci = CSVFS_I(inode);

	set_bit(CSVFS_I_DEVICE_DIRTY, &ci->flags);
	set_bit(CSVFS_I_LAYOUT_DIRTY, &ci->flags);
	csvfs_queue_delayed_work(&ci->commit_work, CSVFS_COMMIT_DELAY);
}

static void csvfs_commit_work(struct work_struct *work)
{
	struct csvfs_inode *ci = container_of(to_delayed_work(work),
					      struct csvfs_inode, commit_work);

	int ret = csvfs_layout_commit(&ci->vfs_inode, false);

	/*
	 * A failure keeps the bit; try again later, or the mtime of a file
	 * written once and then only held open (a VM image) would stay old
	 * everywhere else until its close. A stale handle never recovers.
	 */
	if (ret && ret != -ESTALE)
		csvfs_queue_delayed_work(&ci->commit_work, CSVFS_COMMIT_DELAY);
}

/* End every cached layout of the volume; inodes drop theirs lazily. */
void csvfs_layouts_end(struct csvfs_sb_info *sbi)
{
	atomic_long_inc(&sbi->layout_era);
}

/* layout recall */

struct csvfs_recall {
	struct work_struct	work;
	u64			req_id;		/* the daemon's, for the REPLY */
	u32			sb_id;
	bool			all;		/* LAYOUT_RECALL_ALL: no fh */
	u64			offset;
	u64			length;
	struct csvfs_handle	fh;
};

/*
 * Drop the range, let the direct I/O already under way finish (new direct
 * I/O is redirected while a recall runs), and acknowledge.
 */
static void csvfs_recall_inode(struct inode *inode, u64 offset, u64 length)
{
	struct csvfs_inode *ci = CSVFS_I(inode);

	atomic_inc(&ci->recalls);
	csvfs_layout_forget(inode, offset, length);
	inode_dio_wait(inode);
	csvfs_attr_stale(inode);
	atomic_dec(&ci->recalls);
}

static void csvfs_recall_work(struct work_struct *work)
{
	struct csvfs_recall *rc = container_of(work, struct csvfs_recall,
					       work);
	struct super_block *sb = csvfs_sb_get(rc->sb_id);
	struct inode *inode;
	int ret = 0;

	if (sb && rc->all) {
		ret = csvfs_layout_drain(CSVFS_SB(sb));
	} else if (sb) {
		inode = csvfs_ilookup(sb, &rc->fh);
		if (inode) {
			csvfs_recall_inode(inode, rc->offset, rc->length);
			iput(inode);
		}
	}
	if (sb)
		deactivate_super(sb);
	csvfs_reply_daemon(rc->req_id, rc->sb_id, ret);
	kfree(rc);
}

/*
 * Called by the LAYOUT_RECALL handler under genl_mutex (and, with no fh,
 * by LAYOUT_RECALL_ALL's: every layout of the volume): defer the work.
 */
int csvfs_layout_recall(u64 req_id, u32 sb_id, const struct csvfs_handle *fh,
			u64 offset, u64 length)
{
	struct csvfs_recall *rc;

	rc = kzalloc(sizeof(*rc), GFP_KERNEL);
	if (!rc)
		return -ENOMEM;
	INIT_WORK(&rc->work, csvfs_recall_work);
	rc->req_id = req_id;
	rc->sb_id = sb_id;
	rc->offset = offset;
	rc->length = length;
	if (fh)
		rc->fh = *fh;
	else
		rc->all = true;
	csvfs_queue_work(&rc->work);
	return 0;
}

int __init csvfs_layout_cache_init(void)
{
	csvfs_lext_cachep = KMEM_CACHE(csvfs_lext, 0);
	return csvfs_lext_cachep ? 0 : -ENOMEM;
}

void csvfs_layout_cache_exit(void)
{
	kmem_cache_destroy(csvfs_lext_cachep);
}

/* KUnit (kernels with KUnit built in, e.g. the lab's debug kernel) */
#if IS_BUILTIN(CONFIG_KUNIT)
#include "tests/layout_test.c"
#endif
