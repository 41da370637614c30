// SPDX-License-Identifier: GPL-2.0
/*
 * csvfs - caching leases: when this node may serve reads from its page cache.
 *
 * The coordinator grants a lease per file and node (LEASE_GET), like an
 * SMB oplock or an NFSv4 read delegation: READ while nobody else has the
 * file open for writing, WRITE while nobody else has it open at all. It
 * breaks a lease (LEASE_BREAK) before another node's conflicting open,
 * write, truncate or fallocate takes effect, and waits for our answer.
 *
 * Under a lease of either level buffered reads and readahead go through
 * the page cache. Writes stay write-through (WRITE requests, then the
 * written range is dropped from the cache), so a break never has dirty
 * data of read(2)/write(2) to flush; only mmap can leave dirty pages, and
 * those are written back before the break is answered.
 *
 * lease_sem orders cached reads (shared) against a break (exclusive): once
 * a break has dropped the cache, no read that started under the old lease
 * can put old data back. A grant that raced with a break (the break's
 * count moved while OPEN or LEASE_GET was in flight) is not trusted. A
 * lease belongs to a coordinator epoch: a new coordinator knows nothing
 * of the old one's leases, so they end with the epoch.
 */
#define pr_fmt(fmt) KBUILD_MODNAME ": " fmt

#include <linux/pagemap.h>
#include <linux/slab.h>

#include "csvfs.h"

void csvfs_lease_init(struct csvfs_inode *ci)
{
	ci->lease = CSVFS_LEASE_NONE;
	ci->lease_epoch = 0;
	atomic_set(&ci->lease_breaks, 0);
}

/* Whether a lease held now lets reads use the page cache; lease_sem held. */
static bool csvfs_lease_valid(struct inode *inode)
{
	struct csvfs_inode *ci = CSVFS_I(inode);
	struct csvfs_sb_info *sbi = CSVFS_SB(inode->i_sb);

	return ci->lease != CSVFS_LEASE_NONE &&
	       ci->lease_epoch == READ_ONCE(sbi->epoch) &&
	       csvfs_lease_ok(sbi);
}

/*
 * Begin a cached read: true with lease_sem held shared (end it with
 * csvfs_lease_read_end), false when the read must go to the coordinator.
 */
bool csvfs_lease_read_begin(struct inode *inode)
{
	struct csvfs_inode *ci = CSVFS_I(inode);

	if (READ_ONCE(ci->lease) == CSVFS_LEASE_NONE)
		return false;
	down_read(&ci->lease_sem);
	if (csvfs_lease_valid(inode))
		return true;
	up_read(&ci->lease_sem);
	return false;
}

void csvfs_lease_read_end(struct inode *inode)
{
	up_read(&CSVFS_I(inode)->lease_sem);
}

/* Write back mmap's dirty pages and drop the cache; lease_sem held. */
static void csvfs_lease_drop_cache(struct inode *inode)
{
	struct address_space *mapping = inode->i_mapping;
	int ret;

	if (!mapping->nrpages)
		return;
	ret = filemap_write_and_wait(mapping);
	if (!ret)
		ret = invalidate_inode_pages2(mapping);
	if (ret)
		csvfs_warn(inode->i_sb, "page cache of inode %lu not dropped (%d)",
			   inode->i_ino, ret);
}

/* The number to compare in csvfs_lease_set: take it before asking. */
int csvfs_lease_breaks(struct inode *inode)
{
	return atomic_read(&CSVFS_I(inode)->lease_breaks);
}

/*
 * Record the lease the coordinator reported (OPEN, LEASE_GET) for a
 * request sent when the break count was breaks. Without a valid lease
 * before and after, what the cache holds may be old: drop it.
 */
void csvfs_lease_set(struct inode *inode, u32 level, int breaks)
{
	struct csvfs_inode *ci = CSVFS_I(inode);
	bool was_valid;

	if (level >= __CSVFS_LEASE_MAX)
		level = CSVFS_LEASE_NONE;
	down_write(&ci->lease_sem);
	if (atomic_read(&ci->lease_breaks) != breaks)
		level = CSVFS_LEASE_NONE;	/* a break overtook the grant */
	was_valid = csvfs_lease_valid(inode);
	ci->lease = level;
	ci->lease_epoch = READ_ONCE(CSVFS_SB(inode->i_sb)->epoch);
	if (!was_valid || level == CSVFS_LEASE_NONE)
		csvfs_lease_drop_cache(inode);
	up_write(&ci->lease_sem);
}

/* Ask for a lease; the level granted (NONE on any error). */
static u32 csvfs_lease_get_req(struct inode *inode, u32 wanted)
{
	struct csvfs_args args = { .cmd = CSVFS_CMD_LEASE_GET };
	u32 granted = CSVFS_LEASE_NONE;

	csvfs_in(&args, CSVFS_A_FH, CSVFS_I(inode)->fh.size,
		 CSVFS_I(inode)->fh.data);
	csvfs_in(&args, CSVFS_A_LEASE, sizeof(wanted), &wanted);
	csvfs_out(&args, CSVFS_A_LEASE, 0, sizeof(granted), &granted);
	if (csvfs_sb_request(inode->i_sb, &args))
		return CSVFS_LEASE_NONE;
	return granted;
}

/*
 * After OPEN (which reported the lease held, if any) of a buffered file:
 * ask for one if there is none. breaks was taken before OPEN was sent.
 */
void csvfs_lease_open(struct inode *inode, struct file *file, u32 held,
		      int breaks)
{
	u32 wanted = file->f_mode & FMODE_WRITE ? CSVFS_LEASE_WRITE :
						  CSVFS_LEASE_READ;

	if (held == CSVFS_LEASE_NONE && !(file->f_flags & O_DIRECT))
		held = csvfs_lease_get_req(inode, wanted);
	csvfs_lease_set(inode, held, breaks);
}

/* The inode leaves the cache: tell the coordinator, asynchronously. */
void csvfs_lease_return(struct inode *inode)
{
	struct csvfs_sb_info *sbi = CSVFS_SB(inode->i_sb);
	struct csvfs_args args = { .cmd = CSVFS_CMD_LEASE_RETURN };
	struct csvfs_inode *ci = CSVFS_I(inode);

	if (ci->lease == CSVFS_LEASE_NONE ||
	    ci->lease_epoch != READ_ONCE(sbi->epoch))
		return;
	ci->lease = CSVFS_LEASE_NONE;
	csvfs_in(&args, CSVFS_A_FH, ci->fh.size, ci->fh.data);
	/* lost: the coordinator breaks it later, and we answer at once */
	csvfs_request_async(sbi->sb_id, sbi->timeout, &args);
}

/* lease break */

struct csvfs_break {
	struct work_struct	work;
	u64			req_id;		/* the daemon's, for the REPLY */
	u32			sb_id;
	u32			level;		/* what we may keep */
	struct csvfs_handle	fh;
};

static void csvfs_break_inode(struct inode *inode, u32 level)
{
	struct csvfs_inode *ci = CSVFS_I(inode);

	atomic_inc(&ci->lease_breaks);
	down_write(&ci->lease_sem);
	if (level < ci->lease)
		ci->lease = level;
	if (level == CSVFS_LEASE_NONE) {
		csvfs_lease_drop_cache(inode);
		csvfs_attr_stale(inode);	/* the size may change too */
	} else {
		filemap_write_and_wait(inode->i_mapping);
	}
	up_write(&ci->lease_sem);
}

static void csvfs_break_work(struct work_struct *work)
{
	struct csvfs_break *br = container_of(work, struct csvfs_break, work);
	struct super_block *sb = csvfs_sb_get(br->sb_id);
	struct inode *inode;

	if (sb) {
		inode = csvfs_ilookup(sb, &br->fh);
		if (inode) {
			csvfs_break_inode(inode, br->level);
			iput(inode);
		}
		deactivate_super(sb);
	}
	csvfs_reply_daemon(br->req_id, br->sb_id, 0);
	kfree(br);
}

/* Called by the LEASE_BREAK handler under genl_mutex: defer the work. */
int csvfs_lease_break(u64 req_id, u32 sb_id, const struct csvfs_handle *fh,
		      u32 level)
{
	struct csvfs_break *br;

	if (level >= __CSVFS_LEASE_MAX)
		return -EINVAL;
	br = kzalloc(sizeof(*br), GFP_KERNEL);
	if (!br)
		return -ENOMEM;
	INIT_WORK(&br->work, csvfs_break_work);
	br->req_id = req_id;
	br->sb_id = sb_id;
	br->level = level;
	br->fh = *fh;
	csvfs_queue_work(&br->work);
	return 0;
}
