/* SPDX-License-Identifier: ((GPL-2.0 WITH Linux-syscall-note) OR BSD-2-Clause) */
/*
 * csvfs - Cluster Shared Volumes for Linux: the kernel <-> daemon ABI.
 *
 * One generic netlink family, "csvfs", carries every message between
 * csvfs.ko and the local csvd. The same attribute sets are the payload that
 * daemons frame over TCP between nodes, so there is one schema, one parser
 * and one set of bounds checks for both hops.
 *
 * Conventions
 * - Every request carries CSVFS_A_REQ_ID (unique per sender); the answer is
 *   a CSVFS_CMD_REPLY with the same REQ_ID and CSVFS_A_ERRNO (0 or a
 *   negative errno, e.g. -ENOENT), plus the command's result attributes.
 * - Requests that the kernel sends go to the daemon registered with
 *   CSVFS_CMD_HELLO; replies from any other socket are dropped. A daemon that
 *   registers again (restart) gets every pending request re-sent.
 * - Offsets and lengths are in bytes. Device offsets are multiples of 512.
 * - Binary structures are in host byte order with explicit padding to
 *   64 bits; peers on other byte orders are refused at connect.
 * - Strings are NUL-terminated; names never contain '/' or NUL.
 * - Attributes are limited to what nla_len (u16) can hold, so data moves
 *   in chunks of at most CSVFS_MAX_IO bytes per message.
 *
 * Changelog
 *   1  first version (UID/GID for the create family added before any
 *      release).
 *   2  LAYOUT_RECALL_ALL; struct csvfs_attr.flags (CSVFS_ATTR_NO_CAPS).
 *
 * Never change the meaning of an existing value; add new ones at the end and
 * bump CSVFS_ABI_VERSION.
 */
#ifndef _UAPI_LINUX_CSVFS_H
#define _UAPI_LINUX_CSVFS_H

#include <linux/types.h>

#define CSVFS_GENL_NAME		"csvfs"
#define CSVFS_GENL_VERSION	1
#define CSVFS_ABI_VERSION	2
#define CSVFS_MCGRP_EVENTS	"events"

/* Limits, checked on every hop. */
#define CSVFS_MAX_VOLUME_NAME	64	/* incl. NUL */
#define CSVFS_MAX_NAME		256	/* NAME_MAX + NUL */
#define CSVFS_MAX_PATH		4096	/* PATH_MAX incl. NUL */
#define CSVFS_MAX_FH		128	/* MAX_HANDLE_SZ */
#define CSVFS_MAX_IO		32768	/* data bytes per message */
#define CSVFS_MAX_XATTR_NAME	256	/* XATTR_NAME_MAX + NUL */
#define CSVFS_MAX_XATTR_VALUE	32768
#define CSVFS_MAX_XATTR_LIST	32768
#define CSVFS_MAX_EXTENTS	256	/* extents per LAYOUT_GET reply */
#define CSVFS_MAX_DIRENTS	32768	/* bytes of packed dirents per reply */
#define CSVFS_FS_UUID_LEN	16

/* Capability bits exchanged in HELLO. */
#define CSVFS_CAP_LAYOUTS	(1ULL << 0)	/* direct I/O through layouts */
#define CSVFS_CAP_LEASES	(1ULL << 1)	/* caching leases */
#define CSVFS_CAP_LOCKS		(1ULL << 2)	/* cluster-wide POSIX/flock */

enum csvfs_cmd {
	CSVFS_CMD_UNSPEC,

	/* Session */
	CSVFS_CMD_HELLO,	/* daemon -> kernel: register; ABI_VERSION, CAPS */
	CSVFS_CMD_REPLY,	/* either way: answer to REQ_ID */
	CSVFS_CMD_MOUNT,	/* kernel -> daemon: VOLUME, DEVICE, SB_ID */
	CSVFS_CMD_UNMOUNT,	/* kernel -> daemon: SB_ID */
	CSVFS_CMD_ATTACH,	/* tool -> daemon: VOLUME [, DEVICE] */
	CSVFS_CMD_DETACH,	/* tool -> daemon: VOLUME */

	/* Namespace and attributes; all carry SB_ID (kernel hop), EPOCH. */
	CSVFS_CMD_LOOKUP,	/* PARENT_FH, NAME -> FH, ATTR */
	CSVFS_CMD_GETATTR,	/* FH -> ATTR */
	CSVFS_CMD_SETATTR,	/* FH, SETATTR [, OPEN_ID] -> ATTR */
	/*
	 * The create family takes optional UID and GID: the owner of the new
	 * inode (the caller's fsuid/fsgid; GID is ignored in a set-gid
	 * directory, whose group is inherited). Without them, root owns it.
	 */
	CSVFS_CMD_CREATE,	/* PARENT_FH, NAME, MODE, FLAGS -> FH, ATTR, OPEN_ID */
	CSVFS_CMD_MKNOD,	/* PARENT_FH, NAME, MODE, RDEV -> FH, ATTR */
	CSVFS_CMD_MKDIR,	/* PARENT_FH, NAME, MODE -> FH, ATTR */
	CSVFS_CMD_SYMLINK,	/* PARENT_FH, NAME, TARGET -> FH, ATTR */
	CSVFS_CMD_LINK,		/* FH, NEW_PARENT_FH, NEW_NAME -> ATTR */
	CSVFS_CMD_UNLINK,	/* PARENT_FH, NAME */
	CSVFS_CMD_RMDIR,	/* PARENT_FH, NAME */
	CSVFS_CMD_RENAME,	/* PARENT_FH, NAME, NEW_PARENT_FH, NEW_NAME, FLAGS */
	CSVFS_CMD_READDIR,	/* FH, COOKIE -> DIRENTS [, EOF] */
	CSVFS_CMD_READLINK,	/* FH -> TARGET */
	CSVFS_CMD_OPEN,		/* FH, FLAGS -> OPEN_ID [, LEASE] */
	CSVFS_CMD_RELEASE,	/* FH, OPEN_ID */
	CSVFS_CMD_FSYNC,	/* FH [, OPEN_ID] [, DATASYNC] */
	CSVFS_CMD_STATFS,	/* -> STATFS */
	CSVFS_CMD_GETXATTR,	/* FH, XATTR_NAME, SIZE -> XATTR_VALUE | SIZE */
	CSVFS_CMD_SETXATTR,	/* FH, XATTR_NAME, XATTR_VALUE, FLAGS */
	CSVFS_CMD_LISTXATTR,	/* FH, SIZE -> XATTR_VALUE | SIZE */
	CSVFS_CMD_REMOVEXATTR,	/* FH, XATTR_NAME */
	CSVFS_CMD_FALLOCATE,	/* FH, OFFSET, LENGTH, FLAGS -> ATTR */
	CSVFS_CMD_LSEEK,	/* FH, OFFSET, WHENCE -> OFFSET */

	/* Data, file-system redirected: through the lower filesystem. */
	CSVFS_CMD_READ,		/* FH, OPEN_ID, OFFSET, LENGTH -> DATA */
	CSVFS_CMD_WRITE,	/* FH, OPEN_ID, OFFSET, DATA -> ATTR */

	/* Data, block-level redirected: on the coordinator's device path. */
	CSVFS_CMD_BLOCK_READ,	/* DEV_OFFSET, LENGTH -> DATA */
	CSVFS_CMD_BLOCK_WRITE,	/* DEV_OFFSET, DATA */

	/* Layouts */
	CSVFS_CMD_LAYOUT_GET,	 /* FH, OFFSET, LENGTH, LAYOUT_IOMODE -> EXTENTS */
	CSVFS_CMD_LAYOUT_RETURN, /* FH [, OFFSET, LENGTH] */
	CSVFS_CMD_LAYOUT_COMMIT, /* FH, SETATTR (size, times) -> ATTR */
	CSVFS_CMD_LAYOUT_RECALL, /* daemon -> kernel: FH, OFFSET, LENGTH */

	/* Caching leases */
	CSVFS_CMD_LEASE_GET,	/* FH, LEASE -> LEASE */
	CSVFS_CMD_LEASE_RETURN,	/* FH */
	CSVFS_CMD_LEASE_BREAK,	/* daemon -> kernel: FH, LEASE (new level) */

	/* Cluster-wide locks */
	CSVFS_CMD_LOCK,		/* FH, LOCK -> LOCK (conflict on F_GETLK) */

	/* Events and state pushed to or from the kernel */
	CSVFS_CMD_INVALIDATE,	/* daemon -> kernel: FH | PARENT_FH+NAME */
	CSVFS_CMD_VOLUME_STATE,	/* daemon -> kernel: EPOCH, IO_MODE, MODE_REASON, LEASE_MS */
	CSVFS_CMD_PATH_ERROR,	/* kernel -> daemon: DEV_OFFSET, LENGTH, ERRNO */
	/*
	 * daemon -> kernel, from a new coordinator before it serves: end every
	 * layout of the volume; answered once direct I/O that may still use
	 * one of them has reached the device.
	 */
	CSVFS_CMD_LAYOUT_RECALL_ALL,

	__CSVFS_CMD_MAX,
	CSVFS_CMD_MAX = __CSVFS_CMD_MAX - 1
};

/*
 * Attributes. The table below is the single source of the attribute set:
 * CSVFS_ATTR_TABLE(X) expands X(name, type, maxlen) where type is one of
 * U8, U32, U64, S32, FLAG, STRING (maxlen incl. NUL), BINARY (maxlen bytes)
 * and STRUCT (exactly sizeof the named structure). The kernel expands it
 * into its nla_policy, the daemon into its codec's.
 */
#define CSVFS_ATTR_TABLE(X)						\
	X(REQ_ID,	 U64,	 0)	/* request id, echoed in REPLY */	\
	X(ERRNO,	 S32,	 0)	/* 0 or -errno, in REPLY */		\
	X(SB_ID,	 U32,	 0)	/* kernel superblock id */		\
	X(EPOCH,	 U64,	 0)	/* volume epoch */			\
	X(VOLUME,	 STRING, CSVFS_MAX_VOLUME_NAME)				\
	X(DEVICE,	 STRING, CSVFS_MAX_PATH)	/* block device path */	\
	X(FS_UUID,	 BINARY, CSVFS_FS_UUID_LEN)				\
	X(ABI_VERSION,	 U32,	 0)						\
	X(CAPS,		 U64,	 0)						\
	X(FH,		 BINARY, CSVFS_MAX_FH)	/* struct csvfs_fh + bytes */	\
	X(PARENT_FH,	 BINARY, CSVFS_MAX_FH)					\
	X(NEW_PARENT_FH, BINARY, CSVFS_MAX_FH)					\
	X(NAME,		 STRING, CSVFS_MAX_NAME)				\
	X(NEW_NAME,	 STRING, CSVFS_MAX_NAME)				\
	X(TARGET,	 STRING, CSVFS_MAX_PATH)	/* symlink target */	\
	X(ATTR,		 STRUCT, sizeof(struct csvfs_attr))			\
	X(SETATTR,	 STRUCT, sizeof(struct csvfs_setattr))			\
	X(STATFS,	 STRUCT, sizeof(struct csvfs_statfs))			\
	X(MODE,		 U32,	 0)						\
	X(RDEV,		 U32,	 0)						\
	X(FLAGS,	 U32,	 0)	/* open(2)/rename(2)/xattr flags */	\
	X(OPEN_ID,	 U64,	 0)	/* coordinator's open file id */	\
	X(COOKIE,	 U64,	 0)	/* readdir position */			\
	X(DIRENTS,	 BINARY, CSVFS_MAX_DIRENTS) /* packed csvfs_dirent */	\
	X(EOF,		 FLAG,	 0)						\
	X(OFFSET,	 U64,	 0)						\
	X(LENGTH,	 U64,	 0)						\
	X(WHENCE,	 U32,	 0)						\
	X(DATA,		 BINARY, CSVFS_MAX_IO)					\
	X(DATASYNC,	 FLAG,	 0)						\
	X(SIZE,		 U32,	 0)	/* buffer size for xattr get/list */	\
	X(XATTR_NAME,	 STRING, CSVFS_MAX_XATTR_NAME)				\
	X(XATTR_VALUE,	 BINARY, CSVFS_MAX_XATTR_VALUE)				\
	X(DEV_OFFSET,	 U64,	 0)						\
	X(DEV_SIZE,	 U64,	 0)						\
	X(LAYOUT_IOMODE, U32,	 0)	/* enum csvfs_layout_iomode */		\
	X(EXTENTS,	 BINARY, CSVFS_MAX_EXTENTS *				\
				 sizeof(struct csvfs_extent))			\
	X(LEASE,	 U32,	 0)	/* enum csvfs_lease */			\
	X(LOCK,		 STRUCT, sizeof(struct csvfs_lock))			\
	X(IO_MODE,	 U32,	 0)	/* enum csvfs_io_mode */		\
	X(MODE_REASON,	 U32,	 0)	/* enum csvfs_mode_reason */		\
	X(LEASE_MS,	 U32,	 0)	/* node lease left, ms */		\
	X(NODE_ID,	 U32,	 0)	/* corosync node id */			\
	X(OP_ID,	 U64,	 0)	/* idempotency id of a retried op */	\
	X(INVAL_FLAGS,	 U32,	 0)	/* CSVFS_INVAL_* */		\
	X(UID,		 U32,	 0)	/* creator's fsuid (create ops) */	\
	X(GID,		 U32,	 0)	/* creator's fsgid (create ops) */

enum csvfs_attr_type {
	CSVFS_A_UNSPEC,
#define CSVFS_X_ENUM(name, type, maxlen) CSVFS_A_##name,
	CSVFS_ATTR_TABLE(CSVFS_X_ENUM)
#undef CSVFS_X_ENUM
	__CSVFS_A_MAX,
	CSVFS_A_MAX = __CSVFS_A_MAX - 1
};

/*
 * A file handle of the coordinator's lower filesystem, as returned by
 * name_to_handle_at(2). The kernel treats it as opaque; the coordinator
 * re-opens it with open_by_handle_at(2) and never trusts it further.
 */
struct csvfs_fh {
	__u32	type;		/* handle_type */
	__u32	len;		/* bytes in f_handle */
	__u8	f_handle[];
};

/* Attributes of an inode, as the coordinator's lower filesystem has them. */
struct csvfs_attr {
	__u64	ino;
	__u64	size;
	__u64	blocks;		/* 512-byte units */
	__s64	atime;
	__s64	mtime;
	__s64	ctime;
	__u32	atime_nsec;
	__u32	mtime_nsec;
	__u32	ctime_nsec;
	__u32	mode;
	__u32	nlink;
	__u32	uid;
	__u32	gid;
	__u32	rdev;
	__u32	blksize;
	__u32	generation;
	__u32	flags;		/* CSVFS_ATTR_* */
	__u32	padding;
};

/* The file has no security.capability xattr: writes need not look for one. */
#define CSVFS_ATTR_NO_CAPS	(1U << 0)

/* Which fields of struct csvfs_setattr are valid. */
#define CSVFS_SETATTR_MODE	(1U << 0)
#define CSVFS_SETATTR_UID	(1U << 1)
#define CSVFS_SETATTR_GID	(1U << 2)
#define CSVFS_SETATTR_SIZE	(1U << 3)
#define CSVFS_SETATTR_ATIME	(1U << 4)
#define CSVFS_SETATTR_MTIME	(1U << 5)
#define CSVFS_SETATTR_ATIME_NOW	(1U << 6)
#define CSVFS_SETATTR_MTIME_NOW	(1U << 7)
#define CSVFS_SETATTR_CTIME	(1U << 8)
#define CSVFS_SETATTR_ALL	((1U << 9) - 1)

struct csvfs_setattr {
	__u32	valid;		/* CSVFS_SETATTR_* */
	__u32	mode;
	__u32	uid;
	__u32	gid;
	__u64	size;
	__s64	atime;
	__s64	mtime;
	__s64	ctime;
	__u32	atime_nsec;
	__u32	mtime_nsec;
	__u32	ctime_nsec;
	__u32	padding;
};

struct csvfs_statfs {
	__u64	blocks;
	__u64	bfree;
	__u64	bavail;
	__u64	files;
	__u64	ffree;
	__u32	bsize;
	__u32	namelen;
	__u32	frsize;
	__u32	padding;
};

/*
 * Directory entry in CSVFS_A_DIRENTS: entries are packed, each padded to
 * 8 bytes (CSVFS_DIRENT_SIZE). cookie is the position after this entry.
 */
struct csvfs_dirent {
	__u64	ino;
	__u64	cookie;
	__u32	namelen;	/* without NUL, 1..255 */
	__u32	type;		/* DT_* */
	char	name[];
};

#define CSVFS_DIRENT_ALIGN(x)	(((x) + 7) & ~(__u64)7)
#define CSVFS_DIRENT_SIZE(d)	\
	CSVFS_DIRENT_ALIGN(sizeof(struct csvfs_dirent) + (d)->namelen)

/* State of an extent in a layout, as in pNFS block layouts. */
enum csvfs_extent_state {
	CSVFS_EXT_HOLE,		/* no blocks: reads as zeros */
	CSVFS_EXT_WRITTEN,	/* blocks with data: direct read and write */
	CSVFS_EXT_UNWRITTEN,	/* allocated, reads as zeros */
	CSVFS_EXT_DELALLOC,	/* not yet on disk: ask again */
	__CSVFS_EXT_MAX
};

/* One extent; file_offset, length and dev_offset are multiples of 512. */
struct csvfs_extent {
	__u64	file_offset;
	__u64	length;
	__u64	dev_offset;	/* undefined for HOLE and DELALLOC */
	__u32	state;		/* enum csvfs_extent_state */
	__u32	padding;
};

enum csvfs_layout_iomode {
	CSVFS_LAYOUT_READ = 1,
	CSVFS_LAYOUT_RW,
};

/* Caching lease on a file, like an SMB oplock or NFSv4 delegation. */
enum csvfs_lease {
	CSVFS_LEASE_NONE,	/* uncached: buffered I/O is redirected */
	CSVFS_LEASE_READ,	/* shared: page cache for reads */
	CSVFS_LEASE_WRITE,	/* exclusive: page cache for reads and writes */
	__CSVFS_LEASE_MAX
};

enum csvfs_lock_type {
	CSVFS_LOCK_UNLOCK,
	CSVFS_LOCK_READ,
	CSVFS_LOCK_WRITE,
	__CSVFS_LOCK_TYPE_MAX
};

#define CSVFS_LOCK_F_FLOCK	(1U << 0)	/* flock(2), else POSIX */
#define CSVFS_LOCK_F_WAIT	(1U << 1)	/* block until granted */
#define CSVFS_LOCK_F_TEST	(1U << 2)	/* F_GETLK */

struct csvfs_lock {
	__u64	start;
	__u64	end;		/* inclusive; ~0 is EOF */
	__u64	owner;		/* lock owner, unique per node */
	__u32	pid;
	__u32	type;		/* enum csvfs_lock_type */
	__u32	flags;		/* CSVFS_LOCK_F_* */
	__u32	padding;
};

/* The I/O mode of one node for one volume, as csvctl shows it. */
enum csvfs_io_mode {
	CSVFS_IO_DIRECT,		/* data straight to the device */
	CSVFS_IO_BLOCK_REDIRECTED,	/* device I/O through the coordinator */
	CSVFS_IO_FILE_REDIRECTED,	/* file I/O through the coordinator */
	CSVFS_IO_PAUSED,		/* held: no coordinator or no quorum */
	__CSVFS_IO_MAX
};

/* Why a node is in its I/O mode. */
enum csvfs_mode_reason {
	CSVFS_REASON_NONE,
	CSVFS_REASON_USER,		/* csvctl redirect on */
	CSVFS_REASON_NO_PATH,		/* no healthy path to the device */
	CSVFS_REASON_BACKUP,		/* csvctl backup begin */
	CSVFS_REASON_LEASE_CONFLICT,
	CSVFS_REASON_UNSUPPORTED_FS,	/* no reliable layouts */
	CSVFS_REASON_NO_QUORUM,
	CSVFS_REASON_FAILOVER,		/* electing, or new coordinator not ready */
	__CSVFS_REASON_MAX
};

/* What CSVFS_CMD_INVALIDATE drops. */
#define CSVFS_INVAL_ATTR	(1U << 0)	/* cached attributes of FH */
#define CSVFS_INVAL_DATA	(1U << 1)	/* page cache of FH */
#define CSVFS_INVAL_ENTRY	(1U << 2)	/* dentry PARENT_FH/NAME */

#endif /* _UAPI_LINUX_CSVFS_H */
