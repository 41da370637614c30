// The coordinator's tables as plain data structures (no root needed).
#include "coordinator/tables.h"

#include <gtest/gtest.h>

#include <cerrno>

namespace csv::coord {
namespace {

const FileKey kFile{1, 2, 3};
const FileKey kOther{4, 5, 6};

csvfs_extent Ext(uint64_t off, uint64_t len, uint64_t dev, uint32_t state) {
  return {off, len, dev, state, 0};
}

TEST(LayoutTable, HoldersExcludeTheAskingNode) {
  LayoutTable t;
  t.Grant(kFile, {1, {0, 8192}, CSVFS_LAYOUT_READ, {}});
  t.Grant(kFile, {2, {4096, 16384}, CSVFS_LAYOUT_RW, {}});
  EXPECT_EQ(t.Holders(kFile, {0, kToEof}, 1), std::vector<uint32_t>{2});
  EXPECT_EQ(t.Holders(kFile, {0, 4096}, 3), std::vector<uint32_t>{1});
  EXPECT_TRUE(t.Holders(kOther, {0, kToEof}, 3).empty());
}

TEST(LayoutTable, SubtractSplitsAndClipsExtents) {
  LayoutGrant g{1, {0, 12288}, CSVFS_LAYOUT_RW, {Ext(0, 12288, 1 << 20, CSVFS_EXT_WRITTEN)}};
  auto parts = SubtractRange(g, {4096, 8192});
  ASSERT_EQ(parts.size(), 2u);
  EXPECT_EQ(parts[0].range.end, 4096u);
  EXPECT_EQ(parts[1].range.start, 8192u);
  ASSERT_EQ(parts[1].extents.size(), 1u);
  EXPECT_EQ(parts[1].extents[0].dev_offset, (1u << 20) + 8192);
  EXPECT_EQ(parts[1].extents[0].length, 4096u);
}

TEST(LayoutTable, WriteCoverageNeedsWrittenRwExtents) {
  LayoutTable t;
  t.Grant(kFile,
          {1,
           {0, 8192},
           CSVFS_LAYOUT_RW,
           {Ext(0, 4096, 65536, CSVFS_EXT_WRITTEN), Ext(4096, 4096, 69632, CSVFS_EXT_WRITTEN)}});
  t.Grant(kOther, {1, {0, 4096}, CSVFS_LAYOUT_READ, {Ext(0, 4096, 1 << 20, CSVFS_EXT_WRITTEN)}});
  t.Grant(kOther,
          {1, {4096, 8192}, CSVFS_LAYOUT_RW, {Ext(4096, 4096, 2 << 20, CSVFS_EXT_UNWRITTEN)}});
  EXPECT_TRUE(t.CoversForWrite(1, 65536, 8192));    // two adjacent extents
  EXPECT_FALSE(t.CoversForWrite(2, 65536, 512));    // another node's
  EXPECT_FALSE(t.CoversForWrite(1, 1 << 20, 512));  // READ layout
  EXPECT_FALSE(t.CoversForWrite(1, 2 << 20, 512));  // unwritten
  t.Drop(kFile, {4096, kToEof});
  EXPECT_TRUE(t.CoversForWrite(1, 65536, 4096));
  EXPECT_FALSE(t.CoversForWrite(1, 69632, 512));
  t.Return(kFile, 1, std::nullopt);
  EXPECT_EQ(t.GrantCount(kFile), 0u);
  t.ForgetNode(1);
  EXPECT_EQ(t.GrantCount(kOther), 0u);
}

TEST(LayoutTable, HolesHeldElsewhereGoStaleOnWrite) {
  LayoutTable t;
  t.Grant(kFile, {2,
                  {0, 8192},
                  CSVFS_LAYOUT_READ,
                  {Ext(0, 4096, 65536, CSVFS_EXT_WRITTEN), Ext(4096, 4096, 0, CSVFS_EXT_HOLE)}});
  EXPECT_TRUE(t.HoldersNotWritten(kFile, {0, 4096}, 1).empty());
  EXPECT_EQ(t.HoldersNotWritten(kFile, {4096, 4608}, 1), std::vector<uint32_t>{2});
  EXPECT_TRUE(t.HoldersNotWritten(kFile, {4096, 4608}, 2).empty());
}

TEST(LeaseTable, WriteBreaksEveryoneReadDowngradesWriters) {
  LeaseTable t;
  t.Set(kFile, 1, CSVFS_LEASE_READ);
  t.Set(kFile, 2, CSVFS_LEASE_WRITE);
  auto w = t.Conflicts(kFile, 3, CSVFS_LEASE_WRITE);
  EXPECT_EQ(w.size(), 2u);
  auto r = t.Conflicts(kFile, 3, CSVFS_LEASE_READ);
  ASSERT_EQ(r.size(), 1u);
  EXPECT_EQ(r[0], std::make_pair(2u, static_cast<uint32_t>(CSVFS_LEASE_READ)));
  t.ForgetNode(2);
  EXPECT_EQ(t.Level(kFile, 2), static_cast<uint32_t>(CSVFS_LEASE_NONE));
  EXPECT_TRUE(t.Conflicts(kFile, 3, CSVFS_LEASE_READ).empty());
}

LockRecord Posix(uint32_t node, uint64_t owner, uint32_t type, uint64_t start, uint64_t end) {
  return {node, owner, 100, type, start, end, false};
}

TEST(LockTable, PosixConflictsBetweenOwners) {
  LockTable t;
  LockRecord conflict;
  EXPECT_EQ(t.Apply(kFile, Posix(1, 7, CSVFS_LOCK_WRITE, 0, 99), &conflict), 0);
  EXPECT_EQ(t.Apply(kFile, Posix(2, 7, CSVFS_LOCK_READ, 50, 60), &conflict), -EAGAIN);
  EXPECT_EQ(conflict.node, 1u);
  EXPECT_EQ(t.Apply(kFile, Posix(2, 7, CSVFS_LOCK_READ, 100, 200), &conflict), 0);
  // The same owner re-locks over its own lock; unlocking the middle splits.
  EXPECT_EQ(t.Apply(kFile, Posix(1, 7, CSVFS_LOCK_READ, 0, 99), &conflict), 0);
  EXPECT_EQ(t.Apply(kFile, Posix(1, 7, CSVFS_LOCK_UNLOCK, 40, 59), &conflict), 0);
  EXPECT_EQ(t.LocksOf(kFile).size(), 3u);
  EXPECT_FALSE(t.FindConflict(kFile, Posix(3, 1, CSVFS_LOCK_WRITE, 40, 59)));
  EXPECT_TRUE(t.FindConflict(kFile, Posix(3, 1, CSVFS_LOCK_WRITE, 59, 60)));
  t.ForgetNode(1);
  t.ForgetNode(2);
  EXPECT_TRUE(t.LocksOf(kFile).empty());
}

TEST(LockTable, FlockAndPosixAreIndependent) {
  LockTable t;
  LockRecord conflict;
  LockRecord f1{1, 9, 1, CSVFS_LOCK_WRITE, 0, kToEof, true};
  LockRecord f2{2, 9, 2, CSVFS_LOCK_READ, 0, kToEof, true};
  EXPECT_EQ(t.Apply(kFile, f1, &conflict), 0);
  EXPECT_EQ(t.Apply(kFile, Posix(2, 9, CSVFS_LOCK_WRITE, 0, 10), &conflict), 0);
  EXPECT_EQ(t.Apply(kFile, f2, &conflict), -EAGAIN);
}

TEST(KeyGate, ReadersTurnedAwayWhileAWriterHoldsTheKey) {
  KeyGate gate;
  ASSERT_TRUE(gate.TryEnterShared(kFile));
  gate.LeaveShared(kFile);
  {
    ExclusiveGuard g(&gate, kFile);
    EXPECT_FALSE(gate.TryEnterShared(kFile));
    EXPECT_TRUE(gate.TryEnterShared(kOther));
    gate.LeaveShared(kOther);
  }
  EXPECT_TRUE(gate.TryEnterShared(kFile));
  gate.LeaveShared(kFile);
}

}  // namespace
}  // namespace csv::coord
