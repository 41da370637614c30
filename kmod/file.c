// SPDX-License-Identifier: GPL-2.0
/*
 * csvfs - open files, file-system-redirected data I/O, directories.
 *
 * Without a caching lease (lease.c) data is not cached: read_iter and
 * write_iter move it through READ and WRITE requests in chunks of at most
 * CSVFS_MAX_IO bytes, and the page cache is used only by mmap (read_folio,
 * writepage through the same requests); it is written back and dropped
 * around read(2)/write(2) of the same range and at an open without a
 * lease, so a mapping sees other nodes' writes at open and its own shared
 * writes reach the coordinator at msync/close. Under a lease, buffered
 * reads are served from the page cache (readahead in CSVFS_MAX_IO
 * requests); writes are always write-through.
 */
#define pr_fmt(fmt) KBUILD_MODNAME ": " fmt

#include <linux/mm.h>
#include <linux/falloc.h>
#include <linux/pagemap.h>
#include <linux/sched/mm.h>
#include <linux/slab.h>
#include <linux/uio.h>
#include <linux/writeback.h>

#include "csvfs.h"

/* open files */

int csvfs_file_attach(struct inode *inode, struct file *file, u64 open_id)
{
	struct csvfs_inode *ci = CSVFS_I(inode);
	struct csvfs_file *cf;

	cf = kzalloc(sizeof(*cf), GFP_KERNEL);
	if (!cf)
		return -ENOMEM;
	cf->open_id = open_id;
	cf->writable = file->f_mode & FMODE_WRITE;
	INIT_LIST_HEAD(&cf->list);
	if (cf->writable) {
		spin_lock(&ci->lock);
		list_add_tail(&cf->list, &ci->open_files);
		spin_unlock(&ci->lock);
	}
	file->private_data = cf;
	return 0;
}

/* Forget the open file and tell the coordinator, asynchronously. */
void csvfs_file_detach(struct inode *inode, struct file *file)
{
	struct csvfs_inode *ci = CSVFS_I(inode);
	struct csvfs_file *cf = file->private_data;

	if (!cf)
		return;
	spin_lock(&ci->lock);
	list_del_init(&cf->list);
	spin_unlock(&ci->lock);
	csvfs_release_req(inode, cf->open_id);
	file->private_data = NULL;
	kfree(cf);
}

void csvfs_release_req_fh(struct super_block *sb,
			  const struct csvfs_handle *fh, u64 open_id)
{
	struct csvfs_sb_info *sbi = CSVFS_SB(sb);
	struct csvfs_args args = { .cmd = CSVFS_CMD_RELEASE };

	csvfs_in(&args, CSVFS_A_FH, fh->size, fh->data);
	csvfs_in(&args, CSVFS_A_OPEN_ID, sizeof(open_id), &open_id);
	if (csvfs_request_async(sbi->sb_id, sbi->timeout, &args))
		csvfs_warn(sb, "lost RELEASE of open id %llu", open_id);
}

void csvfs_release_req(struct inode *inode, u64 open_id)
{
	csvfs_release_req_fh(inode->i_sb, &CSVFS_I(inode)->fh, open_id);
}

/* An open id that writeback may use: any writable open of the inode. */
static int csvfs_writeback_open_id(struct inode *inode, u64 *open_id)
{
	struct csvfs_inode *ci = CSVFS_I(inode);
	struct csvfs_file *cf;
	int ret = -EBADF;

	spin_lock(&ci->lock);
	cf = list_first_entry_or_null(&ci->open_files, struct csvfs_file,
				      list);
	if (cf) {
		*open_id = cf->open_id;
		ret = 0;
	}
	spin_unlock(&ci->lock);
	return ret;
}

/* OPEN; *lease: the caching lease the coordinator says we hold. */
static int csvfs_open_req(struct inode *inode, struct file *file, u32 *lease)
{
	struct csvfs_args args = { .cmd = CSVFS_CMD_OPEN };
	struct csvfs_out_arg *attr_out;
	struct csvfs_attr attr;
	/* O_APPEND, O_TRUNC, O_DIRECT are handled here, not there */
	u32 flags = file->f_flags & (O_ACCMODE | O_SYNC);
	u64 open_id;
	int ret;

	csvfs_in(&args, CSVFS_A_FH, CSVFS_I(inode)->fh.size,
		 CSVFS_I(inode)->fh.data);
	csvfs_in(&args, CSVFS_A_FLAGS, sizeof(flags), &flags);
	csvfs_out(&args, CSVFS_A_OPEN_ID, 0, sizeof(open_id), &open_id);
	attr_out = csvfs_out(&args, CSVFS_A_ATTR, CSVFS_OUT_OPTIONAL,
			     sizeof(attr), &attr);
	*lease = CSVFS_LEASE_NONE;
	csvfs_out(&args, CSVFS_A_LEASE, CSVFS_OUT_OPTIONAL, sizeof(*lease),
		  lease);
	ret = csvfs_sb_request(inode->i_sb, &args);
	if (ret)
		return ret;
	ret = csvfs_file_attach(inode, file, open_id);
	if (ret) {
		csvfs_release_req(inode, open_id);
		return ret;
	}
	/* close-to-open: attributes as of this open */
	if (attr_out->present && !((inode->i_mode ^ attr.mode) & S_IFMT))
		csvfs_set_attr(inode, &attr);
	else
		ret = csvfs_refresh(inode, true);
	if (ret)
		csvfs_file_detach(inode, file);
	return ret;
}

static int csvfs_open(struct inode *inode, struct file *file)
{
	int breaks = csvfs_lease_breaks(inode);
	u32 lease;
	int ret;

	ret = generic_file_open(inode, file);
	if (ret)
		return ret;
	ret = csvfs_open_req(inode, file, &lease);
	if (ret)
		return ret;
	/*
	 * Without a lease held all along, other nodes may have written:
	 * the cache is dropped (lease.c).
	 */
	clear_bit(CSVFS_I_DATA_STALE, &CSVFS_I(inode)->flags);
	csvfs_lease_open(inode, file, lease, breaks);
	return 0;
}

static int csvfs_flush(struct file *file, fl_owner_t id)
{
	int ret, ret2;

	if (!(file->f_mode & FMODE_WRITE))
		return 0;
	ret = filemap_write_and_wait(file->f_mapping);
	ret2 = csvfs_layout_commit(file_inode(file), true);
	return ret ?: ret2;
}

static int csvfs_release(struct inode *inode, struct file *file)
{
	if (file->f_mode & FMODE_WRITE)
		filemap_write_and_wait(file->f_mapping);
	csvfs_file_detach(inode, file);
	return 0;
}

/* data: READ and WRITE requests */

static u64 csvfs_open_id(struct file *file)
{
	struct csvfs_file *cf = file->private_data;

	return cf ? cf->open_id : 0;
}

/* Read up to len (<= CSVFS_MAX_IO) bytes at pos into buf; bytes read. */
static ssize_t csvfs_read_req(struct inode *inode, u64 open_id, loff_t pos,
			      size_t len, void *buf)
{
	struct csvfs_args args = { .cmd = CSVFS_CMD_READ };
	struct csvfs_out_arg *data;
	u64 offset = pos, length = len;
	ktime_t start;
	int ret;

	csvfs_in(&args, CSVFS_A_FH, CSVFS_I(inode)->fh.size,
		 CSVFS_I(inode)->fh.data);
	csvfs_in(&args, CSVFS_A_OPEN_ID, sizeof(open_id), &open_id);
	csvfs_in(&args, CSVFS_A_OFFSET, sizeof(offset), &offset);
	csvfs_in(&args, CSVFS_A_LENGTH, sizeof(length), &length);
	data = csvfs_out(&args, CSVFS_A_DATA,
			 CSVFS_OUT_OPTIONAL | CSVFS_OUT_VARLEN, len, buf);
	start = ktime_get();
	ret = csvfs_sb_request(inode->i_sb, &args);
	if (ret)
		return ret;
	csvfs_count(CSVFS_SB(inode->i_sb), CSVFS_PATH_FILE, false, data->len,
		    start);
	return data->len;
}

/* Write len (<= CSVFS_MAX_IO) bytes from buf at pos; all or an error. */
static int csvfs_write_req(struct inode *inode, u64 open_id, loff_t pos,
			   size_t len, const void *buf)
{
	struct csvfs_args args = { .cmd = CSVFS_CMD_WRITE };
	struct csvfs_out_arg *attr_out;
	struct csvfs_attr attr;
	u64 offset = pos;
	ktime_t start;
	int ret;

	csvfs_in(&args, CSVFS_A_FH, CSVFS_I(inode)->fh.size,
		 CSVFS_I(inode)->fh.data);
	csvfs_in(&args, CSVFS_A_OPEN_ID, sizeof(open_id), &open_id);
	csvfs_in(&args, CSVFS_A_OFFSET, sizeof(offset), &offset);
	csvfs_in(&args, CSVFS_A_DATA, len, buf);
	attr_out = csvfs_out(&args, CSVFS_A_ATTR, CSVFS_OUT_OPTIONAL,
			     sizeof(attr), &attr);
	start = ktime_get();
	ret = csvfs_sb_request(inode->i_sb, &args);
	if (ret)
		return ret;
	csvfs_count(CSVFS_SB(inode->i_sb), CSVFS_PATH_FILE, true, len, start);
	if (attr_out->present && !((inode->i_mode ^ attr.mode) & S_IFMT)) {
		csvfs_set_attr(inode, &attr);
	} else {
		spin_lock(&CSVFS_I(inode)->lock);
		if (pos + len > i_size_read(inode))
			i_size_write(inode, pos + len);
		spin_unlock(&CSVFS_I(inode)->lock);
		csvfs_attr_stale(inode);
	}
	return 0;
}

static ssize_t csvfs_redirected_read(struct kiocb *iocb, struct iov_iter *to)
{
	struct file *file = iocb->ki_filp;
	struct inode *inode = file_inode(file);
	size_t count = iov_iter_count(to), len, done = 0;
	loff_t pos = iocb->ki_pos;
	ssize_t ret = 0;
	void *buf;

	if (!count)
		return 0;
	if (inode->i_mapping->nrpages) {
		ret = filemap_write_and_wait_range(inode->i_mapping, pos,
						   pos + count - 1);
		if (ret)
			return ret;
	}
	buf = kvmalloc(min_t(size_t, count, CSVFS_MAX_IO), GFP_KERNEL);
	if (!buf)
		return -ENOMEM;
	while (iov_iter_count(to)) {
		len = min_t(size_t, iov_iter_count(to), CSVFS_MAX_IO);
		ret = csvfs_read_req(inode, csvfs_open_id(file), pos, len,
				     buf);
		if (ret <= 0)
			break;
		if (copy_to_iter(buf, ret, to) != ret) {
			ret = -EFAULT;
			break;
		}
		pos += ret;
		done += ret;
		if (ret < len)
			break;	/* end of file */
	}
	kvfree(buf);
	iocb->ki_pos = pos;
	return done ? done : ret;
}

/* A buffered read under a caching lease: from the page cache. */
static ssize_t csvfs_cached_read(struct kiocb *iocb, struct iov_iter *to)
{
	struct inode *inode = file_inode(iocb->ki_filp);
	ktime_t start = ktime_get();
	ssize_t ret;

	/* attributes as fresh as for an uncached read: attr_timeout */
	ret = csvfs_refresh(inode, false);
	if (!ret)
		ret = generic_file_read_iter(iocb, to);
	csvfs_lease_read_end(inode);
	if (ret > 0)
		csvfs_count(CSVFS_SB(inode->i_sb), CSVFS_PATH_CACHED, false,
			    ret, start);
	return ret;
}

/*
 * O_DIRECT goes to the device where the layout maps the range; the rest
 * is read through the coordinator, or from the page cache while this node
 * holds a caching lease.
 */
static ssize_t csvfs_read_iter(struct kiocb *iocb, struct iov_iter *to)
{
	struct inode *inode = file_inode(iocb->ki_filp);
	ssize_t done = 0, ret;

	if (!(iocb->ki_flags & IOCB_DIRECT) && csvfs_lease_read_begin(inode))
		return csvfs_cached_read(iocb, to);

	if (csvfs_direct_ok(iocb, to)) {
		done = csvfs_dio_read(iocb, to);
		if (done < 0 || !iov_iter_count(to) ||
		    iocb->ki_pos >= i_size_read(inode))
			return done;
	}
	ret = csvfs_redirected_read(iocb, to);
	return done ? (ret < 0 ? done : done + ret) : ret;
}

static ssize_t csvfs_write_chunks(struct kiocb *iocb, struct iov_iter *from)
{
	struct file *file = iocb->ki_filp;
	struct inode *inode = file_inode(file);
	size_t len, done = 0;
	loff_t pos = iocb->ki_pos;
	int ret = 0;
	void *buf;

	buf = kvmalloc(min_t(size_t, iov_iter_count(from), CSVFS_MAX_IO),
		       GFP_KERNEL);
	if (!buf)
		return -ENOMEM;
	while (iov_iter_count(from)) {
		len = min_t(size_t, iov_iter_count(from), CSVFS_MAX_IO);
		len = copy_from_iter(buf, len, from);
		if (!len) {
			ret = -EFAULT;
			break;
		}
		ret = csvfs_write_req(inode, csvfs_open_id(file), pos, len,
				      buf);
		if (ret) {
			iov_iter_revert(from, len);
			break;
		}
		pos += len;
		done += len;
	}
	kvfree(buf);
	iocb->ki_pos = pos;
	return done ? done : ret;
}

static ssize_t csvfs_redirected_write(struct kiocb *iocb,
				      struct iov_iter *from)
{
	struct inode *inode = file_inode(iocb->ki_filp);
	struct address_space *mapping = inode->i_mapping;
	loff_t start = iocb->ki_pos;
	ssize_t ret;

	if (csvfs_inode_lock(inode))
		return -EINTR;
	if (iocb->ki_flags & IOCB_APPEND) {
		ret = csvfs_refresh(inode, true);	/* the current end */
		if (ret)
			goto out;
	}
	ret = generic_write_checks(iocb, from);
	if (ret <= 0)
		goto out;
	start = iocb->ki_pos;
	ret = file_remove_privs(iocb->ki_filp);
	if (ret)
		goto out;
	if (mapping->nrpages) {
		ret = filemap_write_and_wait_range(mapping, start, start +
						   iov_iter_count(from) - 1);
		if (ret)
			goto out;
	}
	ret = csvfs_write_chunks(iocb, from);
	if (ret > 0 && mapping->nrpages)
		invalidate_inode_pages2_range(mapping, start >> PAGE_SHIFT,
					      (start + ret - 1) >> PAGE_SHIFT);
out:
	inode_unlock(inode);
	if (ret > 0)
		ret = generic_write_sync(iocb, ret);
	return ret;
}

/*
 * O_DIRECT overwrites of written blocks go to the device; what needs
 * allocation goes through the coordinator, after which the range's layout
 * is dropped so that the next write there is direct.
 */
static ssize_t csvfs_write_iter(struct kiocb *iocb, struct iov_iter *from)
{
	struct inode *inode = file_inode(iocb->ki_filp);
	ssize_t done = 0, ret;
	loff_t start;

	if (!(iocb->ki_flags & IOCB_APPEND) && csvfs_direct_ok(iocb, from)) {
		done = csvfs_dio_write(iocb, from);
		if (done < 0 || !iov_iter_count(from))
			return done;
	}
	start = iocb->ki_pos;
	ret = csvfs_redirected_write(iocb, from);
	if (ret > 0 && (iocb->ki_flags & IOCB_DIRECT))
		csvfs_layout_forget(inode, start, ret);
	return done ? (ret < 0 ? done : done + ret) : ret;
}

static int csvfs_fsync(struct file *file, loff_t start, loff_t end,
		       int datasync)
{
	struct inode *inode = file_inode(file);
	struct csvfs_args args = { .cmd = CSVFS_CMD_FSYNC };
	u64 open_id = csvfs_open_id(file);
	int ret;

	ret = file_write_and_wait_range(file, start, end);
	if (ret)
		return ret;
	ret = csvfs_layout_commit(inode, true);
	if (ret)
		return ret;
	csvfs_in(&args, CSVFS_A_FH, CSVFS_I(inode)->fh.size,
		 CSVFS_I(inode)->fh.data);
	if (open_id)
		csvfs_in(&args, CSVFS_A_OPEN_ID, sizeof(open_id), &open_id);
	if (datasync)
		csvfs_in(&args, CSVFS_A_DATASYNC, 0, NULL);
	return csvfs_sb_request(inode->i_sb, &args);
}

static loff_t csvfs_lseek_req(struct file *file, loff_t offset, int whence)
{
	struct inode *inode = file_inode(file);
	struct csvfs_args args = { .cmd = CSVFS_CMD_LSEEK };
	u64 off = offset, result;
	u32 w = whence;
	int ret;

	ret = filemap_write_and_wait(inode->i_mapping);
	if (ret)
		return ret;
	csvfs_in(&args, CSVFS_A_FH, CSVFS_I(inode)->fh.size,
		 CSVFS_I(inode)->fh.data);
	csvfs_in(&args, CSVFS_A_OFFSET, sizeof(off), &off);
	csvfs_in(&args, CSVFS_A_WHENCE, sizeof(w), &w);
	csvfs_out(&args, CSVFS_A_OFFSET, 0, sizeof(result), &result);
	ret = csvfs_sb_request(inode->i_sb, &args);
	if (ret)
		return ret;
	return vfs_setpos(file, result, inode->i_sb->s_maxbytes);
}

static loff_t csvfs_file_llseek(struct file *file, loff_t offset, int whence)
{
	int ret;

	switch (whence) {
	case SEEK_DATA:
	case SEEK_HOLE:
		return csvfs_lseek_req(file, offset, whence);
	case SEEK_END:
		ret = csvfs_refresh(file_inode(file), true);
		if (ret)
			return ret;
		fallthrough;
	default:
		return generic_file_llseek(file, offset, whence);
	}
}

static long csvfs_fallocate(struct file *file, int mode, loff_t offset,
			    loff_t length)
{
	struct inode *inode = file_inode(file);
	struct csvfs_args args = { .cmd = CSVFS_CMD_FALLOCATE };
	struct csvfs_out_arg *attr_out;
	struct csvfs_attr attr;
	u64 off = offset, len = length;
	u32 flags = mode;
	int ret;

	if (csvfs_inode_lock(inode))
		return -EINTR;
	inode_dio_wait(inode);
	ret = filemap_write_and_wait(inode->i_mapping);
	if (ret)
		goto out;
	/* blocks may be allocated, freed or moved: ask again afterwards */
	csvfs_layout_forget(inode, offset, 0);
	csvfs_in(&args, CSVFS_A_FH, CSVFS_I(inode)->fh.size,
		 CSVFS_I(inode)->fh.data);
	csvfs_in(&args, CSVFS_A_OFFSET, sizeof(off), &off);
	csvfs_in(&args, CSVFS_A_LENGTH, sizeof(len), &len);
	csvfs_in(&args, CSVFS_A_FLAGS, sizeof(flags), &flags);
	attr_out = csvfs_out(&args, CSVFS_A_ATTR, CSVFS_OUT_OPTIONAL,
			     sizeof(attr), &attr);
	ret = csvfs_sb_request(inode->i_sb, &args);
	if (!ret && attr_out->present &&
	    !((inode->i_mode ^ attr.mode) & S_IFMT))
		csvfs_set_attr(inode, &attr);
	else
		csvfs_attr_stale(inode);
	if (!ret && (mode & ~FALLOC_FL_KEEP_SIZE))
		invalidate_inode_pages2(inode->i_mapping);
out:
	inode_unlock(inode);
	return ret;
}

/* mmap: the page cache, filled and written back through READ/WRITE */

static int csvfs_read_folio(struct file *file, struct folio *folio)
{
	struct inode *inode = folio->mapping->host;
	u64 open_id = file ? csvfs_open_id(file) : 0;
	ssize_t ret;
	void *buf;

	buf = kmalloc(PAGE_SIZE, GFP_KERNEL);
	if (!buf) {
		ret = -ENOMEM;
		goto out;
	}
	if (!open_id && csvfs_writeback_open_id(inode, &open_id))
		open_id = 0;
	ret = csvfs_read_req(inode, open_id, folio_pos(folio), PAGE_SIZE,
			     buf);
	if (ret >= 0) {
		memset(buf + ret, 0, PAGE_SIZE - ret);
		memcpy_to_page(&folio->page, 0, buf, PAGE_SIZE);
		folio_mark_uptodate(folio);
		ret = 0;
	}
	kfree(buf);
out:
	folio_unlock(folio);
	return ret;
}

/* Fill the locked folio at buf + off from a READ of got bytes at off 0. */
static void csvfs_fill_folio(struct folio *folio, const void *buf,
			     ssize_t got, size_t off)
{
	size_t n = 0;

	if (got > off)
		n = min_t(size_t, got - off, PAGE_SIZE);
	memcpy_to_page(&folio->page, 0, buf + off, n);
	zero_user_segment(&folio->page, n, PAGE_SIZE);
	folio_mark_uptodate(folio);
}

/*
 * Readahead (cached reads under a lease): one READ per CSVFS_MAX_IO bytes
 * instead of one per page. Folios a failed READ did not fill are left
 * !uptodate: read_folio retries them and reports the error.
 */
static void csvfs_readahead(struct readahead_control *rac)
{
	struct inode *inode = rac->mapping->host;
	u64 open_id = rac->file ? csvfs_open_id(rac->file) : 0;
	struct folio *folio;
	ssize_t got;
	size_t len;
	loff_t pos;
	void *buf;

	buf = kvmalloc(CSVFS_MAX_IO, GFP_KERNEL);
	if (!open_id && csvfs_writeback_open_id(inode, &open_id))
		open_id = 0;
	folio = readahead_folio(rac);
	while (folio) {
		/* a chunk from this folio: readahead_length() counts it */
		pos = folio_pos(folio);
		len = min_t(size_t, readahead_length(rac), CSVFS_MAX_IO);
		got = buf ? csvfs_read_req(inode, open_id, pos, len, buf) :
			    -ENOMEM;
		do {
			if (folio_pos(folio) != pos &&
			    folio_pos(folio) + folio_size(folio) > pos + len)
				break;	/* the next chunk's first folio */
			if (got >= 0 && folio_size(folio) == PAGE_SIZE)
				csvfs_fill_folio(folio, buf, got,
						 folio_pos(folio) - pos);
			folio_unlock(folio);
			folio = readahead_folio(rac);
		} while (folio);
	}
	kvfree(buf);
}

/* Write one locked page to the coordinator; the page stays locked. */
static int csvfs_write_page(struct page *page)
{
	struct inode *inode = page->mapping->host;
	loff_t pos = page_offset(page), size = i_size_read(inode);
	size_t len;
	u64 open_id;
	void *buf;
	int ret;

	if (pos >= size)
		return 0;	/* truncated meanwhile */
	len = min_t(loff_t, PAGE_SIZE, size - pos);
	ret = csvfs_writeback_open_id(inode, &open_id);
	if (ret)
		goto out;
	buf = kmalloc(PAGE_SIZE, GFP_NOFS);
	ret = -ENOMEM;
	if (!buf)
		goto out;
	memcpy_from_page(buf, page, 0, len);
	ret = csvfs_write_req(inode, open_id, pos, len, buf);
	kfree(buf);
out:
	if (ret)
		mapping_set_error(page->mapping, ret);
	return ret;
}

static int csvfs_writepage(struct page *page, struct writeback_control *wbc)
{
	int ret;

	/* never wait for the daemon from reclaim: it may need memory */
	if (current->flags & PF_MEMALLOC) {
		redirty_page_for_writepage(wbc, page);
		unlock_page(page);
		return 0;
	}
	set_page_writeback(page);
	ret = csvfs_write_page(page);
	end_page_writeback(page);
	unlock_page(page);
	return ret;
}

static int csvfs_launder_folio(struct folio *folio)
{
	if (!folio_clear_dirty_for_io(folio))
		return 0;
	return csvfs_write_page(&folio->page);
}

const struct address_space_operations csvfs_aops = {
	.read_folio	= csvfs_read_folio,
	.readahead	= csvfs_readahead,
	.writepage	= csvfs_writepage,
	.launder_folio	= csvfs_launder_folio,
	.dirty_folio	= filemap_dirty_folio,
	.direct_IO	= noop_direct_IO,
};

const struct file_operations csvfs_file_fops = {
	.open		= csvfs_open,
	.flush		= csvfs_flush,
	.release	= csvfs_release,
	.llseek		= csvfs_file_llseek,
	.read_iter	= csvfs_read_iter,
	.write_iter	= csvfs_write_iter,
	.mmap		= generic_file_mmap,
	.fsync		= csvfs_fsync,
	.fallocate	= csvfs_fallocate,
	.splice_read	= generic_file_splice_read,
	.splice_write	= iter_file_splice_write,
};

/* directories */

static int csvfs_dir_open(struct inode *inode, struct file *file)
{
	return csvfs_refresh(inode, true);	/* close-to-open */
}

/* Check one packed entry at off in buf of len bytes; its size or -EIO. */
static ssize_t csvfs_dirent_check(const void *buf, size_t off, size_t len)
{
	const struct csvfs_dirent *d = buf + off;
	size_t size;

	if (len - off < sizeof(*d))
		return -EIO;
	if (!d->namelen || d->namelen > NAME_MAX || d->type > 15 ||
	    d->cookie > LLONG_MAX)
		return -EIO;
	size = CSVFS_DIRENT_SIZE(d);
	if (size > len - off)
		return -EIO;
	if (memchr(d->name, '/', d->namelen) || memchr(d->name, 0, d->namelen))
		return -EIO;
	return size;
}

/* Emit the entries of one READDIR reply; 1 when the caller's buffer is full. */
static int csvfs_emit(struct dir_context *ctx, const void *buf, size_t len)
{
	const struct csvfs_dirent *d;
	ssize_t size;
	size_t off;

	for (off = 0; off < len; off += size) {
		size = csvfs_dirent_check(buf, off, len);
		if (size < 0)
			return size;
		d = buf + off;
		if (!dir_emit(ctx, d->name, d->namelen, d->ino, d->type))
			return 1;
		ctx->pos = d->cookie;
	}
	return 0;
}

static int csvfs_readdir(struct file *file, struct dir_context *ctx)
{
	struct inode *inode = file_inode(file);
	struct csvfs_out_arg *dirents, *eof;
	u64 cookie;
	void *buf;
	int ret;

	buf = kvmalloc(CSVFS_MAX_DIRENTS, GFP_KERNEL);
	if (!buf)
		return -ENOMEM;
	for (;;) {
		struct csvfs_args args = { .cmd = CSVFS_CMD_READDIR };

		cookie = ctx->pos;
		csvfs_in(&args, CSVFS_A_FH, CSVFS_I(inode)->fh.size,
			 CSVFS_I(inode)->fh.data);
		csvfs_in(&args, CSVFS_A_COOKIE, sizeof(cookie), &cookie);
		dirents = csvfs_out(&args, CSVFS_A_DIRENTS,
				    CSVFS_OUT_OPTIONAL | CSVFS_OUT_VARLEN,
				    CSVFS_MAX_DIRENTS, buf);
		eof = csvfs_out(&args, CSVFS_A_EOF, CSVFS_OUT_OPTIONAL, 0,
				NULL);
		ret = csvfs_sb_request(inode->i_sb, &args);
		if (ret)
			break;
		ret = csvfs_emit(ctx, buf, dirents->len);
		if (ret)
			break;
		if (eof->present || !dirents->len)
			break;
		if (ctx->pos == cookie) {	/* no progress: broken reply */
			ret = -EIO;
			break;
		}
	}
	kvfree(buf);
	return ret < 0 ? ret : 0;
}

static loff_t csvfs_dir_llseek(struct file *file, loff_t offset, int whence)
{
	/* positions are the coordinator's cookies */
	return generic_file_llseek_size(file, offset, whence, LLONG_MAX,
					LLONG_MAX);
}

static int csvfs_dir_fsync(struct file *file, loff_t start, loff_t end,
			   int datasync)
{
	struct inode *inode = file_inode(file);
	struct csvfs_args args = { .cmd = CSVFS_CMD_FSYNC };

	csvfs_in(&args, CSVFS_A_FH, CSVFS_I(inode)->fh.size,
		 CSVFS_I(inode)->fh.data);
	return csvfs_sb_request(inode->i_sb, &args);
}

const struct file_operations csvfs_dir_fops = {
	.open		= csvfs_dir_open,
	.llseek		= csvfs_dir_llseek,
	.read		= generic_read_dir,
	.iterate_shared	= csvfs_readdir,
	.fsync		= csvfs_dir_fsync,
};
