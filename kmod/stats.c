// SPDX-License-Identifier: GPL-2.0
/*
 * csvfs - per-mount I/O counters by data path, in /proc/fs/csvfs/<sb_id>.
 *
 * /proc/fs rather than debugfs: it is always mounted, like
 * /proc/fs/xfs/stat and /proc/fs/ext4/<dev>/, so csvd and csvctl can read
 * it on any node. One line per path and direction:
 *   stat <direct|block|file|cached> <read|write> <ops> <bytes> <ns>
 * ns is the sum of the operations' latencies (divide by ops for a mean):
 * per bio for direct and block-redirected I/O, per request for
 * file-redirected I/O, per read(2) for cached reads.
 */
#define pr_fmt(fmt) KBUILD_MODNAME ": " fmt

#include <linux/proc_fs.h>
#include <linux/seq_file.h>

#include "csvfs.h"

static struct proc_dir_entry *csvfs_proc_root;

static const char *const csvfs_path_names[__CSVFS_PATH_MAX] = {
	[CSVFS_PATH_DIRECT]	= "direct",
	[CSVFS_PATH_BLOCK]	= "block",
	[CSVFS_PATH_FILE]	= "file",
	[CSVFS_PATH_CACHED]	= "cached",
};

static const char *const csvfs_mode_names[] = {
	[CSVFS_IO_DIRECT]		= "Direct",
	[CSVFS_IO_BLOCK_REDIRECTED]	= "BlockRedirected",
	[CSVFS_IO_FILE_REDIRECTED]	= "FileRedirected",
	[CSVFS_IO_PAUSED]		= "Paused",
};

void csvfs_count(struct csvfs_sb_info *sbi, enum csvfs_path path, bool write,
		 u64 bytes, ktime_t start)
{
	struct csvfs_io_stat *st = &sbi->stats[path][write];

	atomic64_inc(&st->ops);
	atomic64_add(bytes, &st->bytes);
	atomic64_add(ktime_to_ns(ktime_sub(ktime_get(), start)), &st->ns);
}

static int csvfs_stats_show(struct seq_file *m, void *v)
{
	struct csvfs_sb_info *sbi = m->private;
	u32 mode = READ_ONCE(sbi->io_mode);
	int path, write;

	seq_printf(m, "volume %s\ndevice %s\nepoch %llu\n", sbi->volume,
		   sbi->device, READ_ONCE(sbi->epoch));
	seq_printf(m, "io_mode %s\n", mode < ARRAY_SIZE(csvfs_mode_names) ?
		   csvfs_mode_names[mode] : "unknown");
	seq_printf(m, "node_lease %s\n", csvfs_lease_ok(sbi) ? "valid" :
		   "expired");
	/* bumped when cached layouts end (layout.c) */
	seq_printf(m, "layout_era %ld\nlease_lapses %lu\n",
		   atomic_long_read(&sbi->layout_era), READ_ONCE(sbi->lease_lapses));
	/* when direct I/O stops unless renewed (a test compares stamps) */
	if (READ_ONCE(sbi->lease_set)) {
		u64 sec = READ_ONCE(sbi->lease_until_real);
		u32 nsec = do_div(sec, NSEC_PER_SEC);

		seq_printf(m, "node_lease_deadline %llu.%09u\n", sec, nsec);
	}
	for (path = 0; path < __CSVFS_PATH_MAX; path++) {
		for (write = 0; write < 2; write++) {
			struct csvfs_io_stat *st = &sbi->stats[path][write];

			seq_printf(m, "stat %s %s %lld %lld %lld\n",
				   csvfs_path_names[path],
				   write ? "write" : "read",
				   atomic64_read(&st->ops),
				   atomic64_read(&st->bytes),
				   atomic64_read(&st->ns));
		}
	}
	return 0;
}

void csvfs_stats_add(struct csvfs_sb_info *sbi)
{
	char name[16];

	if (!csvfs_proc_root)
		return;
	snprintf(name, sizeof(name), "%u", sbi->sb_id);
	sbi->proc = proc_create_single_data(name, 0444, csvfs_proc_root,
					    csvfs_stats_show, sbi);
}

/* Before sbi goes: waits for readers of the file to finish. */
void csvfs_stats_remove(struct csvfs_sb_info *sbi)
{
	proc_remove(sbi->proc);
	sbi->proc = NULL;
}

void csvfs_stats_init(void)
{
	/* without it the counters are still kept, just not shown */
	csvfs_proc_root = proc_mkdir("fs/csvfs", NULL);
}

void csvfs_stats_exit(void)
{
	proc_remove(csvfs_proc_root);
}
