// Non-idempotent commands with an OP_ID: recorded in the volume's op log
// (oplog.h) so that a re-send after a coordinator crash gets the result of
// the first execution (docs/failover.md).
#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

#include "coordinator/service_impl.h"

namespace csv::coord {
namespace {

// Test seam: CSVD_TEST_CRASH="exec:MKDIR" (or "done:MKDIR") kills csvd
// after the op ran but before its DONE record ("exec") or before the reply
// ("done"): a coordinator crash between executing and replying.
void MaybeCrash(const char* point, uint8_t cmd) {
  static const char* spec = std::getenv("CSVD_TEST_CRASH");
  if (!spec) return;
  std::string want = std::string(point) + ":" + std::string(abi::CommandName(cmd));
  if (want != spec) return;
  std::fprintf(stderr, "csvd: CSVD_TEST_CRASH %s: killing myself\n", spec);
  std::fflush(stderr);
  ::kill(::getpid(), SIGKILL);
}

bool IsCreate(uint8_t cmd) {
  return cmd == CSVFS_CMD_CREATE || cmd == CSVFS_CMD_MKDIR || cmd == CSVFS_CMD_MKNOD ||
         cmd == CSVFS_CMD_SYMLINK;
}

}  // namespace

bool ServiceImpl::Logged(uint8_t cmd) {
  return IsCreate(cmd) || cmd == CSVFS_CMD_LINK || cmd == CSVFS_CMD_UNLINK ||
         cmd == CSVFS_CMD_RMDIR || cmd == CSVFS_CMD_RENAME;
}

// What the op's outcome will be judged by, should it be interrupted.
void ServiceImpl::PreState(const Call& c, OpRecord* rec) const {
  auto key_of = [&](int dir_attr, int name_attr, FileKey* key) {
    UniqueFd dir, child;
    auto name = c.req.GetString(name_attr);
    if (!name || OpenFh(c, dir_attr, O_PATH | O_DIRECTORY, &dir) != 0) return false;
    if (LowerFs::OpenChild(dir.get(), std::string(*name), &child) != 0) return false;
    if (key) fs_->HandleOf(child.get(), key);
    return true;
  };
  const uint8_t cmd = c.req.cmd();
  if (IsCreate(cmd)) {
    rec->pre_exists = key_of(CSVFS_A_PARENT_FH, CSVFS_A_NAME, nullptr);
  } else if (cmd == CSVFS_CMD_LINK) {
    rec->pre_exists = key_of(CSVFS_A_NEW_PARENT_FH, CSVFS_A_NEW_NAME, nullptr);
  } else if (cmd == CSVFS_CMD_UNLINK || cmd == CSVFS_CMD_RMDIR) {
    key_of(CSVFS_A_PARENT_FH, CSVFS_A_NAME, &rec->key1);
  } else if (cmd == CSVFS_CMD_RENAME) {
    key_of(CSVFS_A_PARENT_FH, CSVFS_A_NAME, &rec->key1);
    key_of(CSVFS_A_NEW_PARENT_FH, CSVFS_A_NEW_NAME, &rec->key2);
  }
}

// An op whose INTENT was recorded but not its result: did it take effect?
// Judged from the names it changed and the files they named before.
bool ServiceImpl::TookEffect(const Call& c, const OpRecord& rec) const {
  auto key_at = [&](int dir_attr, int name_attr) -> std::optional<FileKey> {
    UniqueFd dir, child;
    auto name = c.req.GetString(name_attr);
    if (!name || OpenFh(c, dir_attr, O_PATH | O_DIRECTORY, &dir) != 0) return std::nullopt;
    if (LowerFs::OpenChild(dir.get(), std::string(*name), &child) != 0) return std::nullopt;
    FileKey key;
    if (fs_->HandleOf(child.get(), &key) != 0) return std::nullopt;
    return key;
  };
  const uint8_t cmd = c.req.cmd();
  if (IsCreate(cmd)) return !rec.pre_exists && key_at(CSVFS_A_PARENT_FH, CSVFS_A_NAME);
  if (cmd == CSVFS_CMD_LINK) {
    if (rec.pre_exists) return false;
    UniqueFd file;
    FileKey key;
    if (OpenFh(c, CSVFS_A_FH, O_PATH, &file) != 0 || fs_->HandleOf(file.get(), &key) != 0)
      return false;
    return key_at(CSVFS_A_NEW_PARENT_FH, CSVFS_A_NEW_NAME) == key;
  }
  if (cmd == CSVFS_CMD_UNLINK || cmd == CSVFS_CMD_RMDIR) {
    if (rec.key1.empty()) return false;  // it named nothing: ENOENT again
    return key_at(CSVFS_A_PARENT_FH, CSVFS_A_NAME) != rec.key1;
  }
  if (cmd == CSVFS_CMD_RENAME) {
    if (rec.key1.empty()) return false;
    auto now_new = key_at(CSVFS_A_NEW_PARENT_FH, CSVFS_A_NEW_NAME);
    if (now_new != rec.key1) return false;
    auto now_old = key_at(CSVFS_A_PARENT_FH, CSVFS_A_NAME);
    const uint32_t flags = c.req.GetU32(CSVFS_A_FLAGS).value_or(0);
    if (flags & RENAME_EXCHANGE) return !rec.key2.empty() && now_old == rec.key2;
    return now_old != rec.key1;
  }
  return false;
}

// The reply of an op that took effect, built from the volume as it is now.
int ServiceImpl::Replay(Call& c, const OpRecord& rec) {
  if (rec.state == OpRecord::kDone && rec.err != 0) return rec.err;
  const uint8_t cmd = c.req.cmd();
  if (cmd == CSVFS_CMD_CREATE) {
    // Open the created file as the original did; never truncate it again.
    abi::Message again = c.req;
    const uint32_t flags = *c.req.GetU32(CSVFS_A_FLAGS);
    again.PutU32(CSVFS_A_FLAGS, flags & ~static_cast<uint32_t>(O_EXCL | O_TRUNC));
    Call c2{again, c.node, abi::MakeReply(again, 0)};
    int err = Create(c2);
    if (err == 0) c.reply = std::move(c2.reply);
    return err;
  }
  if (IsCreate(cmd)) {
    UniqueFd dir, child;
    std::string name;
    if (int err = GetName(c, CSVFS_A_NAME, &name)) return err;
    if (int err = OpenFh(c, CSVFS_A_PARENT_FH, O_PATH | O_DIRECTORY, &dir)) return err;
    if (cmd != CSVFS_CMD_SYMLINK)  // owner and mode, in case the crash came before
      return FinishCreate(c, dir.get(), name, *c.req.GetU32(CSVFS_A_MODE));
    if (int err = LowerFs::OpenChild(dir.get(), name, &child)) return err;
    return PutEntry(c, child.get());
  }
  if (cmd == CSVFS_CMD_LINK) {
    UniqueFd file;
    if (int err = OpenFh(c, CSVFS_A_FH, O_PATH, &file)) return err;
    return PutAttr(c, file.get());
  }
  return 0;  // UNLINK, RMDIR, RENAME: nothing to return
}

// The op's directory changes reach the journal before its DONE record.
void ServiceImpl::SyncDirs(const Call& c) const {
  for (int attr : {CSVFS_A_PARENT_FH, CSVFS_A_NEW_PARENT_FH}) {
    UniqueFd dir;
    if (c.req.Has(attr) && OpenFh(c, attr, O_RDONLY | O_DIRECTORY, &dir) == 0) ::fsync(dir.get());
  }
}

int ServiceImpl::LoggedOp(Call& c, OpFn fn) {
  const uint64_t op_id = *c.req.GetU64(CSVFS_A_OP_ID);
  const uint8_t cmd = c.req.cmd();
  oplog_->Begin(c.node, op_id);
  struct EndGuard {
    OpLog* log;
    uint32_t node;
    uint64_t op;
    ~EndGuard() { log->End(node, op); }
  } end{oplog_.get(), c.node, op_id};

  if (auto rec = oplog_->Find(c.node, op_id); rec && rec->cmd == cmd) {
    if (rec->state == OpRecord::kDone || TookEffect(c, *rec)) {
      ++replayed_ops_;
      std::fprintf(stderr, "csvd: volume %s: %s op %llx of node %u is a retry: %s\n",
                   options_.volume.c_str(), std::string(abi::CommandName(cmd)).c_str(),
                   static_cast<unsigned long long>(op_id), c.node,
                   rec->state == OpRecord::kDone ? "original result" : "it took effect");
      int err = Replay(c, *rec);
      if (rec->state != OpRecord::kDone) {
        OpRecord done = *rec;
        done.state = OpRecord::kDone;
        done.err = err;
        oplog_->Write(&done, false);
      }
      return err;
    }
    // It never ran: run it now, in the same slot.
    OpRecord again = *rec;
    int err = (this->*fn)(c);
    SyncDirs(c);
    again.state = OpRecord::kDone;
    again.err = err;
    oplog_->Write(&again, false);
    return err;
  }
  OpRecord rec;
  rec.node = c.node;
  rec.op_id = op_id;
  rec.cmd = cmd;
  rec.state = OpRecord::kIntent;
  PreState(c, &rec);
  if (int err = oplog_->Write(&rec, true)) return err == -ENOSPC ? err : -EIO;
  int err = (this->*fn)(c);
  MaybeCrash("exec", cmd);
  SyncDirs(c);
  rec.state = OpRecord::kDone;
  rec.err = err;
  oplog_->Write(&rec, false);  // failing here only loses the shortcut
  MaybeCrash("done", cmd);
  return err;
}

}  // namespace csv::coord
