// csvctl: the csvfs admin CLI. Talks to the local csvd over its root-only
// control socket (one JSON object per line each way); see docs/man/csvctl.8.
//
// Exit status (scripts rely on it):
//   0 success
//   1 the cluster refused or failed the operation (the message says why)
//   2 usage error
//   3 csvd is not running on this node (or its socket is unreachable)
//   4 timed out waiting for the cluster to reach the requested state
//   5 backup begin --exec: the snapshot command failed (backup mode stays on)
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "csvctl/control.h"

namespace {

using json = nlohmann::json;
using csvctl::NotRunning;
using Clock = std::chrono::steady_clock;

constexpr int kOk = 0, kFailed = 1, kUsage = 2, kNotRunning = 3, kTimeout = 4, kExecFailed = 5;

std::string g_socket = csvctl::kDefaultSocket;
bool g_json = false;

struct Failed : std::runtime_error {
  Failed(std::string what, int rc) : std::runtime_error(std::move(what)), code(rc) {}
  int code;
};

json Call(const json& req, int timeout_s = 30) {
  json r = csvctl::Request(g_socket, req, timeout_s);
  if (!r.value("ok", false)) throw Failed(r.value("error", std::string("csvd refused")), kFailed);
  return r;
}

std::string Pad(std::string s, size_t w) {
  if (s.size() < w) s.append(w - s.size(), ' ');
  return s + " ";
}

std::string Id(const json& j) {
  uint32_t n = j.is_number() ? j.get<uint32_t>() : 0;
  return n ? std::to_string(n) : "-";
}

std::string YesNo(const json& j) { return j.is_boolean() && j.get<bool>() ? "yes" : "no"; }

std::string Bytes(uint64_t b) {
  const char* u[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  double v = static_cast<double>(b);
  int i = 0;
  while (v >= 1024 && i < 4) v /= 1024, ++i;
  char buf[32];
  std::snprintf(buf, sizeof buf, i ? "%.1f %s" : "%.0f %s", v, u[i]);
  return buf;
}

std::string Flags(const json& v) {
  std::string f;
  if (v.value("redirected", false)) f += "redirect,";
  if (v.value("backup_node", 0u))
    f += "backup@" + std::to_string(v["backup_node"].get<int>()) + ",";
  if (v.value("frozen_here", false)) f += "frozen,";
  if (f.empty()) return "-";
  f.pop_back();
  return f;
}

const json* FindVolume(const json& status, const std::string& name) {
  for (const auto& v : status["volumes"])
    if (v["name"] == name) return &v;
  return nullptr;
}

json Status() { return Call({{"cmd", "status"}}); }

json Volume(const std::string& name) {
  json s = Status();
  const json* v = FindVolume(s, name);
  if (!v) throw Failed("no volume " + name + " in this cluster (csvctl volume list)", kFailed);
  return *v;
}

void PrintNodes(const json& s) {
  std::cout << Pad("NODE", 5) << Pad("ADDRESS", 22) << Pad("MEMBER", 7) << Pad("CONNECTED", 10)
            << "LEASE\n";
  for (const auto& n : s["nodes"])
    std::cout << Pad(Id(n["id"]) + (n["id"] == s["node"] ? "*" : ""), 5)
              << Pad(n["addr"].get<std::string>(), 22) << Pad(YesNo(n["member"]), 7)
              << Pad(YesNo(n["connected"]), 10) << n.value("lease", std::string("-")) << "\n";
}

void PrintVolumeNodes(const json& v) {
  std::cout << "  " << Pad("NODE", 5) << Pad("I/O MODE", 16) << Pad("REASON", 23) << Pad("PATH", 8)
            << Pad("LEASE", 8) << "KERNEL (confirmed mode, epoch)\n";
  for (const auto& n : v["nodes"]) {
    std::string kernel = n.value("kernel_mode", std::string("-"));
    if (n.value("kernel_epoch", uint64_t{0}))
      kernel += ", " + std::to_string(n["kernel_epoch"].get<uint64_t>());
    std::cout << "  " << Pad(Id(n["id"]), 5) << Pad(n["io_mode"].get<std::string>(), 16)
              << Pad(n["reason"].get<std::string>(), 23)
              << Pad(n["path_healthy"].get<bool>() ? "healthy" : "FAILED", 8)
              << Pad(n.value("lease", std::string("-")), 8) << kernel << "\n";
  }
}

void PrintVolumesHeader() {
  std::cout << Pad("VOLUME", 14) << Pad("COORDINATOR", 11) << Pad("EPOCH", 6) << Pad("STATE", 7)
            << Pad("FLAGS", 16) << Pad("DEVICE", 14) << "UUID\n";
}

void PrintVolumeLine(const json& v) {
  std::string dev = v.value("device", std::string());
  std::cout << Pad(v["name"].get<std::string>(), 14) << Pad(Id(v["coordinator"]), 11)
            << Pad(std::to_string(v["epoch"].get<uint64_t>()), 6)
            << Pad(v.value("ready", false) ? "online" : "pending", 7) << Pad(Flags(v), 16)
            << Pad(dev.empty() ? "-" : dev, 14) << v["uuid"].get<std::string>() << "\n";
}

void PrintStatus(const json& s) {
  std::cout << "node " << s["node"] << "   quorum: " << (s["quorate"].get<bool>() ? "yes" : "NO")
            << "   synced: " << YesNo(s["synced"]) << "\n\n";
  PrintNodes(s);
  std::cout << "\n";
  PrintVolumesHeader();
  for (const auto& v : s["volumes"]) {
    PrintVolumeLine(v);
    PrintVolumeNodes(v);
  }
  if (s["volumes"].empty()) std::cout << "(no volumes: csvctl volume add NAME DEVICE)\n";
}

void PrintStats(const json& st) {
  std::cout << "node " << st["node"] << "\n"
            << Pad("VOLUME", 14) << Pad("MODE", 16) << Pad("METADATA", 9) << Pad("FILE-IO", 8)
            << Pad("FILE-BYTES", 11) << Pad("BLOCK-IO", 9) << Pad("BLOCK-BYTES", 12)
            << Pad("LAYOUTS", 8) << "FOR-PEERS\n";
  for (const auto& v : st["volumes"])
    std::cout << Pad(v["name"].get<std::string>(), 14) << Pad(v["io_mode"].get<std::string>(), 16)
              << Pad(std::to_string(v["metadata_ops"].get<uint64_t>()), 9)
              << Pad(std::to_string(v["file_redirected_ios"].get<uint64_t>()), 8)
              << Pad(Bytes(v["file_redirected_bytes"].get<uint64_t>()), 11)
              << Pad(std::to_string(v["block_redirected_ios"].get<uint64_t>()), 9)
              << Pad(Bytes(v["block_redirected_bytes"].get<uint64_t>()), 12)
              << Pad(std::to_string(v["layout_ops"].get<uint64_t>()), 8)
              << v["served_for_peers"].get<uint64_t>() << "\n";
  for (const auto& v : st["volumes"]) {
    if (!v.contains("kernel") || !v["kernel"].is_object()) continue;
    std::cout << v["name"].get<std::string>() << " in csvfs.ko:";
    for (const auto& [path, ops] : v["kernel"].items())
      for (const auto& [op, c] : ops.items())
        std::cout << " " << path << "-" << op << "=" << c["ops"].get<uint64_t>() << "/"
                  << Bytes(c["bytes"].get<uint64_t>()) << "/" << c["avg_us"].get<uint64_t>()
                  << "us";
    std::cout << "\n";
  }
  std::cout << "daemon:";
  for (const auto& [k, v] : st["counters"].items()) std::cout << " " << k << "=" << v;
  std::cout << "\n";
}

// Polls status until pred(volume) holds; Failed(kTimeout) after wait_s.
json WaitVolume(const std::string& name, int wait_s, const std::string& what,
                const std::function<bool(const json& status, const json& v)>& pred) {
  auto deadline = Clock::now() + std::chrono::seconds(wait_s);
  for (;;) {
    json s = Status();
    const json* v = FindVolume(s, name);
    if (!v) throw Failed("volume " + name + " disappeared", kFailed);
    if (pred(s, *v)) return *v;
    if (Clock::now() > deadline)
      throw Failed("timed out after " + std::to_string(wait_s) + " s waiting for " + what +
                       " (csvctl status shows where it stands)",
                   kTimeout);
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
}

bool AllNodes(const json& v, const std::function<bool(const json&)>& pred) {
  if (v["nodes"].empty()) return false;
  for (const auto& n : v["nodes"])
    if (!pred(n)) return false;
  return true;
}

void Print(const json& j, const std::string& text) {
  if (g_json)
    std::cout << j.dump(2) << "\n";
  else
    std::cout << text << "\n";
}

int Keygen(const std::string& path, bool force) {
  int flags = O_WRONLY | O_CREAT | O_CLOEXEC | (force ? O_TRUNC : O_EXCL);
  int fd = open(path.c_str(), flags, 0600);
  if (fd < 0) {
    if (errno == EEXIST)
      throw Failed(path +
                       " exists: every node must use the same key; copy it, or --force to "
                       "replace it (then copy it to every node and restart csvd everywhere)",
                   kFailed);
    throw Failed("cannot create " + path + ": " + std::strerror(errno) +
                     " (does its directory exist? are you root?)",
                 kFailed);
  }
  unsigned char key[32];
  int rnd = open("/dev/urandom", O_RDONLY | O_CLOEXEC);
  bool ok = rnd >= 0 && read(rnd, key, sizeof key) == static_cast<ssize_t>(sizeof key);
  if (rnd >= 0) close(rnd);
  ok = ok && fchmod(fd, 0600) == 0 && write(fd, key, sizeof key) == sizeof key && fsync(fd) == 0;
  close(fd);
  if (!ok) throw Failed("cannot write " + path + ": " + std::strerror(errno), kFailed);
  Print({{"ok", true}, {"key_file", path}, {"bytes", 32}},
        "wrote a new 32-byte cluster key to " + path +
            " (mode 0600): copy it to the same path on every node");
  return kOk;
}

// Runs `command` with /bin/sh; its exit status (128+signal if killed).
int RunCommand(const std::string& command, const std::vector<std::string>& env) {
  std::cout.flush();
  pid_t pid = fork();
  if (pid < 0) throw Failed(std::string("fork: ") + std::strerror(errno), kFailed);
  if (pid == 0) {
    for (const auto& e : env) putenv(const_cast<char*>(e.c_str()));
    // The command's output must not be mixed into --json output.
    if (g_json) dup2(STDERR_FILENO, STDOUT_FILENO);
    execl("/bin/sh", "sh", "-c", command.c_str(), static_cast<char*>(nullptr));
    _exit(127);
  }
  int st = 0;
  while (waitpid(pid, &st, 0) < 0 && errno == EINTR) {
  }
  return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

int BackupBegin(const std::string& name, const std::string& exec, int wait_s, int freeze_s,
                int confirm_s) {
  json r = Call({{"cmd", "backup-begin"}, {"volume", name}});
  uint32_t self = Status()["node"].get<uint32_t>();
  // This node coordinates and serves; every node is file-system redirected.
  json v = WaitVolume(name, wait_s, "this node to coordinate " + name + " for the backup",
                      [self](const json&, const json& vol) {
                        return vol["coordinator"] == self && vol["ready"].get<bool>() &&
                               vol.value("serving_here", false) && AllNodes(vol, [](const json& n) {
                                 return n["io_mode"] == "FileRedirected" && n["reason"] == "backup";
                               });
                      });
  // The shared state says FileRedirected; what counts is that every node's
  // kernel took it (a direct write would bypass the frozen filesystem).
  auto confirm_start = Clock::now();
  auto deadline = confirm_start + std::chrono::seconds(confirm_s);
  for (;;) {
    json st = Status();
    const json* cur = FindVolume(st, name);
    if (!cur) throw Failed("volume " + name + " disappeared", kFailed);
    v = *cur;
    if (v.value("backup_node", 0u) != self)
      throw Failed("the backup of " + name + " ended while waiting for the nodes' kernels " +
                       "(a membership change, or csvctl backup end): begin it again",
                   kFailed);
    std::string late = v.value("kernels_not_redirected", std::string("(csvd too old)"));
    if (late.empty()) break;
    if (Clock::now() > deadline)
      throw Failed("timed out after " + std::to_string(confirm_s) +
                       " s waiting for the kernel of every node to confirm FileRedirected for " +
                       name + "; not confirmed: " + late + ". Nothing was frozen; " + name +
                       " stays in backup mode. Check csvd on those nodes (csvctl status there), "
                       "then run csvctl backup begin " +
                       name + " again, or csvctl backup end " + name,
                   kTimeout);
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  double confirm_ms =
      std::chrono::duration<double, std::milli>(Clock::now() - confirm_start).count();
  json out = {{"ok", true},          {"volume", name},           {"coordinator", v["coordinator"]},
              {"epoch", v["epoch"]}, {"confirm_ms", confirm_ms}, {"nodes", v["nodes"]}};
  std::string text = "backup of " + name + " begun: node " + std::to_string(self) +
                     " coordinates (epoch " + std::to_string(v["epoch"].get<uint64_t>()) +
                     "), every node's kernel confirmed FileRedirected";
  int rc = kOk;
  if (!exec.empty()) {
    Call({{"cmd", "freeze"}, {"volume", name}, {"timeout_s", freeze_s}}, freeze_s + 30);
    auto t0 = Clock::now();
    int status = -1;
    std::string run_error;
    try {
      status = RunCommand(exec, {"CSV_VOLUME=" + name, "CSV_DEVICE=" + v.value("device", ""),
                                 "CSV_EPOCH=" + std::to_string(v["epoch"].get<uint64_t>())});
    } catch (const Failed& e) {
      run_error = e.what();
    }
    double ms = std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
    json thaw = csvctl::Request(g_socket, {{"cmd", "thaw"}, {"volume", name}});
    bool thawed = thaw.value("ok", false);
    out["exec"] = {
        {"command", exec}, {"exit_status", status}, {"frozen_ms", ms}, {"thawed", thawed}};
    if (!thawed) out["exec"]["thaw_error"] = thaw.value("error", std::string());
    text += "\nfilesystem frozen for " + std::to_string(static_cast<int>(ms)) + " ms while `" +
            exec + "` ran: exit status " + std::to_string(status) +
            (thawed ? ", thawed" : ", THAW FAILED: " + thaw.value("error", std::string()));
    if (!run_error.empty() || status != 0) {
      out["ok"] = false;
      out["error"] = run_error.empty() ? "the snapshot command failed (exit status " +
                                             std::to_string(status) + ")"
                                       : run_error;
      rc = kExecFailed;
    }
    if (!thawed) rc = kFailed;
  }
  text += "\nrun `csvctl backup end " + name + "` to return to direct I/O";
  Print(out, text);
  if (rc == kExecFailed)
    std::cerr << "csvctl: the snapshot command failed; " << name
              << " stays in backup mode until `csvctl backup end " << name << "`\n";
  return rc;
}

int BackupEnd(const std::string& name, int wait_s) {
  json r = Call({{"cmd", "backup-end"}, {"volume", name}});
  json v =
      WaitVolume(name, wait_s, "every node to leave backup mode", [](const json&, const json& vol) {
        return vol.value("backup_node", 0u) == 0 &&
               AllNodes(vol, [](const json& n) { return n["reason"] != "backup"; });
      });
  std::string modes;
  for (const auto& n : v["nodes"])
    modes += " node " + Id(n["id"]) + " " + n["io_mode"].get<std::string>() + ";";
  if (!modes.empty()) modes.pop_back();
  Print({{"ok", true},
         {"volume", name},
         {"coordinator", v["coordinator"]},
         {"epoch", v["epoch"]},
         {"nodes", v["nodes"]}},
        "backup of " + name + " ended:" + modes);
  return kOk;
}

int Redirect(const std::string& name, bool on, int wait_s) {
  Call({{"cmd", "redirect"}, {"volume", name}, {"on", on}});
  json v = WaitVolume(
      name, wait_s,
      std::string("every node ") + (on ? "to be" : "to leave") + " file-system redirected",
      [on](const json&, const json& vol) {
        return vol.value("redirected", false) == on && AllNodes(vol, [on](const json& n) {
                 return on ? n["io_mode"] == "FileRedirected" || n["io_mode"] == "Paused"
                           : n["reason"] != "user request";
               });
      });
  Print({{"ok", true}, {"volume", name}, {"redirected", on}, {"nodes", v["nodes"]}},
        "volume " + name + ": maintenance redirect " +
            (on ? "on (every node FileRedirected)" : "off (direct I/O resumes)"));
  return kOk;
}

int Move(const std::string& name, uint32_t node, int wait_s) {
  auto t0 = Clock::now();
  json r = Call({{"cmd", "move"}, {"volume", name}, {"node", node}});
  uint64_t epoch = r.value("epoch", uint64_t{0});
  json v =
      WaitVolume(name, wait_s, name + " to be online again", [epoch](const json&, const json& vol) {
        return vol["epoch"].get<uint64_t>() >= epoch && vol["ready"].get<bool>();
      });
  double ms = std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
  json out = {{"ok", true},
              {"volume", name},
              {"coordinator", v["coordinator"]},
              {"epoch", v["epoch"]},
              {"online_after_ms", ms}};
  if (g_json)
    std::cout << out.dump() << "\n";  // one line: scripts and benchmarks parse it
  else
    std::cout << "volume " << name << " moved to node " << v["coordinator"] << " (epoch "
              << v["epoch"] << "), online after " << static_cast<int>(ms) << " ms\n";
  return kOk;
}

int Stats(bool watch, double interval, int count) {
  for (int i = 0; count <= 0 || i < count; ++i) {
    json st = Call({{"cmd", "stats"}});
    if (g_json) {
      std::cout << (watch ? st.dump() : st.dump(2)) << std::endl;
    } else {
      if (watch) std::cout << "\033[H\033[2J";
      PrintStats(st);
      std::cout.flush();
    }
    if (!watch) break;
    if (count > 0 && i + 1 >= count) break;
    std::this_thread::sleep_for(std::chrono::duration<double>(interval));
  }
  return kOk;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"csvctl - manage csvfs Cluster Shared Volumes (see csvctl(8))"};
  app.require_subcommand(1);
  app.fallthrough();
  app.add_option("--socket,-s", g_socket, "csvd's control socket")->capture_default_str();
  app.add_flag("--json,-j", g_json, "print JSON (every read command)");

  auto* status = app.add_subcommand("status", "cluster, volumes, I/O mode of each node and why");
  auto* nodes = app.add_subcommand("nodes", "configured nodes: membership, connection, lease");

  std::string name, device, mode, exec, key_path = "/etc/csv/cluster.key";
  uint32_t preferred = 0, node = 0;
  int wait_s = 60, freeze_s = 300, confirm_s = 60, count = 0;
  double interval = 2;
  bool force = false, watch = false;

  auto* volume = app.add_subcommand("volume", "add, remove, list or show volumes");
  volume->require_subcommand(1);
  auto* add = volume->add_subcommand("add", "make an XFS/ext4 filesystem a cluster shared volume");
  add->add_option("name", name, "volume name (1-63 of [A-Za-z0-9._-])")->required();
  add->add_option("device", device, "block device holding an XFS or ext4 filesystem")->required();
  add->add_option("--preferred", preferred, "preferred coordinator (node id)");
  auto* remove = volume->add_subcommand("remove", "stop sharing a volume (the fs stays intact)");
  remove->add_option("name", name)->required();
  auto* list = volume->add_subcommand("list", "list volumes");
  auto* show = volume->add_subcommand("show", "one volume: coordinator, epoch, per-node modes");
  show->add_option("name", name)->required();

  auto* move = app.add_subcommand("move", "move a volume's coordinator role");
  move->add_option("volume", name)->required();
  move->add_option("node", node, "target node id (default: the next eligible node)");
  move->add_option("--wait", wait_s, "seconds to wait until the volume is online again");

  auto* redirect = app.add_subcommand("redirect", "maintenance: file-system redirect every node");
  redirect->add_option("volume", name)->required();
  redirect->add_option("mode", mode, "on or off")->required()->check(CLI::IsMember({"on", "off"}));
  redirect->add_option("--wait", wait_s, "seconds to wait until every node follows");

  auto* backup = app.add_subcommand("backup", "backup mode: begin (optionally --exec) or end");
  backup->require_subcommand(1);
  auto* begin = backup->add_subcommand("begin", "this node coordinates, direct I/O stops");
  begin->add_option("volume", name)->required();
  begin->add_option("--exec", exec, "snapshot command run (sh -c) while the filesystem is frozen");
  begin->add_option("--wait", wait_s, "seconds to wait for the backup state");
  begin->add_option("--freeze-timeout", freeze_s, "csvd thaws on its own after this many seconds")
      ->capture_default_str();
  begin
      ->add_option("--confirm-timeout", confirm_s,
                   "seconds to wait until every node's kernel confirmed FileRedirected")
      ->capture_default_str();
  auto* end = backup->add_subcommand("end", "leave backup mode: direct I/O resumes");
  end->add_option("volume", name)->required();
  end->add_option("--wait", wait_s, "seconds to wait until every node has left backup mode");

  auto* stats = app.add_subcommand("stats", "request counters per volume and data path");
  stats->add_flag("--watch,-w", watch, "refresh until interrupted");
  stats->add_option("--interval,-n", interval, "seconds between refreshes")->capture_default_str();
  stats->add_option("--count,-c", count, "stop after this many refreshes");

  auto* keygen = app.add_subcommand("keygen", "create the cluster key file (32 random bytes)");
  keygen->add_option("file", key_path, "key file")->capture_default_str();
  keygen->add_flag("--force", force, "replace an existing key");

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    int rc = app.exit(e);
    return rc == 0 ? kOk : kUsage;
  }

  try {
    if (keygen->parsed()) return Keygen(key_path, force);
    if (status->parsed() || nodes->parsed()) {
      json s = Status();
      if (g_json)
        std::cout << (nodes->parsed() ? json{{"ok", true},
                                             {"node", s["node"]},
                                             {"quorate", s["quorate"]},
                                             {"nodes", s["nodes"]}}
                                      : s)
                         .dump(2)
                  << "\n";
      else if (nodes->parsed())
        PrintNodes(s);
      else
        PrintStatus(s);
      return kOk;
    }
    if (list->parsed()) {
      json s = Status();
      if (g_json) {
        json out = {{"ok", true}, {"volumes", json::array()}};
        for (const auto& v : s["volumes"]) {
          json e = v;
          e.erase("nodes");
          out["volumes"].push_back(e);
        }
        std::cout << out.dump(2) << "\n";
      } else {
        PrintVolumesHeader();
        for (const auto& v : s["volumes"]) PrintVolumeLine(v);
      }
      return kOk;
    }
    if (show->parsed()) {
      json v = Volume(name);
      if (g_json) {
        std::cout << v.dump(2) << "\n";
      } else {
        PrintVolumesHeader();
        PrintVolumeLine(v);
        std::cout << "preferred coordinator: " << Id(v["preferred"]) << "\n";
        PrintVolumeNodes(v);
      }
      return kOk;
    }
    if (add->parsed()) {
      json r = Call(
          {{"cmd", "volume-add"}, {"name", name}, {"device", device}, {"preferred", preferred}});
      Print(r, "volume " + name + " added (coordinator " + Id(r["coordinator"]) + ", epoch " +
                   std::to_string(r.value("epoch", 0)) + "); mount it with: mount -t csvfs " +
                   device + " /ClusterStorage/" + name);
      return kOk;
    }
    if (remove->parsed()) {
      json r = Call({{"cmd", "volume-remove"}, {"name", name}});
      Print(r, "volume " + name + " removed (its filesystem is intact on the device)");
      return kOk;
    }
    if (move->parsed()) return Move(name, node, wait_s);
    if (redirect->parsed()) return Redirect(name, mode == "on", wait_s);
    if (begin->parsed()) return BackupBegin(name, exec, wait_s, freeze_s, confirm_s);
    if (end->parsed()) return BackupEnd(name, wait_s);
    if (stats->parsed()) return Stats(watch, interval, count);
  } catch (const NotRunning& e) {
    std::cerr << "csvctl: " << e.what() << "\n";
    return kNotRunning;
  } catch (const Failed& e) {
    if (g_json) std::cout << json{{"ok", false}, {"error", e.what()}}.dump(2) << "\n";
    std::cerr << "csvctl: " << e.what() << "\n";
    return e.code;
  } catch (const json::exception& e) {
    std::cerr << "csvctl: unexpected answer from csvd: " << e.what() << "\n";
    return kFailed;
  }
  return kUsage;
}
