// The client side of csvd's control socket: one JSON object per line each
// way, root only. Shared by csvctl and mount.csvfs.
#pragma once

#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <nlohmann/json.hpp>
#include <stdexcept>
#include <string>

namespace csvctl {

inline constexpr const char* kDefaultSocket = "/run/csvd/control.sock";

// csvd cannot be reached (exit status 3 in every tool).
struct NotRunning : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// Sends one request and returns csvd's answer ({"ok": bool, ...}).
inline nlohmann::json Request(const std::string& path, const nlohmann::json& req,
                              int timeout_s = 30) {
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) throw NotRunning(std::string("socket: ") + std::strerror(errno));
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::strncpy(addr.sun_path, path.c_str(), sizeof addr.sun_path - 1);
  if (connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
    int e = errno;
    close(fd);
    if (e == EACCES || e == EPERM)
      throw NotRunning("permission denied on " + path + ": run this as root");
    throw NotRunning(
        "csvd is not running on this node: start it with systemctl start csvd"
        " (cannot connect to " +
        path + ": " + std::strerror(e) + ")");
  }
  timeval tv{timeout_s, 0};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  std::string line = req.dump() + "\n";
  if (send(fd, line.data(), line.size(), MSG_NOSIGNAL) != static_cast<ssize_t>(line.size())) {
    close(fd);
    throw NotRunning("csvd closed the control socket (a non-root client is refused)");
  }
  std::string in;
  char buf[4096];
  while (in.find('\n') == std::string::npos) {
    ssize_t n = recv(fd, buf, sizeof buf, 0);
    if (n <= 0) {
      close(fd);
      throw NotRunning(n == 0 ? "csvd closed the control socket without answering"
                                " (csvctl must run as root)"
                              : "no answer from csvd within " + std::to_string(timeout_s) +
                                    " s: is it hung? (journalctl -u csvd)");
    }
    in.append(buf, n);
  }
  close(fd);
  auto r = nlohmann::json::parse(in.substr(0, in.find('\n')), nullptr, false);
  if (r.is_discarded() || !r.is_object()) throw NotRunning("csvd sent a malformed answer");
  return r;
}

}  // namespace csvctl
