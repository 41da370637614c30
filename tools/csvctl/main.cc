// csvctl: the csvfs admin CLI. Talks to the local csvd over its root-only
// control socket (one JSON object per line each way).
//
// Exit status: 0 success, 1 the cluster refused or failed the operation,
// 2 usage error, 3 csvd is not running (or the socket is unreachable).
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <chrono>
#include <cstring>
#include <iomanip>
#include <iostream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <thread>

namespace {

using json = nlohmann::json;

struct NotRunning : std::runtime_error {
  using std::runtime_error::runtime_error;
};

json Request(const std::string& path, const json& req, int timeout_s = 30) {
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::strncpy(addr.sun_path, path.c_str(), sizeof addr.sun_path - 1);
  if (connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
    int e = errno;
    close(fd);
    if (e == EACCES || e == EPERM)
      throw NotRunning("permission denied on " + path + ": csvctl must run as root");
    throw NotRunning("csvd is not running (cannot connect to " + path + ": " + std::strerror(e) +
                     ")");
  }
  timeval tv{timeout_s, 0};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  std::string line = req.dump() + "\n";
  if (send(fd, line.data(), line.size(), MSG_NOSIGNAL) != static_cast<ssize_t>(line.size())) {
    close(fd);
    throw NotRunning("csvd closed the control socket");
  }
  std::string in;
  char buf[4096];
  while (in.find('\n') == std::string::npos) {
    ssize_t n = recv(fd, buf, sizeof buf, 0);
    if (n <= 0) {
      close(fd);
      throw NotRunning(n == 0 ? "csvd closed the control socket without answering"
                              : "no answer from csvd within " + std::to_string(timeout_s) + " s");
    }
    in.append(buf, n);
  }
  close(fd);
  json r = json::parse(in.substr(0, in.find('\n')), nullptr, false);
  if (r.is_discarded()) throw NotRunning("csvd sent a malformed answer");
  return r;
}

std::string Pad(std::string s, size_t w) {
  if (s.size() < w) s.append(w - s.size(), ' ');
  return s;
}

void PrintStatus(const json& s) {
  std::cout << "node " << s["node"] << "  quorate: " << (s["quorate"].get<bool>() ? "yes" : "NO")
            << "  synced: " << (s["synced"].get<bool>() ? "yes" : "no") << "\n\n";
  std::cout << Pad("NODE", 6) << Pad("ADDRESS", 24) << Pad("MEMBER", 8) << "CONNECTED\n";
  for (const auto& n : s["nodes"])
    std::cout << Pad(std::to_string(n["id"].get<uint32_t>()), 6)
              << Pad(n["addr"].get<std::string>(), 24)
              << Pad(n["member"].get<bool>() ? "yes" : "no", 8)
              << (n["connected"].get<bool>() ? "yes" : "no") << "\n";
  std::cout << "\n"
            << Pad("VOLUME", 16) << Pad("COORDINATOR", 13) << Pad("EPOCH", 7) << Pad("STATE", 9)
            << Pad("DEVICE", 16) << "UUID\n";
  for (const auto& v : s["volumes"]) {
    uint32_t c = v["coordinator"];
    std::cout << Pad(v["name"].get<std::string>(), 16) << Pad(c ? std::to_string(c) : "-", 13)
              << Pad(std::to_string(v["epoch"].get<uint64_t>()), 7)
              << Pad(v["ready"].get<bool>() ? "online" : "pending", 9)
              << Pad(v["device"].get<std::string>().empty() ? "-" : v["device"].get<std::string>(),
                     16)
              << v["uuid"].get<std::string>() << "\n";
    for (const auto& n : v["nodes"])
      std::cout << "    node " << Pad(std::to_string(n["id"].get<uint32_t>()), 4)
                << Pad(n["io_mode"].get<std::string>(), 17)
                << "reason: " << n["reason"].get<std::string>()
                << (n["path_healthy"].get<bool>() ? "" : "  (path FAILED)") << "\n";
  }
  std::cout << "\ncounters:";
  for (const auto& [k, v] : s["counters"].items()) std::cout << " " << k << "=" << v;
  std::cout << "\n";
}

int Fail(const json& r) {
  std::cerr << "csvctl: " << r.value("error", std::string("failed")) << "\n";
  return 1;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"csvctl - manage Cluster Shared Volumes"};
  app.require_subcommand(1);
  app.fallthrough();
  std::string socket_path = "/run/csvd/control.sock";
  bool as_json = false;
  app.add_option("--socket,-s", socket_path, "csvd's control socket");
  app.add_flag("--json", as_json, "print JSON");
  auto* status = app.add_subcommand("status", "cluster, volumes, nodes, I/O modes, counters");
  auto* volume = app.add_subcommand("volume", "add, remove or list volumes");
  volume->require_subcommand(1);
  std::string name, device;
  uint32_t preferred = 0, node = 0;
  int wait_s = 30;
  auto* add = volume->add_subcommand("add", "make a filesystem a cluster shared volume");
  add->add_option("name", name)->required();
  add->add_option("device", device, "block device holding an XFS or ext4 filesystem")->required();
  add->add_option("--preferred", preferred, "preferred owner (node id)");
  auto* remove = volume->add_subcommand("remove", "stop sharing a volume");
  remove->add_option("name", name)->required();
  auto* list = volume->add_subcommand("list", "list volumes");
  auto* move = app.add_subcommand("move", "move a volume's coordinator role");
  move->add_option("volume", name)->required();
  move->add_option("node", node, "target node id (default: the next eligible node)");
  move->add_option("--wait", wait_s, "seconds to wait for the volume to be online again");
  CLI11_PARSE(app, argc, argv);

  try {
    if (status->parsed()) {
      json r = Request(socket_path, {{"cmd", "status"}});
      if (!r.value("ok", false)) return Fail(r);
      if (as_json)
        std::cout << r.dump(2) << "\n";
      else
        PrintStatus(r);
      return 0;
    }
    if (add->parsed() || remove->parsed() || list->parsed()) {
      json req = {{"name", name}};
      req["cmd"] = add->parsed()      ? "volume-add"
                   : remove->parsed() ? "volume-remove"
                                      : "volume-list";
      if (add->parsed()) {
        req["device"] = device;
        req["preferred"] = preferred;
      }
      json r = Request(socket_path, req);
      if (!r.value("ok", false)) return Fail(r);
      if (as_json) {
        std::cout << r.dump(2) << "\n";
      } else if (list->parsed()) {
        std::cout << Pad("VOLUME", 16) << Pad("COORDINATOR", 13) << Pad("EPOCH", 7) << "UUID\n";
        for (const auto& v : r["volumes"])
          std::cout << Pad(v["name"].get<std::string>(), 16)
                    << Pad(std::to_string(v["coordinator"].get<uint32_t>()), 13)
                    << Pad(std::to_string(v["epoch"].get<uint64_t>()), 7)
                    << v["uuid"].get<std::string>() << "\n";
      } else {
        std::cout << "volume " << name << (add->parsed() ? " added" : " removed") << "\n";
      }
      return 0;
    }
    if (move->parsed()) {
      auto t0 = std::chrono::steady_clock::now();
      json r = Request(socket_path, {{"cmd", "move"}, {"volume", name}, {"node", node}});
      if (!r.value("ok", false)) return Fail(r);
      uint64_t epoch = r.value("epoch", uint64_t{0});
      // Wait until the new coordinator is online.
      for (;;) {
        json s = Request(socket_path, {{"cmd", "status"}});
        for (const auto& v : s["volumes"]) {
          if (v["name"] == name && v["epoch"].get<uint64_t>() >= epoch && v["ready"].get<bool>()) {
            double ms =
                std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0)
                    .count();
            json out = {{"ok", true},
                        {"volume", name},
                        {"coordinator", v["coordinator"]},
                        {"epoch", v["epoch"]},
                        {"online_after_ms", ms}};
            if (as_json)
              std::cout << out.dump() << "\n";
            else
              std::cout << "volume " << name << " moved to node " << v["coordinator"] << " (epoch "
                        << v["epoch"] << "), online after " << static_cast<int>(ms) << " ms\n";
            return 0;
          }
        }
        if (std::chrono::steady_clock::now() - t0 > std::chrono::seconds(wait_s)) {
          std::cerr << "csvctl: moved, but volume " << name << " is not online after " << wait_s
                    << " s\n";
          return 1;
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(50));
      }
    }
  } catch (const NotRunning& e) {
    std::cerr << "csvctl: " << e.what() << "\n";
    return 3;
  }
  return 2;
}
