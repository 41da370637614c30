/* SPDX-License-Identifier: GPL-2.0 */
/*
 * csvfs - Cluster Shared Volumes for Linux: in-kernel structures.
 *
 * Lock order (outermost first):
 *   VFS locks (i_rwsem of directories, then of files; folio lock)
 *   CSVFS_SB_DRAINING bit            (recall of all layouts; no I/O lock)
 *     csvfs_sb_lock                  (mount list, superblock ids)
 *     csvfs_daemon_lock              (registered daemon)
 *       csvfs_req_lock               (request table)
 *     csvfs_inode.lease_sem          (caching lease; then folio locks)
 *     csvfs_inode.lock               (cached attributes, open files)
 *     csvfs_inode.layout_lock        (layout cache; never with .lock)
 * No csvfs lock is held while a request waits for its reply, except
 * lease_sem (cached reads' readahead; a break's writeback).
 */
#ifndef _CSVFS_H
#define _CSVFS_H

#include <linux/fs.h>
#include <linux/rbtree.h>
#include <linux/wait.h>
#include <linux/workqueue.h>
#include <net/genetlink.h>
#include <uapi/linux/csvfs.h>

#define CSVFS_MAGIC		0x43535646	/* "CSVF" */
#define CSVFS_VERSION		"0.2.0"

#define CSVFS_DEFAULT_TIMEOUT	60	/* seconds a request may wait */
#define CSVFS_DEFAULT_ATTR_MS	1000	/* attribute and dentry cache */
#define CSVFS_UNMOUNT_TIMEOUT	(10 * HZ)
#define CSVFS_COMMIT_DELAY	HZ	/* direct writes' mtime to the coordinator */

#define csvfs_err(sb, fmt, ...)						\
	pr_err("%s: " fmt "\n", (sb)->s_id, ##__VA_ARGS__)
#define csvfs_warn(sb, fmt, ...)					\
	pr_warn_ratelimited("%s: " fmt "\n", (sb)->s_id, ##__VA_ARGS__)
#define csvfs_info(sb, fmt, ...)					\
	pr_info("%s: " fmt "\n", (sb)->s_id, ##__VA_ARGS__)

/*
 * A coordinator file handle in its wire form: struct csvfs_fh followed by
 * fh.len bytes, size bytes in all (at most CSVFS_MAX_FH). Opaque here.
 */
struct csvfs_handle {
	u32	size;
	u8	data[CSVFS_MAX_FH];
};

/* Data paths counted in /proc/fs/csvfs/<sb_id> (stats.c). */
enum csvfs_path {
	CSVFS_PATH_DIRECT,	/* bios to the shared device */
	CSVFS_PATH_BLOCK,	/* bios redirected through the coordinator */
	CSVFS_PATH_FILE,	/* READ/WRITE requests */
	CSVFS_PATH_CACHED,	/* read(2) from the page cache under a lease */
	__CSVFS_PATH_MAX
};

struct csvfs_io_stat {
	atomic64_t	ops;
	atomic64_t	bytes;
	atomic64_t	ns;		/* sum of latencies */
};

/* One mounted volume. Fields are set at mount and read-only after. */
struct csvfs_sb_info {
	struct super_block	*sb;
	struct list_head	list;		/* in csvfs_sbs, csvfs_sb_lock */
	u32			sb_id;
	bool			mounted;	/* daemon accepted MOUNT */
	char			volume[CSVFS_MAX_VOLUME_NAME];
	char			*device;
	struct block_device	*bdev;		/* opened non-exclusively */
	u64			epoch;
	u64			dev_size;
	unsigned long		timeout;	/* jiffies per request */
	unsigned long		attr_timeout;	/* jiffies, 0: no caching */
	u32			redirect;	/* forced by redirect=: IO_* */
	/* direct data path; written without a lock (READ/WRITE_ONCE) */
	u32			io_mode;	/* from VOLUME_STATE: IO_* */
	unsigned long		path_failed_until; /* jiffies */
	/*
	 * The node's lease (VOLUME_STATE LEASE_MS): no bio is submitted to
	 * the device after lease_until once the daemon sent a lease.
	 */
	unsigned long		lease_until;	/* jiffies */
	u64			lease_until_real; /* the same, ns of wall clock */
	bool			lease_set;
	/*
	 * Bumped when every cached layout ends: a new coordinator recalled
	 * them all (LAYOUT_RECALL_ALL), a new daemon registered, or the lease
	 * ran out (layout.c).
	 */
	atomic_long_t		layout_era;
	unsigned long		lease_lapses;	/* renewals after the deadline */
	/*
	 * Direct I/O that may use a cached layout, counted from the lookup
	 * until its last device bio completes, in dio_count[drain_idx at its
	 * start]; a recall of all layouts flips drain_idx and waits for the
	 * old count (direct.c, csvfs_layout_drain; CSVFS_SB_DRAINING in
	 * drain_flags serialises).
	 */
	atomic_t		dio_count[2];
	unsigned int		drain_idx;
	unsigned long		drain_flags;	/* CSVFS_SB_DRAINING */
	struct csvfs_io_stat	stats[__CSVFS_PATH_MAX][2];	/* [path][write] */
	struct proc_dir_entry	*proc;
};

/* Bits of csvfs_sb_info.drain_flags. */
enum {
	CSVFS_SB_DRAINING,	/* a recall of all layouts is draining I/O */
};

/* Whether this node may still submit direct I/O (its lease runs). */
static inline bool csvfs_lease_ok(struct csvfs_sb_info *sbi)
{
	return !READ_ONCE(sbi->lease_set) ||
	       time_before(jiffies, READ_ONCE(sbi->lease_until));
}

/*
 * i_rwsem for csvfs's own read, write and fallocate paths. Killable: the
 * holder may wait minutes for a coordinator or a lease (failover, a
 * partition), and a task queued behind it in an uninterruptible sleep is
 * what the hung-task detector reports; a killable sleep is not reported
 * and still lets the task be killed.
 */
static inline int csvfs_inode_lock(struct inode *inode)
{
	return down_write_killable(&inode->i_rwsem);
}

static inline int csvfs_inode_lock_shared(struct inode *inode)
{
	return down_read_killable(&inode->i_rwsem);
}

static inline struct csvfs_sb_info *CSVFS_SB(struct super_block *sb)
{
	return sb->s_fs_info;
}

/* Bits of csvfs_inode.flags. */
enum {
	CSVFS_I_ATTR_STALE,	/* refetch attributes before use */
	CSVFS_I_DATA_STALE,	/* drop the page cache at the next open */
	CSVFS_I_LAYOUT_DIRTY,	/* direct writes not yet LAYOUT_COMMITted */
	CSVFS_I_DEVICE_DIRTY,	/* direct writes since the last device flush */
};

/*
 * An inode, keyed by the coordinator's file handle (hash of its bytes).
 * lock guards attr_expire and open_files; fh is set once at creation.
 * layout_lock guards extents and layout_gen (layout.c).
 */
struct csvfs_inode {
	struct inode		vfs_inode;
	struct csvfs_handle	fh;
	spinlock_t		lock;
	unsigned long		attr_expire;	/* jiffies */
	unsigned long		flags;		/* CSVFS_I_* bits */
	struct list_head	open_files;	/* writable csvfs_file */
	spinlock_t		layout_lock;
	struct rb_root		extents;	/* struct csvfs_lext */
	unsigned long		layout_gen;	/* bumped by every drop */
	unsigned long		layout_era;	/* sbi->layout_era of extents */
	atomic_t		recalls;	/* recalls in progress */
	struct delayed_work	commit_work;	/* LAYOUT_COMMIT after writes */
	/* caching lease (lease.c): lease, lease_epoch under lease_sem */
	struct rw_semaphore	lease_sem;
	u32			lease;		/* CSVFS_LEASE_* */
	u64			lease_epoch;	/* coordinator epoch of it */
	atomic_t		lease_breaks;	/* breaks received */
};

static inline struct csvfs_inode *CSVFS_I(struct inode *inode)
{
	return container_of(inode, struct csvfs_inode, vfs_inode);
}

/* An open file: the coordinator's open id, in file->private_data. */
struct csvfs_file {
	u64			open_id;
	struct list_head	list;	/* in csvfs_inode.open_files */
	bool			writable;
};

/*
 * A request, declared by the operation (fs/fuse style): attributes to send
 * and attributes expected in the reply. The reply is checked against the
 * declaration; anything else in it becomes -EIO.
 */
#define CSVFS_MAX_IN	8
#define CSVFS_MAX_OUT	5

struct csvfs_in_arg {
	u16		type;		/* CSVFS_A_* */
	u16		len;		/* bytes at value */
	const void	*value;
};

/* Flags of struct csvfs_out_arg. */
#define CSVFS_OUT_OPTIONAL	(1U << 0)	/* may be absent */
#define CSVFS_OUT_VARLEN	(1U << 1)	/* up to size bytes */
#define CSVFS_OUT_HANDLE	(1U << 2)	/* into struct csvfs_handle */

struct csvfs_out_arg {
	u16		type;
	u16		flags;
	u32		size;		/* exact, or the maximum with VARLEN */
	void		*value;
	u32		len;		/* set: bytes received */
	bool		present;	/* set: the reply carried it */
};

struct csvfs_args {
	u8			cmd;
	u8			in_numargs;
	u8			out_numargs;
	bool			async;		/* nobody waits: freed after */
	struct csvfs_in_arg	in[CSVFS_MAX_IN];
	struct csvfs_out_arg	out[CSVFS_MAX_OUT];
};

static inline void csvfs_in(struct csvfs_args *args, u16 type, u16 len,
			    const void *value)
{
	if (WARN_ON_ONCE(args->in_numargs >= CSVFS_MAX_IN))
		return;
	args->in[args->in_numargs++] = (struct csvfs_in_arg) {
		.type = type, .len = len, .value = value,
	};
}

static inline void csvfs_in_str(struct csvfs_args *args, u16 type,
				const char *s, size_t len)
{
	csvfs_in(args, type, len + 1, s);	/* s[len] is NUL */
}

static inline struct csvfs_out_arg *
csvfs_out(struct csvfs_args *args, u16 type, u16 flags, u32 size, void *value)
{
	struct csvfs_out_arg *out;

	if (WARN_ON_ONCE(args->out_numargs >= CSVFS_MAX_OUT))
		return &args->out[0];
	out = &args->out[args->out_numargs++];
	*out = (struct csvfs_out_arg) {
		.type = type, .flags = flags, .size = size, .value = value,
	};
	return out;
}

/* request.c */
int csvfs_request_init(void);
void csvfs_request_exit(void);
int csvfs_request(u32 sb_id, unsigned long timeout, struct csvfs_args *args);
int csvfs_request_async(u32 sb_id, unsigned long timeout,
			struct csvfs_args *args);
int csvfs_request_reply(struct genl_info *info, int valid);
void csvfs_requests_resend(void);
int csvfs_notify(u64 id, u32 sb_id, struct csvfs_args *args);
void csvfs_queue_work(struct work_struct *work);
void csvfs_queue_delayed_work(struct delayed_work *dwork, unsigned long delay);

static inline int csvfs_sb_request(struct super_block *sb,
				   struct csvfs_args *args)
{
	return csvfs_request(CSVFS_SB(sb)->sb_id, CSVFS_SB(sb)->timeout, args);
}

/* netlink.c */
extern struct genl_family csvfs_genl_family;
int csvfs_netlink_init(void);
void csvfs_netlink_exit(void);
bool csvfs_daemon_registered(void);
u32 csvfs_daemon_port(unsigned int *gen);
unsigned int csvfs_daemon_gen(void);
void csvfs_reply_daemon(u64 req_id, u32 sb_id, s32 err);
void csvfs_path_error(struct csvfs_sb_info *sbi, u64 dev_offset, u64 length,
		      int err);

/* super.c */
extern struct file_system_type csvfs_fs_type;
int csvfs_inode_cache_init(void);
void csvfs_inode_cache_exit(void);
struct super_block *csvfs_sb_get(u32 sb_id);
bool csvfs_sb_volume(u32 sb_id, char *buf);
void csvfs_volume_state(u32 sb_id, u64 epoch, const u32 *io_mode,
			const u32 *lease_ms);
void csvfs_layouts_end_everywhere(void);
void csvfs_invalidate(u32 sb_id, u32 flags, const struct csvfs_handle *fh,
		      const struct csvfs_handle *parent, const char *name);

/* inode.c */
extern const struct dentry_operations csvfs_dentry_ops;
extern const struct xattr_handler *csvfs_xattr_handlers[];
int csvfs_handle_check(const struct csvfs_handle *fh);
struct inode *csvfs_ilookup(struct super_block *sb,
			    const struct csvfs_handle *fh);
void csvfs_dentry_expire(struct dentry *dentry);
struct inode *csvfs_iget(struct super_block *sb, const struct csvfs_handle *fh,
			 const struct csvfs_attr *attr);
void csvfs_set_attr(struct inode *inode, const struct csvfs_attr *attr);
int csvfs_refresh(struct inode *inode, bool force);
void csvfs_attr_stale(struct inode *inode);
int csvfs_setattr_req(struct inode *inode, const struct csvfs_setattr *sa,
		      struct file *file);

/* file.c */
extern const struct file_operations csvfs_file_fops;
extern const struct file_operations csvfs_dir_fops;
extern const struct address_space_operations csvfs_aops;
int csvfs_file_attach(struct inode *inode, struct file *file, u64 open_id);
void csvfs_file_detach(struct inode *inode, struct file *file);
void csvfs_release_req(struct inode *inode, u64 open_id);
void csvfs_release_req_fh(struct super_block *sb,
			  const struct csvfs_handle *fh, u64 open_id);

/* layout.c */
int csvfs_layout_cache_init(void);
void csvfs_layout_cache_exit(void);
void csvfs_layout_init(struct csvfs_inode *ci);
bool csvfs_layout_lookup(struct inode *inode, u64 pos,
			 struct csvfs_extent *out);
int csvfs_layout_get(struct inode *inode, u64 pos, u64 len);
void csvfs_layout_forget(struct inode *inode, u64 start, u64 len);
void csvfs_layout_destroy(struct inode *inode);
int csvfs_layout_commit(struct inode *inode, bool durable);
void csvfs_layout_dirty(struct inode *inode);
int csvfs_layout_recall(u64 req_id, u32 sb_id, const struct csvfs_handle *fh,
			u64 offset, u64 length);
void csvfs_layouts_end(struct csvfs_sb_info *sbi);

/* lease.c */
void csvfs_lease_init(struct csvfs_inode *ci);
bool csvfs_lease_read_begin(struct inode *inode);
void csvfs_lease_read_end(struct inode *inode);
int csvfs_lease_breaks(struct inode *inode);
void csvfs_lease_set(struct inode *inode, u32 level, int breaks);
void csvfs_lease_open(struct inode *inode, struct file *file, u32 held,
		      int breaks);
void csvfs_lease_return(struct inode *inode);
int csvfs_lease_break(u64 req_id, u32 sb_id, const struct csvfs_handle *fh,
		      u32 level);

/* stats.c */
void csvfs_count(struct csvfs_sb_info *sbi, enum csvfs_path path, bool write,
		 u64 bytes, ktime_t start);
void csvfs_stats_add(struct csvfs_sb_info *sbi);
void csvfs_stats_remove(struct csvfs_sb_info *sbi);
void csvfs_stats_init(void);
void csvfs_stats_exit(void);

/* direct.c */
int csvfs_direct_init(void);
void csvfs_direct_exit(void);
bool csvfs_direct_ok(struct kiocb *iocb, struct iov_iter *iter);
ssize_t csvfs_dio_read(struct kiocb *iocb, struct iov_iter *to);
ssize_t csvfs_dio_write(struct kiocb *iocb, struct iov_iter *from);
int csvfs_layout_drain(struct csvfs_sb_info *sbi);

#endif /* _CSVFS_H */
