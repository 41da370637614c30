// SPDX-License-Identifier: GPL-2.0
/*
 * csvfs - the direct data path: O_DIRECT through iomap to the shared device.
 *
 * iomap_begin maps a file range with the cached layout (layout.c): WRITTEN
 * extents to IOMAP_MAPPED on the volume's block device, holes and
 * unwritten extents to IOMAP_HOLE/IOMAP_UNWRITTEN for reads (zeros,
 * without asking anyone). A write that needs allocation (hole, unwritten,
 * past EOF) or a range without a direct mapping returns -ENOTBLK, and the
 * caller finishes the I/O file-system redirected (file.c), like zonefs
 * falls back to buffered I/O.
 *
 * Block-level redirect: every direct bio carries a struct csvfs_bio (front
 * padding of our bio_set). When it fails, or when the node's mode is
 * BlockRedirected, a worker performs the same device I/O as BLOCK_READ /
 * BLOCK_WRITE requests through the coordinator and then completes the bio:
 * the application sees no error. A failure also tells the daemon
 * (PATH_ERROR) and redirects this node's bios for a while on its own.
 */
#define pr_fmt(fmt) KBUILD_MODNAME ": " fmt

#include <linux/bio.h>
#include <linux/blkdev.h>
#include <linux/iomap.h>
#include <linux/uio.h>

#include "csvfs.h"

/* How long a failed bio redirects this node's bios, daemon or not. */
#define CSVFS_PATH_ERROR_HOLD	(5 * HZ)

struct csvfs_bio {
	struct csvfs_sb_info	*sbi;
	struct bvec_iter	iter;		/* as submitted */
	struct work_struct	work;
	ktime_t			start;		/* for the latency counters */
	int			error;		/* of the failed submission */
	unsigned int		drain_idx;	/* counted in sbi->dio_count[] */
	struct bio		bio;		/* last: bio_set front_pad */
};

static struct bio_set csvfs_dio_bioset;

static bool csvfs_block_redirected(struct csvfs_sb_info *sbi)
{
	/* without a lease no bio reaches the device: the daemon holds it */
	return !csvfs_lease_ok(sbi) ||
	       sbi->redirect == CSVFS_IO_BLOCK_REDIRECTED ||
	       READ_ONCE(sbi->io_mode) == CSVFS_IO_BLOCK_REDIRECTED ||
	       time_before(jiffies, READ_ONCE(sbi->path_failed_until));
}

/*
 * Direct I/O that may use cached layouts is counted, from before the layout
 * lookup until its last device bio completed, so that a new coordinator's
 * recall of all layouts can wait for it (csvfs_layout_drain). Bios that go
 * block-redirected are not counted: the coordinator checks those itself,
 * and they wait for it.
 */
static unsigned int csvfs_dio_enter(struct csvfs_sb_info *sbi)
{
	unsigned int idx = READ_ONCE(sbi->drain_idx);

	atomic_inc(&sbi->dio_count[idx]);
	/* pairs with csvfs_layout_drain(): counted before the era is read */
	smp_mb__after_atomic();
	return idx;
}

static void csvfs_dio_exit(struct csvfs_sb_info *sbi, unsigned int idx)
{
	if (atomic_dec_and_test(&sbi->dio_count[idx]))
		wake_up_var(&sbi->dio_count[idx]);
}

/*
 * LAYOUT_RECALL_ALL: end every cached layout and wait until no direct I/O
 * that looked one up before is left. New I/O is counted in the other slot;
 * the CSVFS_SB_DRAINING bit keeps a second recall from flipping back
 * meanwhile. A bit and not a mutex: a recall waits for the one before it
 * within the same deadline, so a hung device path (bios that never
 * complete) fails each recall after sbi->timeout instead of queueing
 * kworkers in uninterruptible sleep without a bound.
 */
int csvfs_layout_drain(struct csvfs_sb_info *sbi)
{
	unsigned long deadline = jiffies + sbi->timeout;
	unsigned int old;
	long left;

	left = wait_var_event_timeout(&sbi->drain_flags,
				      !test_and_set_bit(CSVFS_SB_DRAINING,
							&sbi->drain_flags),
				      sbi->timeout);
	if (!left)
		goto timeout;
	csvfs_layouts_end(sbi);
	old = sbi->drain_idx;
	smp_wmb();	/* the new era before the new slot */
	WRITE_ONCE(sbi->drain_idx, !old);
	smp_mb();	/* pairs with csvfs_dio_enter() */
	/* what is left of the deadline; at least one look at the count */
	left = max_t(long, (long)(deadline - jiffies), 1);
	left = wait_var_event_timeout(&sbi->dio_count[old],
				      !atomic_read(&sbi->dio_count[old]),
				      left);
	clear_bit_unlock(CSVFS_SB_DRAINING, &sbi->drain_flags);
	smp_mb__after_atomic();	/* the bit cleared before the waiters look */
	wake_up_var(&sbi->drain_flags);
	if (left)
		return 0;
timeout:
	csvfs_warn(sbi->sb, "direct I/O still in flight after %lu s",
		   sbi->timeout / HZ);
	return -ETIMEDOUT;
}

/* Whether this O_DIRECT I/O may take the direct path. */
bool csvfs_direct_ok(struct kiocb *iocb, struct iov_iter *iter)
{
	struct inode *inode = file_inode(iocb->ki_filp);
	struct csvfs_sb_info *sbi = CSVFS_SB(inode->i_sb);
	unsigned int mask = bdev_logical_block_size(sbi->bdev) - 1;
	u32 mode = READ_ONCE(sbi->io_mode);

	if (!(iocb->ki_flags & IOCB_DIRECT) ||
	    sbi->redirect == CSVFS_IO_FILE_REDIRECTED)
		return false;
	/*
	 * Paused (a move or failover; without quorum there is no lease):
	 * cached layouts stay valid until the next coordinator recalls them
	 * all, so I/O they map goes on; anything else waits for it.
	 */
	if (mode == CSVFS_IO_PAUSED && csvfs_block_redirected(sbi))
		return false;
	if (mode != CSVFS_IO_DIRECT && mode != CSVFS_IO_BLOCK_REDIRECTED &&
	    mode != CSVFS_IO_PAUSED)
		return false;
	if (!csvfs_lease_ok(sbi))
		return false;
	if (atomic_read(&CSVFS_I(inode)->recalls))
		return false;
	return !((iocb->ki_pos | iov_iter_count(iter) |
		  iov_iter_alignment(iter)) & mask);
}

/* iomap */

/* Describe the cached extent e for an I/O at pos; -ENOTBLK: redirect it. */
static int csvfs_iomap_fill(struct inode *inode, loff_t pos,
			    unsigned int flags, const struct csvfs_extent *e,
			    struct iomap *iomap)
{
	struct csvfs_sb_info *sbi = CSVFS_SB(inode->i_sb);
	u64 end, limit;

	iomap->bdev = sbi->bdev;
	iomap->flags = 0;
	iomap->offset = e->file_offset;
	iomap->length = e->length;
	switch (e->state) {
	case CSVFS_EXT_WRITTEN:
		iomap->type = IOMAP_MAPPED;
		iomap->addr = e->dev_offset;
		break;
	case CSVFS_EXT_UNWRITTEN:
		iomap->type = IOMAP_UNWRITTEN;
		iomap->addr = e->dev_offset;
		break;
	case CSVFS_EXT_HOLE:
		iomap->type = IOMAP_HOLE;
		iomap->addr = IOMAP_NULL_ADDR;
		break;
	default:
		return -ENOTBLK;
	}
	if (!(flags & IOMAP_WRITE))
		return 0;

	/* writes: overwrite of written blocks inside EOF only */
	if (iomap->type != IOMAP_MAPPED)
		return -ENOTBLK;
	limit = round_down(i_size_read(inode),
			   bdev_logical_block_size(sbi->bdev));
	end = min_t(u64, e->file_offset + e->length, limit);
	if (end <= pos)
		return -ENOTBLK;
	iomap->length = end - e->file_offset;
	return 0;
}

/*
 * Look pos up in the cached layout, counted in drain slot *idx from before
 * the lookup on, so that a recall of every layout waits for this I/O.
 * False, and not counted, if no valid extent covers pos.
 */
static bool csvfs_dio_lookup(struct inode *inode, loff_t pos,
			     struct csvfs_extent *e, unsigned int *idx)
{
	struct csvfs_sb_info *sbi = CSVFS_SB(inode->i_sb);

	*idx = csvfs_dio_enter(sbi);
	if (csvfs_layout_lookup(inode, pos, e))
		return true;
	csvfs_dio_exit(sbi, *idx);
	return false;
}

/*
 * Counted (csvfs_dio_enter) from before the lookup to csvfs_iomap_end; the
 * count is dropped while LAYOUT_GET waits, which may be for a coordinator.
 */
static int csvfs_iomap_begin(struct inode *inode, loff_t pos, loff_t length,
			     unsigned int flags, struct iomap *iomap,
			     struct iomap *srcmap)
{
	struct csvfs_extent e;
	unsigned int idx;
	int ret;

	if (!csvfs_dio_lookup(inode, pos, &e, &idx)) {
		if (flags & IOMAP_NOWAIT)
			return -EAGAIN;
		/* ask the coordinator once; still not mapped: not direct */
		if (csvfs_layout_get(inode, pos, length) ||
		    !csvfs_dio_lookup(inode, pos, &e, &idx))
			return -ENOTBLK;
	}
	ret = csvfs_iomap_fill(inode, pos, flags, &e, iomap);
	if (ret) {
		csvfs_dio_exit(CSVFS_SB(inode->i_sb), idx);
		return ret;
	}
	iomap->private = (void *)(uintptr_t)idx;
	return 0;
}

static int csvfs_iomap_end(struct inode *inode, loff_t pos, loff_t length,
			   ssize_t written, unsigned int flags,
			   struct iomap *iomap)
{
	csvfs_dio_exit(CSVFS_SB(inode->i_sb), (uintptr_t)iomap->private);
	return 0;
}

static const struct iomap_ops csvfs_iomap_ops = {
	.iomap_begin	= csvfs_iomap_begin,
	.iomap_end	= csvfs_iomap_end,
};

/* block-level redirect */

static int csvfs_block_req(struct csvfs_sb_info *sbi, bool write, u64 dev,
			   void *buf, u32 len)
{
	struct csvfs_args args = {
		.cmd = write ? CSVFS_CMD_BLOCK_WRITE : CSVFS_CMD_BLOCK_READ,
	};
	struct csvfs_out_arg *data = NULL;
	u64 length = len;
	int ret;

	csvfs_in(&args, CSVFS_A_DEV_OFFSET, sizeof(dev), &dev);
	if (write) {
		csvfs_in(&args, CSVFS_A_DATA, len, buf);
	} else {
		csvfs_in(&args, CSVFS_A_LENGTH, sizeof(length), &length);
		data = csvfs_out(&args, CSVFS_A_DATA, CSVFS_OUT_VARLEN, len,
				 buf);
	}
	ret = csvfs_request(sbi->sb_id, sbi->timeout, &args);
	if (!ret && data && data->len != len)
		ret = -EIO;
	return ret;
}

/* Perform the bio's device I/O through the coordinator, in chunks. */
static int csvfs_bio_redirect_io(struct csvfs_bio *cb)
{
	struct bio *bio = &cb->bio;
	bool write = op_is_write(bio_op(bio));
	u64 dev = cb->iter.bi_sector << SECTOR_SHIFT;
	u32 size = cb->iter.bi_size, done, len;
	struct bvec_iter it;
	struct bio_vec bv;
	size_t off = 0;
	void *buf;
	int ret = 0;

	buf = kvmalloc(size, GFP_NOIO);
	if (!buf)
		return -ENOMEM;
	if (write) {
		__bio_for_each_segment(bv, bio, it, cb->iter) {
			memcpy_from_bvec(buf + off, &bv);
			off += bv.bv_len;
		}
	}
	for (done = 0; done < size && !ret; done += len) {
		len = min_t(u32, size - done, CSVFS_MAX_IO);
		ret = csvfs_block_req(cb->sbi, write, dev + done, buf + done,
				      len);
	}
	if (!write && !ret) {
		__bio_for_each_segment(bv, bio, it, cb->iter) {
			memcpy_to_bvec(&bv, buf + off);
			off += bv.bv_len;
		}
	}
	kvfree(buf);
	return ret;
}

static void csvfs_bio_redirect_work(struct work_struct *work)
{
	struct csvfs_bio *cb = container_of(work, struct csvfs_bio, work);
	struct csvfs_sb_info *sbi = cb->sbi;
	int ret;

	if (cb->error)
		csvfs_path_error(sbi, cb->iter.bi_sector << SECTOR_SHIFT,
				 cb->iter.bi_size, cb->error);
	ret = csvfs_bio_redirect_io(cb);
	if (ret)
		csvfs_warn(sbi->sb, "block-redirected %s at %llu failed: %d",
			   op_is_write(bio_op(&cb->bio)) ? "write" : "read",
			   (u64)cb->iter.bi_sector << SECTOR_SHIFT, ret);
	else
		csvfs_count(sbi, CSVFS_PATH_BLOCK, op_is_write(bio_op(&cb->bio)),
			    cb->iter.bi_size, cb->start);
	cb->bio.bi_status = errno_to_blk_status(ret);
	iomap_dio_bio_end_io(&cb->bio);
}

static void csvfs_bio_redirect(struct csvfs_bio *cb)
{
	INIT_WORK(&cb->work, csvfs_bio_redirect_work);
	csvfs_queue_work(&cb->work);
}

static void csvfs_dio_bio_end_io(struct bio *bio)
{
	struct csvfs_bio *cb = container_of(bio, struct csvfs_bio, bio);

	csvfs_dio_exit(cb->sbi, cb->drain_idx);
	if (likely(!bio->bi_status)) {
		csvfs_count(cb->sbi, CSVFS_PATH_DIRECT, op_is_write(bio_op(bio)),
			    cb->iter.bi_size, cb->start);
		iomap_dio_bio_end_io(bio);
		return;
	}
	/* the path failed: retry through the coordinator */
	cb->error = blk_status_to_errno(bio->bi_status);
	WRITE_ONCE(cb->sbi->path_failed_until,
		   jiffies + CSVFS_PATH_ERROR_HOLD);
	csvfs_bio_redirect(cb);
}

static void csvfs_dio_submit_io(const struct iomap_iter *iter,
				struct bio *bio, loff_t file_offset)
{
	struct csvfs_bio *cb = container_of(bio, struct csvfs_bio, bio);

	cb->sbi = CSVFS_SB(iter->inode->i_sb);
	cb->iter = bio->bi_iter;
	cb->start = ktime_get();
	cb->error = 0;
	bio->bi_end_io = csvfs_dio_bio_end_io;
	if (csvfs_block_redirected(cb->sbi)) {
		csvfs_bio_redirect(cb);
		return;
	}
	/* the iteration's count is held: no barrier needed here */
	cb->drain_idx = (uintptr_t)iter->iomap.private;
	atomic_inc(&cb->sbi->dio_count[cb->drain_idx]);
	submit_bio(bio);
}

static const struct iomap_dio_ops csvfs_dio_ops = {
	.submit_io	= csvfs_dio_submit_io,
	.bio_set	= &csvfs_dio_bioset,
};

/* entry points from read_iter/write_iter */

/*
 * Read what the direct path can; the bytes read, -EIOCBQUEUED, or an error.
 * A short count with bytes left means the caller redirects the rest.
 */
ssize_t csvfs_dio_read(struct kiocb *iocb, struct iov_iter *to)
{
	struct inode *inode = file_inode(iocb->ki_filp);
	ssize_t ret;

	if (csvfs_inode_lock_shared(inode))
		return -EINTR;
	ret = iomap_dio_rw(iocb, to, &csvfs_iomap_ops, &csvfs_dio_ops, 0,
			   NULL, 0);
	inode_unlock_shared(inode);
	return ret == -ENOTBLK ? 0 : ret;
}

/* Direct writes change mtime here; LAYOUT_COMMIT brings it there. */
static void csvfs_direct_written(struct inode *inode)
{
	struct csvfs_inode *ci = CSVFS_I(inode);

	spin_lock(&ci->lock);
	inode->i_mtime = current_time(inode);
	inode->i_ctime = inode->i_mtime;
	spin_unlock(&ci->lock);
	csvfs_layout_dirty(inode);
}

/* As csvfs_dio_read, for writes that overwrite written blocks. */
ssize_t csvfs_dio_write(struct kiocb *iocb, struct iov_iter *from)
{
	struct inode *inode = file_inode(iocb->ki_filp);
	ssize_t ret;

	if (csvfs_inode_lock(inode))
		return -EINTR;
	ret = generic_write_checks(iocb, from);
	if (ret <= 0)
		goto out_unlock;
	ret = file_remove_privs(iocb->ki_filp);
	if (ret)
		goto out_unlock;
	csvfs_direct_written(inode);
	/* submission needs the lock only against truncate: share it */
	downgrade_write(&inode->i_rwsem);
	ret = iomap_dio_rw(iocb, from, &csvfs_iomap_ops, &csvfs_dio_ops, 0,
			   NULL, 0);
	inode_unlock_shared(inode);
	return ret == -ENOTBLK ? 0 : ret;

out_unlock:
	inode_unlock(inode);
	return ret;
}

int __init csvfs_direct_init(void)
{
	return bioset_init(&csvfs_dio_bioset, 4,
			   offsetof(struct csvfs_bio, bio), BIOSET_NEED_BVECS);
}

void csvfs_direct_exit(void)
{
	bioset_exit(&csvfs_dio_bioset);
}
