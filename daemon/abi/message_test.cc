#include "abi/message.h"

#include <gtest/gtest.h>

#include <string>

#include "abi/frame.h"

namespace csv::abi {
namespace {

std::vector<uint8_t> SampleHandle() {
  std::vector<uint8_t> h = {1, 2, 3, 4, 5, 6, 7, 8};
  return PackFileHandle(0x81, h);
}

// A valid value for every attribute, so every command can be built.
void PutSample(Message* m, int attr) {
  switch (attr) {
    case CSVFS_A_REQ_ID:
      m->PutU64(attr, 42);
      break;
    case CSVFS_A_ERRNO:
      m->PutS32(attr, -2);
      break;
    case CSVFS_A_VOLUME:
      m->PutString(attr, "Volume1");
      break;
    case CSVFS_A_DEVICE:
      m->PutString(attr, "/dev/disk/by-id/virtio-csvlun0");
      break;
    case CSVFS_A_NAME:
    case CSVFS_A_NEW_NAME:
      m->PutString(attr, "file.img");
      break;
    case CSVFS_A_TARGET:
      m->PutString(attr, "../target");
      break;
    case CSVFS_A_XATTR_NAME:
      m->PutString(attr, "user.test");
      break;
    case CSVFS_A_FH:
    case CSVFS_A_PARENT_FH:
    case CSVFS_A_NEW_PARENT_FH:
      m->PutBinary(attr, SampleHandle());
      break;
    case CSVFS_A_SETATTR: {
      csvfs_setattr s{};
      s.valid = CSVFS_SETATTR_SIZE;
      s.size = 4096;
      m->PutStruct(attr, s);
      break;
    }
    case CSVFS_A_LOCK: {
      csvfs_lock l{};
      l.type = CSVFS_LOCK_WRITE;
      l.end = ~0ULL;
      m->PutStruct(attr, l);
      break;
    }
    case CSVFS_A_XATTR_VALUE:
      m->PutBinary(attr, std::vector<uint8_t>{'v'});
      break;
    case CSVFS_A_DATA:
      m->PutBinary(attr, std::vector<uint8_t>(512, 0xab));
      break;
    case CSVFS_A_LENGTH:
      m->PutU64(attr, 4096);
      break;
    case CSVFS_A_DEV_OFFSET:
      m->PutU64(attr, 8192);
      break;
    case CSVFS_A_LAYOUT_IOMODE:
      m->PutU32(attr, CSVFS_LAYOUT_RW);
      break;
    case CSVFS_A_ABI_VERSION:
      m->PutU32(attr, CSVFS_ABI_VERSION);
      break;
    case CSVFS_A_LEASE:
      m->PutU32(attr, CSVFS_LEASE_READ);
      break;
    case CSVFS_A_IO_MODE:
      m->PutU32(attr, CSVFS_IO_BLOCK_REDIRECTED);
      break;
    case CSVFS_A_MODE_REASON:
      m->PutU32(attr, CSVFS_REASON_NO_PATH);
      break;
    case CSVFS_A_WHENCE:
      m->PutU32(attr, 3);
      break;
    case CSVFS_A_OFFSET:
    case CSVFS_A_COOKIE:
    case CSVFS_A_EPOCH:
    case CSVFS_A_OPEN_ID:
      m->PutU64(attr, 7);
      break;
    default:
      m->PutU32(attr, 1);
      break;
  }
}

Message SampleCommand(int cmd) {
  Message m(static_cast<uint8_t>(cmd));
  for (int attr : RequiredAttributes(cmd)) PutSample(&m, attr);
  return m;
}

Status Roundtrip(const Message& in, Message* out) {
  auto bytes = in.EncodeAttributes();
  return out->Decode(in.cmd(), bytes);
}

TEST(MessageTest, EveryCommandRoundTrips) {
  for (int cmd = CSVFS_CMD_UNSPEC + 1; cmd <= CSVFS_CMD_MAX; ++cmd) {
    SCOPED_TRACE(std::string(CommandName(cmd)));
    ASSERT_NE(CommandName(cmd), "?");
    Message in = SampleCommand(cmd);
    Message out;
    Status s = Roundtrip(in, &out);
    ASSERT_TRUE(s.ok()) << s.message;
    EXPECT_EQ(out.cmd(), cmd);
    ASSERT_EQ(out.attrs().size(), in.attrs().size());
    for (size_t i = 0; i < in.attrs().size(); ++i) {
      EXPECT_EQ(out.attrs()[i].type, in.attrs()[i].type);
      EXPECT_EQ(out.attrs()[i].bytes, in.attrs()[i].bytes);
    }
  }
}

TEST(MessageTest, TypedAccessorsReturnWhatWasPut) {
  Message m(CSVFS_CMD_LOOKUP);
  m.PutU64(CSVFS_A_REQ_ID, 0x1122334455667788ULL)
      .PutBinary(CSVFS_A_PARENT_FH, SampleHandle())
      .PutString(CSVFS_A_NAME, "a");
  Message out;
  ASSERT_TRUE(Roundtrip(m, &out).ok());
  EXPECT_EQ(out.req_id(), 0x1122334455667788ULL);
  EXPECT_EQ(out.GetString(CSVFS_A_NAME).value(), "a");
  EXPECT_EQ(out.GetBinary(CSVFS_A_PARENT_FH)->size(), SampleHandle().size());
  EXPECT_FALSE(out.GetU32(CSVFS_A_REQ_ID).has_value()) << "wrong width must not read";
}

TEST(MessageTest, ReplyCarriesNegativeErrno) {
  Message req = SampleCommand(CSVFS_CMD_UNLINK);
  Message reply = MakeReply(req, -39);
  Message out;
  ASSERT_TRUE(Roundtrip(reply, &out).ok());
  EXPECT_EQ(out.req_id(), 42u);
  EXPECT_EQ(out.error(), -39);
}

TEST(MessageTest, RefusesPositiveErrno) {
  Message reply(CSVFS_CMD_REPLY);
  reply.PutU64(CSVFS_A_REQ_ID, 1).PutS32(CSVFS_A_ERRNO, 5);
  Message out;
  EXPECT_EQ(Roundtrip(reply, &out).code, Errc::kBadValue);
}

TEST(MessageTest, RefusesUnknownCommand) {
  Message out;
  Status s = out.Decode(CSVFS_CMD_MAX + 1, {});
  EXPECT_EQ(s.code, Errc::kUnknownCommand);
  EXPECT_EQ(out.Decode(0, {}).code, Errc::kUnknownCommand);
}

TEST(MessageTest, RefusesMissingMandatoryAttribute) {
  for (int cmd = CSVFS_CMD_UNSPEC + 1; cmd <= CSVFS_CMD_MAX; ++cmd) {
    for (int skip : RequiredAttributes(cmd)) {
      Message m(static_cast<uint8_t>(cmd));
      for (int attr : RequiredAttributes(cmd))
        if (attr != skip) PutSample(&m, attr);
      Message out;
      Status s = Roundtrip(m, &out);
      EXPECT_EQ(s.code, Errc::kMissingAttribute)
          << CommandName(cmd) << " without " << AttributeName(skip);
      EXPECT_NE(s.message.find(AttributeName(skip)), std::string::npos) << s.message;
    }
  }
}

TEST(MessageTest, RefusesTruncatedBuffers) {
  auto bytes = SampleCommand(CSVFS_CMD_RENAME).EncodeAttributes();
  for (size_t cut = 1; cut < bytes.size(); ++cut) {
    Message out;
    Status s = out.Decode(CSVFS_CMD_RENAME, std::span(bytes.data(), cut));
    EXPECT_FALSE(s.ok()) << "cut at " << cut;
  }
}

TEST(MessageTest, RefusesLengthThatOverrunsBuffer) {
  auto bytes = SampleCommand(CSVFS_CMD_GETATTR).EncodeAttributes();
  // First attribute header: claim more bytes than the buffer holds.
  uint16_t huge = 0x7fff;
  std::memcpy(bytes.data(), &huge, sizeof huge);
  Message out;
  EXPECT_EQ(out.Decode(CSVFS_CMD_GETATTR, bytes).code, Errc::kTruncated);
}

TEST(MessageTest, RefusesWrongAttributeWidth) {
  Message m = SampleCommand(CSVFS_CMD_GETATTR);
  m.PutU32(CSVFS_A_REQ_ID, 1);  // REQ_ID is a u64
  Message out;
  Status s = Roundtrip(m, &out);
  EXPECT_EQ(s.code, Errc::kBadLength);
  EXPECT_NE(s.message.find("REQ_ID"), std::string::npos);
}

TEST(MessageTest, RefusesOversizeStringAndPayload) {
  Message m = SampleCommand(CSVFS_CMD_LOOKUP);
  m.PutString(CSVFS_A_NAME, std::string(300, 'x'));
  Message out;
  EXPECT_EQ(Roundtrip(m, &out).code, Errc::kBadLength);

  Message w = SampleCommand(CSVFS_CMD_WRITE);
  w.PutBinary(CSVFS_A_DATA, std::vector<uint8_t>(CSVFS_MAX_IO + 1));
  EXPECT_EQ(Roundtrip(w, &out).code, Errc::kBadLength);

  Message r = SampleCommand(CSVFS_CMD_READ);
  r.PutU64(CSVFS_A_LENGTH, CSVFS_MAX_IO + 512);
  EXPECT_EQ(Roundtrip(r, &out).code, Errc::kBadLength);
}

TEST(MessageTest, RefusesBadNames) {
  for (const std::string& bad :
       std::vector<std::string>{"", ".", "..", "a/b", std::string("a\0b", 3)}) {
    Message m = SampleCommand(CSVFS_CMD_MKDIR);
    std::vector<uint8_t> raw(bad.begin(), bad.end());
    raw.push_back(0);
    m.PutBinary(CSVFS_A_NAME, raw);
    Message out;
    EXPECT_EQ(Roundtrip(m, &out).code, Errc::kBadString) << "name of " << bad.size() << " bytes";
  }
}

TEST(MessageTest, RefusesStringWithoutNul) {
  Message m = SampleCommand(CSVFS_CMD_ATTACH);
  m.PutBinary(CSVFS_A_VOLUME, std::vector<uint8_t>{'V', '1'});
  Message out;
  EXPECT_EQ(Roundtrip(m, &out).code, Errc::kBadString);
}

TEST(MessageTest, RefusesMalformedFileHandle) {
  Message m = SampleCommand(CSVFS_CMD_GETATTR);
  auto fh = SampleHandle();
  fh[4] = 200;  // len field no longer matches the bytes
  m.PutBinary(CSVFS_A_FH, fh);
  Message out;
  EXPECT_EQ(Roundtrip(m, &out).code, Errc::kBadValue);
}

TEST(MessageTest, RefusesUnknownAttributeAndDuplicates) {
  auto bytes = SampleCommand(CSVFS_CMD_STATFS).EncodeAttributes();
  auto dup = bytes;
  dup.insert(dup.end(), bytes.begin(), bytes.end());
  Message out;
  EXPECT_EQ(out.Decode(CSVFS_CMD_STATFS, dup).code, Errc::kDuplicateAttribute);

  uint16_t unknown = CSVFS_A_MAX + 1;
  std::memcpy(bytes.data() + 2, &unknown, sizeof unknown);
  EXPECT_EQ(out.Decode(CSVFS_CMD_STATFS, bytes).code, Errc::kUnknownAttribute);
}

TEST(MessageTest, RefusesEnumsOutOfRange) {
  Message m = SampleCommand(CSVFS_CMD_VOLUME_STATE);
  m.PutU32(CSVFS_A_IO_MODE, __CSVFS_IO_MAX);
  Message out;
  EXPECT_EQ(Roundtrip(m, &out).code, Errc::kBadValue);

  Message l = SampleCommand(CSVFS_CMD_LAYOUT_GET);
  l.PutU32(CSVFS_A_LAYOUT_IOMODE, 0);
  EXPECT_EQ(Roundtrip(l, &out).code, Errc::kBadValue);
}

TEST(MessageTest, RefusesMisalignedBlockIo) {
  Message m = SampleCommand(CSVFS_CMD_BLOCK_WRITE);
  m.PutU64(CSVFS_A_DEV_OFFSET, 100);
  Message out;
  EXPECT_EQ(Roundtrip(m, &out).code, Errc::kBadValue);
}

TEST(DirentTest, PackAndUnpack) {
  std::vector<DirEntry> in = {{1, 1, 4, "."}, {2, 2, 8, "file"}, {3, 3, 4, std::string(255, 'd')}};
  std::vector<uint8_t> packed;
  ASSERT_EQ(PackDirents(in, &packed), in.size());
  EXPECT_EQ(packed.size() % 8, 0u);
  std::vector<DirEntry> out;
  ASSERT_TRUE(UnpackDirents(packed, &out).ok());
  ASSERT_EQ(out.size(), in.size());
  for (size_t i = 0; i < in.size(); ++i) {
    EXPECT_EQ(out[i].name, in[i].name);
    EXPECT_EQ(out[i].ino, in[i].ino);
    EXPECT_EQ(out[i].cookie, in[i].cookie);
    EXPECT_EQ(out[i].type, in[i].type);
  }
}

TEST(DirentTest, PackStopsAtLimit) {
  std::vector<DirEntry> many(10000, DirEntry{1, 1, 8, std::string(40, 'n')});
  std::vector<uint8_t> packed;
  size_t n = PackDirents(many, &packed);
  EXPECT_LT(n, many.size());
  EXPECT_LE(packed.size(), static_cast<size_t>(CSVFS_MAX_DIRENTS));
}

TEST(DirentTest, RefusesOverrunAndSlash) {
  std::vector<uint8_t> packed;
  PackDirents(std::vector<DirEntry>{{1, 1, 8, "abc"}}, &packed);
  std::vector<DirEntry> out;
  auto bad = packed;
  bad[16] = 100;  // namelen past the end
  EXPECT_EQ(UnpackDirents(bad, &out).code, Errc::kTruncated);
  bad = packed;
  bad[24 + 1] = '/';
  EXPECT_EQ(UnpackDirents(bad, &out).code, Errc::kBadString);
}

TEST(ExtentTest, RefusesMalformedExtents) {
  csvfs_extent e{0, 4096, 8192, CSVFS_EXT_WRITTEN, 0};
  std::vector<csvfs_extent> out;
  auto bytes = [](const csvfs_extent& x) {
    std::vector<uint8_t> b(sizeof x);
    std::memcpy(b.data(), &x, sizeof x);
    return b;
  };
  EXPECT_TRUE(UnpackExtents(bytes(e), &out).ok());
  auto bad = e;
  bad.state = 99;
  EXPECT_EQ(UnpackExtents(bytes(bad), &out).code, Errc::kBadValue);
  bad = e;
  bad.dev_offset = 100;
  EXPECT_EQ(UnpackExtents(bytes(bad), &out).code, Errc::kBadValue);
  auto partial = bytes(e);
  partial.pop_back();
  EXPECT_EQ(UnpackExtents(partial, &out).code, Errc::kBadLength);
}

TEST(FrameTest, FramesSplitAcrossReads) {
  std::vector<uint8_t> stream;
  for (int cmd : {CSVFS_CMD_LOOKUP, CSVFS_CMD_BLOCK_WRITE, CSVFS_CMD_REPLY}) {
    auto f = EncodeFrame(SampleCommand(cmd));
    stream.insert(stream.end(), f.begin(), f.end());
  }
  FrameDecoder d;
  std::vector<int> got;
  for (uint8_t byte : stream) {
    d.Feed(std::span(&byte, 1));
    Message m;
    Status s;
    while (d.Next(&m, &s)) {
      ASSERT_TRUE(s.ok()) << s.message;
      got.push_back(m.cmd());
    }
  }
  EXPECT_EQ(got, (std::vector<int>{CSVFS_CMD_LOOKUP, CSVFS_CMD_BLOCK_WRITE, CSVFS_CMD_REPLY}));
  EXPECT_EQ(d.buffered(), 0u);
}

TEST(FrameTest, RefusesBadMagicAndOversize) {
  auto f = EncodeFrame(SampleCommand(CSVFS_CMD_STATFS));
  f[0] ^= 0xff;
  FrameDecoder d;
  d.Feed(f);
  Message m;
  Status s;
  ASSERT_TRUE(d.Next(&m, &s));
  EXPECT_FALSE(s.ok());
  EXPECT_TRUE(d.failed());

  FrameHeader h{kFrameMagic, kMaxFramePayload + 1, CSVFS_CMD_STATFS, CSVFS_ABI_VERSION, 0};
  FrameDecoder big;
  big.Feed(std::span(reinterpret_cast<const uint8_t*>(&h), sizeof h));
  ASSERT_TRUE(big.Next(&m, &s));
  EXPECT_EQ(s.code, Errc::kTooLarge);
}

TEST(FrameTest, BadMessageInGoodFrameKeepsStreamInSync) {
  Message bad(CSVFS_CMD_GETATTR);  // no REQ_ID, no FH
  auto stream = EncodeFrame(bad);
  auto good = EncodeFrame(SampleCommand(CSVFS_CMD_GETATTR));
  stream.insert(stream.end(), good.begin(), good.end());
  FrameDecoder d;
  d.Feed(stream);
  Message m;
  Status s;
  ASSERT_TRUE(d.Next(&m, &s));
  EXPECT_EQ(s.code, Errc::kMissingAttribute);
  ASSERT_TRUE(d.Next(&m, &s));
  EXPECT_TRUE(s.ok()) << s.message;
  EXPECT_EQ(m.cmd(), CSVFS_CMD_GETATTR);
}

}  // namespace
}  // namespace csv::abi
