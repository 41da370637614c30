// SPDX-License-Identifier: GPL-2.0
/*
 * KUnit suite "csvfs_layout": the layout cache of layout.c.
 *
 * Compiled into layout.c itself (included at its end) when the kernel has
 * KUnit built in - the lab's debug kernel (docs/debug-kernel.md) - so the
 * tests call the real functions, static ones included, not copies. The
 * inode is a csvfs_inode that only the layout cache looks at; its
 * superblock and block device exist only for csvfs_layout_verify()'s
 * device-size check. The suite runs at every insmod of csvfs.ko in that
 * kernel; results: /sys/kernel/debug/kunit/csvfs_layout/results.
 *
 * KUnit runs a module's suites when the module is coming, before its init
 * function: csvfs_layout_cache_init() has not run yet, so the suite makes
 * the extent cache for itself and destroys it again before csvfs_init()
 * makes the real one.
 */
#include <kunit/test.h>

#define LT_MIB		(1ULL << 20)
#define LT_DEV_SIZE	(1ULL << 30)	/* the fake device: 1 GiB */

struct layout_fixture {
	struct csvfs_inode	ci;
	struct super_block	sb;
	struct csvfs_sb_info	sbi;
	struct block_device	bdev;
};

static bool layout_test_own_cache;

static int layout_test_suite_init(struct kunit_suite *suite)
{
	if (csvfs_lext_cachep)		/* csvfs_init() made it */
		return 0;
	csvfs_lext_cachep = KMEM_CACHE(csvfs_lext, 0);
	if (!csvfs_lext_cachep)
		return -ENOMEM;
	layout_test_own_cache = true;
	return 0;
}

static void layout_test_suite_exit(struct kunit_suite *suite)
{
	if (!layout_test_own_cache)
		return;
	kmem_cache_destroy(csvfs_lext_cachep);
	csvfs_lext_cachep = NULL;
	layout_test_own_cache = false;
}

static int layout_test_init(struct kunit *test)
{
	struct layout_fixture *f;

	f = kunit_kzalloc(test, sizeof(*f), GFP_KERNEL);
	KUNIT_ASSERT_NOT_NULL(test, f);
	spin_lock_init(&f->ci.lock);
	spin_lock_init(&f->ci.layout_lock);
	csvfs_layout_init(&f->ci);
	f->bdev.bd_nr_sectors = LT_DEV_SIZE >> SECTOR_SHIFT;
	f->sbi.bdev = &f->bdev;
	f->sb.s_fs_info = &f->sbi;
	f->ci.vfs_inode.i_sb = &f->sb;
	test->priv = f;
	return 0;
}

static void layout_test_exit(struct kunit *test)
{
	struct layout_fixture *f = test->priv;

	/* everything cached goes back to the slab (kmemleak checks it too) */
	csvfs_layout_destroy(&f->ci.vfs_inode);
	KUNIT_EXPECT_TRUE(test, RB_EMPTY_ROOT(&f->ci.extents));
}

static struct inode *lt_inode(struct kunit *test)
{
	return &((struct layout_fixture *)test->priv)->ci.vfs_inode;
}

static struct csvfs_extent lt_ext(u64 off, u64 len, u64 dev, u32 state)
{
	return (struct csvfs_extent) {
		.file_offset = off, .length = len, .dev_offset = dev,
		.state = state,
	};
}

static unsigned long lt_gen(struct kunit *test)
{
	struct csvfs_inode *ci = CSVFS_I(lt_inode(test));
	unsigned long gen;

	spin_lock(&ci->layout_lock);
	gen = ci->layout_gen;
	spin_unlock(&ci->layout_lock);
	return gen;
}

/* What csvfs_layout_get() does with a reply: verify, then insert. */
static int lt_put(struct kunit *test, const struct csvfs_extent *e, int n)
{
	int ret;

	ret = csvfs_layout_verify(lt_inode(test), e, n, e[0].file_offset);
	if (ret)
		return ret;
	return csvfs_layout_insert(lt_inode(test), e, n, lt_gen(test));
}

static int lt_count(struct kunit *test)
{
	struct csvfs_inode *ci = CSVFS_I(lt_inode(test));
	struct rb_node *n;
	int count = 0;

	spin_lock(&ci->layout_lock);
	for (n = rb_first(&ci->extents); n; n = rb_next(n))
		count++;
	spin_unlock(&ci->layout_lock);
	return count;
}

/* Hit: the extent holding pos is copied out; miss: out is untouched. */
static void lt_expect_hit(struct kunit *test, u64 pos, u64 off, u32 state)
{
	struct csvfs_extent out = { .file_offset = 1 };

	KUNIT_EXPECT_TRUE_MSG(test, csvfs_layout_lookup(lt_inode(test), pos,
							&out),
			      "pos %llu", pos);
	KUNIT_EXPECT_EQ_MSG(test, out.file_offset, off, "pos %llu", pos);
	KUNIT_EXPECT_EQ_MSG(test, out.state, state, "pos %llu", pos);
}

static void lt_expect_miss(struct kunit *test, u64 pos)
{
	struct csvfs_extent out = { .file_offset = 12345 };

	KUNIT_EXPECT_FALSE_MSG(test, csvfs_layout_lookup(lt_inode(test), pos,
							 &out),
			       "pos %llu", pos);
	KUNIT_EXPECT_EQ(test, out.file_offset, 12345ULL);
}

/* Three extents with a gap: 0-1M written, 1M-2M hole, 4M-5M unwritten. */
static void lt_put_three(struct kunit *test)
{
	struct csvfs_extent e[] = {
		lt_ext(0, LT_MIB, 10 * LT_MIB, CSVFS_EXT_WRITTEN),
		lt_ext(LT_MIB, LT_MIB, 0, CSVFS_EXT_HOLE),
		lt_ext(4 * LT_MIB, LT_MIB, 20 * LT_MIB, CSVFS_EXT_UNWRITTEN),
	};

	KUNIT_ASSERT_EQ(test, lt_put(test, e, ARRAY_SIZE(e)), 0);
	KUNIT_ASSERT_EQ(test, lt_count(test), 3);
}

static void layout_test_lookup(struct kunit *test)
{
	struct csvfs_extent out;

	lt_expect_miss(test, 0);	/* empty cache */
	lt_put_three(test);
	lt_expect_hit(test, 0, 0, CSVFS_EXT_WRITTEN);
	lt_expect_hit(test, LT_MIB - 1, 0, CSVFS_EXT_WRITTEN);
	lt_expect_hit(test, LT_MIB, LT_MIB, CSVFS_EXT_HOLE);
	lt_expect_hit(test, 2 * LT_MIB - 512, LT_MIB, CSVFS_EXT_HOLE);
	lt_expect_miss(test, 2 * LT_MIB);
	lt_expect_miss(test, 3 * LT_MIB + 4096);
	lt_expect_hit(test, 4 * LT_MIB + 512, 4 * LT_MIB, CSVFS_EXT_UNWRITTEN);
	lt_expect_miss(test, 5 * LT_MIB);
	lt_expect_miss(test, U64_MAX);
	/* the whole extent is copied, device offset included */
	KUNIT_ASSERT_TRUE(test, csvfs_layout_lookup(lt_inode(test), 4096, &out));
	KUNIT_EXPECT_EQ(test, out.length, LT_MIB);
	KUNIT_EXPECT_EQ(test, out.dev_offset, 10 * LT_MIB);
}

static void layout_test_forget(struct kunit *test)
{
	unsigned long gen;

	lt_put_three(test);
	gen = lt_gen(test);
	/* one sector inside the hole extent drops that extent whole */
	csvfs_layout_forget(lt_inode(test), LT_MIB + 512, 512);
	KUNIT_EXPECT_EQ(test, lt_gen(test), gen + 1);
	KUNIT_EXPECT_EQ(test, lt_count(test), 2);
	lt_expect_miss(test, LT_MIB);
	lt_expect_hit(test, 0, 0, CSVFS_EXT_WRITTEN);
	lt_expect_hit(test, 4 * LT_MIB, 4 * LT_MIB, CSVFS_EXT_UNWRITTEN);
	/* a range in a gap drops nothing, but still counts as a change */
	csvfs_layout_forget(lt_inode(test), 2 * LT_MIB, LT_MIB);
	KUNIT_EXPECT_EQ(test, lt_gen(test), gen + 2);
	KUNIT_EXPECT_EQ(test, lt_count(test), 2);
	/* a length that wraps means "to the end of the file" */
	csvfs_layout_forget(lt_inode(test), 3 * LT_MIB, U64_MAX);
	KUNIT_EXPECT_EQ(test, lt_count(test), 1);
	lt_expect_miss(test, 4 * LT_MIB);
	/* len 0: from start to the end of the file */
	csvfs_layout_forget(lt_inode(test), 512, 0);
	KUNIT_EXPECT_EQ(test, lt_count(test), 0);
	lt_expect_miss(test, 0);
}

/* A reply that crossed a recall (or any drop) is not cached. */
static void layout_test_stale_generation(struct kunit *test)
{
	struct csvfs_extent e = lt_ext(0, LT_MIB, 0, CSVFS_EXT_WRITTEN);
	unsigned long gen = lt_gen(test);

	csvfs_layout_forget(lt_inode(test), 0, 0);	/* the recall */
	KUNIT_EXPECT_EQ(test, csvfs_layout_insert(lt_inode(test), &e, 1, gen),
			-EAGAIN);
	KUNIT_EXPECT_EQ(test, lt_count(test), 0);
	lt_expect_miss(test, 0);
	/* with the current generation it is */
	KUNIT_EXPECT_EQ(test, csvfs_layout_insert(lt_inode(test), &e, 1,
						  lt_gen(test)), 0);
	lt_expect_hit(test, 0, 0, CSVFS_EXT_WRITTEN);
}

/*
 * A new layout era (recall of all layouts, lapsed lease) ends every cached
 * extent, and a reply asked for in the old era is not cached.
 */
static void layout_test_era(struct kunit *test)
{
	struct layout_fixture *f = test->priv;
	struct csvfs_extent e = lt_ext(0, LT_MIB, 0, CSVFS_EXT_WRITTEN);
	unsigned long gen;

	KUNIT_ASSERT_EQ(test, lt_put(test, &e, 1), 0);
	lt_expect_hit(test, 0, 0, CSVFS_EXT_WRITTEN);
	gen = lt_gen(test);
	csvfs_layouts_end(&f->sbi);
	KUNIT_EXPECT_EQ(test, csvfs_layout_insert(lt_inode(test), &e, 1, gen),
			-EAGAIN);
	KUNIT_EXPECT_EQ(test, lt_count(test), 0);
	lt_expect_miss(test, 0);
	KUNIT_EXPECT_EQ(test, lt_put(test, &e, 1), 0);	/* asked in the new era */
	lt_expect_hit(test, 0, 0, CSVFS_EXT_WRITTEN);
}

/* A newer reply replaces every cached extent it overlaps, whole. */
static void layout_test_replace(struct kunit *test)
{
	struct csvfs_extent big = lt_ext(0, 4 * LT_MIB, 0, CSVFS_EXT_UNWRITTEN);
	struct csvfs_extent tail = lt_ext(8 * LT_MIB, LT_MIB, 0,
					  CSVFS_EXT_HOLE);
	struct csvfs_extent e[] = {
		lt_ext(LT_MIB, LT_MIB, 30 * LT_MIB, CSVFS_EXT_WRITTEN),
		lt_ext(2 * LT_MIB, LT_MIB, 40 * LT_MIB, CSVFS_EXT_WRITTEN),
	};
	struct csvfs_extent out;

	KUNIT_ASSERT_EQ(test, lt_put(test, &big, 1), 0);
	KUNIT_ASSERT_EQ(test, lt_put(test, &tail, 1), 0);
	KUNIT_ASSERT_EQ(test, lt_put(test, e, ARRAY_SIZE(e)), 0);
	KUNIT_EXPECT_EQ(test, lt_count(test), 3);
	lt_expect_miss(test, 0);		/* the rest of "big" is gone */
	lt_expect_miss(test, 3 * LT_MIB);
	KUNIT_ASSERT_TRUE(test, csvfs_layout_lookup(lt_inode(test),
						    2 * LT_MIB + 4096, &out));
	KUNIT_EXPECT_EQ(test, out.dev_offset, 40 * LT_MIB);
	lt_expect_hit(test, 8 * LT_MIB, 8 * LT_MIB, CSVFS_EXT_HOLE);
}

/* DELALLOC means "ask again": verified, but never cached. */
static void layout_test_delalloc_not_cached(struct kunit *test)
{
	struct csvfs_extent e[] = {
		lt_ext(0, LT_MIB, 0, CSVFS_EXT_WRITTEN),
		lt_ext(LT_MIB, LT_MIB, U64_MAX, CSVFS_EXT_DELALLOC),
		lt_ext(2 * LT_MIB, LT_MIB, LT_MIB, CSVFS_EXT_WRITTEN),
	};

	KUNIT_ASSERT_EQ(test, lt_put(test, e, ARRAY_SIZE(e)), 0);
	KUNIT_EXPECT_EQ(test, lt_count(test), 2);
	lt_expect_miss(test, LT_MIB + 4096);
	lt_expect_hit(test, 2 * LT_MIB, 2 * LT_MIB, CSVFS_EXT_WRITTEN);
}

static int lt_verify1(struct kunit *test, struct csvfs_extent e, u64 pos)
{
	return csvfs_layout_verify(lt_inode(test), &e, 1, pos);
}

static void layout_test_verify(struct kunit *test)
{
	struct inode *inode = lt_inode(test);
	const u32 W = CSVFS_EXT_WRITTEN;
	struct csvfs_extent two[2];

	/* well-formed */
	KUNIT_EXPECT_EQ(test, lt_verify1(test, lt_ext(0, 4096, 0, W), 0), 0);
	KUNIT_EXPECT_EQ(test, lt_verify1(test, lt_ext(0, LT_MIB, LT_DEV_SIZE -
						      LT_MIB, W), 4096), 0);
	/* holes and delalloc carry no device offset: not checked */
	KUNIT_EXPECT_EQ(test, lt_verify1(test, lt_ext(0, 512, 7,
						      CSVFS_EXT_HOLE), 0), 0);
	KUNIT_EXPECT_EQ(test, lt_verify1(test, lt_ext(0, 512, U64_MAX,
						      CSVFS_EXT_DELALLOC), 0), 0);
	/* empty, or not covering the asked position */
	KUNIT_EXPECT_EQ(test, csvfs_layout_verify(inode, two, 0, 0), -EIO);
	KUNIT_EXPECT_EQ(test, lt_verify1(test, lt_ext(4096, 512, 0, W), 0),
			-EIO);
	/* zero length, unaligned offset or length, unknown state */
	KUNIT_EXPECT_EQ(test, lt_verify1(test, lt_ext(0, 0, 0, W), 0), -EIO);
	KUNIT_EXPECT_EQ(test, lt_verify1(test, lt_ext(100, 512, 0, W), 0),
			-EIO);
	KUNIT_EXPECT_EQ(test, lt_verify1(test, lt_ext(0, 1000, 0, W), 0),
			-EIO);
	KUNIT_EXPECT_EQ(test, lt_verify1(test, lt_ext(0, 512, 0,
						      __CSVFS_EXT_MAX), 0),
			-EIO);
	/* file range that wraps */
	KUNIT_EXPECT_EQ(test, lt_verify1(test, lt_ext(U64_MAX & ~511ULL, 1024,
						      0, CSVFS_EXT_HOLE),
					 U64_MAX & ~511ULL), -EIO);
	/* device range: unaligned, past the end, or running over it */
	KUNIT_EXPECT_EQ(test, lt_verify1(test, lt_ext(0, 512, 100, W), 0),
			-EIO);
	KUNIT_EXPECT_EQ(test, lt_verify1(test, lt_ext(0, 512, LT_DEV_SIZE +
						      512, W), 0), -EIO);
	KUNIT_EXPECT_EQ(test, lt_verify1(test, lt_ext(0, 1024, LT_DEV_SIZE -
						      512, W), 0), -EIO);
	KUNIT_EXPECT_EQ(test, lt_verify1(test, lt_ext(0, 1024, U64_MAX - 511,
						      CSVFS_EXT_UNWRITTEN), 0),
			-EIO);
	/* overlapping or unsorted */
	two[0] = lt_ext(0, LT_MIB, 0, W);
	two[1] = lt_ext(LT_MIB / 2, LT_MIB, 0, W);
	KUNIT_EXPECT_EQ(test, csvfs_layout_verify(inode, two, 2, 0), -EIO);
	two[1] = lt_ext(0, 512, 0, W);
	two[0] = lt_ext(LT_MIB, 512, 0, W);
	KUNIT_EXPECT_EQ(test, csvfs_layout_verify(inode, two, 2, LT_MIB),
			-EIO);
	/* adjacent is fine */
	two[0] = lt_ext(0, LT_MIB, 0, W);
	two[1] = lt_ext(LT_MIB, LT_MIB, LT_MIB, W);
	KUNIT_EXPECT_EQ(test, csvfs_layout_verify(inode, two, 2, 0), 0);
	/* nothing of the above reached the cache */
	KUNIT_EXPECT_EQ(test, lt_count(test), 0);
}

/* Many small extents, inserted out of order: the rbtree stays searchable. */
static void layout_test_many(struct kunit *test)
{
	const int n = 512, batch = 16;
	struct csvfs_extent *e;
	int i, j;

	e = kunit_kcalloc(test, batch, sizeof(*e), GFP_KERNEL);
	KUNIT_ASSERT_NOT_NULL(test, e);
	/* every other 4 KiB block, batches from the end of the file */
	for (i = n / batch - 1; i >= 0; i--) {
		for (j = 0; j < batch; j++) {
			u64 k = (u64)i * batch + j;

			e[j] = lt_ext(k * 8192, 4096, k * 4096,
				      CSVFS_EXT_WRITTEN);
		}
		KUNIT_ASSERT_EQ(test, lt_put(test, e, batch), 0);
	}
	KUNIT_EXPECT_EQ(test, lt_count(test), n);
	for (i = 0; i < n; i++) {
		struct csvfs_extent out;

		KUNIT_EXPECT_TRUE(test, csvfs_layout_lookup(lt_inode(test),
							    i * 8192ULL + 512,
							    &out));
		KUNIT_EXPECT_EQ(test, out.dev_offset, i * 4096ULL);
		lt_expect_miss(test, i * 8192ULL + 4096);
	}
	/* drop the middle half */
	csvfs_layout_forget(lt_inode(test), (n / 4) * 8192ULL,
			    (n / 2) * 8192ULL);
	KUNIT_EXPECT_EQ(test, lt_count(test), n / 2);
	lt_expect_miss(test, (n / 2) * 8192ULL);
	lt_expect_hit(test, (n / 4 - 1) * 8192ULL, (n / 4 - 1) * 8192ULL,
		      CSVFS_EXT_WRITTEN);
	lt_expect_hit(test, (3 * n / 4) * 8192ULL, (3 * n / 4) * 8192ULL,
		      CSVFS_EXT_WRITTEN);
}

static struct kunit_case csvfs_layout_cases[] = {
	KUNIT_CASE(layout_test_lookup),
	KUNIT_CASE(layout_test_forget),
	KUNIT_CASE(layout_test_stale_generation),
	KUNIT_CASE(layout_test_era),
	KUNIT_CASE(layout_test_replace),
	KUNIT_CASE(layout_test_delalloc_not_cached),
	KUNIT_CASE(layout_test_verify),
	KUNIT_CASE(layout_test_many),
	{}
};

static struct kunit_suite csvfs_layout_suite = {
	.name = "csvfs_layout",
	.suite_init = layout_test_suite_init,
	.suite_exit = layout_test_suite_exit,
	.init = layout_test_init,
	.exit = layout_test_exit,
	.test_cases = csvfs_layout_cases,
};

kunit_test_suite(csvfs_layout_suite);
